//! Waiting for a replica to converge, observing what it shows (SPARQL, search, GraphQL), and
//! scoring that against the model. Field definitions: `docs/faults.md`.

use crate::kafka::DeadLetters;
use crate::procs::Coalition;
use crate::workload::{Expected, Model, MARK, PREFIX};
use crate::FaultArgs;
use anyhow::{bail, Result};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const ACTIVITY_IRI: &str = "https://w3id.org/coalition/id/activity/";

/// Waits until the marker of every partition is in the graph, then until `/readyz` shows the
/// graph and index at the same offsets and nothing has changed for three seconds. Returns the
/// seconds waited.
pub fn wait_converged(c: &mut Coalition, partitions: u32, timeout: Duration) -> Result<f64> {
    let started = Instant::now();
    let query = format!(
        "SELECT (COUNT(DISTINCT ?s) AS ?n) WHERE {{ GRAPH ?g {{ ?s <http://purl.org/dc/terms/title> ?t }} \
         FILTER(STRSTARTS(STR(?s), \"{ACTIVITY_IRI}{PREFIX}marker-\")) }}"
    );
    loop {
        c.check_alive()?;
        let n = c
            .select(&query)
            .ok()
            .and_then(|rows| rows.first().and_then(|r| r["n"]["value"].as_str().and_then(|v| v.parse::<u32>().ok())));
        if n == Some(partitions) {
            break;
        }
        if started.elapsed() > timeout {
            bail!("timed out after {timeout:?}: {n:?} of {partitions} end-of-stream markers in the graph");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let mut last: Option<Value> = None;
    let mut stable = 0;
    loop {
        c.check_alive()?;
        if let Ok(r) = c.readyz() {
            let state = json!([r["graph"], r["index"], r["applied"], r["deadLettered"]]);
            let sinks_agree = offsets(&r["graph"]) == offsets(&r["index"]);
            if sinks_agree && last.as_ref() == Some(&state) {
                stable += 1;
                if stable >= 3 {
                    return Ok(started.elapsed().as_secs_f64());
                }
            } else {
                stable = 0;
            }
            last = Some(state);
        }
        if started.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for /readyz to settle: {last:?}");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn offsets(v: &Value) -> BTreeSet<(String, i64, i64)> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|o| {
            (
                o["topic"].as_str().unwrap_or_default().to_owned(),
                o["partition"].as_i64().unwrap_or(-1),
                o["next"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

/// What one replica shows for the generated entities.
#[derive(Debug, Default)]
pub struct Observed {
    /// Entity id → the title of every (named graph, entity node) that holds one, from SPARQL.
    pub graph: BTreeMap<String, Vec<String>>,
    /// Entity id → number of search hits for the word every generated title carries.
    pub search: BTreeMap<String, usize>,
    pub search_total: usize,
    /// Entity id → `activity(id) { title }` from GraphQL, for every modelled entity.
    pub graphql: BTreeMap<String, Option<String>>,
    pub readyz: Value,
}

pub fn observe(c: &Coalition) -> Result<Observed> {
    let mut o = Observed { readyz: c.readyz()?, ..Observed::default() };
    let rows = c.select(&format!(
        "SELECT ?s ?g ?t WHERE {{ GRAPH ?g {{ ?s a <https://w3id.org/coalition/ns#Activity> ; <http://purl.org/dc/terms/title> ?t }} \
         FILTER(STRSTARTS(STR(?s), \"{ACTIVITY_IRI}{PREFIX}\")) }}"
    ))?;
    for r in rows {
        let s = r["s"]["value"].as_str().unwrap_or_default();
        let id = s.strip_prefix(ACTIVITY_IRI).unwrap_or(s).to_owned();
        o.graph.entry(id).or_default().push(r["t"]["value"].as_str().unwrap_or_default().to_owned());
    }
    let page = 500;
    let mut offset = 0;
    loop {
        let d = c.graphql(
            "query($q: String!, $first: Int!, $offset: Int!) { search(query: $q, filter: { kinds: [\"activity\"] }, first: $first, offset: $offset) { totalCount hits { entityId } } }",
            json!({ "q": MARK, "first": page, "offset": offset }),
        )?;
        o.search_total = d["search"]["totalCount"].as_u64().unwrap_or(0) as usize;
        let hits = d["search"]["hits"].as_array().cloned().unwrap_or_default();
        for h in &hits {
            if let Some(id) = h["entityId"].as_str() {
                if id.starts_with(PREFIX) {
                    *o.search.entry(id.to_owned()).or_default() += 1;
                }
            }
        }
        offset += page;
        if hits.is_empty() || offset >= o.search_total {
            break;
        }
    }
    Ok(o)
}

/// Fills `o.graphql` for every entity of the model, 50 aliases a request.
pub fn observe_graphql(c: &Coalition, model: &Model, o: &mut Observed) -> Result<()> {
    let ids: Vec<&String> = model.entities.keys().collect();
    for batch in ids.chunks(50) {
        let query = format!(
            "{{ {} }}",
            batch
                .iter()
                .enumerate()
                .map(|(i, id)| format!("e{i}: activity(id: \"{id}\") {{ title }}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        let d = c.graphql(&query, json!({}))?;
        for (i, id) in batch.iter().enumerate() {
            o.graphql.insert((*id).clone(), d[format!("e{i}")]["title"].as_str().map(str::to_owned));
        }
    }
    Ok(())
}

/// The score of one replica against the model.
#[derive(Debug, Default)]
pub struct Score {
    pub lost: usize,
    pub lost_examples: Vec<String>,
    pub duplicated: usize,
    pub duplicated_examples: Vec<String>,
    /// Generated-looking entities in the graph that the model does not have.
    pub phantom: usize,
    pub expected_present: usize,
    pub present_in_graph: usize,
    pub present_in_index: usize,
    pub index_matches_graph: bool,
}

pub fn score(model: &Model, o: &Observed) -> Score {
    let mut s = Score::default();
    for (id, expected) in &model.entities {
        let titles = o.graph.get(id).map(Vec::as_slice).unwrap_or_default();
        let via_graphql = o.graphql.get(id);
        let ok = match expected {
            Expected::Present { title } => {
                s.expected_present += 1;
                titles.contains(title) && via_graphql.is_none_or(|t| t.as_deref() == Some(title.as_str()))
            }
            Expected::Absent => titles.is_empty() && via_graphql.is_none_or(Option::is_none),
        };
        if !ok {
            s.lost += 1;
            if s.lost_examples.len() < 10 {
                s.lost_examples.push(format!("{id}: expected {expected:?}, graph {titles:?}, graphql {via_graphql:?}"));
            }
        }
    }
    for (id, titles) in &o.graph {
        if !model.entities.contains_key(id) {
            s.phantom += 1;
        }
        let hits = o.search.get(id).copied().unwrap_or(0);
        if titles.len() > 1 || hits > 1 {
            s.duplicated += 1;
            if s.duplicated_examples.len() < 10 {
                s.duplicated_examples.push(format!("{id}: graph {titles:?}, {hits} search hits"));
            }
        }
    }
    for (id, hits) in &o.search {
        if *hits > 1 && !o.graph.contains_key(id) {
            s.duplicated += 1;
        }
    }
    s.present_in_graph = o.graph.len();
    s.present_in_index = o.search.len();
    let graph_ids: BTreeSet<&String> = o.graph.keys().collect();
    let index_ids: BTreeSet<&String> = o.search.keys().collect();
    s.index_matches_graph = graph_ids == index_ids;
    s
}

pub struct Inputs<'a> {
    pub args: &'a FaultArgs,
    pub model: &'a Model,
    pub produced: usize,
    pub markers: usize,
    pub kills: usize,
    pub kills_while_behind: usize,
    pub broker_restarts: usize,
    pub unexpected_exits: usize,
    pub resent: usize,
    pub observed: &'a Observed,
    pub replica_observed: &'a Observed,
    pub dead: &'a DeadLetters,
    pub live_digest: Value,
    pub replica_digest: Value,
    pub live_wait: f64,
    pub rebuild_s: f64,
    pub elapsed_s: f64,
}

pub struct Report {
    pub json: Value,
}

impl Report {
    pub fn new(i: Inputs<'_>) -> Report {
        let live = score(i.model, i.observed);
        let replica = score(i.model, i.replica_observed);
        let digest_match = i.live_digest.get("graph").is_some()
            && i.live_digest["graph"] == i.replica_digest["graph"]
            && i.live_digest["index"] == i.replica_digest["index"];
        let json = json!({
            "events": i.produced,
            "kills": i.kills,
            "broker_restarts": i.broker_restarts,
            "lost": live.lost,
            "duplicated": live.duplicated,
            "dead_lettered": i.dead.distinct,
            "dead_lettered_raw": i.dead.raw,
            "expected_dead_lettered": i.model.poison,
            "digest_match": digest_match,
            "index_matches_graph": live.index_matches_graph,
            "elapsed_s": (i.elapsed_s * 10.0).round() / 10.0,
            "seed": i.args.seed,
            "partitions": i.args.partitions,
            "storage": "tansu on s3 (moto)",
            "workload": {
                "entities": i.model.entities.len(),
                "markers": i.markers,
                "duplicates": i.model.duplicates,
                "out_of_order": i.model.out_of_order,
                "retractions": i.model.retractions,
                "poison": i.model.poison,
                "expected_present": live.expected_present,
            },
            "live": {
                "present_in_graph": live.present_in_graph,
                "present_in_index": live.present_in_index,
                "search_total": i.observed.search_total,
                "phantom": live.phantom,
                "lost_examples": live.lost_examples,
                "duplicated_examples": live.duplicated_examples,
                "unexpected_exits": i.unexpected_exits,
                "kills_while_behind": i.kills_while_behind,
                "resent_unconfirmed": i.resent,
                "converge_wait_s": (i.live_wait * 10.0).round() / 10.0,
                "readyz": i.observed.readyz,
                "digest": i.live_digest,
            },
            "replica": {
                "lost": replica.lost,
                "duplicated": replica.duplicated,
                "index_matches_graph": replica.index_matches_graph,
                "present_in_graph": replica.present_in_graph,
                "rebuild_s": (i.rebuild_s * 10.0).round() / 10.0,
                "digest": i.replica_digest,
            },
            "dead_letter_reasons": i.dead.reasons,
        });
        Report { json }
    }

    pub fn failures(&self) -> Vec<String> {
        let j = &self.json;
        let mut f = Vec::new();
        for key in ["lost", "duplicated"] {
            if j[key] != 0 {
                f.push(format!("{key} = {}", j[key]));
            }
        }
        for key in ["digest_match", "index_matches_graph"] {
            if j[key] != true {
                f.push(format!("{key} = {}", j[key]));
            }
        }
        if j["dead_lettered"] != j["expected_dead_lettered"] {
            f.push(format!("dead_lettered {} != expected {}", j["dead_lettered"], j["expected_dead_lettered"]));
        }
        if j["live"]["phantom"] != 0 {
            f.push(format!("phantom = {}", j["live"]["phantom"]));
        }
        for key in ["lost", "duplicated"] {
            if j["replica"][key] != 0 {
                f.push(format!("replica {key} = {}", j["replica"][key]));
            }
        }
        if j["replica"]["index_matches_graph"] != true {
            f.push("replica index_matches_graph = false".into());
        }
        f
    }

    pub fn passed(&self) -> bool {
        self.failures().is_empty()
    }

    pub fn print(&self) {
        let j = &self.json;
        let ok = |pass: bool| if pass { "ok" } else { "FAIL" };
        println!();
        println!("{:<24} {:>12}  {:<}", "field", "value", "target");
        let rows: [(&str, Value, &str, bool); 9] = [
            ("events", j["events"].clone(), "", true),
            ("kills", j["kills"].clone(), "", true),
            ("broker_restarts", j["broker_restarts"].clone(), ">= 1", j["broker_restarts"].as_u64() >= Some(1)),
            ("lost", j["lost"].clone(), "0", j["lost"] == 0),
            ("duplicated", j["duplicated"].clone(), "0", j["duplicated"] == 0),
            (
                "dead_lettered",
                j["dead_lettered"].clone(),
                "= expected",
                j["dead_lettered"] == j["expected_dead_lettered"],
            ),
            ("expected_dead_lettered", j["expected_dead_lettered"].clone(), "", true),
            ("digest_match", j["digest_match"].clone(), "true", j["digest_match"] == true),
            ("index_matches_graph", j["index_matches_graph"].clone(), "true", j["index_matches_graph"] == true),
        ];
        for (name, value, target, pass) in rows {
            let status = if target.is_empty() { "" } else { ok(pass) };
            println!("{name:<24} {:>12}  {target} {status}", value.to_string());
        }
        println!("{:<24} {:>12}", "dead_lettered_raw", j["dead_lettered_raw"].to_string());
        println!("{:<24} {:>12}", "elapsed_s", j["elapsed_s"].to_string());
    }
}
