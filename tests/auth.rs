//! Access control end to end: bearer tokens issued with `coalition token`, roles, partner-scoped
//! writes, revoked and expired tokens, closed reads, SPARQL UPDATE and SERVICE, rate limits — every
//! refusal with its code, and nothing refused reaching Kafka (checked with the external client
//! against a real broker).

use anyhow::Result;
use coalition_testkit::{coalition_token, create_token, external_consume, wait_for, Broker, Server};
use serde_json::{json, Value};
use std::time::Duration;

const SUBMIT_ACTIVITY: &str = r#"
mutation($partner: ID!, $input: ActivityInput!) {
  submitActivity(partnerId: $partner, input: $input) { eventId entityId topic partition offset applied }
}"#;

const LINK: &str = r#"
mutation($partner: ID!, $subject: ID!, $rec: ID!) {
  linkToRecommendation(partnerId: $partner, input: { subjectKind: CASE_STUDY, subjectId: $subject, recommendationId: $rec }) {
    eventId entityId topic applied }
}"#;

fn activity(id: &str) -> Value {
    json!({
        "id": id, "title": format!("Activity {id}"), "activityType": "training", "date": "2025-03-14",
        "country": "US", "reach": 12, "implements": ["rec-5-accessible-communication"]
    })
}

/// The first error's code and message, and the HTTP status.
fn refused(status: u16, v: &Value) -> (u16, String, String) {
    let e = &v["errors"][0];
    (status, e["extensions"]["code"].as_str().unwrap_or("").to_owned(), e["message"].as_str().unwrap_or("").to_owned())
}

fn anonymous(server: &Server, query: &str, variables: Value) -> Result<Value> {
    server.graphql(query, variables)
}

