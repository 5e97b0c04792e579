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
    let all = index.search_counting("listened", &SearchFilter::default(), 10, 0, Counting::EveryWithFacets).unwrap();
    assert_eq!(all.total, 2, "stemming matches listened and listening: {all:?}");
    assert!(all.hits.iter().any(|h| h.snippet.contains("<b>listened</b>")));
    let gb = SearchFilter { country: Some("GB".into()), ..SearchFilter::default() };
    let filtered = index.search("listened", &gb, 10, 0).unwrap();
    assert_eq!(filtered.total, 1);
    assert_eq!(filtered.hits[0].entity_id, "b");
    let phrase = index.search("\"diabetes care\"", &SearchFilter::default(), 10, 0).unwrap();
    assert_eq!(phrase.total, 1);
    assert_eq!(phrase.hits[0].entity_id, "b");
    let prefix = index.search("\"diabetes ca\"*", &SearchFilter::default(), 10, 0).unwrap();
    assert_eq!(prefix.total, 1, "phrase prefix");
    let typo = index.search("diabetis", &SearchFilter { fuzzy: true, ..SearchFilter::default() }, 10, 0).unwrap();
    assert_eq!(typo.total, 1, "one edit away");
    assert_eq!(index.search("diabetis", &SearchFilter::default(), 10, 0).unwrap().total, 0);
    assert_eq!(all.facets["country"], vec![("FR".to_owned(), 1), ("GB".to_owned(), 1)]);
    assert_eq!(all.facets["kind"], vec![("dialogue".to_owned(), 2)]);
    assert_eq!(
        index.search("listened", &SearchFilter::default(), 10, 0).unwrap(),
        SearchResults { facets: Facets::new(), ..all.clone() },
        "without facets, the same page and count"
    );
    assert!(matches!(index.search("title:(", &SearchFilter::default(), 10, 0), Err(SearchError::Query { .. })));
}

/// Tantivy's parser backtracks at every level of brackets (20 levels took it 6.9 s; some 10,000
/// overflowed the stack), and its work grows with the query's length: both are bounded first.
#[test]
fn deep_and_long_queries_are_refused_before_parsing() {
    let index = SearchIndex::in_memory().unwrap();
    let any = SearchFilter::default();
    let nested = |n: usize| format!("{}trust{}", "(".repeat(n), ")".repeat(n));
    assert!(index.search(&nested(MAX_QUERY_NESTING), &any, 10, 0).is_ok());
    for query in [nested(MAX_QUERY_NESTING + 1), nested(10_000), "trust ".repeat(200)] {
        let e = index.search(&query, &any, 10, 0).unwrap_err();
        assert!(matches!(e, SearchError::QueryTooLarge(_)), "{e}");
        assert!(e.to_string().contains("the limit is"), "{e}");
    }
    // Brackets inside a phrase are words, not nesting.
    let phrase = format!("\"{}\" trust", "(".repeat(20));
    assert!(check_query(&phrase).is_ok(), "{phrase}");
}

#[test]
fn counting_up_to_a_limit_is_exact_below_it_and_a_bound_above() {
    let index = SearchIndex::in_memory().unwrap();
    // Three commits (three segments), then one entity replaced: its old document is deleted, not
    // yet merged away, and must not be counted.
    for commit in 0..3 {
        let docs: Vec<SearchDoc> =
            (0..10).map(|i| doc(&format!("d{commit}-{i}"), "Dialogue", "they listened", "FR")).collect();
        index.apply("log", &[], &docs, &offsets(commit + 1)).unwrap();
    }
    let replaced = "https://w3id.org/coalition/id/dialogue/d0-0".to_owned();
    index.apply("log", &[replaced], &[doc("d0-0", "Dialogue", "nobody heard", "FR")], &offsets(4)).unwrap();
    let count = |counting| {
        let r = index.search_counting("listened", &SearchFilter::default(), 5, 0, counting).unwrap();
        (r.total, r.total_exact, r.hits.len())
    };
    assert_eq!(count(Counting::Every), (29, true, 5));
    assert_eq!(count(Counting::UpTo(29)), (29, true, 5), "exactly at the limit is still exact");
    assert_eq!(count(Counting::UpTo(100)), (29, true, 5));
    assert_eq!(count(Counting::UpTo(28)), (28, false, 5), "past the limit: at least the limit");
    assert_eq!(count(Counting::UpTo(12)), (12, false, 5), "a limit inside the second segment");
    assert_eq!(count(Counting::UpTo(0)), (0, false, 5));
    let r = index.search("listened", &SearchFilter::default(), 5, 0).unwrap();
    assert_eq!((r.total, r.total_exact), (29, true), "the default limit is far above 29");
}

