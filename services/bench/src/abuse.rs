//! `coalition-bench abuse`: what hostile callers can do to a running server, measured against the
//! real `coalition` binary and a real broker process (Tansu).
//!
//! It loads a generated coalition through Kafka, then measures the hot-path SPARQL queries (H1–H4
//! over HTTP from concurrent clients) twice: alone (the baseline), and while attackers run —
//! cross-partner writes through GraphQL (a partner token submitting, updating and retracting
//! another partner's entities, writes hidden in fragments, and writes from anonymous callers and
//! readers), and pathological SPARQL queries (cartesian products, unbounded property paths, huge
//! regular expressions, quadratic `FILTER NOT EXISTS`, grouping over products, joins on one
//! unselective variable) against a short `--sparql-timeout-s`. Every write must be refused, none
//! may reach Kafka (the whole log is read back, and the materializer's applied count checked), and
//! every pathological query must be stopped by the timeout or refused before evaluation; how long
//! SPARQL takes to answer again afterwards shows whether the stopped evaluations really stopped.
//! The hot path's p99 under abuse is compared with its baseline.
//!
//! Prints a table and writes `target/bench/abuse.json`; exits non-zero when a write succeeded or
//! reached Kafka, or a pathological query was neither stopped by the timeout nor refused.

use crate::gen;
use crate::hotpath::{applied, parameterise, percentile, produce_all, StopOnDrop, QUESTIONS};
use anyhow::{Context as _, Result};
use coalition_testkit::{wait_for, Broker, Server};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub struct AbuseArgs {
    /// Size of the generated coalition, in conversations.
    #[arg(long, default_value_t = 1000)]
    pub conversations: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Concurrent hot-path clients (each runs H1–H4 in turn).
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Rounds of H1–H4 per client for the baseline.
    #[arg(long, default_value_t = 5)]
    pub iterations: usize,
    /// Cross-partner write attempts.
    #[arg(long, default_value_t = 10_000)]
    pub attempts: usize,
    /// Concurrent connections making the write attempts.
    #[arg(long, default_value_t = 4)]
    pub writers: usize,
    /// Pathological SPARQL queries, sent one after another.
    #[arg(long, default_value_t = 100)]
    pub pathological: usize,
    /// The server's SPARQL timeout (`coalition serve --sparql-timeout-s`).
    #[arg(long, default_value_t = 1)]
    pub sparql_timeout_s: u64,
    /// Hot-path requests ask for a fresh evaluation (`Cache-Control: no-cache`) instead of the
    /// response cache's answer: the hot path then competes with the pathological queries for
    /// evaluation, as it would if the data changed between every two requests.
    #[arg(long)]
    pub no_cache: bool,
    #[arg(long, default_value = "target/bench/abuse.json")]
    pub out: PathBuf,
    #[arg(long, default_value = "target/bench/abuse-work")]
    pub work_dir: PathBuf,
}

/// What `target/bench/abuse.json` holds.
#[derive(Debug, Serialize)]
pub struct Report {
    pub machine: String,
    pub conversations: usize,
    pub events: usize,
    pub sparql_timeout_s: u64,
    /// The hot-path requests were sent with `Cache-Control: no-cache` (`--no-cache`).
    pub hot_path_no_cache: bool,
    pub cross_partner_attempts: usize,
    pub cross_partner_succeeded: usize,
    /// Refused attempts by HTTP status and `extensions.code`.
    pub cross_partner_refusals: BTreeMap<String, usize>,
    /// Records on the coalition topics that are neither the generated dataset nor the control write.
    pub reached_kafka: usize,
    /// Events the materializer applied during the abuse phase, less the control write.
    pub applied_during_abuse: i64,
    /// The rightful owner's write of the same shape succeeded and was applied.
    pub control_write_applied: bool,
    pub pathological_queries: usize,
    pub stopped_by_timeout: usize,
    /// Refused before evaluation by a limit on the query's shape (413 `LIMIT_EXCEEDED`).
    pub refused_by_limits: usize,
    /// Pathological queries neither stopped by the timeout nor refused, by HTTP status and code.
    pub pathological_other: BTreeMap<String, usize>,
    pub pathological_max_ms: f64,
    /// After the last pathological query, how long until a trivial query was answered again.
    pub sparql_recovered_after_ms: f64,
    pub hot_path_requests_baseline: usize,
    pub hot_path_errors_baseline: usize,
    pub hot_path_p50_baseline_ms: f64,
    pub hot_path_p99_baseline_ms: f64,
    pub hot_path_requests_under_abuse: usize,
    pub hot_path_errors_under_abuse: usize,
    pub hot_path_p50_under_abuse_ms: f64,
    pub hot_path_p99_under_abuse_ms: f64,
    /// Hot-path p99 under abuse divided by the baseline p99 (target ≤ 2). Refused requests count
    /// with the time they took to be refused.
    pub ratio: f64,
    /// Ratio at most 2 and every hot-path request answered, under abuse as in the baseline.
    pub hot_path_target_met: bool,
    pub elapsed_s: f64,
}