#[test]
fn only_the_right_principal_writes_and_refused_writes_reach_no_topic() -> Result<()> {
    let broker = Broker::start()?;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    // Tokens issued before the server starts, straight into its data directory.
    let nachw = create_token(&data, "partner", Some("nachw"), &["--label", "nachw submitter"])?;
    let policy = create_token(&data, "policy", None, &[])?;
    let reader = create_token(&data, "reader", None, &[])?;
    let sanofi = create_token(&data, "partner", Some("sanofi"), &[])?;
    let expiring = create_token(&data, "partner", Some("nachw"), &["--expires", "1s"])?;
    let server = Server::start(&data, &["--kafka-brokers", &broker.bootstrap, "--seed", "--ack-after-apply"])?;
    assert!(!server.log().contains("demo tokens"), "external Kafka gets no demo tokens");

    // Anonymous: UNAUTHENTICATED (401) before validation — invalid input gets no field errors.
    let mut bad = activity("refused-anonymous");
    bad["reach"] = json!(-3);
    let v = anonymous(&server, SUBMIT_ACTIVITY, json!({ "partner": "nachw", "input": bad }))?;
    assert_eq!(v["errors"][0]["extensions"]["code"], "UNAUTHENTICATED", "{v}");
    assert!(v["errors"][0]["extensions"].get("fieldErrors").is_none(), "{v}");
    assert!(v["data"].is_null() || v.get("data").is_none(), "{v}");
    // … even when the input does not even coerce (a missing required field).
    let v =
        anonymous(&server, SUBMIT_ACTIVITY, json!({ "partner": "nachw", "input": { "id": "refused-anonymous-2" } }))?;
    assert_eq!(v["errors"][0]["extensions"]["code"], "UNAUTHENTICATED", "{v}");

    // A partner writing as another partner: FORBIDDEN, before validation.
    let (status, v) =
        server.graphql_with_token(&nachw, SUBMIT_ACTIVITY, json!({ "partner": "sanofi", "input": bad }))?;
    let (_, code, message) = refused(status, &v);
    assert_eq!(code, "FORBIDDEN", "{v}");
    assert!(message.contains("\"nachw\"") && message.contains("\"sanofi\""), "{message}");
    let mut other = activity("refused-wrong-partner");
    other["ledBy"] = json!(["sanofi"]);
    let (status, v) =
        server.graphql_with_token(&nachw, SUBMIT_ACTIVITY, json!({ "partner": "sanofi", "input": other }))?;
    assert_eq!(refused(status, &v).1, "FORBIDDEN", "{v}");

    // A reader attempting a mutation: 403 for the whole request.
    let (status, v) = server.graphql_with_token(
        &reader,
        SUBMIT_ACTIVITY,
        json!({ "partner": "nachw", "input": activity("refused-reader") }),
    )?;
    assert_eq!((status, refused(status, &v).1), (403, "FORBIDDEN".to_owned()), "{v}");
    assert!(refused(status, &v).2.contains("role reader"), "{v}");
    // … who still reads.
    let d = server.graphql_ok_with_token(
        &reader,
        r#"{ recommendation(id: "rec-5-accessible-communication") { number } }"#,
        json!({}),
    )?;
    assert_eq!(d["recommendation"]["number"], 5);

    // A policy token may not submit; a partner token may not link.
    let (status, v) = server.graphql_with_token(
        &policy,
        SUBMIT_ACTIVITY,
        json!({ "partner": "nachw", "input": activity("refused-policy") }),
    )?;
    assert_eq!(refused(status, &v).1, "FORBIDDEN", "{v}");
    let link_vars =
        json!({ "partner": "nachw", "subject": "cs-us-nachw-chwconnector", "rec": "rec-6-workforce-for-all" });
    let (status, v) = server.graphql_with_token(&nachw, LINK, link_vars.clone())?;
    assert_eq!((status, refused(status, &v).1), (403, "FORBIDDEN".to_owned()), "{v}");

    // Revoked, expired, forged and malformed tokens: UNAUTHENTICATED (401), naming why.
    let revoked = create_token(&data, "partner", Some("nachw"), &[])?;
    let revoked_id = revoked.split('_').nth(1).unwrap().to_owned();
    server.graphql_ok_with_token(&revoked, "{ freshness { caughtUp } }", json!({}))?;
    let out = coalition_token(&data, &["revoke", &revoked_id])?;
    assert!(out.contains(&revoked_id), "{out}");
    let (status, v) = server.graphql_with_token(
        &revoked,
        SUBMIT_ACTIVITY,
        json!({ "partner": "nachw", "input": activity("refused-revoked") }),
    )?;
    let (status, code, message) = refused(status, &v);
    assert_eq!((status, code.as_str()), (401, "UNAUTHENTICATED"), "{v}");
    assert!(message.contains("revoked") && message.contains(&revoked_id), "{message}");

    // Probe with a read until the token has expired (a mutation probe would be accepted, and
    // produced, while the token is still valid), then write once with it.
    wait_for("the 1s token to expire", Duration::from_secs(10), || {
        let (status, _) = server.graphql_with_token(&expiring, "{ __typename }", json!({})).ok()?;
        (status == 401).then_some(())
    })?;
    let (_, expired) = server.graphql_with_token(
        &expiring,
        SUBMIT_ACTIVITY,
        json!({ "partner": "nachw", "input": activity("refused-expired") }),
    )?;
    assert_eq!(expired["errors"][0]["extensions"]["code"], "UNAUTHENTICATED", "{expired}");
    assert!(expired["errors"][0]["message"].as_str().unwrap().contains("expired at"), "{expired}");

    let forged = format!("{}{}", &nachw[..nachw.len() - 4], if nachw.ends_with("0000") { "1111" } else { "0000" });
    for (token, why) in [(forged.as_str(), "not issued by this server"), ("hunter2", "not a coalition token")] {
        let (status, v) = server.graphql_with_token(
            token,
            SUBMIT_ACTIVITY,
            json!({ "partner": "nachw", "input": activity("refused-forged") }),
        )?;
        let (status, code, message) = refused(status, &v);
        assert_eq!((status, code.as_str()), (401, "UNAUTHENTICATED"), "{v}");
        assert!(message.contains(why), "{message}");
    }
    // A bad token is refused on SPARQL too, not downgraded to anonymous.
    let (status, body) = server.sparql_get_with_token("hunter2", "ASK {}")?;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("UNAUTHENTICATED"), "{body}");

    // SPARQL UPDATE stays refused for everyone.
    let (status, _, body) = server.sparql_post(
        "application/sparql-update",
        "INSERT DATA { <urn:a> <urn:b> <urn:c> }",
        "application/json",
    )?;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("READ_ONLY"), "{body}");
    let (status, _, body) = server.sparql_post(
        "application/x-www-form-urlencoded",
        "update=DELETE%20WHERE%20%7B%20%3Fs%20%3Fp%20%3Fo%20%7D",
        "application/json",
    )?;
    assert_eq!(status, 403, "{body}");

    // SERVICE (federation) is off: the public endpoint never makes requests on a caller's behalf.
    let (status, _, body) = server.sparql_get(
        "SELECT * WHERE { SERVICE <http://example.org/sparql> { ?s ?p ?o } }",
        "application/sparql-results+json",
    )?;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("FORBIDDEN") && body.contains("SERVICE"), "{body}");

    // The allowed writes: the partner as itself, the policy team linking. Provenance names the token.
    let receipt = server.graphql_ok_with_token(
        &nachw,
        SUBMIT_ACTIVITY,
        json!({ "partner": "nachw", "input": activity("allowed-nachw-activity") }),
    )?;
    assert_eq!(receipt["submitActivity"]["applied"], true);
    let link = server.graphql_ok_with_token(&policy, LINK, link_vars)?;
    assert_eq!(link["linkToRecommendation"]["topic"], "coalition.links.v1");
    // Another partner may not update (overwrite) nachw's activity, even as itself.
    let mut takeover = activity("allowed-nachw-activity");
    takeover["ledBy"] = json!(["sanofi"]);
    takeover["title"] = json!("refused takeover");
    let (status, v) =
        server.graphql_with_token(&sanofi, SUBMIT_ACTIVITY, json!({ "partner": "sanofi", "input": takeover }))?;
    let (_, code, message) = refused(status, &v);
    assert_eq!(code, "FORBIDDEN", "{v}");
    assert!(message.contains("belongs to partner \"nachw\""), "{message}");
    // … while nachw updates its own.
    let mut update = activity("allowed-nachw-activity");
    update["reach"] = json!(13);
    server.graphql_ok_with_token(&nachw, SUBMIT_ACTIVITY, json!({ "partner": "nachw", "input": update }))?;
    let nachw_id = nachw.split('_').nth(1).unwrap();
    let policy_id = policy.split('_').nth(1).unwrap();

    // Nothing refused reached Kafka; the allowed events did, with the token in `source`.
    let activities = external_consume(&broker.bootstrap, "coalition.activities.v1", 1, Duration::from_secs(30))?;
    let links = external_consume(&broker.bootstrap, "coalition.links.v1", 1, Duration::from_secs(30))?;
    let envelopes: Vec<Value> = activities
        .iter()
        .chain(&links)
        .filter_map(|r| r.value.as_deref())
        .map(serde_json::from_str::<Value>)
        .filter(|e| e.as_ref().map_or(true, |e| e["source"] != "/coalition/seed"))
        .collect::<Result<_, _>>()?;
    let subjects: Vec<&str> = envelopes.iter().filter_map(|e| e["subject"].as_str()).collect();
    assert!(subjects.iter().all(|s| !s.starts_with("refused-")), "a refused mutation reached Kafka: {subjects:?}");
    assert!(
        envelopes.iter().all(|e| e["partnerid"] != "sanofi" && !e.to_string().contains("refused takeover")),
        "{subjects:?}"
    );
    assert_eq!(subjects.len(), 3, "the two nachw activity events and the policy link: {subjects:?}");
    let allowed = envelopes
        .iter()
        .find(|e| e["subject"] == "allowed-nachw-activity")
        .expect("the allowed activity is on its topic");
    assert_eq!(allowed["partnerid"], "nachw");
    assert_eq!(allowed["source"], format!("/partners/nachw/principals/{nachw_id}"));
    let linked =
        envelopes.iter().find(|e| e["type"] == "org.coalition.link.created.v1").expect("the link is on its topic");
    assert_eq!(linked["source"], format!("/partners/nachw/principals/{policy_id}"));
    assert!(external_consume(&broker.bootstrap, "coalition.deadletter.v1", 0, Duration::from_secs(5))?.is_empty());

    // The token list shows statuses and never a secret.
    let list = coalition_token(&data, &["list"])?;
    assert!(list.contains("revoked") && list.contains("expired") && list.contains("nachw submitter"), "{list}");
    assert!(!list.contains(&nachw[10..]), "{list}");
    Ok(())
}

