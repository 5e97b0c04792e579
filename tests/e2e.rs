//! End-to-end: the real `coalition` binary against a real Kafka-protocol broker (Tansu) running as
//! its own process, with an independent Kafka client (Python confluent-kafka) on the other side.

use anyhow::Result;
use coalition_testkit::{create_token, external_consume, external_produce, Broker, Server};
use serde_json::{json, Value};
use std::time::Duration;

const SUBMIT_ACTIVITY: &str = r#"
mutation($input: ActivityInput!) {
  submitActivity(partnerId: "nachw", input: $input) { eventId entityId topic partition offset applied }
}"#;

fn activity_input(id: &str, title: &str) -> Value {
    json!({
        "id": id,
        "title": title,
        "description": "Community health workers trained on trusted messaging about preventive care.",
        "activityType": "training",
        "date": "2025-03-14",
        "country": "US",
        "reach": 120,
        "implements": ["rec-5-accessible-communication"],
        "audienceGroups": ["ethnic-minority"]
    })
}

/// A server on external Kafka, and a partner token for `nachw` issued into its data directory.
fn external_server(broker: &Broker, dir: &std::path::Path) -> Result<(Server, String)> {
    let token = create_token(dir, "partner", Some("nachw"), &[])?;
    let server = Server::start(
        dir,
        &["--kafka-brokers", &broker.bootstrap, "--seed", "--ack-after-apply", "--partitions", "3"],
    )?;
    Ok((server, token))
}

#[test]
fn partner_mutation_goes_through_kafka_and_back_with_provenance() -> Result<()> {
    let broker = Broker::start()?;
    let dir = tempfile::tempdir()?;
    let (server, token) = external_server(&broker, &dir.path().join("data"))?;

    let data = server.graphql_ok_with_token(
        &token,
        SUBMIT_ACTIVITY,
        json!({ "input": activity_input("chw-messaging-training-2025", "Trusted messaging training for CHWs") }),
    )?;
    let receipt = &data["submitActivity"];
    assert_eq!(receipt["topic"], "coalition.activities.v1");
    assert_eq!(receipt["entityId"], "chw-messaging-training-2025");
    assert_eq!(receipt["applied"], true);
    let event_id = receipt["eventId"].as_str().unwrap().to_owned();
    let offset = receipt["offset"].as_i64().unwrap();
    let partition = receipt["partition"].as_i64().unwrap();

    // An independent client sees the event on the topic, keyed by entity id, at the receipt's position.
    let records = external_consume(&broker.bootstrap, "coalition.activities.v1", 1, Duration::from_secs(30))?;
    let record = records
        .iter()
        .find(|r| r.value.as_deref().is_some_and(|v| v.contains(&event_id)))
        .expect("the external client sees the produced event");
    assert_eq!(record.key.as_deref(), Some("chw-messaging-training-2025"));
    assert_eq!((record.partition as i64, record.offset), (partition, offset));
    let envelope: Value = serde_json::from_str(record.value.as_deref().unwrap())?;
    assert_eq!(envelope["specversion"], "1.0");
    assert_eq!(envelope["type"], "org.coalition.activity.submitted.v1");
    assert_eq!(envelope["partnerid"], "nachw");

    // GraphQL returns it with provenance and links.
    let data = server.graphql_ok(
        r#"{ activity(id: "chw-messaging-training-2025") {
              title reach ledBy { id name } recommendations { id }
              provenance { eventId partnerId topic partition offset partner { name } } } }"#,
        json!({}),
    )?;
    let a = &data["activity"];
    assert_eq!(a["title"], "Trusted messaging training for CHWs");
    assert_eq!(a["reach"], 120);
    assert_eq!(a["ledBy"][0]["id"], "nachw");
    assert_eq!(a["recommendations"][0]["id"], "rec-5-accessible-communication");
    assert_eq!(a["provenance"]["eventId"], event_id.as_str());
    assert_eq!(a["provenance"]["partnerId"], "nachw");
    assert_eq!(a["provenance"]["offset"], offset);
    assert_eq!(a["provenance"]["partition"], partition);
    assert!(a["provenance"]["partner"]["name"].as_str().unwrap().contains("Community Health Workers (NACHW)"));

    // The reverse link: the recommendation now lists the activity.
    let data = server
        .graphql_ok(r#"{ recommendation(id: "rec-5-accessible-communication") { activities { id } } }"#, json!({}))?;
    let ids: Vec<&str> =
        data["recommendation"]["activities"].as_array().unwrap().iter().filter_map(|a| a["id"].as_str()).collect();
    assert!(ids.contains(&"chw-messaging-training-2025"), "{ids:?}");

    // SPARQL returns it with its provenance.
    let rows = server.select(
        r#"PREFIX coal: <https://w3id.org/coalition/ns#>
           PREFIX dcterms: <http://purl.org/dc/terms/>
           PREFIX prov: <http://www.w3.org/ns/prov#>
           SELECT ?title ?event ?partner ?offset WHERE {
             GRAPH ?g { <https://w3id.org/coalition/id/activity/chw-messaging-training-2025> dcterms:title ?title }
             GRAPH <https://w3id.org/coalition/graph/provenance> {
               ?g prov:wasGeneratedBy ?ev . ?ev coal:eventId ?event ; prov:wasAssociatedWith ?partner ; coal:offset ?offset }
           }"#,
    )?;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["title"]["value"], "Trusted messaging training for CHWs");
    assert_eq!(rows[0]["event"]["value"], event_id.as_str());
    assert_eq!(rows[0]["partner"]["value"], "https://w3id.org/coalition/id/partner/nachw");
    assert_eq!(rows[0]["offset"]["value"], offset.to_string());
    Ok(())
}

