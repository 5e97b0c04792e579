//! The hot-path queries in `queries/` run, as SPARQL and as GraphQL, against the built-in
//! dataset and answer what they are for.

use anyhow::Result;
use coalition_testkit::{repo_root, Server};
use serde_json::json;

fn read(name: &str) -> String {
    std::fs::read_to_string(repo_root().join("queries").join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn hot_path_queries_answer_over_the_built_in_dataset() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(&dir.path().join("data"), &[])?;

    let h1 = server.select(&read("h1-recommendation-dashboard.sparql"))?;
    assert_eq!(h1.len(), 6, "one row per recommendation: {h1:?}");
    let research = h1.iter().find(|r| r["title"]["value"] == "Champion Diversity in Research").unwrap();
    assert!(research["caseStudies"]["value"].as_str().unwrap().parse::<u32>()? >= 1);

    let h2 = server.select(&read("h2-evidence-group-country.sparql"))?;
    assert!(h2.iter().any(|r| r["kind"]["value"] == "statistic"), "{h2:?}");

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
    Ok(())
}