#[test]
fn the_embedded_default_prints_demo_tokens_that_work() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let mut server = Server::start(&data, &[])?;
    let log = server.log();
    let demo = |what: &str| -> String {
        let line = log
            .lines()
            .find(|l| l.trim_start().starts_with(what) && l.contains("Bearer"))
            .unwrap_or_else(|| panic!("no {what} demo token in\n{log}"));
        line.split("Bearer ").nth(1).unwrap().split_whitespace().next().unwrap().to_owned()
    };
    let (partner, policy) = (demo("partner nachw"), demo("policy"));

    // Reads are open by default.
    let d = server.graphql_ok(r#"{ recommendations { totalCount } }"#, json!({}))?;
    assert!(d["recommendations"]["totalCount"].as_u64().unwrap() >= 6, "{d}");
    let d = server.graphql_ok_with_token(
        &partner,
        SUBMIT_ACTIVITY,
        json!({ "partner": "nachw", "input": activity("demo-token-activity") }),
    )?;
    assert_eq!(d["submitActivity"]["applied"], true);
    let d = server.graphql_ok_with_token(
        &policy,
        LINK,
        json!({ "partner": "nachw", "subject": "cs-us-nachw-chwconnector", "rec": "rec-1-education" }),
    )?;
    assert_eq!(d["linkToRecommendation"]["applied"], true);

    // The graph's provenance names the token, never a client-supplied claim.
    let rows = server.select(
        r#"PREFIX coal: <https://w3id.org/coalition/ns#>
           SELECT ?src WHERE { GRAPH <https://w3id.org/coalition/graph/provenance> { ?ev coal:eventId ?id ; coal:sourceUri ?src } }"#,
    )?;
    let sources: Vec<&str> = rows.iter().filter_map(|r| r["src"]["value"].as_str()).collect();
    let partner_id = partner.split('_').nth(1).unwrap();
    assert!(sources.contains(&format!("/partners/nachw/principals/{partner_id}").as_str()), "{sources:?}");

    // A restart issues no new demo tokens; the old ones still work.
    server.stop()?;
    let server = Server::start(&data, &[])?;
    assert!(!server.log().contains("demo tokens"), "{}", server.log());
    server.graphql_ok_with_token(
        &partner,
        SUBMIT_ACTIVITY,
        json!({ "partner": "nachw", "input": activity("demo-token-activity-2") }),
    )?;
    Ok(())
}

#[test]
fn closed_reads_need_a_token() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let reader = create_token(&data, "reader", None, &[])?;
    let server = Server::start(&data, &["--public-reads", "false", "--graphql-rate-limit", "1"])?;
    let query = r#"{ recommendation(id: "rec-1-education") { number } }"#;

    let v = server.graphql(query, json!({}))?;
    assert_eq!(v["errors"][0]["extensions"]["code"], "UNAUTHENTICATED", "{v}");
    assert!(v["data"].is_null(), "{v}");
    let (status, _, body) = server.sparql_get("ASK { ?s ?p ?o }", "application/sparql-results+json")?;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("UNAUTHENTICATED"), "{body}");
    // Health, readiness and metrics stay open for probes.
    assert_eq!(server.get("/healthz")?.0, 200);

    let d = server.graphql_ok_with_token(&reader, query, json!({}))?;
    assert_eq!(d["recommendation"]["number"], 1);
    let (status, body) = server.sparql_get_with_token(&reader, "ASK { ?s ?p ?o }")?;
    assert_eq!(status, 200, "{body}");

    // Per-token rate limit (1/s, burst 2 here): the third quick request is refused with 429, and
    // another token is not affected.
    let busy = server.create_token("reader", None, &[])?;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let (status, v) = server.graphql_with_token(&busy, query, json!({}))?;
        statuses.push((status, v["errors"][0]["extensions"]["code"].as_str().unwrap_or("").to_owned()));
    }
    assert_eq!(statuses[..2], [(200, String::new()), (200, String::new())], "{statuses:?}");
    assert_eq!(statuses[2], (429, "RATE_LIMITED".to_owned()), "{statuses:?}");
    let other = server.create_token("reader", None, &[])?;
    server.graphql_ok_with_token(&other, query, json!({}))?;
    Ok(())
}