#[test]
fn external_events_are_materialized_and_bad_ones_dead_lettered() -> Result<()> {
    let broker = Broker::start()?;
    let dir = tempfile::tempdir()?;
    let (server, _) = external_server(&broker, &dir.path().join("data"))?;

    let event = |id: &str, subject: &str, data: Value| {
        json!({
            "specversion": "1.0", "id": id, "source": "/partners/imperial-college-london",
            "type": "org.coalition.activity.submitted.v1", "subject": subject,
            "time": "2025-05-01T10:00:00Z", "datacontenttype": "application/json",
            "partnerid": "imperial-college-london", "data": data
        })
        .to_string()
    };
    let good = |id: &str, title: &str| {
        json!({ "id": id, "title": title, "activityType": "workshop", "date": "2025-05-01",
                "description": "A listening workshop on zebrafinch outreach for disabled patients", "ledBy": ["imperial-college-london"] })
    };
    let mut tokens = Vec::new();
    tokens.push(external_produce(
        &broker.bootstrap,
        "coalition.activities.v1",
        "ext-workshop-1",
        &event("ext-evt-1", "ext-workshop-1", good("ext-workshop-1", "External workshop one")),
    )?);
    // Schema violation: negative reach and no ledBy.
    let bad = json!({ "id": "ext-bad", "title": "Bad", "activityType": "workshop", "date": "2025-05-01", "reach": -5, "ledBy": [] });
    let bad_value = event("ext-evt-bad", "ext-bad", bad);
    tokens.push(external_produce(&broker.bootstrap, "coalition.activities.v1", "ext-bad", &bad_value)?);
    // Not JSON at all.
    tokens.push(external_produce(&broker.bootstrap, "coalition.activities.v1", "garbage", "this is not an event")?);
    tokens.push(external_produce(
        &broker.bootstrap,
        "coalition.activities.v1",
        "ext-workshop-2",
        &event("ext-evt-2", "ext-workshop-2", good("ext-workshop-2", "External workshop two")),
    )?);

    // The valid event after the bad ones still arrives: await the watermark past every record.
    for t in &tokens {
        server.await_applied(t)?;
    }
    let data = server.graphql_ok(r#"{ activity(id: "ext-workshop-1") { title provenance { partnerId eventId } } ext: activity(id: "ext-bad") { id } }"#, json!({}))?;
    assert_eq!(data["activity"]["title"], "External workshop one");
    assert_eq!(data["activity"]["provenance"]["eventId"], "ext-evt-1");
    assert!(data["ext"].is_null(), "the invalid event must not be in the graph");

    // Search finds the external event's text (the index commits just after the graph).
    let data = server
        .graphql_ok(r#"{ search(query: "zebrafinch") { totalCount hits { entityId kind snippet } } }"#, json!({}))?;
    assert!(data["search"]["hits"][0]["snippet"].as_str().unwrap().contains("<b>zebrafinch</b>"));

    // Both bad records are on the dead-letter topic with their reason, source position and original bytes.
    let dead = external_consume(&broker.bootstrap, "coalition.deadletter.v1", 2, Duration::from_secs(30))?;
    assert_eq!(dead.len(), 2, "{dead:?}");
    let schema = dead.iter().find(|r| r.key.as_deref() == Some("ext-bad")).expect("schema violation dead-lettered");
    assert_eq!(schema.headers["coalition.dlq.reason"], "schema_violation");
    assert!(schema.headers["coalition.dlq.message"].contains("/data/reach"), "{:?}", schema.headers);
    assert_eq!(schema.headers["coalition.dlq.source.topic"], "coalition.activities.v1");
    assert_eq!(schema.value.as_deref(), Some(bad_value.as_str()));
    let garbage = dead.iter().find(|r| r.key.as_deref() == Some("garbage")).expect("non-JSON dead-lettered");
    assert_eq!(garbage.headers["coalition.dlq.reason"], "not_json");
    assert_eq!(garbage.value.as_deref(), Some("this is not an event"));

    let (_, metrics) = server.get("/metrics")?;
    assert!(metrics.contains("coalition_dead_letter_total{reason=\"schema_violation\"} 1"), "{metrics}");
    Ok(())
}

#[test]
fn invalid_mutation_gets_field_errors_and_produces_nothing() -> Result<()> {
    let broker = Broker::start()?;
    let dir = tempfile::tempdir()?;
    let (server, token) = external_server(&broker, &dir.path().join("data"))?;
    let mut input = activity_input("bad-activity", "Bad activity");
    input["reach"] = json!(-3);
    input["country"] = json!("usa");
    let (_, v) = server.graphql_with_token(&token, SUBMIT_ACTIVITY, json!({ "input": input }))?;
    let err = &v["errors"][0];
    assert_eq!(err["extensions"]["code"], "BAD_USER_INPUT", "{v}");
    let fields: Vec<&str> =
        err["extensions"]["fieldErrors"].as_array().unwrap().iter().filter_map(|f| f["field"].as_str()).collect();
    assert!(fields.contains(&"input.reach"), "{fields:?}");
    assert!(fields.contains(&"input.country"), "{fields:?}");

    let mut input = activity_input("orphan-activity", "Orphan");
    input["implements"] = json!(["no-such-recommendation"]);
    let (_, v) = server.graphql_with_token(&token, SUBMIT_ACTIVITY, json!({ "input": input }))?;
    assert_eq!(v["errors"][0]["extensions"]["fieldErrors"][0]["field"], "input.implements.0", "{v}");

    let records = external_consume(&broker.bootstrap, "coalition.activities.v1", 0, Duration::from_secs(10))?;
    assert!(records.iter().all(|r| !r.value.as_deref().unwrap_or("").contains("bad-activity")));
    assert!(records.iter().all(|r| !r.value.as_deref().unwrap_or("").contains("orphan-activity")));
    Ok(())
}

#[test]
fn full_dump_conforms_to_the_shacl_shapes_under_pyshacl() -> Result<()> {
    let broker = Broker::start()?;
    let dir = tempfile::tempdir()?;
    let (server, token) = external_server(&broker, &dir.path().join("data"))?;
    server.graphql_ok_with_token(
        &token,
        SUBMIT_ACTIVITY,
        json!({ "input": activity_input("shacl-check-activity", "SHACL check") }),
    )?;
    let (status, _, body) = server.sparql_get(
        "CONSTRUCT { ?s ?p ?o } WHERE { GRAPH ?g { ?s ?p ?o } FILTER(?g != <https://w3id.org/coalition/graph/offsets>) }",
        "application/n-triples",
    )?;
    assert_eq!(status, 200);
    let dump = dir.path().join("dump.nt");
    std::fs::write(&dump, &body)?;
    assert!(body.lines().count() > 2000, "dump has {} triples", body.lines().count());
    let out = std::process::Command::new("python3")
        .arg(coalition_testkit::repo_root().join("tests/shacl/validate.py"))
        .arg(&dump)
        .args(["--shapes"])
        .arg(coalition_testkit::repo_root().join("ontologies/shapes"))
        .output()?;
    assert!(
        out.status.success(),
        "pyshacl: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