impl Report {
    /// The guarantees that must hold (the latency ratio is a target, reported separately).
    pub fn failures(&self) -> Vec<String> {
        let mut f = Vec::new();
        if self.cross_partner_succeeded > 0 {
            f.push(format!("{} cross-partner writes succeeded", self.cross_partner_succeeded));
        }
        if self.reached_kafka > 0 || self.applied_during_abuse != 0 {
            f.push(format!(
                "{} records reached Kafka, {} events applied",
                self.reached_kafka, self.applied_during_abuse
            ));
        }
        if !self.control_write_applied {
            f.push("the control write was not applied".into());
        }
        let stopped = self.stopped_by_timeout + self.refused_by_limits;
        if stopped < self.pathological_queries {
            f.push(format!(
                "{} of {} pathological queries were neither stopped by the timeout nor refused",
                self.pathological_queries - stopped,
                self.pathological_queries
            ));
        }
        f
    }

    fn print(&self) {
        let rows: Vec<(&str, String)> = vec![
            ("cross-partner write attempts", self.cross_partner_attempts.to_string()),
            ("  succeeded", self.cross_partner_succeeded.to_string()),
            ("  refused", format!("{:?}", self.cross_partner_refusals)),
            ("  records that reached Kafka", self.reached_kafka.to_string()),
            ("  events applied meanwhile", self.applied_during_abuse.to_string()),
            ("  owner's control write applied", self.control_write_applied.to_string()),
            ("pathological SPARQL queries", self.pathological_queries.to_string()),
            ("  stopped by the timeout", format!("{} ({} s)", self.stopped_by_timeout, self.sparql_timeout_s)),
            ("  refused before evaluation", self.refused_by_limits.to_string()),
            ("  other", format!("{:?}", self.pathological_other)),
            ("  slowest answer ms", format!("{:.0}", self.pathological_max_ms)),
            ("  SPARQL answering again after ms", format!("{:.0}", self.sparql_recovered_after_ms)),
            (
                "hot path H1-H4 baseline p50 / p99 ms",
                format!(
                    "{:.1} / {:.1}  ({} requests, {} errors)",
                    self.hot_path_p50_baseline_ms,
                    self.hot_path_p99_baseline_ms,
                    self.hot_path_requests_baseline,
                    self.hot_path_errors_baseline
                ),
            ),
            (
                "hot path H1-H4 under abuse p50 / p99 ms",
                format!(
                    "{:.1} / {:.1}  ({} requests, {} errors)",
                    self.hot_path_p50_under_abuse_ms,
                    self.hot_path_p99_under_abuse_ms,
                    self.hot_path_requests_under_abuse,
                    self.hot_path_errors_under_abuse
                ),
            ),
            ("p99 ratio (target <= 2)", format!("{:.2}", self.ratio)),
        ];
        let answers = if self.hot_path_no_cache { "evaluated afresh (no-cache)" } else { "as served (response cache)" };
        println!(
            "abuse: {} conversations, {} events, hot path {answers}, {}",
            self.conversations, self.events, self.machine
        );
        for (k, v) in rows {
            println!("  {k:<42} {v}");
        }
    }
}

/// The hot-path clients' latencies (every request, answered or not) and errors.
#[derive(Default)]
struct HotPath {
    latencies_ms: Vec<f64>,
    errors: usize,
    first_error: Option<String>,
}

