//! `coalition-bench hot-path`: for each size, generates a synthetic coalition, ingests it through
//! a real broker process into the real `coalition` binary, and measures in one run: ingest
//! events/s (Kafka → graph + index committed), produce → visible freshness, rebuild time (a fresh
//! replica materializing the whole log), serving RSS, and the hot-path queries H1–H5 over HTTP with
//! concurrent clients next to the same SPARQL on raw Oxigraph loaded with the same facts.

use crate::gen;
use anyhow::{bail, Context as _, Result};
use coalition_testkit::{wait_for, Broker, Server};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub struct HotPathArgs {
    /// Sizes in conversations, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10000")]
    pub conversations: Vec<usize>,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Concurrent HTTP clients for the query phase.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Requests per query per client.
    #[arg(long, default_value_t = 10)]
    pub iterations: usize,
    /// Concurrent clients for raw Oxigraph (default: --clients). The from-scratch aggregates take
    /// seconds at 100k conversations and more: fewer clients and iterations keep a run bounded.
    #[arg(long)]
    pub raw_clients: Option<usize>,
    /// Requests per query per raw Oxigraph client (default: --iterations).
    #[arg(long)]
    pub raw_iterations: Option<usize>,
    /// Probe events for the freshness measurement.
    #[arg(long, default_value_t = 100)]
    pub probes: usize,
    /// Background events per second produced while the freshness probes run.
    #[arg(long, default_value_t = 1000)]
    pub load_rate: usize,
    /// Each query phase lasts at least this long, every client asking at least `--iterations`
    /// times: long enough for the background load to be committed several times during it, so
    /// that answers the response cache keeps are dropped and computed again as in service.
    #[arg(long, default_value_t = 3000)]
    pub min_phase_ms: u64,
    #[arg(long, default_value = "target/bench/hot-path.json")]
    pub out: PathBuf,
    #[arg(long, default_value = "target/bench/hot-path-work")]
    pub work_dir: PathBuf,
    /// Stop the live server and remove its store (digested first) before the rebuild, so that the
    /// live store and the replica are never on disk together: a 1M run then needs ~60 GB, not ~100.
    /// The replica is rebuilt with the live server stopped rather than idle. (With `--preload` no
    /// replica is rebuilt, and the live store stays.)
    #[arg(long)]
    pub free_disk: bool,
    /// Produce the whole log before the server starts, so that ingest is the initial load of an
    /// empty store (the rebuild path) rather than streaming; the rebuild is not repeated. For sizes
    /// whose streaming ingest would not fit a session (1M: ~2.6M events).
    #[arg(long)]
    pub preload: bool,
}

#[derive(Debug, Serialize)]
pub struct QueryResult {
    pub name: String,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub raw_oxigraph_p50_ms: f64,
    pub raw_oxigraph_p99_ms: f64,
    /// Raw Oxigraph p50 divided by Coalition Graph p50 (> 1: Coalition Graph is faster).
    pub speedup: f64,
    /// Requests refused or failed (not in the latencies).
    pub errors: usize,
    /// Requests answered (each client asks for at least `--min-phase-ms`).
    pub requests: usize,
    /// Of the requests above, the share answered from the response cache (kept, or shared with
    /// a caller asking at the same time) rather than evaluated for the request.
    pub cache_hit_ratio: f64,
    /// The same requests sent with `Cache-Control: no-cache`: each evaluated afresh.
    pub uncached_p50_ms: f64,
    pub uncached_p99_ms: f64,
    /// Raw Oxigraph p50 divided by the uncached p50.
    pub uncached_speedup: f64,
    pub uncached_errors: usize,
    /// The requests above by where their answer came from (`Coalition-Cache`): kept and ready,
    /// kept in the state before (while another request evaluated the current one), waited for
    /// another request's evaluation, or evaluated for the request.
    pub sources: Sources,
    /// The server's own p99 for the same requests, from arrival to response (the upper bound of
    /// its histogram bucket): what the latency above spends outside the handler is the rest.
    pub server_p99_le_ms: f64,
}

/// Served requests split by where their answer came from: how many, their p99, and how many of the
/// slowest 1 % (at or above the phase's p99) each accounts for.
#[derive(Debug, Default, Serialize)]
pub struct Sources {
    pub kept: SourceShare,
    pub before: SourceShare,
    pub waited: SourceShare,
    pub evaluated: SourceShare,
}

#[derive(Debug, Default, Serialize)]
pub struct SourceShare {
    pub requests: usize,
    pub p99_ms: f64,
    pub in_slowest_1pct: usize,
}

