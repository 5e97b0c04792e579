//! The one-command product: `coalition serve` with its embedded broker and the built-in dataset.
//! Checks that the domain's questions are answerable and that a restart loses nothing acknowledged.

use anyhow::Result;
use coalition_testkit::Server;
use serde_json::json;

#[test]
fn built_in_dataset_answers_the_domain_questions() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(&dir.path().join("data"), &[])?;

    // The six recommended actions, in order, with narrower ones.
    let data = server.graphql_ok(
        r#"{ recommendations(first: 6) { totalCount items { number title narrower { id } provenance { partnerId topic } } } }"#,
        json!({}),
    )?;
    let items = data["recommendations"]["items"].as_array().unwrap();
    let titles: Vec<&str> = items.iter().map(|r| r["title"].as_str().unwrap()).collect();
    assert_eq!(
        titles,
        [
            "Empower Through Education",
            "Champion Diversity in Research",
            "Include Communities in Decision-Making",
            "Prioritize Holistic, Person-Centered Care",
            "Promote Consistent And Accessible Communication",
            "Build A Healthcare Workforce for All"
        ]
    );
    assert!(items.iter().all(|r| r["provenance"]["topic"] == "coalition.recommendations.v1"));
    assert!(!items[2]["narrower"].as_array().unwrap().is_empty());

    // The three case studies with their partners and outcomes.
    let data = server.graphql_ok(
        r#"{ caseStudies { totalCount items { title country partners { name } outcomes { metric value unit baseline target } recommendations { number } } } }"#,
        json!({}),
    )?;
    let cases = data["caseStudies"]["items"].as_array().unwrap();
    assert_eq!(data["caseStudies"]["totalCount"], 3);
    let by_country =
        |c: &str| cases.iter().find(|x| x["country"] == c).unwrap_or_else(|| panic!("no case study in {c}"));
    let brazil = by_country("BR");
    assert!(brazil["partners"].as_array().unwrap().iter().any(|p| p["name"] == "Sanofi Brazil"));
    let trial = brazil["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["baseline"] == 12.0 || o["value"] == 12.0)
        .expect("12% baseline outcome");
    assert_eq!(trial["target"], 25.0);
    let japan = by_country("JP");
    let japan_partners: Vec<&str> =
        japan["partners"].as_array().unwrap().iter().filter_map(|p| p["name"].as_str()).collect();
    for name in ["Sanofi KK", "AstraZeneca KK", "AbbVie GK", "Alexion Pharma GK"] {
        assert!(japan_partners.contains(&name), "{japan_partners:?}");
    }
    let us = by_country("US");
    assert!(us["outcomes"].as_array().unwrap().iter().any(|o| o["value"] == 1000.0), "{us}");

    // Dialogues with quotes and speakers.
    let data = server.graphql_ok(r#"{ dialogues { items { title country quotes { speaker text } } } }"#, json!({}))?;
    let speakers: Vec<String> = data["dialogues"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|d| d["quotes"].as_array().unwrap().iter().filter_map(|q| q["speaker"].as_str().map(str::to_owned)))
        .collect();
    for who in ["Anaïs Perrin-Prevelle", "Uché Blackstock", "Daniel Newman"] {
        assert!(speakers.iter().any(|s| s.contains(who)), "no quote by {who}: {speakers:?}");
    }

    // The 2024 polling statistics: 82% vs 47%, 40% vs 29%.
    let data = server.graphql_ok(
        r#"{ evidence(first: 100) { totalCount items { measure group percentage sampleSize year } } }"#,
        json!({}),
    )?;
    let ev = data["evidence"]["items"].as_array().unwrap();
    let pct = |p: f64| ev.iter().any(|e| e["percentage"] == p && e["year"] == 2024);
    for p in [82.0, 47.0, 40.0, 29.0, 39.0, 15.0, 21.0, 16.0, 19.0, 10.0] {
        assert!(pct(p), "no 2024 statistic of {p}%");
    }
    assert!(ev.iter().any(|e| e["sampleSize"] == 11489));

    // The same through SPARQL.
    let rows = server.select(
        r#"PREFIX coal: <https://w3id.org/coalition/ns#>
           SELECT (COUNT(DISTINCT ?r) AS ?n) WHERE { ?r a coal:Recommendation ; coal:recommendationNumber ?num }"#,
    )?;
    assert_eq!(rows[0]["n"]["value"], "6");
    let rows = server.select(
        r#"PREFIX coal: <https://w3id.org/coalition/ns#>
           PREFIX prov: <http://www.w3.org/ns/prov#>
           SELECT ?cs ?partner WHERE {
             ?cs a coal:CaseStudy .
             GRAPH <https://w3id.org/coalition/graph/provenance> {
               ?g prov:wasGeneratedBy ?ev . ?ev coal:describes ?cs ; prov:wasAssociatedWith ?partner } }"#,
    )?;
    assert_eq!(rows.len(), 3, "every case study has provenance: {rows:?}");

    // Search over quotes, with the linked recommendations.
    let data = server.graphql_ok(
        r#"{ search(query: "listened", filter: { kinds: ["evidence", "quote", "dialogue"] }) { totalCount hits { kind snippet } } }"#,
        json!({}),
    )?;
    assert!(data["search"]["totalCount"].as_u64().unwrap() >= 2, "{data}");
    Ok(())
}