impl HotPath {
    fn requests(&self) -> usize {
        self.latencies_ms.len()
    }
    fn p(&self, q: f64) -> f64 {
        let mut l = self.latencies_ms.clone();
        l.sort_by(|a, b| a.total_cmp(b));
        percentile(&l, q)
    }
}

/// `clients` threads each run H1–H4 in turn, `rounds` times or until `stop` is set, each request
/// with `headers`.
fn hot_path(
    server: &Server,
    queries: &[(String, String)],
    headers: &[(&str, &str)],
    clients: usize,
    rounds: Option<usize>,
    stop: &AtomicBool,
) -> HotPath {
    let out = Mutex::new(HotPath::default());
    std::thread::scope(|s| {
        for c in 0..clients {
            let out = &out;
            s.spawn(move || {
                let mut round = 0;
                while rounds.is_none_or(|r| round < r) && !stop.load(Ordering::Relaxed) {
                    // Clients start at different queries, so they do not march in step.
                    for k in 0..queries.len() {
                        let (name, query) = &queries[(c + k) % queries.len()];
                        let t = Instant::now();
                        let result = server.sparql_get_with_headers(headers, query, "application/sparql-results+json");
                        let ms = t.elapsed().as_secs_f64() * 1000.0;
                        let mut o = out.lock().expect("lock");
                        o.latencies_ms.push(ms);
                        match result {
                            Ok((200, _, _)) => {}
                            Ok((status, _, body)) => {
                                o.errors += 1;
                                o.first_error.get_or_insert_with(|| format!("{name}: HTTP {status}: {body}"));
                            }
                            Err(e) => {
                                o.errors += 1;
                                o.first_error.get_or_insert_with(|| format!("{name}: {e}"));
                            }
                        }
                    }
                    round += 1;
                }
            });
        }
    });
    out.into_inner().expect("lock")
}

/// Entities of one partner in the generated coalition, by kind.
#[derive(Debug, Default)]
struct Owned {
    activities: Vec<String>,
    outcomes: Vec<String>,
    dialogues: Vec<String>,
    case_studies: Vec<String>,
}

fn owned_by(events: &[coalition_events::Event], partner: &str) -> Owned {
    use coalition_events::Kind;
    let mut o = Owned::default();
    for e in events.iter().filter(|e| e.partner.0 == partner) {
        let id = e.subject.0.clone();
        match e.kind {
            Kind::Activity => o.activities.push(id),
            Kind::Outcome => o.outcomes.push(id),
            Kind::Dialogue => o.dialogues.push(id),
            Kind::CaseStudy => o.case_studies.push(id),
            _ => {}
        }
    }
    o
}

/// Who makes an attempt.
#[derive(Clone, Copy)]
enum As {
    Anonymous,
    Reader,
    Attacker,
}

