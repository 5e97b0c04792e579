//! Stream correctness against a real broker process: updates by version in any order,
//! retractions, dead-letter tooling, bulk import, and a replica rebuilt from the log with the
//! same digest as the live store.

use anyhow::Result;
use coalition_testkit::{coalition_bin, external_consume, external_produce, wait_for, Broker, Server};
use serde_json::{json, Value};
use std::process::Command;
use std::time::Duration;

fn envelope(id: &str, ty: &str, subject: &str, version: Option<i64>, data: Value) -> String {
    let mut e = json!({
        "specversion": "1.0", "id": id, "source": "/partners/nachw", "type": ty, "subject": subject,
        "time": "2025-06-01T10:00:00Z", "datacontenttype": "application/json", "partnerid": "nachw", "data": data
    });
    if let Some(v) = version {
        e["entityversion"] = json!(v);
    }
    e.to_string()
}

fn activity(id: &str, title: &str) -> Value {
    json!({ "id": id, "title": title, "activityType": "workshop", "date": "2025-06-01",
            "description": format!("{title}: okapi outreach"), "ledBy": ["nachw"] })
}

fn title(server: &Server, id: &str) -> Result<Value> {
    let d = server.graphql_ok(&format!(r#"{{ activity(id: "{id}") {{ title }} }}"#), json!({}))?;
    Ok(d["activity"]["title"].clone())
}

fn coalition(args: &[&str]) -> Result<String> {
    let out = Command::new(coalition_bin()).args(args).output()?;
    anyhow::ensure!(out.status.success(), "coalition {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8(out.stdout)?)
}

#[test]
fn versions_retractions_dead_letters_import_and_rebuild() -> Result<()> {
    let broker = Broker::start()?;
    let dir = tempfile::tempdir()?;
    let live_dir = dir.path().join("live");
    let mut live =
        Server::start(&live_dir, &["--kafka-brokers", &broker.bootstrap, "--seed", "--consumer-group", "live"])?;
    let topic = "coalition.activities.v1";
    let submitted = "org.coalition.activity.submitted.v1";

    let mut tokens = Vec::new();
    // Version 2 arrives before version 1: version 2 stays.
    tokens.push(external_produce(
        &broker.bootstrap,
        topic,
        "okapi-day",
        &envelope("okapi-v2", submitted, "okapi-day", Some(2), activity("okapi-day", "Okapi day v2")),
    )?);
    tokens.push(external_produce(
        &broker.bootstrap,
        topic,
        "okapi-day",
        &envelope("okapi-v1", submitted, "okapi-day", Some(1), activity("okapi-day", "Okapi day v1")),
    )?);
    // Another entity, then retracted.
    tokens.push(external_produce(
        &broker.bootstrap,
        topic,
        "okapi-night",
        &envelope("night-v1", submitted, "okapi-night", Some(1), activity("okapi-night", "Okapi night")),
    )?);
    tokens.push(external_produce(
        &broker.bootstrap,
        topic,
        "okapi-night",
        &envelope(
            "night-retract",
            "org.coalition.activity.retracted.v1",
            "okapi-night",
            Some(2),
            json!({ "id": "okapi-night", "reason": "duplicate entry" }),
        ),
    )?);
    // A poison record.
    tokens.push(external_produce(&broker.bootstrap, topic, "poison", "{\"specversion\": \"1.0\"}")?);
    // A marker to wait for.
    let marker = external_produce(
        &broker.bootstrap,
        topic,
        "okapi-marker",
        &envelope("marker", submitted, "okapi-marker", None, activity("okapi-marker", "Marker")),
    )?;
    for t in tokens.iter().chain([&marker]) {
        live.await_applied(t)?;
    }

    assert_eq!(title(&live, "okapi-day")?, "Okapi day v2", "a stale version never overwrites a newer one");
    assert!(title(&live, "okapi-night")?.is_null(), "a retracted entity is gone from the graph");
    let d = live.graphql_ok(r#"{ search(query: "okapi") { hits { entityId } } }"#, json!({}))?;
    let hits: Vec<&str> =
        d["search"]["hits"].as_array().unwrap().iter().filter_map(|h| h["entityId"].as_str()).collect();
    assert!(hits.contains(&"okapi-day") && !hits.contains(&"okapi-night"), "the index follows the graph: {hits:?}");
    let rows = live.select(
        r#"PREFIX coal: <https://w3id.org/coalition/ns#>
           SELECT ?id ?type WHERE { GRAPH <https://w3id.org/coalition/graph/provenance> {
             ?e coal:describes <https://w3id.org/coalition/id/activity/okapi-night> ; coal:eventId ?id ; coal:eventType ?type } }"#,
    )?;
    assert_eq!(rows.len(), 2, "the retraction stays in provenance: {rows:?}");
    let (_, metrics) = live.get("/metrics")?;
    assert!(metrics.contains("coalition_events_stale_total 1"), "{metrics}");

    // Dead-letter tooling.
    let listed = coalition(&["dlq", "list", "--kafka-brokers", &broker.bootstrap, "--json"])?;
    let letters: Vec<Value> = listed.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    assert_eq!(letters.len(), 1, "{listed}");
    assert_eq!(letters[0]["reason"], "not_cloudevent");
    assert_eq!(letters[0]["source_topic"], topic);
    let at = format!("{}/{}", letters[0]["partition"], letters[0]["offset"]);
    let replayed = coalition(&["dlq", "replay", "--kafka-brokers", &broker.bootstrap, &at])?;
    assert!(replayed.contains("1 record(s) replayed"), "{replayed}");
    let dead = external_consume(&broker.bootstrap, "coalition.deadletter.v1", 2, Duration::from_secs(30))?;
    assert_eq!(dead.len(), 2, "the replayed record is still invalid and is dead-lettered again");

    // Bulk import through the same path as partners' events.
    let file = dir.path().join("import.jsonl");
    std::fs::write(
        &file,
        format!(
            "{}\n{}\n",
            envelope("imp-1", submitted, "imported-one", None, activity("imported-one", "Imported one")),
            envelope("imp-2", submitted, "imported-two", None, activity("imported-two", "Imported two"))
        ),
    )?;
    let out = coalition(&["import", file.to_str().unwrap(), "--kafka-brokers", &broker.bootstrap])?;
    assert!(out.contains("published 2 events"), "{out}");
    wait_for("imported events", Duration::from_secs(60), || {
        title(&live, "imported-two").ok().filter(|t| !t.is_null())
    })?;

    // A replica materializing the same log from scratch ends with the same digests.
    live.stop()?;
    let live_digest = coalition(&["digest", "--data-dir", live_dir.to_str().unwrap(), "--json"])?;
    let replica_dir = dir.path().join("replica");
    let mut replica =
        Server::start(&replica_dir, &["--kafka-brokers", &broker.bootstrap, "--consumer-group", "replica"])?;
    wait_for("the replica to apply the whole log", Duration::from_secs(60), || {
        title(&replica, "imported-two").ok().filter(|t| !t.is_null())
    })?;
    replica.stop()?;
    let replica_digest = coalition(&["digest", "--data-dir", replica_dir.to_str().unwrap(), "--json"])?;
    let (a, b): (Value, Value) = (serde_json::from_str(&live_digest)?, serde_json::from_str(&replica_digest)?);
    assert!(a["quads"].as_u64().unwrap() > 2000);
    assert_eq!(a, b, "live and rebuilt replica digests differ");

    // `coalition rebuild` replays the log beside the live stores and swaps them in: same digest.
    let rebuilt =
        coalition(&["rebuild", "--data-dir", live_dir.to_str().unwrap(), "--kafka-brokers", &broker.bootstrap])?;
    assert!(rebuilt.contains("swapped the rebuilt stores in"), "{rebuilt}");
    let after = coalition(&["digest", "--data-dir", live_dir.to_str().unwrap(), "--json"])?;
    assert_eq!(serde_json::from_str::<Value>(&after)?, a, "rebuild changed the digest");
    let live = Server::start(&live_dir, &["--kafka-brokers", &broker.bootstrap, "--consumer-group", "live"])?;
    assert_eq!(title(&live, "okapi-day")?, "Okapi day v2");
    Ok(())
}

#[test]
fn partner_inboxes_accept_only_their_own_partner() -> Result<()> {
    let broker = Broker::start()?;
    broker.create_topic("coalition.inbox.nachw.v1", 1)?;
    let dir = tempfile::tempdir()?;
    let server =
        Server::start(&dir.path().join("data"), &["--kafka-brokers", &broker.bootstrap, "--consumer-group", "inbox"])?;
    let inbox = "coalition.inbox.nachw.v1";
    let submitted = "org.coalition.activity.submitted.v1";
    let mut forged = serde_json::from_str::<Value>(&envelope(
        "forged",
        submitted,
        "forged-activity",
        None,
        activity("forged-activity", "Forged"),
    ))?;
    forged["partnerid"] = json!("sanofi");
    let forged_at = external_produce(&broker.bootstrap, inbox, "forged-activity", &forged.to_string())?;
    let own_at = external_produce(
        &broker.bootstrap,
        inbox,
        "own-activity",
        &envelope("own", submitted, "own-activity", None, activity("own-activity", "Own inbox activity")),
    )?;
    for t in [&forged_at, &own_at] {
        server.await_applied(t)?;
    }
    assert!(title(&server, "forged-activity")?.is_null(), "a forged partner claim is not applied");
    let dead = external_consume(&broker.bootstrap, "coalition.deadletter.v1", 1, Duration::from_secs(30))?;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].headers["coalition.dlq.reason"], "partner_mismatch");
    assert_eq!(dead[0].headers["coalition.dlq.source.topic"], inbox);
    Ok(())
}
