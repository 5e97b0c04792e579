use super::*;

const SEED: &str = include_str!("../../server/seed/coalition-seed.jsonl");

#[test]
fn every_seed_event_decodes() {
    let mut kinds = std::collections::BTreeSet::new();
    for (i, line) in SEED.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let event = decode(line.as_bytes()).unwrap_or_else(|e| panic!("seed line {}: {e}", i + 1));
        assert_eq!(event.subject, event.payload.subject());
        kinds.insert(event.kind);
    }
    for kind in Kind::ALL {
        assert!(kinds.contains(&kind), "seed has no {} event", kind.slug());
    }
}
