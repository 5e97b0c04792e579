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
    }
}