/// The `n`-th cross-partner write: who sends it, the mutation and its variables.
fn attempt(n: usize, attacker: &str, victim: &str, v: &Owned) -> (As, &'static str, Value) {
    let pick = |ids: &[String]| ids[n / 16 % ids.len().max(1)].clone();
    let activity = json!({ "title": "Rewritten", "activityType": "training", "date": "2025-01-01", "reach": 1 });
    let mut with_id = activity.clone();
    with_id["id"] = pick(&v.activities).into();
    const SUBMIT_ACTIVITY: &str =
        "mutation($p: ID!, $input: ActivityInput!) { submitActivity(partnerId: $p, input: $input) { eventId } }";
    const RETRACT: &str =
        "mutation($p: ID!, $k: RetractableKind!, $id: ID!) { retract(partnerId: $p, kind: $k, id: $id) { eventId } }";
    match n % 16 {
        // As the victim: refused because the token belongs to another partner.
        0 => (As::Attacker, SUBMIT_ACTIVITY, json!({ "p": victim, "input": activity })),
        1 => (As::Attacker, SUBMIT_ACTIVITY, json!({ "p": victim, "input": with_id })),
        2 => (As::Attacker, RETRACT, json!({ "p": victim, "k": "ACTIVITY", "id": pick(&v.activities) })),
        3 => (As::Attacker, RETRACT, json!({ "p": victim, "k": "DIALOGUE", "id": pick(&v.dialogues) })),
        // As itself, on the victim's entities: refused by ownership.
        4 | 5 => (As::Attacker, SUBMIT_ACTIVITY, json!({ "p": attacker, "input": with_id })),
        6 => (As::Attacker, RETRACT, json!({ "p": attacker, "k": "ACTIVITY", "id": pick(&v.activities) })),
        7 => (As::Attacker, RETRACT, json!({ "p": attacker, "k": "OUTCOME", "id": pick(&v.outcomes) })),
        8 => (As::Attacker, RETRACT, json!({ "p": attacker, "k": "CASE_STUDY", "id": pick(&v.case_studies) })),
        9 => (
            As::Attacker,
            "mutation($p: ID!, $id: ID!, $on: ID!) { submitOutcome(partnerId: $p, input: { id: $id, description: \"Rewritten\", metric: \"people reached\", value: 0, unit: \"people\", date: \"2025-01-01\", measuresKind: ACTIVITY, measuresId: $on }) { eventId } }",
            json!({ "p": attacker, "id": pick(&v.outcomes), "on": pick(&v.activities) }),
        ),
        10 => (
            As::Attacker,
            "mutation($p: ID!, $id: ID!) { submitDialogue(partnerId: $p, input: { id: $id, title: \"Rewritten\", date: \"2025-01-01\", country: \"GB\", internal: false }) { eventId } }",
            json!({ "p": attacker, "id": pick(&v.dialogues) }),
        ),
        11 => (
            As::Attacker,
            "mutation($p: ID!, $id: ID!) { submitCaseStudy(partnerId: $p, input: { id: $id, title: \"Rewritten\", country: \"GB\", narrative: \"Rewritten\" }) { eventId } }",
            json!({ "p": attacker, "id": pick(&v.case_studies) }),
        ),
        // A write hidden behind an alias and a fragment, and a link (the policy team's).
        12 => (
            As::Attacker,
            "mutation M($p: ID!, $id: ID!) { ...F } fragment F on MutationRoot { ok: retract(partnerId: $p, kind: ACTIVITY, id: $id) { eventId } }",
            json!({ "p": victim, "id": pick(&v.activities) }),
        ),
        13 => (
            As::Attacker,
            "mutation($p: ID!, $id: ID!) { linkToRecommendation(partnerId: $p, input: { subjectKind: ACTIVITY, subjectId: $id, recommendationId: \"rec-1\" }) { eventId } }",
            json!({ "p": attacker, "id": pick(&v.activities) }),
        ),
        // No token, and a reader's token.
        14 => (As::Anonymous, RETRACT, json!({ "p": victim, "k": "ACTIVITY", "id": pick(&v.activities) })),
        _ => (As::Reader, SUBMIT_ACTIVITY, json!({ "p": victim, "input": with_id })),
    }
}

/// A refused or accepted write: `None` when it succeeded, else its status and code.
fn classify_write(status: u16, v: &Value) -> Option<String> {
    let errors = v.get("errors").and_then(Value::as_array).filter(|e| !e.is_empty());
    let data_present = v["data"].as_object().is_some_and(|d| d.values().any(|f| !f.is_null()));
    match errors {
        None if status == 200 && data_present => None,
        Some(e) => Some(format!("{status} {}", e[0]["extensions"]["code"].as_str().unwrap_or("no code"))),
        None => Some(format!("{status} no errors, no data")),
    }
}

