use super::*;
use coalition_events::{decode, Event};
use coalition_mapping::{map_event, LogPosition};

const SEED: &str = include_str!("../../server/seed/coalition-seed.jsonl");

fn event(n: usize) -> Event {
    let line = SEED.lines().filter(|l| !l.trim().is_empty()).nth(n).expect("seed line");
    decode(line.as_bytes()).expect("seed decodes")
}

fn applicable(e: &Event, offset: i64) -> (Applicable, LogPosition) {
    let pos = LogPosition { topic: e.kind.topic().to_owned(), partition: 0, offset };
    let mapped = map_event(e, &pos).expect("maps");
    (Applicable { event_id: e.id.0.clone(), mapped }, pos)
}

#[test]
fn a_batch_and_its_offsets_commit_together() {
    let store = GraphStore::in_memory().unwrap();
    let mut offsets = Offsets::default();
    let mut batch = Vec::new();
    for n in 0..10 {
        let (a, pos) = applicable(&event(n), n as i64);
        offsets.advance(&pos);
        batch.push(a);
    }
    let stats = store.apply("log-a", &batch, &offsets).unwrap();
    assert_eq!(stats.applied, 10);
    assert!(stats.duplicate_ids.is_empty());
    assert_eq!(store.offsets("log-a").unwrap(), offsets);
    assert!(store.offsets("log-b").unwrap().0.is_empty(), "offsets are scoped to their log");
    for a in &batch {
        assert!(store.has_event(&a.event_id).unwrap());
        assert_eq!(store.graph(&a.mapped.graph).unwrap().len(), a.mapped.facts.len());
    }
}

#[test]
fn a_redelivered_event_changes_nothing() {
    let store = GraphStore::in_memory().unwrap();
    let e = event(0);
    let (a, pos) = applicable(&e, 0);
    let mut offsets = Offsets::default();
    offsets.advance(&pos);
    store.apply("log", std::slice::from_ref(&a), &offsets).unwrap();
    let mut before = Vec::new();
    store.dump_nquads(&mut before).unwrap();
    let (again, pos) = applicable(&e, 5);
    offsets.advance(&pos);
    let stats = store.apply("log", &[again], &offsets).unwrap();
    assert_eq!(stats.applied, 0);
    assert_eq!(stats.duplicate_ids, vec![e.id.0.clone()]);
    let mut after = Vec::new();
    store.dump_nquads(&mut after).unwrap();
    assert_eq!(before, after, "graph and provenance unchanged");
    assert_eq!(store.offsets("log").unwrap().next(e.kind.topic(), 0), Some(6), "offsets still advance");
}

#[test]
fn a_new_event_for_an_entity_replaces_its_facts_and_keeps_history() {
    let store = GraphStore::in_memory().unwrap();
    let first = event(0);
    let mut second = first.clone();
    second.id = coalition_events::EventId("second-event".into());
    second.version = Some(1);
    if let coalition_events::Payload::Partner(p) = &mut second.payload {
        p.name = "Renamed partner".into();
    } else {
        panic!("seed line 1 is a partner");
    }
    let (a1, _) = applicable(&first, 0);
    let (a2, _) = applicable(&second, 1);
    store.apply("log", &[a1, a2.clone()], &Offsets::default()).unwrap();
    let names = store
        .select(&format!(
            "SELECT ?n WHERE {{ GRAPH <{}> {{ ?s <{}> ?n }} }}",
            a2.mapped.graph.as_str(),
            vocab::schema::NAME
        ))
        .unwrap();
    assert_eq!(names.len(), 1);
    assert_eq!(literal(&names[0], "n").as_deref(), Some("Renamed partner"));
    let events = store
        .select(&format!(
            "SELECT ?e WHERE {{ GRAPH <{}> {{ ?e <{}> <{}> }} }}",
            vocab::PROVENANCE_GRAPH,
            coal::DESCRIBES,
            a2.mapped.entity.as_str()
        ))
        .unwrap();
    assert_eq!(events.len(), 3, "two events and the graph describe the entity: {events:?}");
    let generated = store
        .select(&format!(
            "SELECT ?e WHERE {{ GRAPH <{}> {{ <{}> <{}> ?e }} }}",
            vocab::PROVENANCE_GRAPH,
            a2.mapped.graph.as_str(),
            vocabulary_prov_generated()
        ))
        .unwrap();
    assert_eq!(generated.len(), 1, "the graph records only the event that generated its current facts");
}

fn vocabulary_prov_generated() -> &'static str {
    vocab::prov::WAS_GENERATED_BY
}