#[test]
fn replacing_an_entity_removes_its_old_documents() {
    let index = SearchIndex::in_memory().unwrap();
    index.apply("log", &[], &[doc("a", "Old title", "zebra text", "FR")], &offsets(1)).unwrap();
    let entity = "https://w3id.org/coalition/id/dialogue/a".to_owned();
    index
        .apply("log", std::slice::from_ref(&entity), &[doc("a", "New title", "giraffe text", "FR")], &offsets(2))
        .unwrap();
    assert_eq!(index.search("zebra", &SearchFilter::default(), 10, 0).unwrap().total, 0);
    assert_eq!(index.search("giraffe", &SearchFilter::default(), 10, 0).unwrap().total, 1);
    assert_eq!(index.all_iris().unwrap(), vec![(entity.clone(), entity)]);
}

mod relevance {
    use super::*;

    const SEED: &str = include_str!("../../server/seed/coalition-seed.jsonl");
    const MULTILINGUAL: &str = include_str!("../tests/fixtures/multilingual.jsonl");

    /// The seed dataset's documents plus hand-written documents in six languages.
    fn corpus() -> SearchIndex {
        let index = SearchIndex::in_memory().unwrap();
        let mut docs = Vec::new();
        for (i, line) in SEED.lines().filter(|l| !l.trim().is_empty()).enumerate() {
            let event = coalition_events::decode(line.as_bytes()).unwrap();
            let pos = coalition_mapping::LogPosition { topic: "t".into(), partition: 0, offset: i as i64 };
            docs.extend(coalition_mapping::map_event(&event, &pos).unwrap().docs);
        }
        for line in MULTILINGUAL.lines() {
            docs.push(serde_json::from_str(line).unwrap());
        }
        index.apply("log", &[], &docs, &offsets(1)).unwrap();
        index
    }

    /// Judged queries: (query, fuzzy, entity ids of which at least one must rank in the top 3).
    const JUDGED: &[(&str, bool, &[&str])] = &[
        ("not listened to", false, &["ev-2024-not-listened-to-under-supported", "ev-2024-not-listened-to-others"]),
        ("\"Nothing About Us Without Us\"", false, &["rec-3-communities-in-decision-making"]),
        ("clinical trials Brazil", false, &["cs-brazil-clinical-trials-diversity"]),
        ("CHWConnector", false, &["act-chwconnector-launch", "cs-us-nachw-chwconnector"]),
        ("personnes handicapées écoutées", false, &["fr-dialogue-handicap"]),
        ("medecins confiance", false, &["fr-dialogue-handicap"]),
        ("confiança nos médicos", false, &["pt-dialogue-racismo"]),
        ("comunidades decisiones hospitales", false, &["es-dialogo-comunidades"]),
        ("Vertrauen Ärzten zuhören", false, &["de-dialog-vertrauen"]),
        ("信頼", false, &["ja-taiwa-lgbtq"]),
        ("患者の話", false, &["ja-taiwa-lgbtq"]),
        ("clinicans explianed", true, &["en-dialogue-listening"]),
    ];

    #[test]
    fn judged_queries_rank_their_answers_in_the_top_three() {
        let index = corpus();
        let mut reciprocal_ranks = Vec::new();
        for (query, fuzzy, relevant) in JUDGED {
            let filter = SearchFilter { fuzzy: *fuzzy, ..SearchFilter::default() };
            let results = index.search(query, &filter, 10, 0).unwrap();
            let rank = results.hits.iter().position(|h| relevant.contains(&h.entity_id.as_str())).map(|p| p + 1);
            assert!(
                rank.is_some_and(|r| r <= 3),
                "query {query:?}: expected one of {relevant:?} in the top 3, got {:?}",
                results.hits.iter().map(|h| &h.entity_id).collect::<Vec<_>>()
            );
            reciprocal_ranks.push(1.0 / rank.unwrap() as f64);
        }
        let mrr = reciprocal_ranks.iter().sum::<f64>() / reciprocal_ranks.len() as f64;
        eprintln!("MRR over {} judged queries: {mrr:.3}", JUDGED.len());
        assert!(mrr >= 0.9, "MRR regressed to {mrr:.3}");
    }