/// A JWT from the identity provider (keys from a JWKS file) writes as the partner its claims name,
/// provenance records it, and a JWT for another audience is refused.
#[test]
fn an_identity_provider_jwt_writes_as_its_partner() -> Result<()> {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    let fixtures = coalition_testkit::repo_root().join("services/api/tests/fixtures/jwt");
    let dir = tempfile::tempdir()?;
    let jwks = fixtures.join("jwks.json");
    let server = Server::start(
        &dir.path().join("data"),
        &["--jwt-key", jwks.to_str().unwrap(), "--jwt-issuer", "https://id.example.org"],
    )?;
    let key = EncodingKey::from_ec_pem(&std::fs::read(fixtures.join("p256-private.pem"))?)?;
    let jwt = |aud: &str| -> Result<String> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("p256-1".into());
        let claims = json!({
            "sub": "ada@nachw.example", "iss": "https://id.example.org", "aud": aud,
            "exp": jsonwebtoken::get_current_timestamp() + 600, "role": "partner", "partner": "nachw",
        });
        Ok(encode(&header, &claims, &key)?)
    };

    let data = server.graphql_ok_with_token(
        &jwt("coalition")?,
        SUBMIT_ACTIVITY,
        json!({ "partner": "nachw", "input": activity("jwt-submitted") }),
    )?;
    assert_eq!(data["submitActivity"]["applied"], true, "{data}");
    let v = server.graphql_ok(r#"{ activity(id: "jwt-submitted") { provenance { partnerId source } } }"#, json!({}))?;
    assert_eq!(v["activity"]["provenance"]["partnerId"], "nachw", "{v}");
    assert_eq!(v["activity"]["provenance"]["source"], "/partners/nachw/principals/jwt:ada%40nachw.example", "{v}");

    let (status, v) = server.graphql_with_token(
        &jwt("another-service")?,
        SUBMIT_ACTIVITY,
        json!({ "partner": "nachw", "input": activity("jwt-refused") }),
    )?;
    let (status, code, message) = refused(status, &v);
    assert_eq!((status, code.as_str()), (401, "UNAUTHENTICATED"), "{v}");
    assert!(message.contains("wrong audience"), "{message}");
    Ok(())
}