/// The `n`-th pathological query: each shape in turn, each text different.
fn pathological(n: usize) -> String {
    match n % 8 {
        // A three-way cartesian product, counted (nothing to serialize): refused before evaluation,
        // since the timeout could not stop it promptly.
        0 => format!("SELECT (COUNT(*) AS ?n) WHERE {{ ?a ?b ?c . ?d ?e ?f . ?g ?h ?i FILTER(STR(?i) != \"{n}\") }}"),
        // Unbounded property paths over every predicate.
        1 => format!("SELECT (COUNT(*) AS ?n) WHERE {{ ?s (!<urn:abuse:{n}>)*/(^!<urn:abuse:{n}>)* ?o }}"),
        // A huge alternation, matched against a product of literals.
        2 => {
            let words: Vec<String> = (0..2000).map(|w| format!("w{n}x{w}")).collect();
            format!(
                "SELECT (COUNT(*) AS ?n) WHERE {{ ?a ?b ?c . ?d ?e ?f FILTER(REGEX(CONCAT(STR(?c), STR(?f)), \"({})+$\", \"i\")) }}",
                words.join("|")
            )
        }
        // A correlated FILTER NOT EXISTS: quadratic, re-reading the store per row.
        3 => format!(
            "SELECT (COUNT(*) AS ?n) WHERE {{ ?a ?b ?c FILTER NOT EXISTS {{ ?d ?e ?f FILTER(STR(?f) = CONCAT(STR(?c), \"{n}\")) }} }}"
        ),
        // Grouping and sorting a product.
        4 => format!(
            "SELECT ?c (COUNT(?f) AS ?n) WHERE {{ ?a ?b ?c . ?d ?e ?f }} GROUP BY ?c ORDER BY DESC(?n) LIMIT {}",
            n + 1
        ),
        // Three patterns joined on one unselective variable.
        5 => format!("SELECT (COUNT(*) AS ?n) WHERE {{ ?a ?p ?b . ?c ?p ?d . ?e ?p ?f FILTER(?b != \"{n}\") }}"),
        // 128 patterns in one join: the planner, which cannot be cancelled, would take seconds
        // (it grows with the fourth power of the operands). Refused before evaluation.
        6 => format!(
            "ASK {{ {} FILTER(?o0 != \"{n}\") }}",
            (0..128).map(|i| format!("?s <urn:abuse:p{i}> ?o{i} . ")).collect::<String>()
        ),
        // A chain of 5,000 operators without a bracket: a tree as deep as the chain, which once
        // overflowed a worker's stack and aborted the server. Refused before evaluation.
        _ => format!("ASK {{ ?s ?p ?o FILTER(?o != \"{n}\"{}) }}", " && true".repeat(5_000)),
    }
}

/// Reads every coalition topic from the beginning (not trusting high watermarks) until `expected`
/// records were seen and nothing new came for a few seconds; returns the event ids read.
fn read_log(bootstrap: &str, expected: usize, timeout: Duration) -> Result<Vec<String>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("coalition-bench-abuse-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .create()
        .context("creating the log reader")?;
    let mut tpl = TopicPartitionList::new();
    for topic in coalition_events::Kind::topics() {
        let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(30))?;
        let partitions = md.topics().first().map(|t| t.partitions().len()).unwrap_or(0);
        for p in 0..partitions as i32 {
            tpl.add_partition_offset(topic, p, Offset::Beginning)?;
        }
    }
    consumer.assign(&tpl)?;
    let started = Instant::now();
    let mut last_new = Instant::now();
    let mut seen = HashSet::new();
    let mut ids = Vec::new();
    while started.elapsed() < timeout {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) if seen.insert((m.topic().to_owned(), m.partition(), m.offset())) => {
                last_new = Instant::now();
                let v: Value = m.payload().and_then(|p| serde_json::from_slice(p).ok()).unwrap_or(Value::Null);
                ids.push(v["id"].as_str().unwrap_or("<not an event>").to_owned());
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => eprintln!("  log reader: {e}"),
            None => {}
        }
        if ids.len() >= expected && last_new.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    Ok(ids)
}

