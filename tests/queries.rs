//! The hot-path queries in `queries/` run, as SPARQL and as GraphQL, against the built-in
//! dataset and answer what they are for.

use anyhow::Result;
use coalition_testkit::{repo_root, Server};
use serde_json::json;

/// Rows as sorted maps of variable to lexical value, so two answers compare by content.
fn canonical(rows: &[serde_json::Value]) -> Vec<std::collections::BTreeMap<String, String>> {
    let mut out: Vec<_> = rows
        .iter()
        .map(|r| {
            r.as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v["value"].as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .collect();
    out.sort();
    out
}

fn read(name: &str) -> String {
    std::fs::read_to_string(repo_root().join("queries").join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn hot_path_queries_answer_over_the_built_in_dataset() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(&dir.path().join("data"), &[])?;

    // H1–H4 read maintained projections; each must answer exactly what the same question computed
    // from the facts (queries/raw/) answers.
    for name in [
        "h1-recommendation-dashboard.sparql",
        "h2-evidence-group-country.sparql",
        "h3-recommendation-case-studies-outcomes.sparql",
        "h4-partner-rollup.sparql",
    ] {
        let projected = canonical(&server.select(&read(name))?);
        let computed = canonical(&server.select(&read(&format!("raw/{name}")))?);
        assert!(!projected.is_empty(), "{name} answered nothing");
        assert_eq!(projected, computed, "{name}: projection and from-scratch aggregate differ");
    }
    let h1 = server.select(&read("h1-recommendation-dashboard.sparql"))?;
    assert_eq!(h1.len(), 6, "one row per numbered recommendation: {h1:?}");
    let research =
        h1.iter().find(|r| r["rec"]["value"].as_str().unwrap().ends_with("/rec-2-diversity-in-research")).unwrap();
    assert!(research["caseStudies"]["value"].as_str().unwrap().parse::<u32>()? >= 1);
    assert!(research["outcomes"]["value"].as_str().unwrap().parse::<u32>()? >= 1);

    let h2 = server.select(&read("h2-evidence-group-country.sparql"))?;
    assert!(h2[0]["dialogues"]["value"].as_str().unwrap().parse::<u32>()? >= 1, "{h2:?}");
    assert!(h2[0]["statistics"]["value"].as_str().unwrap().parse::<u32>()? >= 1, "{h2:?}");

    let h3 = server.select(&read("h3-recommendation-case-studies-outcomes.sparql"))?;
    assert!(h3.iter().any(|r| r["partnerName"]["value"] == "Sanofi Brazil"), "{h3:?}");
    assert!(h3.iter().any(|r| r["value"]["value"] == "12.0" || r["value"]["value"] == "12"), "{h3:?}");

    let h4 = server.select(&read("h4-partner-rollup.sparql"))?;
    assert!(h4.iter().any(|r| r["year"]["value"] == "2024"), "{h4:?}");

    let h5 = server.select(&read("h5-search-to-recommendations.sparql"))?;
    assert!(!h5.is_empty(), "text hits join to recommendations");

    for name in [
        "h1-recommendation-dashboard.graphql",
        "h2-evidence-group-country.graphql",
        "h3-recommendation-case-studies-outcomes.graphql",
        "h4-partner-rollup.graphql",
        "h5-search-to-recommendations.graphql",
    ] {
        let data = server.graphql_ok(&read(name), json!({}))?;
        let text = data.to_string();
        assert!(text.len() > 100, "{name} answered almost nothing: {text}");
    }
    let h3 = server.graphql_ok(&read("h3-recommendation-case-studies-outcomes.graphql"), json!({}))?;
    assert_eq!(h3["caseStudies"]["items"][0]["country"], "BR");
    // The list filtered by a recommendation is read from the case-study projection: for every
    // recommendation, the case studies the facts say implement it, as many, the same, in the same
    // order (by start date, those without one first, then by IRI), and paged as that order is.
    let recommendations = server.select("SELECT ?r WHERE { ?r a <https://w3id.org/coalition/ns#Recommendation> }")?;
    let mut listed = 0;
    let list = "query($id: ID, $first: Int, $offset: Int) { \
                caseStudies(filter: { recommendation: $id }, first: $first, offset: $offset) { totalCount items { id } } }";
    let ids = |page: &serde_json::Value| -> Vec<String> {
        page["caseStudies"]["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_owned()).collect()
    };
    for row in &recommendations {
        let iri = row["r"]["value"].as_str().unwrap();
        let id = iri.rsplit('/').next().unwrap();
        let page = server.graphql_ok(list, json!({ "id": id, "first": 100, "offset": 0 }))?;
        let facts = server.select(&format!(
            "SELECT DISTINCT ?cs WHERE {{ ?cs a <https://w3id.org/coalition/ns#CaseStudy> ; \
             <https://w3id.org/coalition/ns#implements> <{iri}> \
             OPTIONAL {{ ?cs <http://schema.org/startDate> ?date }} }} ORDER BY ?date ?cs"
        ))?;
        let want: Vec<String> =
            facts.iter().map(|r| r["cs"]["value"].as_str().unwrap().rsplit('/').next().unwrap().to_owned()).collect();
        assert_eq!(ids(&page), want, "case studies of {id}");
        assert_eq!(page["caseStudies"]["totalCount"], want.len(), "count of {id}");
        for offset in 0..want.len() {
            let one = server.graphql_ok(list, json!({ "id": id, "first": 1, "offset": offset }))?;
            assert_eq!(ids(&one), want[offset..=offset], "case study {offset} of {id}");
        }
        listed += want.len();
    }
    assert!(listed >= 3, "the seed's case studies implement recommendations: {listed}");
    // GraphQL reads the same projection observations as SPARQL.
    let h1 = server.graphql_ok(&read("h1-recommendation-dashboard.graphql"), json!({}))?;
    let research = h1["recommendationDashboard"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "rec-2-diversity-in-research")
        .unwrap();
    let sparql_row = server
        .select(&read("h1-recommendation-dashboard.sparql"))?
        .into_iter()
        .find(|r| r["rec"]["value"].as_str().unwrap().ends_with("/rec-2-diversity-in-research"))
        .unwrap();
    assert_eq!(research["dashboard"]["caseStudies"].to_string(), sparql_row["caseStudies"]["value"].as_str().unwrap());
    assert_eq!(research["dashboard"]["outcomes"].to_string(), sparql_row["outcomes"]["value"].as_str().unwrap());
    let h4 = server.graphql_ok(&read("h4-partner-rollup.graphql"), json!({}))?;
    let rows = h4["partnerRollup"].as_array().unwrap();
    let sparql_rows = server.select(&read("h4-partner-rollup.sparql"))?;
    assert_eq!(rows.len(), sparql_rows.len(), "{h4}");
    Ok(())
}
