//! The hot-path benchmark at CI size (10k conversations) as a smoke test: it generates, ingests
//! through a real broker into the real binary, checks that every SPARQL answer served from the
//! projections equals the same question computed from the facts on raw Oxigraph, and writes its
//! report. No timing is asserted here; `docs/performance.md` holds the measured runs.

use anyhow::{Context, Result};
use coalition_testkit::bench_bin;
use serde_json::Value;
use std::process::Command;

/// Runs the benchmark at 10k with `extra` arguments; returns its report once it has succeeded.
fn bench_at_ci_size(extra: &[&str]) -> Result<Value> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("hot-path.json");
    let run = Command::new(bench_bin())
        .args(["hot-path", "--conversations", "10000", "--clients", "2", "--iterations", "2"])
        .args(["--probes", "10", "--load-rate", "100", "--min-phase-ms", "200"])
        .args(extra)
        .arg("--out")
        .arg(&out)
        .arg("--work-dir")
        .arg(dir.path().join("work"))
        .env("COALITION_BIN", coalition_testkit::coalition_bin())
        .output()
        .with_context(|| format!("running {}", bench_bin().display()))?;
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    let context = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(run.status.success(), "bench failed (answers differ, or a step broke): {context}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&out).context(context.clone())?)?;
    // What `--free-disk` and the end of the comparison remove is gone.
    let work = dir.path().join("work").join("c10000");
    assert!(!work.join("raw-oxigraph").exists(), "raw Oxigraph's store is left behind");
    assert!(!work.join("data-10000.nq").exists(), "the N-Quads are left behind");
    assert_eq!(work.join("data").exists(), !extra.contains(&"--free-disk"), "live store: {extra:?}");
    Ok(report)
}

/// The measured fields are there and positive, every hot-path question was asked, and the SPARQL
/// ones were also asked of raw Oxigraph.
fn assert_complete(report: &Value) {
    let run = &report["runs"][0];
    assert_eq!(run["conversations"], 10000, "{report:#}");
    assert!(run["events"].as_u64() > Some(20_000), "{report:#}");
    for field in ["ingest_events_per_s", "freshness_p50_ms", "freshness_p99_ms", "rebuild_s", "rss_mib"] {
        assert!(run[field].as_f64().is_some_and(|v| v > 0.0), "{field}: {report:#}");
    }
    let queries = run["queries"].as_array().expect("queries");
    let names: Vec<&str> = queries.iter().filter_map(|q| q["name"].as_str()).collect();
    for name in ["H1", "H2", "H3", "H4", "H1 GraphQL", "H5 GraphQL"] {
        assert!(names.contains(&name), "{name} missing: {names:?}");
    }
    // Each question was also asked with the response cache bypassed.
    for q in queries {
        assert!(q["uncached_p50_ms"].as_f64().is_some_and(|v| v > 0.0), "{q}");
        assert!(q["cache_hit_ratio"].as_f64().is_some_and(|v| (0.0..=1.0).contains(&v)), "{q}");
        assert!(q["requests"].as_u64().is_some_and(|n| n >= 4), "at least clients × iterations: {q}");
    }
    for q in queries.iter().filter(|q| ["H1", "H2", "H3", "H4"].contains(&q["name"].as_str().unwrap_or(""))) {
        assert!(q["raw_oxigraph_p50_ms"].as_f64().is_some_and(|v| v > 0.0), "{q}");
        assert!(q["speedup"].as_f64().is_some_and(|v| v > 0.0), "{q}");
    }
}

#[test]
fn hot_path_benchmark_runs_at_ci_size() -> Result<()> {
    let report = bench_at_ci_size(&["--free-disk"])?;
    assert_complete(&report);
    assert_eq!(report["runs"][0]["preloaded"], false, "{report:#}");
    Ok(())
}

/// The mode for sizes whose streaming ingest does not fit a session: the log is produced first,
/// and the server's initial load is both the ingest and the rebuild.
#[test]
fn hot_path_benchmark_preloads_the_log() -> Result<()> {
    let report = bench_at_ci_size(&["--preload"])?;
    assert_complete(&report);
    let run = &report["runs"][0];
    assert_eq!(run["preloaded"], true, "{report:#}");
    let ingest_s = run["events"].as_f64().expect("events") / run["ingest_events_per_s"].as_f64().expect("ingest");
    let rebuild_s = run["rebuild_s"].as_f64().expect("rebuild_s");
    assert!((ingest_s - rebuild_s).abs() < 1e-6 * rebuild_s.max(1.0), "the initial load is the rebuild: {report:#}");
    Ok(())
}