impl Sources {
    /// The split of `latencies` (sorted by latency), whose p99 is `p99`.
    fn of(latencies: &[(f64, Source)], p99: f64) -> Sources {
        let share = |source: Source| {
            let of: Vec<f64> = latencies.iter().filter(|(_, s)| *s == source).map(|(ms, _)| *ms).collect();
            SourceShare {
                requests: of.len(),
                p99_ms: percentile(&of, 0.99),
                in_slowest_1pct: of.iter().filter(|ms| **ms >= p99).count(),
            }
        };
        Sources {
            kept: share(Source::Kept),
            before: share(Source::Before),
            waited: share(Source::Waited),
            evaluated: share(Source::Evaluated),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Run {
    pub conversations: usize,
    pub events: usize,
    /// The log was in the broker before the server started (`--preload`): ingest is the initial
    /// load of an empty store, the rebuild is that same load, and no second replica is built.
    pub preloaded: bool,
    pub ingest_events_per_s: f64,
    pub freshness_p50_ms: f64,
    pub freshness_p99_ms: f64,
    /// Probes measured (fewer than asked when one took longer than the patience: ingest fell
    /// behind the load, and the delays above are lower bounds).
    pub freshness_probes: usize,
    pub freshness_load_events_per_s: usize,
    pub rebuild_s: f64,
    /// Peak resident memory of the rebuilding replica.
    pub rebuild_peak_rss_mib: f64,
    pub rss_mib: f64,
    pub queries: Vec<QueryResult>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub machine: String,
    pub runs: Vec<Run>,
}

/// A hot-path question as served (SPARQL file over HTTP, or GraphQL file) and, for SPARQL, the
/// same question computed from the facts for raw Oxigraph (`queries/raw/`, or the file itself when
/// the served form already reads only facts).
pub(crate) struct Question {
    pub(crate) name: &'static str,
    pub(crate) file: &'static str,
    raw: Option<&'static str>,
}

impl Question {
    /// Asked at `/graphql` (else at `/sparql`).
    fn is_graphql(&self) -> bool {
        self.file.ends_with(".graphql")
    }
}

pub(crate) const QUESTIONS: &[Question] = &[
    Question {
        name: "H1",
        file: "h1-recommendation-dashboard.sparql",
        raw: Some("raw/h1-recommendation-dashboard.sparql"),
    },
    Question {
        name: "H2",
        file: "h2-evidence-group-country.sparql",
        raw: Some("raw/h2-evidence-group-country.sparql"),
    },
    Question {
        name: "H3",
        file: "h3-recommendation-case-studies-outcomes.sparql",
        raw: Some("raw/h3-recommendation-case-studies-outcomes.sparql"),
    },
    Question { name: "H4", file: "h4-partner-rollup.sparql", raw: Some("raw/h4-partner-rollup.sparql") },
    Question { name: "H1 GraphQL", file: "h1-recommendation-dashboard.graphql", raw: None },
    Question { name: "H2 GraphQL", file: "h2-evidence-group-country.graphql", raw: None },
    Question { name: "H3 GraphQL", file: "h3-recommendation-case-studies-outcomes.graphql", raw: None },
    Question { name: "H4 GraphQL", file: "h4-partner-rollup.graphql", raw: None },
    Question { name: "H5 GraphQL", file: "h5-search-to-recommendations.graphql", raw: None },
];

/// The generated dataset's values for the GraphQL files' variables.
fn variables() -> serde_json::Value {
    serde_json::json!({"id": "rec-2", "partner": "partner-00000", "group": "disabled", "country": "FR"})
}

/// A SPARQL answer as sorted rows of variable → lexical value, to compare answers by content.
type Rows = Vec<std::collections::BTreeMap<String, String>>;

fn http_rows(body: &str) -> Result<Rows> {
    let v: serde_json::Value = serde_json::from_str(body)?;
    let mut rows: Rows = v["results"]["bindings"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    r.as_object()
                        .map(|o| {
                            o.iter()
                                .map(|(k, v)| (k.clone(), v["value"].as_str().unwrap_or_default().to_owned()))
                                .collect()
                        })
                        .unwrap_or_default()
                })
                .collect()
        })
        .unwrap_or_default();
    rows.sort();
    Ok(rows)
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Rewrites the built-in dataset's parameters in a query file to the generated dataset's.
pub(crate) fn parameterise(query: &str) -> String {
    query.replace("rec-2-diversity-in-research", "rec-2").replace("partner/nachw", "partner/partner-00000")
}

pub(crate) fn produce_all(bootstrap: &str, events: &[coalition_events::Event]) -> Result<()> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .create()?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        use futures::StreamExt;
        let payloads: Vec<(String, String, Vec<u8>)> =
            events.iter().map(|e| (e.kind.topic().to_owned(), e.subject.0.clone(), e.to_bytes())).collect();
        let mut sends = futures::stream::iter(payloads.iter().map(|(topic, key, bytes)| {
            producer.send(FutureRecord::to(topic).key(key).payload(bytes), Duration::from_secs(60))
        }))
        .buffered(4096);
        while let Some(r) = sends.next().await {
            r.map_err(|(e, _)| anyhow::anyhow!("produce failed: {e}"))?;
        }
        Ok::<_, anyhow::Error>(())
    })
}