#[test]
fn restart_keeps_acknowledged_mutations_and_does_not_reseed() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("data");
    let mut server = Server::start(&data_dir, &[])?;
    let token = server.create_token("partner", Some("apf-france-handicap"), &[])?;
    let data = server.graphql_ok_with_token(
        &token,
        r#"mutation { submitDialogue(partnerId: "apf-france-handicap", input: {
              id: "paris-accessibility-dialogue-2025", title: "Accessibility listening session", date: "2025-02-11",
              country: "FR", audienceGroups: ["disabled"], reach: 40, language: "fr",
              summary: "Les participants ont parlé de l'accessibilité des cabinets médicaux.",
              quotes: [{ text: "On ne nous écoute pas assez.", speaker: "Participant" }],
              informs: ["rec-3-communities-in-decision-making"] }) { eventId applied } }"#,
        json!({}),
    )?;
    assert_eq!(data["submitDialogue"]["applied"], true);
    let count = |s: &Server| -> Result<u64> {
        let d = s.graphql_ok("{ dialogues { totalCount } partners { totalCount } }", json!({}))?;
        Ok(d["dialogues"]["totalCount"].as_u64().unwrap() * 1000 + d["partners"]["totalCount"].as_u64().unwrap())
    };
    let before = count(&server)?;
    server.stop()?;
    let server = Server::start(&data_dir, &[])?;
    assert_eq!(count(&server)?, before, "nothing lost, nothing seeded twice");
    let data = server.graphql_ok(
        r#"{ dialogue(id: "paris-accessibility-dialogue-2025") { language quotes { text language } provenance { partnerId } } }"#,
        json!({}),
    )?;
    assert_eq!(data["dialogue"]["quotes"][0]["language"], "fr");
    assert_eq!(data["dialogue"]["provenance"]["partnerId"], "apf-france-handicap");
    Ok(())
}

