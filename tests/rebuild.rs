//! Rebuilding a running server's stores from the log: the rebuilt graph and index (bulk-loaded,
//! then streamed) swap in while readers keep reading, answers stay the same, the materializer goes
//! on over the new stores, and the new generation is what the next start opens.

use anyhow::Result;
use coalition_testkit::{create_token, wait_for, Broker, Server};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

const DASHBOARD: &str = "{ recommendationDashboard { id dashboard { caseStudies activities partners outcomes } } }";
const COUNT: &str = "SELECT (COUNT(*) AS ?n) WHERE { GRAPH ?g { ?s ?p ?o } }";

fn quads(server: &Server) -> Result<String> {
    let rows = server.select(COUNT)?;
    Ok(rows[0]["n"]["value"].as_str().unwrap_or_default().to_owned())
}

#[test]
fn an_online_rebuild_swaps_in_without_stopping_reads() -> Result<()> {
    let broker = Broker::start()?;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data)?;
    let admin = create_token(&data, "admin", None, &[])?;
    let partner = create_token(&data, "partner", Some("nachw"), &[])?;
    // The rebuild's new generation is empty and the log is not: it is bulk-loaded (an initial
    // load) before it streams, whatever the log's size. The readers below are two anonymous loops
    // asking as fast as they are answered; the request limit is not what this test is about.
    let args = [
        "--kafka-brokers",
        &broker.bootstrap,
        "--consumer-group",
        "online",
        "--seed",
        "--initial-load-min",
        "1",
        "--graphql-rate-limit",
        "0",
    ];
    let mut server = Server::start(&data, &args)?;
    wait_for("the built-in dataset", Duration::from_secs(60), || {
        quads(&server).ok().filter(|n| n.parse::<u64>().unwrap_or(0) > 2000)
    })?;
    let dashboard_before = server.graphql_ok(DASHBOARD, json!({}))?;
    let quads_before = quads(&server)?;
    let loads_before = server.log().matches("initial load done").count();

    // Only an admin may rebuild.
    let (status, v) = server.graphql_with_token(&partner, "mutation { rebuild { state } }", json!({}))?;
    assert_eq!(status, 403, "{v}");
    assert_eq!(v["errors"][0]["extensions"]["code"], "FORBIDDEN");

    let stop = AtomicBool::new(false);
    let (served, failed) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| -> Result<()> {
        for reader in 0..2 {
            let (server, stop, served, failed, failures) = (&server, &stop, &served, &failed, &failures);
            let expected = dashboard_before.clone();
            scope.spawn(move || {
                // `no-cache`: every read is evaluated over whichever stores are in place, not
                // answered from a kept answer.
                let fresh = Server::cache_headers(true);
                while !stop.load(Ordering::Relaxed) {
                    let answer = if reader == 0 {
                        server.graphql_with_headers(fresh, DASHBOARD, json!({})).and_then(|(status, v)| {
                            anyhow::ensure!(status == 200 && v.get("errors").is_none(), "HTTP {status}: {v}");
                            anyhow::ensure!(v["data"] == expected, "dashboard changed: {v}");
                            Ok(())
                        })
                    } else {
                        server.sparql_get_with_headers(fresh, COUNT, "application/sparql-results+json").and_then(
                            |(status, _, body)| {
                                anyhow::ensure!(status == 200, "SPARQL {status}: {body}");
                                Ok(())
                            },
                        )
                    };
                    match answer {
                        Ok(()) => served.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            failures.lock().unwrap().push(e.to_string());
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            });
        }
        let result = (|| -> Result<()> {
            let started =
                server.graphql_ok_with_token(&admin, "mutation { rebuild { state generation } }", json!({}))?;
            anyhow::ensure!(started["rebuild"]["state"] == "replaying", "{started}");
            let generation = started["rebuild"]["generation"].as_str().unwrap().to_owned();
            let again = server.graphql_with_token(&admin, "mutation { rebuild { state } }", json!({}))?;
            anyhow::ensure!(
                again.1["errors"][0]["message"].as_str().unwrap_or_default().contains("already running"),
                "{again:?}"
            );
            let done = wait_for("the rebuild to swap in", Duration::from_secs(120), || {
                let v = server
                    .graphql_ok_with_token(&admin, "{ rebuildStatus { state records message generation } }", json!({}))
                    .ok()?;
                let state = v["rebuildStatus"]["state"].as_str()?.to_owned();
                (state == "done" || state == "failed").then_some(v)
            })?;
            anyhow::ensure!(done["rebuildStatus"]["state"] == "done", "{done}");
            anyhow::ensure!(done["rebuildStatus"]["generation"] == generation.as_str(), "{done}");
            anyhow::ensure!(done["rebuildStatus"]["records"].as_i64().unwrap_or(0) > 150, "{done}");
            anyhow::ensure!(std::fs::read_to_string(data.join("CURRENT"))?.trim() == generation);
            Ok(())
        })();
        // The readers stop whatever happened.
        stop.store(true, Ordering::Relaxed);
        result
    })?;
    let failures = failures.into_inner().unwrap();
    assert!(failures.is_empty(), "{} read(s) failed during the rebuild, first: {:?}", failures.len(), failures.first());
    assert!(served.load(Ordering::Relaxed) > 10, "readers kept reading");
    assert_eq!(server.log().matches("initial load done").count(), loads_before + 1, "the rebuild bulk-loaded the log");

    // Same answers from the rebuilt stores.
    assert_eq!(server.graphql_ok(DASHBOARD, json!({}))?, dashboard_before);
    assert_eq!(quads(&server)?, quads_before);

    // The materializer goes on over the new stores: a new submission becomes visible.
    let receipt = server.graphql_ok_with_token(
        &partner,
        r#"mutation($input: ActivityInput!) { submitActivity(partnerId: "nachw", input: $input) { consistencyToken } }"#,
        json!({ "input": { "id": "after-rebuild", "title": "After the rebuild", "activityType": "workshop",
                           "date": "2025-07-01", "ledBy": ["nachw"] } }),
    )?;
    server.await_applied(receipt["submitActivity"]["consistencyToken"].as_str().unwrap())?;
    let after = server.graphql_ok(r#"{ activity(id: "after-rebuild") { title } }"#, json!({}))?;
    assert_eq!(after["activity"]["title"], "After the rebuild");

    // The next start opens the new generation and removes the stores it replaced.
    let quads_now = quads(&server)?;
    server.stop()?;
    let server = Server::start(&data, &["--kafka-brokers", &broker.bootstrap, "--consumer-group", "online"])?;
    assert_eq!(quads(&server)?, quads_now);
    assert!(!data.join("graph").exists() && !data.join("index").exists(), "the replaced stores were removed");
    let v: Value = server.graphql_ok(r#"{ activity(id: "after-rebuild") { title } }"#, json!({}))?;
    assert_eq!(v["activity"]["title"], "After the rebuild");
    Ok(())
}