/// Events applied and dead-lettered so far (`/readyz`).
pub(crate) fn applied(server: &Server) -> Result<u64> {
    Ok(sinks(server)?.0)
}

/// Events applied (and dead-lettered), and the offsets each sink has committed (graph, index).
fn sinks(server: &Server) -> Result<(u64, (serde_json::Value, serde_json::Value))> {
    let (_, body) = server.get("/readyz")?;
    let v: serde_json::Value = serde_json::from_str(&body)?;
    let applied = v["applied"].as_u64().unwrap_or(0) + v["deadLettered"].as_u64().unwrap_or(0);
    Ok((applied, (v["graph"].clone(), v["index"].clone())))
}

fn rss_mib(pid: u32) -> f64 {
    memory_mib(pid, "VmRSS:")
}

/// A memory figure of `/proc/<pid>/status` (`VmRSS:`, `VmHWM:` …) in MiB.
fn memory_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// Runs `request` from `clients` threads, `iterations` times each (and for at least
/// `min_duration`), then `check` on what each request returned, outside the timed part; returns
/// the sorted latencies in ms of the requests that succeeded and passed their check, and the
/// failures.
fn concurrent_counting<T, C: Send>(
    clients: usize,
    iterations: usize,
    min_duration: Duration,
    request: impl Fn() -> Result<T> + Send + Sync,
    check: impl Fn(T) -> Result<C> + Send + Sync,
) -> (Vec<(f64, C)>, Vec<String>) {
    let latencies = Mutex::new(Vec::with_capacity(clients * iterations));
    let errors = Mutex::new(Vec::new());
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..clients {
            s.spawn(|| {
                let mut asked = 0;
                while asked < iterations || started.elapsed() < min_duration {
                    asked += 1;
                    let t = Instant::now();
                    let outcome = request();
                    let ms = t.elapsed().as_secs_f64() * 1000.0;
                    match outcome.and_then(&check) {
                        Ok(tag) => latencies.lock().expect("lock").push((ms, tag)),
                        Err(e) => errors.lock().expect("lock").push(e.to_string()),
                    }
                }
            });
        }
    });
    let mut l = latencies.into_inner().expect("lock");
    l.sort_by(|a, b| a.0.total_cmp(&b.0));
    (l, errors.into_inner().expect("lock"))
}

/// [`concurrent_counting`] of `f` with nothing to check afterwards, failing on any failed request.
fn concurrent(clients: usize, iterations: usize, f: impl Fn() -> Result<()> + Send + Sync) -> Result<Vec<f64>> {
    let (latencies, errors) = concurrent_counting(clients, iterations, Duration::ZERO, f, Ok);
    if let Some(e) = errors.first() {
        bail!("{} request(s) failed, first: {e}", errors.len());
    }
    Ok(latencies.into_iter().map(|(ms, ())| ms).collect())
}

fn raw_oxigraph(nquads: &Path, dir: &Path) -> Result<oxigraph::store::Store> {
    let store = oxigraph::store::Store::open(dir)?;
    let mut loader = store.bulk_loader();
    loader
        .load_from_reader(oxigraph::io::RdfFormat::NQuads, std::io::BufReader::new(std::fs::File::open(nquads)?))
        .context("loading N-Quads into raw Oxigraph")?;
    loader.commit()?;
    Ok(store)
}

fn raw_query(store: &oxigraph::store::Store, query: &str) -> Result<Rows> {
    use oxigraph::sparql::{QueryResults, SparqlEvaluator};
    let mut prepared = SparqlEvaluator::new().parse_query(query)?;
    prepared.dataset_mut().set_default_graph_as_union();
    let QueryResults::Solutions(solutions) = prepared.on_store(store).execute()? else {
        bail!("not a SELECT query");
    };
    let mut rows = Vec::new();
    for solution in solutions {
        let solution = solution?;
        rows.push(
            solution
                .iter()
                .map(|(var, term)| {
                    let value = match term {
                        oxigraph::model::Term::Literal(l) => l.value().to_owned(),
                        oxigraph::model::Term::NamedNode(n) => n.as_str().to_owned(),
                        oxigraph::model::Term::BlankNode(b) => b.as_str().to_owned(),
                    };
                    (var.as_str().to_owned(), value)
                })
                .collect(),
        );
    }
    rows.sort();
    Ok(rows)
}

/// An answer as received over HTTP: status, where it came from and body, not yet parsed.
struct Answer {
    status: u16,
    cache: Option<String>,
    body: String,
}

/// Sends one request for `q` to the server (`fresh`: with `Cache-Control: no-cache`, evaluated
/// afresh) and reads its whole body: what a request's latency covers.
fn send(server: &Server, q: &Question, text: &str, fresh: bool) -> Result<Answer> {
    let headers = Server::cache_headers(fresh);
    let reply = if q.is_graphql() {
        server.graphql_reply(headers, text, variables())?
    } else {
        server.sparql_get_reply(headers, text, "application/sparql-results+json")?
    };
    Ok(Answer { status: reply.status, cache: reply.cache, body: reply.body })
}