pub fn run(args: AbuseArgs) -> Result<()> {
    let started = Instant::now();
    let repo = coalition_testkit::repo_root();
    let work = &args.work_dir;
    if work.exists() {
        std::fs::remove_dir_all(work).with_context(|| format!("emptying {}", work.display()))?;
    }
    std::fs::create_dir_all(work)?;
    eprintln!("[abuse] generating {} conversations", args.conversations);
    let events = gen::events(args.conversations, args.seed);
    let broker = Broker::start()?;
    let timeout = args.sparql_timeout_s.to_string();
    let server = Server::start(
        &work.join("data"),
        &[
            "--kafka-brokers",
            &broker.bootstrap,
            "--consumer-group",
            "abuse",
            "--no-seed",
            // Off, so that every attempt reaches authorisation instead of the rate limiter.
            "--graphql-rate-limit",
            "0",
            "--sparql-timeout-s",
            &timeout,
        ],
    )?;
    eprintln!("[abuse] ingesting {} events", events.len());
    produce_all(&broker.bootstrap, &events)?;
    let total = events.len() as u64;
    wait_for("ingest to finish", Duration::from_secs(3600), || applied(&server).ok().filter(|n| *n >= total))?;

    // The most prolific partner is the victim; the next one attacks it.
    let (victim, attacker) = ("partner-00000", "partner-00001");
    let victim_owns = owned_by(&events, victim);
    anyhow::ensure!(
        !victim_owns.activities.is_empty()
            && !victim_owns.outcomes.is_empty()
            && !victim_owns.dialogues.is_empty()
            && !victim_owns.case_studies.is_empty(),
        "{victim} owns too little to attack: {victim_owns:?}"
    );
    let attacker_token = server.create_token("partner", Some(attacker), &["--label", "abuse attacker"])?;
    let reader_token = server.create_token("reader", None, &["--label", "abuse reader"])?;
    let victim_token = server.create_token("partner", Some(victim), &["--label", "abuse control"])?;

    let queries: Vec<(String, String)> = QUESTIONS
        .iter()
        .filter(|q| q.file.ends_with(".sparql"))
        .map(|q| {
            let (name, file) = (q.name, q.file);
            let q =
                std::fs::read_to_string(repo.join("queries").join(file)).with_context(|| format!("reading {file}"))?;
            Ok(((*name).to_owned(), parameterise(&q)))
        })
        .collect::<Result<_>>()?;
    eprintln!("[abuse] hot-path baseline: {} clients x {} rounds of H1-H4", args.clients, args.iterations);
    let headers = Server::cache_headers(args.no_cache);
    let never = AtomicBool::new(false);
    let baseline = hot_path(&server, &queries, headers, args.clients, Some(args.iterations), &never);
    if let Some(e) = &baseline.first_error {
        eprintln!("  baseline: {} errors, first: {e}", baseline.errors);
    }

    let applied_before = applied(&server)? as i64;
    eprintln!(
        "[abuse] {} cross-partner writes ({} connections) and {} pathological queries while the hot path runs",
        args.attempts, args.writers, args.pathological
    );
    let stop = AtomicBool::new(false);
    let next = AtomicUsize::new(0);
    let refusals = Mutex::new(BTreeMap::<String, usize>::new());
    let succeeded = AtomicUsize::new(0);
    let mut timeouts = 0;
    let mut refused = 0;
    let mut other = BTreeMap::<String, usize>::new();
    let mut slowest: f64 = 0.0;
    let mut recovered_ms = f64::NAN;
    let under_abuse = std::thread::scope(|s| -> Result<HotPath> {
        let _stop = StopOnDrop(&stop);
        let hot = s.spawn(|| hot_path(&server, &queries, headers, args.clients, None, &stop));
        let writers: Vec<_> = (0..args.writers.max(1))
            .map(|_| {
                s.spawn(|| loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= args.attempts {
                        break;
                    }
                    let (who, query, variables) = attempt(n, attacker, victim, &victim_owns);
                    let result = match who {
                        As::Anonymous => server.graphql_with_headers(&[], query, variables),
                        As::Reader => server.graphql_with_token(&reader_token, query, variables),
                        As::Attacker => server.graphql_with_token(&attacker_token, query, variables),
                    };
                    let outcome = match result {
                        Ok((status, v)) => classify_write(status, &v),
                        Err(e) => Some(format!("no JSON answer: {e}")),
                    };
                    match outcome {
                        None => {
                            succeeded.fetch_add(1, Ordering::Relaxed);
                        }
                        Some(key) => *refusals.lock().expect("lock").entry(key).or_default() += 1,
                    }
                })
            })
            .collect();
        for n in 0..args.pathological {
            let query = pathological(n);
            let t = Instant::now();
            // As a request body: the longest shapes do not fit in a URI.
            let (status, _, body) =
                server.sparql_post("application/sparql-query", &query, "application/sparql-results+json")?;
            slowest = slowest.max(t.elapsed().as_secs_f64() * 1000.0);
            let code = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
                .unwrap_or_default();
            if status == 503 && code == "TIMEOUT" {
                timeouts += 1;
            } else if status == 413 && code == "LIMIT_EXCEEDED" {
                refused += 1;
            } else {
                *other.entry(format!("{status} {code}")).or_default() += 1;
            }
        }
        let t = Instant::now();
        recovered_ms = wait_for("SPARQL to answer again", Duration::from_secs(600), || {
            matches!(server.sparql_get("ASK {}", "application/sparql-results+json"), Ok((200, _, _)))
                .then(|| t.elapsed().as_secs_f64() * 1000.0)
        })?;
        for w in writers {
            w.join().map_err(|_| anyhow::anyhow!("a writer thread panicked"))?;
        }
        stop.store(true, Ordering::Relaxed);
        hot.join().map_err(|_| anyhow::anyhow!("a hot-path thread panicked"))
    })?;
    if let Some(e) = &under_abuse.first_error {
        eprintln!("  under abuse: {} errors, first: {e}", under_abuse.errors);
    }

    // The rightful owner's write of the same shape goes through, and is the only new event.
    eprintln!("[abuse] control write by {victim}, then reading the whole log back");
    let (status, v) = server.graphql_with_token(
        &victim_token,
        "mutation($p: ID!, $input: ActivityInput!) { submitActivity(partnerId: $p, input: $input) { eventId consistencyToken } }",
        json!({ "p": victim, "input": { "id": victim_owns.activities[0], "title": "Updated by its owner", "activityType": "training", "date": "2025-01-01" } }),
    )?;
    let control = v["data"]["submitActivity"].clone();
    let control_write_applied =
        status == 200 && control["consistencyToken"].as_str().is_some_and(|token| server.await_applied(token).is_ok());
    let control_id = control["eventId"].as_str().unwrap_or_default().to_owned();
    let generated: HashSet<&str> = events.iter().map(|e| e.id.0.as_str()).collect();
    let log = read_log(&broker.bootstrap, events.len() + 1, Duration::from_secs(300))?;
    let reached_kafka = log.iter().filter(|id| !generated.contains(id.as_str()) && **id != control_id).count();
    let applied_after = applied(&server)? as i64;

    let (base99, abuse99) = (baseline.p(0.99), under_abuse.p(0.99));
    let report = Report {
        machine: format!("{} cores", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)),
        conversations: args.conversations,
        events: events.len(),
        sparql_timeout_s: args.sparql_timeout_s,
        hot_path_no_cache: args.no_cache,
        cross_partner_attempts: args.attempts,
        cross_partner_succeeded: succeeded.into_inner(),
        cross_partner_refusals: refusals.into_inner().expect("lock"),
        reached_kafka,
        applied_during_abuse: applied_after - applied_before - i64::from(control_write_applied),
        control_write_applied,
        pathological_queries: args.pathological,
        stopped_by_timeout: timeouts,
        refused_by_limits: refused,
        pathological_other: other,
        pathological_max_ms: slowest,
        sparql_recovered_after_ms: recovered_ms,
        hot_path_requests_baseline: baseline.requests(),
        hot_path_errors_baseline: baseline.errors,
        hot_path_p50_baseline_ms: baseline.p(0.5),
        hot_path_p99_baseline_ms: base99,
        hot_path_requests_under_abuse: under_abuse.requests(),
        hot_path_errors_under_abuse: under_abuse.errors,
        hot_path_p50_under_abuse_ms: under_abuse.p(0.5),
        hot_path_p99_under_abuse_ms: abuse99,
        ratio: abuse99 / base99,
        hot_path_target_met: abuse99 / base99 <= 2.0 && under_abuse.errors == 0 && baseline.errors == 0,
        elapsed_s: started.elapsed().as_secs_f64(),
    };
    drop(server);
    drop(broker);
    report.print();
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("wrote {}", args.out.display());
    if !report.hot_path_target_met {
        eprintln!(
            "target missed: hot-path p99 under abuse is {:.2}x the baseline (target <= 2), {} of {} hot-path requests refused under abuse",
            report.ratio, report.hot_path_errors_under_abuse, report.hot_path_requests_under_abuse
        );
    }
    let failures = report.failures();
    if !failures.is_empty() {
        eprintln!("FAILED: {}", failures.join(", "));
        std::process::exit(1);
    }
    Ok(())
}
