use super::*;
use coalition_events::decode;

const SEED: &str = include_str!("../../server/seed/coalition-seed.jsonl");

fn pos(offset: i64) -> LogPosition {
    LogPosition { topic: "coalition.test.v1".into(), partition: 0, offset }
}

fn seed_events() -> Vec<Event> {
    SEED.lines().filter(|l| !l.trim().is_empty()).map(|l| decode(l.as_bytes()).expect("seed decodes")).collect()
}

#[test]
fn every_seed_event_maps_and_conforms_to_the_shapes() {
    for (i, event) in seed_events().iter().enumerate() {
        let mapped = map_event(event, &pos(i as i64)).unwrap_or_else(|e| panic!("seed event {}: {e}", event.id));
        assert!(!mapped.facts.is_empty());
        assert!(mapped.facts.iter().all(|q| q.graph_name == GraphName::NamedNode(mapped.graph.clone())));
    }
}

#[test]
fn mapping_is_deterministic() {
    for event in seed_events() {
        assert_eq!(map_event(&event, &pos(7)), map_event(&event, &pos(7)));
        // An initial load's second pass maps again without the shapes what its first accepted.
        assert_eq!(map_event_unchecked(&event, &pos(7)), map_event(&event, &pos(7)).unwrap());
    }
}

#[test]
fn every_vocabulary_term_is_declared_in_the_ontology() {
    use oxigraph::io::{RdfFormat, RdfParser};
    let ontology = include_str!("../../../ontologies/coalition.ttl");
    let typed: std::collections::BTreeSet<String> = RdfParser::from_format(RdfFormat::Turtle)
        .for_slice(ontology.as_bytes())
        .map(|q| q.expect("ontology parses"))
        .filter(|q| q.predicate.as_str() == vocab::RDF_TYPE)
        .map(|q| q.subject.to_string().trim_matches(|c| c == '<' || c == '>').to_owned())
        .collect();
    for term in vocab::coal::ALL {
        assert!(typed.contains(*term), "{term} is used by the mapping but not declared in ontologies/coalition.ttl");
    }
}

#[test]
fn every_mapped_class_has_a_shape() {
    let classes = shacl::shapes().target_classes();
    for class in [
        vocab::coal::PARTNER,
        vocab::coal::PROGRAMME,
        vocab::coal::DIALOGUE,
        vocab::coal::QUOTE,
        vocab::coal::RECOMMENDATION,
        vocab::coal::CASE_STUDY,
        vocab::coal::ACTIVITY,
        vocab::coal::OUTCOME,
        vocab::coal::EVIDENCE_STATISTIC,
        vocab::coal::SOURCE_DOCUMENT,
        vocab::coal::LINK,
        vocab::coal::EVENT,
        vocab::schema::PERSON,
    ] {
        assert!(classes.contains(class), "no SHACL shape targets {class}");
    }
}

#[test]
fn shape_violations_are_reported_with_focus_and_path() {
    let mut event = seed_events().into_iter().find(|e| e.kind == Kind::Activity).unwrap();
    if let Payload::Activity(a) = &mut event.payload {
        a.activity_type = "webinar".into();
        a.country = Some("france".into());
    }
    let err = map_event(&event, &pos(0)).unwrap_err();
    assert_eq!(err.code(), "shacl_violation");
    let MappingError::Shacl { violations, .. } = &err else { panic!() };
    assert_eq!(violations.len(), 2, "{violations:?}");
    assert!(violations.iter().any(|v| v.contains("activityType")));
    assert!(violations.iter().any(|v| v.contains("country")));
}

#[test]
fn an_event_must_describe_exactly_one_entity() {
    let event = seed_events().into_iter().next().unwrap();
    let provenance = map_event(&event, &pos(0)).unwrap().provenance;
    assert!(shacl::shapes().validate(&provenance).is_empty());
    let without: Vec<Quad> =
        provenance.iter().filter(|q| q.predicate.as_str() != vocab::coal::DESCRIBES).cloned().collect();
    assert_eq!(without.len() + 1, provenance.len(), "the event describes one entity");
    let violations = shacl::shapes().validate(&without);
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_eq!(violations[0].path, vocab::coal::DESCRIBES);
    assert!(violations[0].message.contains("at least 1"), "{}", violations[0]);
}

#[test]
fn unsupported_shacl_is_refused_when_shapes_load() {
    let ttl = r#"@prefix sh: <http://www.w3.org/ns/shacl#> .
        <urn:s> sh:targetClass <urn:C> ; sh:property [ sh:path <urn:p> ; sh:class <urn:D> ] ."#;
    let err = shacl::Shapes::compile(&[("bad.ttl", ttl)]).unwrap_err();
    assert!(err.to_string().contains("unsupported SHACL constraint"), "{err}");
}

mod round_trip {
    use super::*;
    use coalition_events::{Activity, EntityId, PartnerId};
    use proptest::prelude::*;

    fn entity_id() -> impl Strategy<Value = EntityId> {
        "[a-z0-9][a-z0-9-]{0,30}".prop_map(EntityId)
    }

    fn activity() -> impl Strategy<Value = Activity> {
        (
            entity_id(),
            "[\\PC&&[^\\u{0}]]{1,80}",
            proptest::option::of("[\\PC]{1,200}"),
            prop::sample::select(vec!["training", "workshop", "advocacy", "petition", "other"]),
            (2000i32..2030, 1u32..13, 1u32..29),
            proptest::option::of(prop::sample::select(vec!["GB", "US", "JP", "FR", "BR"])),
            proptest::option::of(0i64..1_000_000),
            proptest::collection::vec(entity_id(), 1..4),
            proptest::collection::vec(entity_id(), 0..3),
        )
            .prop_map(|(id, title, description, ty, (y, m, d), country, reach, led_by, implements)| Activity {
                id,
                title,
                description,
                activity_type: ty.to_owned(),
                date: chrono::NaiveDate::from_ymd_opt(y, m, d).unwrap(),
                country: country.map(str::to_owned),
                reach,
                led_by,
                case_study: None,
                programme: None,
                implements,
                audience_groups: Vec::new(),
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Any valid activity survives the wire format unchanged, maps deterministically, conforms
        /// to the shapes, and its title and description reach the graph and the index verbatim.
        #[test]
        fn activities_round_trip_through_wire_graph_and_index(a in activity()) {
            let event = Event::new(PartnerId("nachw".into()), "/partners/nachw", Payload::Activity(a.clone()));
            let decoded = decode(&event.to_bytes()).expect("valid activity decodes");
            prop_assert_eq!(&decoded, &event);
            let mapped = map_event(&decoded, &pos(1)).expect("conforms to the shapes");
            prop_assert_eq!(&mapped, &map_event(&event, &pos(1)).unwrap());
            let title_literal = oxigraph::model::Literal::new_simple_literal(&a.title);
            prop_assert!(mapped.facts.iter().any(|q| q.object == title_literal.clone().into()));
            prop_assert_eq!(&mapped.docs[0].title, &a.title);
            prop_assert_eq!(&mapped.docs[0].body, &a.description.clone().unwrap_or_default());
        }
    }
}