/// Checks an answer without building it: HTTP 200, well-formed JSON, and SPARQL results or GraphQL
/// data without errors; returns where it came from.
fn check(q: &Question, answer: &Answer) -> Result<Source> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        results: Option<serde::de::IgnoredAny>,
        data: Option<serde::de::IgnoredAny>,
        errors: Option<serde::de::IgnoredAny>,
    }
    let fail = || format!("{}: HTTP {}: {}", q.name, answer.status, answer.body);
    anyhow::ensure!(answer.status == 200, fail());
    let envelope: Envelope = serde_json::from_str(&answer.body).with_context(fail)?;
    let complete =
        if q.is_graphql() { envelope.data.is_some() && envelope.errors.is_none() } else { envelope.results.is_some() };
    anyhow::ensure!(complete, fail());
    Ok(Source::of(answer.cache.as_deref()))
}

/// Where a served answer came from, as its `Coalition-Cache` header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// Kept, ready when asked (`hit`).
    Kept,
    /// Kept in the state before the last commit, while another request evaluated the current
    /// state's (`stale`).
    Before,
    /// Waited for another request's evaluation (`shared`).
    Waited,
    /// Evaluated for this request (`miss`, `bypass`, or no header).
    Evaluated,
}

impl Source {
    fn of(header: Option<&str>) -> Source {
        match header {
            Some("hit") => Source::Kept,
            Some("stale") => Source::Before,
            Some("shared") => Source::Waited,
            _ => Source::Evaluated,
        }
    }
}

/// Sends one request for `q` and checks its answer; returns the SPARQL answer's rows (empty for
/// GraphQL).
fn ask(server: &Server, q: &Question, text: &str, fresh: bool) -> Result<Rows> {
    let answer = send(server, q, text, fresh)?;
    check(q, &answer)?;
    if q.is_graphql() {
        return Ok(Rows::new());
    }
    http_rows(&answer.body)
}

/// The server's response-cache counters, both endpoints summed: answers served from it (`hit`,
/// `shared` and `stale`), then evaluated for their request (`miss` and `bypass`).
fn cache_outcomes(server: &Server) -> Result<[f64; 2]> {
    let mut counts = [0.0; 2];
    for (line, value) in samples(server, "coalition_response_cache_total{")? {
        let served = ["hit", "shared", "stale"].iter().any(|o| line.contains(&format!("outcome=\"{o}\"")));
        counts[usize::from(!served)] += value;
    }
    Ok(counts)
}

/// The lines of the server's `/metrics` that start with `prefix`, each with its value.
fn samples(server: &Server, prefix: &str) -> Result<Vec<(String, f64)>> {
    let (status, text) = server.get("/metrics")?;
    anyhow::ensure!(status == 200, "/metrics: HTTP {status}");
    let value = |line: &str| line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
    Ok(text.lines().filter(|l| l.starts_with(prefix)).map(|l| (l.to_owned(), value(l))).collect())
}

