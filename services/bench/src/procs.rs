//! The processes a fault run drives: moto (S3), the Tansu broker on S3 storage, and the real
//! `coalition` binary. Each is a [`Proc`] that is SIGKILLed when dropped, so an aborted run leaves
//! nothing behind; deliberate stops are explicit (`terminate` waits for exit, `kill9` does not ask).

use anyhow::{bail, Context, Result};
use coalition_testkit::{free_port, wait_for};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process, killed on drop.
pub struct Proc {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    fn spawn(mut cmd: Command, log: PathBuf) -> Result<Proc> {
        let file = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        cmd.stdout(file.try_clone()?).stderr(file).stdin(Stdio::null());
        let child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
        Ok(Proc { child: Some(child), log })
    }

    /// Fails if the process has exited.
    pub fn check_alive(&mut self, what: &str) -> Result<()> {
        if let Some(child) = self.child.as_mut() {
            if let Some(status) = child.try_wait()? {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                let tail: String =
                    log.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
                bail!("{what} exited with {status}\n--- {} ---\n{tail}", self.log.display());
            }
        }
        Ok(())
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then wait up to `grace` for the exit (SIGKILL after that).
    pub fn terminate(&mut self, grace: Duration) -> Result<()> {
        if let Some(child) = self.child.take() {
            coalition_testkit::terminate(child, grace)?;
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `moto_server` (S3 in memory, for as long as it runs) with one bucket.
pub struct Moto {
    /// Held for the life of the run; moto's buckets die with it.
    _proc: Proc,
    pub endpoint: String,
}

impl Moto {
    pub fn start(work: &Path, bucket: &str) -> Result<Moto> {
        let port = free_port();
        let bin = std::env::var("COALITION_MOTO").unwrap_or_else(|_| "moto_server".to_owned());
        let mut cmd = Command::new(&bin);
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        let proc = Proc::spawn(cmd, work.join("moto.log"))
            .with_context(|| format!("{bin} not found: pip install 'moto[server]'"))?;
        let endpoint = format!("http://127.0.0.1:{port}");
        let agent = coalition_testkit::agent();
        wait_for("moto_server", Duration::from_secs(30), || agent.get(format!("{endpoint}/")).call().ok())?;
        let r = agent.put(format!("{endpoint}/{bucket}")).send_empty()?;
        if !r.status().is_success() {
            bail!("creating bucket {bucket}: HTTP {}", r.status());
        }
        Ok(Moto { _proc: proc, endpoint })
    }
}

/// The Tansu broker on `s3://BUCKET/`, restartable on the same port.
pub struct Tansu {
    proc: Option<Proc>,
    bin: PathBuf,
    pub port: u16,
    storage: String,
    env: Vec<(String, String)>,
    work: PathBuf,
    starts: usize,
}

impl Tansu {
    pub fn start(work: &Path, bucket: &str, s3_endpoint: &str) -> Result<Tansu> {
        let env = [
            ("AWS_ENDPOINT", s3_endpoint),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_DEFAULT_REGION", "us-east-1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let mut t = Tansu {
            proc: None,
            bin: coalition_testkit::tansu_bin()?,
            port: free_port(),
            storage: format!("s3://{bucket}/"),
            env,
            work: work.to_owned(),
            starts: 0,
        };
        t.launch()?;
        Ok(t)
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn launch(&mut self) -> Result<()> {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let mut cmd = Command::new(&self.bin);
        cmd.args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
            "--storage-engine",
            &self.storage,
        ]);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.starts += 1;
        let mut proc = Proc::spawn(cmd, self.work.join(format!("tansu-{}.log", self.starts)))?;
        let port = self.port;
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            proc.check_alive("tansu")?;
            if Instant::now() > deadline {
                bail!("tansu did not accept connections on {port} within 30s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.proc = Some(proc);
        Ok(())
    }

    /// SIGTERM, wait for the exit, start again on the same port and bucket.
    pub fn restart(&mut self) -> Result<()> {
        if let Some(mut p) = self.proc.take() {
            p.terminate(Duration::from_secs(30))?;
        }
        let port = self.port;
        wait_for("the old broker's port to be free", Duration::from_secs(30), || {
            std::net::TcpListener::bind(("127.0.0.1", port)).ok().map(drop)
        })?;
        self.launch()
    }

    /// Creates `topic` with the broker's own CLI (an existing topic is fine).
    pub fn create_topic(&self, topic: &str, partitions: u32) -> Result<()> {
        let out = Command::new(&self.bin)
            .args(["topic", "create", topic, "--partitions", &partitions.to_string(), "--broker"])
            .arg(format!("tcp://127.0.0.1:{}", self.port))
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() && !stderr.to_lowercase().contains("exist") {
            bail!("creating topic {topic}: {stderr}");
        }
        Ok(())
    }
}

/// The `coalition` binary: next to this one (same profile), or `$COALITION_BIN`.
pub fn coalition_bin() -> PathBuf {
    if let Ok(p) = std::env::var("COALITION_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    exe.parent().expect("target/<profile>").join("coalition")
}

/// One `coalition serve` replica: a data dir and consumer group, restartable (after SIGKILL too).
pub struct Coalition {
    proc: Option<Proc>,
    pub data_dir: PathBuf,
    group: String,
    brokers: String,
    pub base: String,
    agent: ureq::Agent,
    starts: usize,
}

impl Coalition {
    pub fn new(data_dir: PathBuf, group: &str, brokers: String) -> Coalition {
        Coalition {
            proc: None,
            data_dir,
            group: group.to_owned(),
            brokers,
            base: String::new(),
            agent: coalition_testkit::agent(),
            starts: 0,
        }
    }

    /// Starts the server and waits until it answers `/healthz` (not `/readyz`: a kill may land
    /// while it is still catching up, which is the point).
    pub fn start(&mut self) -> Result<()> {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut cmd = Command::new(coalition_bin());
        cmd.arg("serve")
            .args(["--listen", &listen, "--data-dir"])
            .arg(&self.data_dir)
            .args(["--kafka-brokers", &self.brokers, "--consumer-group", &self.group])
            .args(["--create-topics", "false", "--graphql-rate-limit", "0"])
            .env("RUST_LOG", "info");
        self.starts += 1;
        let log = self.data_dir.with_extension(format!("{}.log", self.starts));
        let mut proc = Proc::spawn(cmd, log).with_context(|| format!("starting {}", coalition_bin().display()))?;
        self.base = format!("http://{listen}");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            proc.check_alive("coalition")?;
            if matches!(self.agent.get(format!("{}/healthz", self.base)).call(), Ok(r) if r.status() == 200) {
                break;
            }
            if Instant::now() > deadline {
                bail!("coalition did not answer /healthz within 120s (log {})", proc.log.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.proc = Some(proc);
        Ok(())
    }

    pub fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill9();
        }
    }

    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut p) = self.proc.take() {
            p.terminate(Duration::from_secs(60))?;
        }
        Ok(())
    }

    pub fn check_alive(&mut self) -> Result<()> {
        match self.proc.as_mut() {
            Some(p) => p.check_alive("coalition"),
            None => bail!("coalition is not running"),
        }
    }

    pub fn readyz(&self) -> Result<Value> {
        let mut r = self.agent.get(format!("{}/readyz", self.base)).call()?;
        Ok(r.body_mut().read_json()?)
    }

    /// Records of `topic` the graph has committed (the sum of its next offsets), if the server answers.
    pub fn committed(&self, topic: &str) -> Option<i64> {
        let r = self.readyz().ok()?;
        Some(r["graph"].as_array()?.iter().filter(|o| o["topic"] == topic).filter_map(|o| o["next"].as_i64()).sum())
    }

    pub fn graphql(&self, query: &str, variables: Value) -> Result<Value> {
        let mut r = self
            .agent
            .post(format!("{}/graphql", self.base))
            .header("content-type", "application/json")
            .send_json(serde_json::json!({ "query": query, "variables": variables }))?;
        let v: Value = r.body_mut().read_json()?;
        if let Some(errors) = v.get("errors") {
            bail!("graphql errors: {errors}");
        }
        Ok(v["data"].clone())
    }

    /// SELECT bindings as JSON.
    pub fn select(&self, query: &str) -> Result<Vec<Value>> {
        let mut r = self
            .agent
            .post(format!("{}/sparql", self.base))
            .header("content-type", "application/sparql-query")
            .header("accept", "application/sparql-results+json")
            .send(query)?;
        let status = r.status();
        let body = r.body_mut().read_to_string()?;
        if status != 200 {
            bail!("SPARQL {status}: {body}");
        }
        let v: Value = serde_json::from_str(&body)?;
        Ok(v["results"]["bindings"].as_array().cloned().unwrap_or_default())
    }

    /// `coalition digest --json` of this replica's data dir (the server must be stopped).
    pub fn digest(&self) -> Result<Value> {
        digest(&self.data_dir)
    }
}

/// `coalition digest --json` of a data dir: graph and index digests.
pub fn digest(data_dir: &Path) -> Result<Value> {
    let out = Command::new(coalition_bin()).arg("digest").arg("--data-dir").arg(data_dir).arg("--json").output()?;
    if !out.status.success() {
        bail!("coalition digest failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}