#[test]
fn dumps_are_sorted_and_identical_for_identical_content() {
    let (a, b) = (GraphStore::in_memory().unwrap(), GraphStore::in_memory().unwrap());
    let items: Vec<Applicable> = (0..20).map(|n| applicable(&event(n), n as i64).0).collect();
    a.apply("x", &items, &Offsets::default()).unwrap();
    let mut reversed = items.clone();
    reversed.reverse();
    // Distinct entities: order of application does not matter.
    b.apply("y", &reversed, &Offsets::default()).unwrap();
    let (mut da, mut db) = (Vec::new(), Vec::new());
    let n = a.dump_nquads(&mut da).unwrap();
    b.dump_nquads(&mut db).unwrap();
    assert!(n > 100);
    assert_eq!(da, db);
    let text = String::from_utf8(da).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut sorted = lines.clone();
    sorted.sort();
    assert_eq!(lines, sorted);
}

mod convergence {
    use super::*;
    use coalition_events::{EventId, Payload};
    use proptest::prelude::*;

    /// A history with creates, updates (versioned and unversioned) and retractions of a few entities.
    fn history() -> Vec<(Event, LogPosition)> {
        let mut events = Vec::new();
        for n in [0usize, 1, 2] {
            let base = event(n);
            events.push(base.clone());
            for v in 1..=2 {
                let mut update = base.clone();
                update.id = EventId(format!("{}-v{v}", base.id));
                update.version = Some(v);
                if let Payload::Partner(p) = &mut update.payload {
                    p.name = format!("{} (v{v})", p.name);
                }
                events.push(update);
            }
        }
        let victim = event(1);
        let mut retraction = coalition_events::Event::retraction(
            victim.partner.clone(),
            "/test",
            victim.kind,
            victim.subject.clone(),
            Some("withdrawn".into()),
        );
        retraction.id = EventId("retract-1".into());
        retraction.version = Some(3);
        retraction.time = victim.time;
        events.push(retraction);
        events
            .into_iter()
            .enumerate()
            .map(|(i, e)| {
                let pos = LogPosition { topic: e.kind.topic().to_owned(), partition: 0, offset: i as i64 };
                (e, pos)
            })
            .collect()
    }

    fn apply_all(order: &[usize], batch: usize) -> String {
        let h = history();
        let store = GraphStore::in_memory().unwrap();
        let items: Vec<Applicable> = order
            .iter()
            .map(|&i| {
                let (e, pos) = &h[i];
                Applicable { event_id: e.id.0.clone(), mapped: map_event(e, pos).unwrap() }
            })
            .collect();
        for chunk in items.chunks(batch.max(1)) {
            store.apply("log", chunk, &Offsets::default()).unwrap();
        }
        digest(&store).unwrap().0
    }

    fn in_order() -> Vec<usize> {
        (0..history().len()).collect()
    }

    #[test]
    fn the_newest_version_wins_and_retractions_remove_facts() {
        let store = GraphStore::in_memory().unwrap();
        let h = history();
        let items: Vec<Applicable> = h
            .iter()
            .rev()
            .map(|(e, pos)| Applicable { event_id: e.id.0.clone(), mapped: map_event(e, pos).unwrap() })
            .collect();
        let stats = store.apply("log", &items, &Offsets::default()).unwrap();
        assert!(!stats.stale_ids.is_empty(), "older versions arriving later are stale");
        let first = &items.iter().find(|a| a.event_id == format!("{}-v2", event(0).id)).unwrap().mapped;
        let names = store
            .select(&format!(
                "SELECT ?n WHERE {{ GRAPH <{}> {{ ?s <{}> ?n }} }}",
                first.graph.as_str(),
                vocab::schema::NAME
            ))
            .unwrap();
        assert!(literal(&names[0], "n").unwrap().ends_with("(v2)"));
        let retracted = &items.iter().find(|a| a.event_id == "retract-1").unwrap().mapped;
        assert!(store.graph(&retracted.graph).unwrap().is_empty(), "retracted entity has no facts");
        let generator = store.generator(&retracted.graph).unwrap().unwrap();
        assert_eq!(generator, Generator { event_id: "retract-1".into(), retracted: true });
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn any_order_and_duplication_converges(
            perm in Just(in_order()).prop_shuffle(),
            dups in proptest::collection::vec(0..10usize, 0..6),
            batch in 1..6usize,
        ) {
            let mut order = perm;
            for d in dups {
                let at = d % order.len();
                order.insert(at, order[(d * 7) % order.len()]);
            }
            prop_assert_eq!(apply_all(&order, batch), apply_all(&in_order(), 64));
        }
    }
}
