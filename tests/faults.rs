//! The fault-injection harness at CI size: `coalition-bench faults` against a real Tansu broker on
//! S3 storage (moto) and the real `coalition` binary, with SIGKILLs of the materializer and a
//! broker restart. Asserts the targets of `docs/faults.md` from the JSON it writes.

use anyhow::{Context, Result};
use coalition_testkit::bench_bin;
use serde_json::Value;
use std::process::Command;

#[test]
fn faults_lose_and_duplicate_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("faults.json");
    let run = Command::new(bench_bin())
        .args(["faults", "--kills", "3", "--events", "1500", "--seed", "7", "--out"])
        .arg(&out)
        .arg("--work-dir")
        .arg(dir.path().join("work"))
        .env("COALITION_BIN", coalition_testkit::coalition_bin())
        .output()
        .with_context(|| format!("running {} (built by cargo test --workspace)", bench_bin().display()))?;
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(&out).with_context(|| format!("no report; stdout:\n{stdout}\nstderr:\n{stderr}"))?,
    )?;
    let context = format!("report: {report:#}\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(run.status.success(), "bench failed: {context}");
    assert_eq!(report["events"], 1500, "{context}");
    assert_eq!(report["kills"], 3, "{context}");
    assert!(report["broker_restarts"].as_u64() >= Some(1), "{context}");
    assert_eq!(report["lost"], 0, "{context}");
    assert_eq!(report["duplicated"], 0, "{context}");
    assert!(report["expected_dead_lettered"].as_u64() > Some(0), "{context}");
    assert_eq!(report["dead_lettered"], report["expected_dead_lettered"], "{context}");
    assert!(report["dead_lettered_raw"].as_u64() >= report["dead_lettered"].as_u64(), "{context}");
    assert_eq!(report["digest_match"], true, "{context}");
    assert_eq!(report["index_matches_graph"], true, "{context}");
    assert!(report["elapsed_s"].as_f64().is_some(), "{context}");
    Ok(())
}
