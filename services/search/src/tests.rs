use super::*;
use coalition_mapping::{Offsets, SearchDoc, TopicPartition};

fn doc(entity: &str, title: &str, body: &str, country: &str) -> SearchDoc {
    SearchDoc {
        iri: format!("https://w3id.org/coalition/id/dialogue/{entity}"),
        entity_iri: format!("https://w3id.org/coalition/id/dialogue/{entity}"),
        kind: "dialogue".into(),
        entity_id: entity.into(),
        title: title.into(),
        body: body.into(),
        language: "en".into(),
        country: Some(country.into()),
        groups: vec!["lgbtq".into()],
        partners: vec!["sanofi".into()],
        recommendations: vec!["rec-1-education".into()],
        year: Some(2024),
    }
}

fn offsets(next: i64) -> Offsets {
    let mut o = Offsets::default();
    o.0.insert(TopicPartition { topic: "t".into(), partition: 0 }, next);
    o
}

#[test]
fn commits_carry_their_offsets_and_log() {
    let index = SearchIndex::in_memory().unwrap();
    assert!(index.offsets("log").unwrap().0.is_empty());
    index.apply("log", &[], &[doc("a", "Pride dialogue", "people felt not listened to", "FR")], &offsets(7)).unwrap();
    assert_eq!(index.offsets("log").unwrap(), offsets(7));
    assert!(index.offsets("other-log").unwrap().0.is_empty());
}

#[test]
fn search_ranks_snippets_and_filters_inside_the_query() {
    let index = SearchIndex::in_memory().unwrap();
    index
        .apply(
            "log",
            &[],
            &[
                doc("a", "Pride dialogue", "Participants said they were not listened to by doctors", "FR"),
                doc("b", "Diabetes dialogue", "Listening sessions about diabetes care", "GB"),
                doc("c", "Workforce", "Careers in healthcare for everyone", "US"),
            ],
            &offsets(3),
        )
        .unwrap();
    let all = index.search("listened", &SearchFilter::default(), 10, 0).unwrap();
    assert_eq!(all.total, 2, "stemming matches listened and listening: {all:?}");
    assert!(all.hits.iter().any(|h| h.snippet.contains("<b>listened</b>")));
    let gb = SearchFilter { country: Some("GB".into()), ..SearchFilter::default() };
    let filtered = index.search("listened", &gb, 10, 0).unwrap();
    assert_eq!(filtered.total, 1);
    assert_eq!(filtered.hits[0].entity_id, "b");
    let phrase = index.search("\"not listened\"", &SearchFilter::default(), 10, 0).unwrap();
    assert_eq!(phrase.total, 1);
    assert_eq!(phrase.hits[0].entity_id, "a");
    assert!(matches!(index.search("title:(", &SearchFilter::default(), 10, 0), Err(SearchError::Query { .. })));
}

#[test]
fn replacing_an_entity_removes_its_old_documents() {
    let index = SearchIndex::in_memory().unwrap();
    index.apply("log", &[], &[doc("a", "Old title", "zebra text", "FR")], &offsets(1)).unwrap();
    let entity = "https://w3id.org/coalition/id/dialogue/a".to_owned();
    index.apply("log", &[entity.clone()], &[doc("a", "New title", "giraffe text", "FR")], &offsets(2)).unwrap();
    assert_eq!(index.search("zebra", &SearchFilter::default(), 10, 0).unwrap().total, 0);
    assert_eq!(index.search("giraffe", &SearchFilter::default(), 10, 0).unwrap().total, 1);
    assert_eq!(index.all_iris().unwrap(), vec![(entity.clone(), entity)]);
}
