//! The SPARQL 1.1 Protocol endpoint: methods, content negotiation, read-only refusal, errors.

use anyhow::Result;
use coalition_testkit::Server;

const SELECT: &str = "PREFIX coal: <https://w3id.org/coalition/ns#>
SELECT ?n ?r WHERE { ?r a coal:Recommendation ; coal:recommendationNumber ?n } ORDER BY ?n";

#[test]
fn sparql_protocol_methods_formats_and_refusals() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(&dir.path().join("data"), &[])?;

    let (status, ct, body) = server.sparql_get(SELECT, "application/sparql-results+json")?;
    assert_eq!(status, 200);
    assert!(ct.starts_with("application/sparql-results+json"), "{ct}");
    let v: serde_json::Value = serde_json::from_str(&body)?;
    let bindings = v["results"]["bindings"].as_array().unwrap();
    assert_eq!(bindings.len(), 6);
    assert_eq!(bindings[0]["n"]["value"], "1");

    let (status, ct, body) = server.sparql_get(SELECT, "application/sparql-results+xml")?;
    assert_eq!(status, 200);
    assert!(ct.starts_with("application/sparql-results+xml"), "{ct}");
    assert_eq!(body.matches("<result>").count(), 6);

    let (status, ct, body) = server.sparql_get(SELECT, "text/csv")?;
    assert_eq!((status, ct.starts_with("text/csv")), (200, true));
    assert_eq!(body.lines().count(), 7, "{body}");
    assert!(body.starts_with("n,r"));

    let (status, ct, body) = server.sparql_get(SELECT, "text/tab-separated-values")?;
    assert_eq!((status, ct.starts_with("text/tab-separated-values")), (200, true));
    assert!(body.starts_with("?n\t?r"), "{body}");

    let ask = "ASK { ?s a <https://w3id.org/coalition/ns#CaseStudy> }";
    let (status, _, body) = server.sparql_post("application/sparql-query", ask, "application/sparql-results+json")?;
    assert_eq!(status, 200);
    assert!(body.contains("true"), "{body}");

    let form = format!("query={}", urlencode(SELECT));
    let (status, _, body) = server.sparql_post("application/x-www-form-urlencoded", &form, "text/csv")?;
    assert_eq!(status, 200);
    assert_eq!(body.lines().count(), 7);

    let construct = "CONSTRUCT { ?r <http://www.w3.org/2004/02/skos/core#prefLabel> ?l } WHERE { ?r <http://www.w3.org/2004/02/skos/core#prefLabel> ?l }";
    let (status, ct, body) = server.sparql_get(construct, "text/turtle")?;
    assert_eq!(status, 200);
    assert!(ct.starts_with("text/turtle"), "{ct}");
    assert!(body.contains("Empower Through Education"));
    let (status, ct, body) = server.sparql_get(construct, "application/n-triples")?;
    assert_eq!(status, 200);
    assert!(ct.starts_with("application/n-triples"), "{ct}");
    assert_eq!(body.lines().count(), 18, "one triple per recommendation");

    let (status, _, body) = server.sparql_get(
        "DESCRIBE <https://w3id.org/coalition/id/recommendation/rec-1-education>",
        "application/n-triples",
    )?;
    assert_eq!(status, 200);
    assert!(body.contains("Empower Through Education"));

    // Updates are refused, whichever way they arrive, and nothing changes.
    let update = "INSERT DATA { <urn:x> <urn:y> <urn:z> }";
    for (status, body) in [
        server.sparql_post("application/sparql-update", update, "application/json").map(|(s, _, b)| (s, b))?,
        server
            .sparql_post(
                "application/x-www-form-urlencoded",
                &format!("update={}", urlencode(update)),
                "application/json",
            )
            .map(|(s, _, b)| (s, b))?,
        server.sparql_get(update, "application/json").map(|(s, _, b)| (s, b))?,
    ] {
        assert_eq!(status, 403, "{body}");
        assert!(body.contains("READ_ONLY"), "{body}");
    }
    let (_, _, body) = server.sparql_get("ASK { <urn:x> <urn:y> <urn:z> }", "application/sparql-results+json")?;
    assert!(body.contains("false"));

    // Text relevance joined with graph patterns through coal:textScore.
    let rows = server.select(
        r#"PREFIX coal: <https://w3id.org/coalition/ns#>
           SELECT ?e ?score WHERE { ?e a coal:EvidenceStatistic .
             BIND(coal:textScore(?e, "listened") AS ?score) FILTER(BOUND(?score)) } ORDER BY DESC(?score)"#,
    )?;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows[0]["e"]["value"].as_str().unwrap().contains("not-listened-to"));
    assert!(rows[0]["score"]["value"].as_str().unwrap().parse::<f64>()? > 0.0);
    let rows = server.select(
        r#"PREFIX coal: <https://w3id.org/coalition/ns#>
           PREFIX skos: <http://www.w3.org/2004/02/skos/core#>
           SELECT DISTINCT ?title WHERE { ?cs coal:implements ?r . ?r skos:prefLabel ?title .
             BIND(coal:textScore(?cs, "clinical trials") AS ?s) FILTER(BOUND(?s)) }"#,
    )?;
    assert!(rows.iter().any(|r| r["title"]["value"] == "Champion Diversity in Research"), "{rows:?}");

    // A malformed query gets a 400 naming the problem.
    let (status, _, body) = server.sparql_get("SELECT ?x WHERE { ?x ", "application/json")?;
    assert_eq!(status, 400);
    assert!(body.contains("invalid SPARQL query"), "{body}");
    let (status, _, body) = server.sparql_post("text/plain", SELECT, "application/json")?;
    assert_eq!(status, 400);
    assert!(body.contains("unsupported content type"), "{body}");
    Ok(())
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