    #[test]
    fn each_language_is_analysed_as_itself() {
        let index = corpus();
        for (query, language) in
            [("écoutées", "fr"), ("ouvido", "pt"), ("latinas", "es"), ("Ärzte", "de"), ("対話", "ja"), ("carers", "en")]
        {
            let r = index.search(query, &SearchFilter::default(), 5, 0).unwrap();
            assert!(r.hits.iter().any(|h| h.language == language), "{query}: {:?}", r.hits);
        }
        assert_eq!(analysis_language("", "Les personnes handicapées ne sont pas écoutées par les médecins"), "fr");
        assert_eq!(analysis_language("pt-BR", "anything"), "pt");
    }

    /// The best hits are searched one language at a time and merged: the same hits, scores and
    /// order as searching the union of the languages at once.
    #[test]
    fn hits_merged_from_each_language_are_the_union_s_hits() {
        let index = corpus();
        let core = index.core.load();
        let searcher = core.reader.searcher();
        let queries = ["trust", "listened", "not listened to", "\"Nothing About Us\"", "信頼", "confiança nos médicos"];
        let filters = [
            SearchFilter::default(),
            SearchFilter { fuzzy: true, ..SearchFilter::default() },
            SearchFilter { kinds: vec!["dialogue".into(), "quote".into()], ..SearchFilter::default() },
            SearchFilter { country: Some("GB".into()), ..SearchFilter::default() },
        ];
        let mut compared = 0;
        for query in queries {
            for filter in &filters {
                for (limit, offset) in [(10, 0), (3, 2), (1, 0)] {
                    let union = core.query(query, filter).unwrap().combined;
                    let expected: Vec<(String, f32)> = searcher
                        .search(&*union, &TopDocs::with_limit(limit).and_offset(offset))
                        .unwrap()
                        .into_iter()
                        .map(|(score, address)| (text(&searcher.doc(address).unwrap(), core.fields.iri), score))
                        .collect();
                    let got = index.search(query, filter, limit, offset).unwrap();
                    let got: Vec<(String, f32)> = got.hits.into_iter().map(|h| (h.iri, h.score)).collect();
                    assert_eq!(got, expected, "{query:?} {filter:?} limit {limit} offset {offset}");
                    compared += expected.len();
                }
            }
        }
        assert!(compared > 100, "the queries find hits to compare: {compared}");
    }

    #[test]
    fn facets_count_every_match_and_snippets_highlight() {
        let index = corpus();
        let r = index.search_counting("trust", &SearchFilter::default(), 2, 0, Counting::EveryWithFacets).unwrap();
        let kinds: u64 = r.facets["kind"].iter().map(|(_, n)| n).sum();
        assert_eq!(kinds as usize, r.total, "facets count all {} matches, not the page of 2", r.total);
        assert!(r.total > 2);
        assert!(r.hits.iter().all(|h| h.snippet.contains("<b>")), "{:?}", r.hits);
    }
}

#[test]
fn documents_added_in_chunks_are_all_visible_after_one_commit() {
    let index = SearchIndex::in_memory().unwrap();
    let mut total = 0;
    for chunk in 0..8 {
        let docs: Vec<SearchDoc> = (0..10_000)
            .map(|i| doc(&format!("dlg-{chunk}-{i}"), "Listening sessions", "people were not listened to", "FR"))
            .collect();
        total += docs.len();
        index.add_uncommitted(&docs).unwrap();
    }
    index.commit("log", &offsets(total as i64)).unwrap();
    assert_eq!(index.num_docs(), total as u64);
    assert_eq!(index.all_iris().unwrap().len(), total);
}

/// Language detection runs on the vendored whatlang (`vendor/whatlang/PATCHED.md`), which
/// scores trigram profiles another way: it must answer exactly as the published crate does.
/// The fixture holds whatlang 0.18.0's answers as published on crates.io (`detect`: language,
/// script, confidence) for prefixes of 4–260 characters of its own examples in 69 languages,
/// from two starting points, and for 40 texts of the generated coalition.
#[test]
fn language_detection_answers_as_the_published_whatlang_does() {
    #[derive(serde::Deserialize)]
    struct Answer {
        text: String,
        lang: Option<String>,
        script: Option<String>,
        confidence: Option<f64>,
    }
    let fixture = include_str!("../tests/fixtures/whatlang-0.18.0-answers.jsonl");
    let mut checked = 0;
    for line in fixture.lines() {
        let expected: Answer = serde_json::from_str(line).unwrap();
        let info = whatlang::detect(&expected.text);
        let got = info.as_ref().map(|i| (i.lang().code().to_owned(), i.script().name().to_owned(), i.confidence()));
        let want = expected.lang.map(|l| (l, expected.script.unwrap(), expected.confidence.unwrap()));
        assert_eq!(got, want, "{:?}", expected.text);
        checked += 1;
    }
    assert_eq!(checked, 852);
}
