//! Read-your-writes through the real binary against a real broker: a mutation's consistency
//! token, sent back in `Coalition-Consistency`, makes the next read wait until graph and index
//! have applied the event; a token from the future times out with a clear error.

use anyhow::Result;
use coalition_testkit::{create_token, Broker, Server};
use serde_json::json;

#[test]
fn consistency_token_gives_read_your_writes() -> Result<()> {
    let broker = Broker::start()?;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--kafka-brokers", &broker.bootstrap, "--seed"])?;
    let token = create_token(&data, "partner", Some("nachw"), &[])?;
    let auth = format!("Bearer {token}");
    for i in 0..5 {
        let id = format!("ryw-activity-{i}");
        let (status, v) = server.graphql_with_headers(
            &[("authorization", &auth)],
            r#"mutation($input: ActivityInput!) { submitActivity(partnerId: "nachw", input: $input) { applied consistencyToken } }"#,
            json!({ "input": { "id": id, "title": format!("Read your writes {i}"), "activityType": "training",
                               "date": "2025-04-01", "description": "quokka training for read-your-writes" } }),
        )?;
        assert_eq!(status, 200, "{v}");
        let receipt = &v["data"]["submitActivity"];
        assert_eq!(receipt["applied"], false, "external Kafka acknowledges on the broker's ack");
        let consistency = receipt["consistencyToken"].as_str().unwrap().to_owned();
        assert!(consistency.starts_with("coalition.activities.v1@"), "{consistency}");
        // Immediately read it back, from the graph and from the index.
        let (status, v) = server.graphql_with_headers(
            &[("coalition-consistency", &consistency)],
            &format!(r#"{{ activity(id: "{id}") {{ title }} search(query: "quokka") {{ totalCount }} freshness {{ lagMs }} }}"#),
            json!({}),
        )?;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["data"]["activity"]["title"], format!("Read your writes {i}"));
        assert_eq!(v["data"]["search"]["totalCount"], i + 1, "search agrees with the graph at the token's watermark");
    }
    let (status, v) = server.graphql_with_headers(
        &[("coalition-consistency", "coalition.activities.v1@0:999999")],
        "{ partners { totalCount } }",
        json!({}),
    )?;
    assert_eq!(status, 503, "{v}");
    assert!(v.to_string().contains("TIMEOUT"), "{v}");
    let (status, v) = server.graphql_with_headers(
        &[("coalition-consistency", "nonsense")],
        "{ partners { totalCount } }",
        json!({}),
    )?;
    assert_eq!(status, 400, "{v}");
    let (_, metrics) = server.get("/metrics")?;
    assert!(metrics.contains("coalition_visible_seconds_count"), "freshness histogram exported");
    Ok(())
}