/// The server's own request latency histogram for `route` (`coalition_http_request_seconds`, from
/// the request's arrival to its response, every status and method summed): cumulative counts by
/// upper bound in seconds, ascending (the last is `+Inf`).
fn server_seconds(server: &Server, route: &str) -> Result<Vec<(f64, f64)>> {
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    let route = format!("route=\"{route}\"");
    for (line, count) in samples(server, "coalition_http_request_seconds_bucket{")? {
        if !line.contains(&route) {
            continue;
        }
        let le = line.split("le=\"").nth(1).and_then(|r| r.split('"').next()).unwrap_or("");
        let le: f64 = if le == "+Inf" { f64::INFINITY } else { le.parse()? };
        match buckets.iter_mut().find(|(b, _)| *b == le) {
            Some((_, c)) => *c += count,
            None => buckets.push((le, count)),
        }
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok(buckets)
}

/// The server-side p99 of the requests between two readings of [`server_seconds`], as the upper
/// bound in ms of the bucket it falls in.
fn server_p99_ms(before: &[(f64, f64)], after: &[(f64, f64)]) -> f64 {
    let counted = |le: f64| before.iter().find(|(b, _)| *b == le).map_or(0.0, |(_, c)| *c);
    let diff: Vec<(f64, f64)> = after.iter().map(|(le, c)| (*le, c - counted(*le))).collect();
    let total = diff.last().map_or(0.0, |(_, c)| *c);
    diff.iter().find(|(_, c)| *c >= 0.99 * total && total > 0.0).map_or(f64::NAN, |(le, _)| le * 1000.0)
}

/// One question's phase: latency percentiles, requests answered and refused, and the share the
/// response cache answered.
struct Phase {
    p50: f64,
    p99: f64,
    requests: usize,
    errors: usize,
    hit_ratio: f64,
    sources: Sources,
    server_p99: f64,
}

/// How long a freshness probe may take before the run concludes that ingest cannot keep up.
const PROBE_PATIENCE: Duration = Duration::from_secs(60);

/// How long ingest, the live server's drain and the rebuild may each take: a 1M log streams for
/// most of an hour on two cores.
const PHASE_PATIENCE: Duration = Duration::from_secs(4 * 3600);

/// Background load events sent so far, over every phase (their ids stay unique).
static LOAD_SENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Runs `f` while a producer adds new activities at `rate` events/s, once the server is applying
/// them; returns `f`'s result and the number of load events sent (all flushed to the broker before
/// returning).
fn with_load<T>(
    server: &Server,
    bootstrap: &str,
    rate: usize,
    template: &coalition_events::Event,
    f: impl FnOnce() -> Result<T>,
) -> Result<(T, u64)> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let _stop = StopOnDrop(&stop);
        let load = scope.spawn(|| -> Result<u64> {
            let producer: FutureProducer =
                ClientConfig::new().set("bootstrap.servers", bootstrap).set("linger.ms", "5").create()?;
            let per_tick = (rate / 100).max(1) as u64;
            let mut sent = 0u64;
            while rate > 0 && !stop.load(Ordering::Relaxed) {
                let tick = Instant::now();
                for _ in 0..per_tick {
                    let n = LOAD_SENT.fetch_add(1, Ordering::Relaxed);
                    let id = format!("load-{n:08}");
                    let e = template.copy_as(
                        coalition_events::EntityId(id.clone()),
                        coalition_events::EventId(format!("load-event-{n}")),
                    );
                    match producer.send_result(FutureRecord::to(e.kind.topic()).key(&id).payload(&e.to_bytes())) {
                        Ok(_) => sent += 1,
                        Err(_) => {
                            LOAD_SENT.fetch_sub(1, Ordering::Relaxed);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(10).saturating_sub(tick.elapsed()));
            }
            rdkafka::producer::Producer::flush(&producer, Duration::from_secs(30))?;
            Ok(sent)
        });
        // `f` starts once the load reaches the stores: the server has applied a tenth of a
        // second's worth of events since the load began (a producer's start, the broker and the
        // consumer's first fetch take a while; what is measured should run beside commits).
        let result = wait_for_commits(server, rate).and_then(|()| f());
        // The load stops whatever happened to `f`.
        stop.store(true, Ordering::Relaxed);
        let sent = load.join().map_err(|_| anyhow::anyhow!("load thread panicked"))??;
        Ok((result?, sent))
    })
}