#[test]
fn a_partner_updates_and_retracts_its_own_entities_only() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(&dir.path().join("data"), &[])?;
    let nachw = server.create_token("partner", Some("nachw"), &[])?;
    let other = server.create_token("partner", Some("sanofi"), &[])?;
    let submit = |token: &str, title: &str| {
        server.graphql_with_token(
            token,
            r#"mutation($title: String!) { submitActivity(partnerId: "nachw", input: {
                 id: "owned-activity", title: $title, activityType: "workshop", date: "2025-05-05",
                 description: "wombat workshop" }) { applied } }"#,
            json!({ "title": title }),
        )
    };
    let retract = |token: &str, partner: &str| {
        server.graphql_with_token(
            token,
            &format!(r#"mutation {{ retract(partnerId: "{partner}", kind: ACTIVITY, id: "owned-activity", reason: "entered twice") {{ applied eventId }} }}"#),
            json!({}),
        )
    };
    let (_, v) = submit(&nachw, "First title")?;
    assert_eq!(v["data"]["submitActivity"]["applied"], true, "{v}");
    let (_, v) = submit(&nachw, "Second title")?;
    assert_eq!(v["data"]["submitActivity"]["applied"], true, "{v}");
    let d = server.graphql_ok(r#"{ activity(id: "owned-activity") { title history { eventId } } }"#, json!({}))?;
    assert_eq!(d["activity"]["title"], "Second title", "an update replaces the facts");
    assert_eq!(d["activity"]["history"].as_array().unwrap().len(), 2);

    let (status, v) = retract(&other, "sanofi")?;
    assert_eq!(v["errors"][0]["extensions"]["code"], "FORBIDDEN", "status {status}: {v}");
    let (_, v) = retract(&nachw, "nachw")?;
    assert_eq!(v["data"]["retract"]["applied"], true, "{v}");
    let d = server.graphql_ok(
        r#"{ activity(id: "owned-activity") { title } search(query: "wombat") { totalCount } }"#,
        json!({}),
    )?;
    assert!(d["activity"].is_null(), "retracted from the graph");
    assert_eq!(d["search"]["totalCount"], 0, "retracted from the index");
    let rows = server.select(
        r#"PREFIX coal: <https://w3id.org/coalition/ns#>
           SELECT ?type WHERE { GRAPH <https://w3id.org/coalition/graph/provenance> {
             ?e coal:describes <https://w3id.org/coalition/id/activity/owned-activity> ; coal:eventType ?type } }"#,
    )?;
    assert_eq!(rows.len(), 3, "two submissions and the retraction stay in provenance: {rows:?}");
    let (_, v) = retract(&nachw, "nachw")?;
    assert_eq!(v["errors"][0]["extensions"]["code"], "NOT_FOUND", "{v}");
    Ok(())
}

#[test]
fn queries_can_be_asked_as_of_a_log_position() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(&dir.path().join("data"), &[])?;
    let token = server.create_token("partner", Some("nachw"), &[])?;
    let submit = |title: &str| -> Result<String> {
        let v = server.graphql_ok_with_token(
            &token,
            r#"mutation($title: String!) { submitActivity(partnerId: "nachw", input: {
                 id: "timeline-activity", title: $title, activityType: "workshop", date: "2025-05-05" }) { consistencyToken } }"#,
            json!({ "title": title }),
        )?;
        Ok(v["submitActivity"]["consistencyToken"].as_str().unwrap().to_owned())
    };
    let first = submit("Before")?;
    let second = submit("After")?;
    let node = |at: &str| {
        server.graphql(
            r#"query($at: String) { node(id: "activity/timeline-activity", asOf: $at) { ... on Activity { title } } }"#,
            json!({ "at": at }),
        )
    };
    let v = node(&second)?;
    assert_eq!(v["data"]["node"]["title"], "After", "{v}");
    let v = node(&first)?;
    assert_eq!(v["errors"][0]["extensions"]["code"], "HISTORY_UNAVAILABLE", "{v}");
    assert!(v["errors"][0]["message"].as_str().unwrap().contains("has changed since"), "{v}");
    let (topic, _) = first.rsplit_once('@').unwrap();
    let v = node(&format!("{topic}@0:-1,{topic}@1:-1,{topic}@2:-1"))?;
    assert!(v["data"]["node"].is_null(), "not yet in the log: {v}");

    let title_at = |at: &str| -> Result<Vec<String>> {
        let (status, _, body) = server.sparql_get_as_of(
            "SELECT ?t WHERE { <https://w3id.org/coalition/id/activity/timeline-activity> <http://purl.org/dc/terms/title> ?t }",
            at,
        )?;
        anyhow::ensure!(status == 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body)?;
        Ok(v["results"]["bindings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["t"]["value"].as_str().unwrap().to_owned())
            .collect())
    };
    assert_eq!(title_at(&second)?, vec!["After".to_owned()]);
    assert!(title_at(&first)?.is_empty(), "an entity changed since the position is left out");
    Ok(())
}