/// Sets its flag when dropped. Threads of a `std::thread::scope` that run until a flag is set
/// must get it however the scope's body ends: the scope waits for them, so an error returned or a
/// panic before the flag is set would otherwise hang the run (a panicking abuse run once went on
/// loading the machine for 49 minutes).
pub(crate) struct StopOnDrop<'a>(pub(crate) &'a std::sync::atomic::AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Waits until the server has applied `rate / 10` more records than when called (none if `rate`
/// is 0); after 30 s goes on anyway, saying so.
fn wait_for_commits(server: &Server, rate: usize) -> Result<()> {
    if rate == 0 {
        return Ok(());
    }
    let applied = || sinks(server).map(|(applied, _)| applied);
    let target = applied()? + (rate as u64 / 10).max(1);
    let deadline = Instant::now() + Duration::from_secs(30);
    while applied()? < target {
        if Instant::now() > deadline {
            eprintln!("the background load was not applied within 30 s; measuring anyway");
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn one_size(args: &HotPathArgs, conversations: usize, repo: &Path) -> Result<Run> {
    let work = args.work_dir.join(format!("c{conversations}"));
    if work.exists() {
        std::fs::remove_dir_all(&work)?;
    }
    std::fs::create_dir_all(&work)?;
    eprintln!("[{conversations}] generating");
    let report = gen::generate(conversations, args.seed, &work, true)?;
    let events = gen::events(conversations, args.seed);
    let broker = Broker::start()?;
    let server_args =
        ["--kafka-brokers", &broker.bootstrap, "--graphql-rate-limit", "0", "--consumer-group", "bench", "--no-seed"];
    let total = events.len() as u64;
    let (server, started) = if args.preload {
        eprintln!("[{conversations}] producing {} events before the server starts", events.len());
        produce_all(&broker.bootstrap, &events)?;
        eprintln!("[{conversations}] initial load");
        let started = Instant::now();
        (Server::start_serving(&work.join("data"), &server_args)?, started)
    } else {
        let server = Server::start(&work.join("data"), &server_args)?;
        eprintln!("[{conversations}] ingesting {} events", events.len());
        let started = Instant::now();
        produce_all(&broker.bootstrap, &events)?;
        (server, started)
    };
    // Ingested: every event applied, and the index has committed as far as the graph.
    wait_for("ingest to finish", PHASE_PATIENCE, || {
        sinks(&server).ok().filter(|(applied, sinks)| *applied >= total && sinks.0 == sinks.1).map(drop)
    })?;
    let ingest_s = started.elapsed().as_secs_f64();
    let load_peak = server.pid().map_or(f64::NAN, |pid| memory_mib(pid, "VmHWM:"));
    eprintln!("[{conversations}] ingested in {ingest_s:.1}s: {:.0} events/s", total as f64 / ingest_s);

    // Both engines must give the same answers before their speed means anything: checked on the
    // generated data alone, before probes and background load add to the served store.
    eprintln!("[{conversations}] loading raw Oxigraph and comparing answers");
    let raw = raw_oxigraph(report.nquads_file.as_ref().expect("generated with N-Quads"), &work.join("raw-oxigraph"))?;
    for q in QUESTIONS {
        let text = parameterise(&std::fs::read_to_string(repo.join("queries").join(q.file))?);
        let ours_rows = ask(&server, q, &text, true)?;
        if let Some(raw_file) = q.raw {
            let raw_text = parameterise(&std::fs::read_to_string(repo.join("queries").join(raw_file))?);
            let raw_rows = raw_query(&raw, &raw_text)?;
            anyhow::ensure!(!ours_rows.is_empty(), "{}: no rows", q.name);
            anyhow::ensure!(
                ours_rows == raw_rows,
                "{}: the answers differ\nserved: {ours_rows:?}\nraw Oxigraph: {raw_rows:?}",
                q.name
            );
        }
    }

    eprintln!("[{conversations}] freshness probes");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "0")
        .create()?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let template = events.iter().find(|e| e.kind == coalition_events::Kind::Activity).expect("activities").clone();
    let (fresh, mut load_events) =
        with_load(&server, &broker.bootstrap, args.load_rate, &template, || -> Result<Vec<f64>> {
            let mut fresh = Vec::new();
            // Per probe, how long the broker took to acknowledge it: its share of the delay.
            let mut acks = Vec::new();
            for i in 0..args.probes {
                let id = format!("probe-{i:05}");
                let probe = template.copy_as(
                    coalition_events::EntityId(id.clone()),
                    coalition_events::EventId(format!("probe-event-{i}")),
                );
                let bytes = probe.to_bytes();
                let t = Instant::now();
                let delivery = runtime.block_on(
                    producer
                        .send(FutureRecord::to(probe.kind.topic()).key(&id).payload(&bytes), Duration::from_secs(30)),
                );
                let delivery = delivery.map_err(|(e, _)| anyhow::anyhow!("{e}"))?;
                let acked = t.elapsed().as_secs_f64() * 1000.0;
                let token = format!("{}@{}:{}", probe.kind.topic(), delivery.partition, delivery.offset);
                // The consistency wait is bounded (5 s); when ingest falls behind the load, ask again
                // until the probe is visible, so the measurement is the real delay, however long.
                loop {
                    let (status, v) = server.graphql_with_headers(
                        &[("coalition-consistency", &token)],
                        &format!(r#"{{ activity(id: "{id}") {{ id }} }}"#),
                        serde_json::json!({}),
                    )?;
                    if status == 200 && v["data"]["activity"]["id"] == id.as_str() {
                        break;
                    }
                    anyhow::ensure!(v.to_string().contains("TIMEOUT"), "probe {id} not visible: {v}");
                    if t.elapsed() >= PROBE_PATIENCE {
                        break;
                    }
                }
                fresh.push(t.elapsed().as_secs_f64() * 1000.0);
                acks.push(acked);
                if t.elapsed() >= PROBE_PATIENCE {
                    // Ingest is behind the load and falling further behind: later probes would only
                    // wait longer. The last delay is a lower bound; the run records that it stopped.
                    eprintln!(
                    "[{conversations}] probe {i} still not visible after {PROBE_PATIENCE:?}: ingest is behind the load"
                );
                    break;
                }
            }
            let mut slowest: Vec<(f64, f64)> = fresh.iter().copied().zip(acks).collect();
            slowest.sort_by(|a, b| b.0.total_cmp(&a.0));
            let slowest: Vec<String> =
                slowest.iter().take(5).map(|(ms, acked)| format!("{ms:.0} (acked after {acked:.0})")).collect();
            eprintln!("[{conversations}] slowest probes, ms: {}", slowest.join(", "));
            fresh.sort_by(|a, b| a.total_cmp(b));
            Ok(fresh)
        })?;

    eprintln!("[{conversations}] queries ({} clients, background load {} events/s)", args.clients, args.load_rate);
    let mut queries = Vec::new();
    for q in QUESTIONS {
        let text = parameterise(&std::fs::read_to_string(repo.join("queries").join(q.file))?);
        let (r50, r99) = match q.raw {
            Some(raw_file) => {
                let raw_text = parameterise(&std::fs::read_to_string(repo.join("queries").join(raw_file))?);
                let (clients, iterations) =
                    (args.raw_clients.unwrap_or(args.clients), args.raw_iterations.unwrap_or(args.iterations));
                let raw_latencies = concurrent(clients, iterations, || raw_query(&raw, &raw_text).map(|_| ()))?;
                (percentile(&raw_latencies, 0.5), percentile(&raw_latencies, 0.99))
            }
            None => (f64::NAN, f64::NAN),
        };
        // Refusals (e.g. 503 when the SPARQL queue is full) are counted, not fatal: they are part
        // of what 16 clients get. First as served (the response cache on), then evaluated afresh.
        let mut measure = |fresh: bool| -> Result<Phase> {
            let before = cache_outcomes(&server)?;
            let route = if q.is_graphql() { "/graphql" } else { "/sparql" };
            let server_before = server_seconds(&server, route)?;
            let min_phase = Duration::from_millis(args.min_phase_ms);
            let ((latencies, errors), sent) = with_load(&server, &broker.bootstrap, args.load_rate, &template, || {
                Ok(concurrent_counting(
                    args.clients,
                    args.iterations,
                    min_phase,
                    || send(&server, q, &text, fresh),
                    |answer| check(q, &answer),
                ))
            })?;
            let after = cache_outcomes(&server)?;
            let server_p99 = server_p99_ms(&server_before, &server_seconds(&server, route)?);
            load_events += sent;
            if let Some(e) = errors.first() {
                eprintln!(
                    "[{conversations}] {}{}: {} of {} requests failed, first: {e}",
                    q.name,
                    if fresh { " (no-cache)" } else { "" },
                    errors.len(),
                    errors.len() + latencies.len()
                );
            }
            let (served, evaluated) = (after[0] - before[0], after[1] - before[1]);
            let ms: Vec<f64> = latencies.iter().map(|(ms, _)| *ms).collect();
            let p99 = percentile(&ms, 0.99);
            Ok(Phase {
                p50: percentile(&ms, 0.5),
                p99,
                requests: latencies.len(),
                errors: errors.len(),
                hit_ratio: served / (served + evaluated).max(1.0),
                sources: Sources::of(&latencies, p99),
                server_p99,
            })
        };
        let (cached, uncached) = (measure(false)?, measure(true)?);
        queries.push(QueryResult {
            name: q.name.to_owned(),
            p50_ms: cached.p50,
            p99_ms: cached.p99,
            raw_oxigraph_p50_ms: r50,
            raw_oxigraph_p99_ms: r99,
            speedup: r50 / cached.p50,
            errors: cached.errors,
            requests: cached.requests,
            cache_hit_ratio: cached.hit_ratio,
            uncached_p50_ms: uncached.p50,
            uncached_p99_ms: uncached.p99,
            uncached_speedup: r50 / uncached.p50,
            uncached_errors: uncached.errors,
            sources: cached.sources,
            server_p99_le_ms: cached.server_p99,
        });
    }
    let rss = server.pid().map(rss_mib).unwrap_or(f64::NAN);
    // Raw Oxigraph and the N-Quads it was loaded from have served their comparison.
    drop(raw);
    std::fs::remove_dir_all(work.join("raw-oxigraph"))?;
    if let Some(nquads) = &report.nquads_file {
        std::fs::remove_file(nquads)?;
    }

    // Every probe sent (the probes stop early when ingest falls behind the load).
    let expected = total + fresh.len() as u64 + load_events;
    let (rebuild_s, rebuild_peak) = if args.preload {
        // The initial load was the rebuild: a server starting empty with the whole log behind it.
        (ingest_s, load_peak)
    } else {
        rebuild(args, conversations, &work, broker, server, expected)?
    };
    Ok(Run {
        conversations,
        events: events.len(),
        preloaded: args.preload,
        ingest_events_per_s: total as f64 / ingest_s,
        freshness_p50_ms: percentile(&fresh, 0.5),
        freshness_p99_ms: percentile(&fresh, 0.99),
        freshness_probes: fresh.len(),
        freshness_load_events_per_s: args.load_rate,
        rebuild_s,
        rebuild_peak_rss_mib: rebuild_peak,
        rss_mib: rss,
        queries,
    })
}

/// Rebuilds a fresh replica from the whole log once the live server has applied `expected` events,
/// and checks that its digests equal the live server's. Returns the rebuild's seconds and the
/// replica's peak resident memory.
fn rebuild(
    args: &HotPathArgs,
    conversations: usize,
    work: &Path,
    broker: Broker,
    server: Server,
    expected: u64,
) -> Result<(f64, f64)> {
    eprintln!("[{conversations}] rebuild (a fresh replica materializing the whole log)");
    // Where the live server's sinks end once it has applied every event sent: the replica is
    // rebuilt when both of its sinks are there too.
    let target = wait_for("the live server to apply the log", PHASE_PATIENCE, || {
        let (applied, sinks) = sinks(&server).ok()?;
        (applied >= expected && sinks.0 == sinks.1).then_some(sinks)
    })?;
    let (server, live_digest) = if args.free_disk {
        drop(server);
        let live = crate::procs::digest(&work.join("data"))?;
        std::fs::remove_dir_all(work.join("data"))?;
        (None, Some(live))
    } else {
        (Some(server), None)
    };
    let started = Instant::now();
    let replica = Server::start_serving(
        &work.join("replica"),
        &["--kafka-brokers", &broker.bootstrap, "--consumer-group", "bench-replica", "--no-seed"],
    )?;
    wait_for("the replica to apply the log", PHASE_PATIENCE, || {
        sinks(&replica).ok().filter(|(_, s)| *s == target).map(drop)
    })?;
    let rebuild_s = started.elapsed().as_secs_f64();
    let rebuild_peak = replica.pid().map_or(f64::NAN, |pid| memory_mib(pid, "VmHWM:"));
    drop(replica);
    drop(server);
    drop(broker);
    // The rebuilt replica (bulk-loaded, then streamed) must hold what the live server built event
    // by event.
    let live = match live_digest {
        Some(live) => live,
        None => crate::procs::digest(&work.join("data"))?,
    };
    let rebuilt = crate::procs::digest(&work.join("replica"))?;
    anyhow::ensure!(live == rebuilt, "the rebuilt replica differs from the live server: {live} vs {rebuilt}");
    eprintln!("[{conversations}] rebuilt replica's digests equal the live server's");
    Ok((rebuild_s, rebuild_peak))
}

pub fn run(args: HotPathArgs) -> Result<()> {
    let repo = coalition_testkit::repo_root();
    let mut report = Report {
        machine: format!("{} cores", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)),
        runs: Vec::new(),
    };
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    for &c in &args.conversations {
        report.runs.push(one_size(&args, c, &repo)?);
        // Written after every size, so a long run keeps what it has measured.
        std::fs::write(&args.out, serde_json::to_string_pretty(&report)?)?;
        print_run(report.runs.last().expect("just pushed"));
    }
    eprintln!("wrote {}", args.out.display());
    Ok(())
}

fn print_run(r: &Run) {
    println!(
        "{:>9} {:>8} {:>10} {:>9} {:>9} {:>8} {:>7} {:>12}",
        "convs", "events", "ingest/s", "fresh50", "fresh99", "rebuild", "rss MiB", "rebuild MiB"
    );
    println!(
        "{:>9} {:>8} {:>10.0} {:>9.1} {:>9.1} {:>8.1} {:>7.0} {:>12.0}   (freshness: {} probes under {} events/s{})",
        r.conversations,
        r.events,
        r.ingest_events_per_s,
        r.freshness_p50_ms,
        r.freshness_p99_ms,
        r.rebuild_s,
        r.rss_mib,
        r.rebuild_peak_rss_mib,
        r.freshness_probes,
        r.freshness_load_events_per_s,
        if r.preloaded { "; ingest and rebuild: the initial load of the preloaded log" } else { "" }
    );
    println!(
        "  {:<12} {:>9} {:>9} {:>11} {:>11} {:>9} {:>7} {:>6} {:>11} {:>11} {:>9} {:>7}",
        "query",
        "p50 ms",
        "p99 ms",
        "raw p50",
        "raw p99",
        "speedup",
        "errors",
        "cached",
        "no-cache 50",
        "no-cache 99",
        "speedup",
        "errors"
    );
    for q in &r.queries {
        println!(
            "  {:<12} {:>9.1} {:>9.1} {:>11.1} {:>11.1} {:>8.1}x {:>7} {:>5.0}% {:>11.1} {:>11.1} {:>8.1}x {:>7}",
            q.name,
            q.p50_ms,
            q.p99_ms,
            q.raw_oxigraph_p50_ms,
            q.raw_oxigraph_p99_ms,
            q.speedup,
            q.errors,
            q.cache_hit_ratio * 100.0,
            q.uncached_p50_ms,
            q.uncached_p99_ms,
            q.uncached_speedup,
            q.uncached_errors
        );
    }
    println!("  served requests by where the answer came from: count / p99 ms / in the slowest 1 %");
    println!(
        "  {:<12} {:>22} {:>20} {:>22} {:>22} {:>14}",
        "query", "kept", "state before", "waited", "evaluated", "server p99 ≤"
    );
    for q in &r.queries {
        let share = |s: &SourceShare| format!("{} / {:.1} / {}", s.requests, s.p99_ms, s.in_slowest_1pct);
        let s = &q.sources;
        println!(
            "  {:<12} {:>22} {:>20} {:>22} {:>22} {:>11.1} ms",
            q.name,
            share(&s.kept),
            share(&s.before),
            share(&s.waited),
            share(&s.evaluated),
            q.server_p99_le_ms
        );
    }
}
