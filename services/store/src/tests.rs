use super::*;
use coalition_events::{decode, Event};
use coalition_mapping::{map_event, LogPosition};

const SEED: &str = include_str!("../../server/seed/coalition-seed.jsonl");

fn seed_lines() -> impl Iterator<Item = &'static str> {
    SEED.lines().filter(|l| !l.trim().is_empty())
}

fn event(n: usize) -> Event {
    decode(seed_lines().nth(n).expect("seed line").as_bytes()).expect("seed decodes")
}

fn applicable(e: &Event, offset: i64) -> (Applicable, LogPosition) {
    let pos = LogPosition { topic: e.kind.topic().to_owned(), partition: 0, offset };
    let mapped = map_event(e, &pos).expect("maps");
    (Applicable { event_id: e.id.0.clone(), mapped }, pos)
}

/// The seed's first `n` events as one batch at offsets 0.., and the offsets after it.
fn seed_batch(n: usize) -> (Vec<Applicable>, Offsets) {
    let mut offsets = Offsets::default();
    let mut batch = Vec::new();
    for i in 0..n {
        let (a, pos) = applicable(&event(i), i as i64);
        offsets.advance(&pos);
        batch.push(a);
    }
    (batch, offsets)
}

#[test]
fn a_batch_and_its_offsets_commit_together() {
    let store = GraphStore::in_memory().unwrap();
    let (batch, offsets) = seed_batch(10);
    let stats = store.apply("log-a", &batch, &offsets).unwrap();
    assert_eq!(stats.applied, 10);
    assert!(stats.duplicate_ids.is_empty());
    assert_eq!(store.offsets("log-a").unwrap(), offsets);
    assert!(store.offsets("log-b").unwrap().0.is_empty(), "offsets are scoped to their log");
    for a in &batch {
        assert!(store.has_event(&a.event_id).unwrap());
        assert_eq!(store.graph(&a.mapped.graph).unwrap().len(), a.mapped.facts.len());
    }
    assert!(!store.has_event("never-applied").unwrap());
    // Applied again, the batch's events are recognised as duplicates and change nothing.
    let again = store.apply("log-a", &batch, &offsets).unwrap();
    assert_eq!((again.applied, again.duplicate_ids.len()), (0, 10));
}

#[test]
fn a_page_of_solutions_is_that_window_of_all_of_them_and_counts_them_all() {
    let store = GraphStore::in_memory().unwrap();
    let (batch, offsets) = seed_batch(30);
    store.apply("log", &batch, &offsets).unwrap();
    let query = "SELECT DISTINCT ?s WHERE { ?s ?p ?o } ORDER BY ?s";
    let all = store.select(query).unwrap();
    assert!(all.len() > 30, "the seed's first events describe more than 30 subjects: {}", all.len());
    for (offset, limit) in [(0, 5), (7, 10), (all.len() - 2, 10), (all.len(), 3), (all.len() + 5, 3), (3, 0)] {
        let (page, total) = store.select_page(query, offset, limit).unwrap();
        assert_eq!(total, all.len(), "offset {offset} limit {limit}");
        let expected: Vec<Row> = all.iter().skip(offset).take(limit).cloned().collect();
        assert_eq!(page, expected, "offset {offset} limit {limit}");
    }
}

#[cfg(feature = "rocksdb")]
#[test]
fn a_store_on_disk_flushes_and_reopens_at_once_after_its_handles_drop() {
    let dir = tempfile::tempdir().unwrap();
    let lines = seed_lines().count();
    let (batch, offsets) = seed_batch(lines);
    let quads = {
        let store = GraphStore::open(dir.path()).unwrap();
        // Redeliveries count towards the flush interval too, so this starts at least one flush.
        for _ in 0..=FLUSH_EVERY_EVENTS / lines {
            store.apply("log", &batch, &offsets).unwrap();
        }
        store.len().unwrap()
    };
    // Dropping the last handle waits for a flush still running, so RocksDB's lock is free.
    let reopened = GraphStore::open(dir.path()).unwrap();
    assert_eq!(reopened.len().unwrap(), quads);
    assert_eq!(reopened.offsets("log").unwrap(), offsets);
}

/// Oxigraph's transactions here write each dictionary string and named graph once
/// (`vendor/oxigraph/PATCHED.md`): what they write must read back the same, including a graph
/// removed and written again in one transaction, and strings an earlier commit already wrote.
#[test]
fn a_transaction_writes_each_string_and_graph_once_and_reads_them_back() {
    use oxigraph::model::{GraphName, Literal, NamedNode, Quad};
    let dir = tempfile::tempdir().unwrap();
    let db = oxigraph::store::Store::open(dir.path()).unwrap();
    let iri = |s: &str| NamedNode::new(format!("https://example.org/{s}")).unwrap();
    let long = |n: usize| Literal::new_simple_literal(format!("a text long enough for the dictionary, number {n}"));
    let quad = |s: &str, n: usize, g: &str| Quad::new(iri(s), iri("says"), long(n), GraphName::NamedNode(iri(g)));
    let expected = [quad("a", 1, "kept"), quad("a", 2, "kept"), quad("b", 1, "kept"), quad("a", 3, "again")];

    let mut tx = db.start_transaction().unwrap();
    for q in &expected[..3] {
        tx.insert(q);
        tx.insert(q);
    }
    tx.insert(&quad("a", 3, "again"));
    tx.remove_named_graph(iri("again").as_ref()).unwrap();
    tx.insert(&quad("a", 3, "again"));
    tx.insert(&quad("gone", 4, "removed"));
    tx.remove_named_graph(iri("removed").as_ref()).unwrap();
    tx.commit().unwrap();
    // A second transaction repeats strings the first one committed, in a graph of its own.
    let mut tx = db.start_transaction().unwrap();
    tx.insert(&quad("b", 2, "second"));
    tx.commit().unwrap();
    drop(db);

    let db = oxigraph::store::Store::open(dir.path()).unwrap();
    db.validate().unwrap();
    let mut quads: Vec<String> = db.iter().map(|q| q.unwrap().to_string()).collect();
    quads.sort();
    let mut want: Vec<String> = expected.iter().chain([&quad("b", 2, "second")]).map(ToString::to_string).collect();
    want.sort();
    assert_eq!(quads, want);
    let mut graphs: Vec<String> = db.named_graphs().map(|g| g.unwrap().to_string()).collect();
    graphs.sort();
    assert_eq!(graphs, ["<https://example.org/again>", "<https://example.org/kept>", "<https://example.org/second>"]);
}

#[test]
fn strings_read_back_through_the_dictionary_cache_are_the_stored_ones() {
    use oxigraph::model::{GraphName, Literal, NamedNode, Quad};
    // More distinct strings than fit without sharing slots of the cache of decoded strings
    // (vendor/oxigraph/PATCHED.md, change 3): thousands evict one another.
    const STRINGS: usize = 40_000;
    let dir = tempfile::tempdir().unwrap();
    let db = oxigraph::store::Store::open(dir.path()).unwrap();
    let says = NamedNode::new("https://example.org/says").unwrap();
    let subject = NamedNode::new("https://example.org/s").unwrap();
    let quad = |n: usize| {
        let text = Literal::new_simple_literal(format!("a text long enough for the dictionary, number {n}"));
        Quad::new(subject.clone(), says.clone(), text, GraphName::DefaultGraph)
    };
    let mut tx = db.start_transaction().unwrap();
    for n in 0..STRINGS {
        tx.insert(&quad(n));
    }
    tx.commit().unwrap();
    let mut want: Vec<String> = (0..STRINGS).map(|n| quad(n).to_string()).collect();
    want.sort();
    // The first pass fills the cache, the next ones read through it.
    for pass in 0..3 {
        let mut quads: Vec<String> = db.iter().map(|q| q.unwrap().to_string()).collect();
        quads.sort();
        assert!(quads == want, "pass {pass}: decoded strings differ from the stored ones");
    }
}

/// Oxigraph's atomic bulk loads here write each batch as sorted runs and merge them at commit
/// (`vendor/oxigraph/PATCHED.md`, change 4): with many small batches that repeat one another's
/// quads and strings, every quad must read back once, through each index, with its strings, and
/// the store must take transactions afterwards.
#[test]
fn a_bulk_load_of_many_batches_reads_back_each_quad_once_through_every_index() {
    use oxigraph::model::{GraphName, NamedNode, Quad};
    use std::collections::BTreeSet;
    let dir = tempfile::tempdir().unwrap();
    let db = oxigraph::store::Store::open(dir.path()).unwrap();
    let iri = |s: String| NamedNode::new(format!("https://example.org/{s}")).unwrap();
    let quad = varied_quad;
    // Each quad twice, far apart, so that batches repeat quads, strings and graph names.
    let all: Vec<Quad> = (0..12_000).chain(0..12_000).map(quad).collect();
    let want: BTreeSet<String> = all.iter().map(ToString::to_string).collect();
    // 1 MB over two threads: the first half in batches of 500 quads, 24 of them; the second
    // handed over as they are, in 18 batches of 700 quads or fewer (as the store's `Loader` does).
    let mut loader = db.bulk_loader().with_num_threads(2).with_max_memory_size_in_megabytes(1);
    let (first, second) = all.split_at(12_000);
    loader.load_quads(first.iter().cloned()).unwrap();
    for batch in second.chunks(700) {
        loader.load_batch(batch.to_vec()).unwrap();
    }
    loader.commit().unwrap();
    db.validate().unwrap();
    assert_eq!(db.len().unwrap(), want.len());
    let read = |pattern: Vec<Quad>| pattern.iter().map(ToString::to_string).collect::<BTreeSet<String>>();
    assert_eq!(read(db.iter().map(|q| q.unwrap()).collect()), want);
    for n in [0, 1, 2, 5, 11, 1_000, 11_999] {
        reads_back_through_every_index(&db, &all, &quad(n));
    }
    let mut graphs: Vec<String> = db.named_graphs().map(|g| g.unwrap().to_string()).collect();
    graphs.sort();
    assert_eq!(graphs.len(), 13);
    // The loaded store takes transactions, which see the loaded quads.
    let mut tx = db.start_transaction().unwrap();
    assert!(tx.contains(&quad(7)).unwrap());
    tx.remove(&quad(7));
    tx.insert(&Quad::new(iri("new".into()), iri("p0".into()), iri("o0".into()), GraphName::DefaultGraph));
    tx.commit().unwrap();
    assert_eq!(db.len().unwrap(), want.len());
    assert!(!db.contains(&quad(7)).unwrap());
    // Nothing of the load is left beside the store's own files.
    let leftovers = bulk_files(dir.path());
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Quad `n` of a set whose quads share subjects (1,009), predicates (7), objects (IRIs, long
/// strings, integers) and graphs (the default graph and 13 named ones) in varied combinations.
fn varied_quad(n: usize) -> oxigraph::model::Quad {
    use oxigraph::model::{GraphName, Literal, NamedNode, Quad, Term};
    let iri = |s: String| NamedNode::new(format!("https://example.org/{s}")).unwrap();
    let object: Term = match n % 3 {
        0 => iri(format!("o{}", n % 97)).into(),
        1 => Literal::new_simple_literal(format!("a text long enough for the dictionary, number {}", n % 501)).into(),
        _ => Literal::from(n as i64).into(),
    };
    let graph = if n.is_multiple_of(10) { GraphName::DefaultGraph } else { iri(format!("g{}", n % 13)).into() };
    Quad::new(iri(format!("s{}", n % 1009)), iri(format!("p{}", n % 7)), object, graph)
}

/// Asserts that the patterns through `q`'s subject, predicate and object, object, and graph each
/// find in `db` exactly the quads of `all` that match them (the subject, predicate, object and
/// graph indexes).
fn reads_back_through_every_index(
    db: &oxigraph::store::Store,
    all: &[oxigraph::model::Quad],
    q: &oxigraph::model::Quad,
) {
    use oxigraph::model::Quad;
    use std::collections::BTreeSet;
    let read = |found: Vec<Quad>| found.iter().map(ToString::to_string).collect::<BTreeSet<String>>();
    let want_for = |keep: &dyn Fn(&Quad) -> bool| -> BTreeSet<String> {
        all.iter().filter(|x| keep(x)).map(ToString::to_string).collect()
    };
    let by_subject: Vec<Quad> =
        db.quads_for_pattern(Some(q.subject.as_ref()), None, None, None).map(|r| r.unwrap()).collect();
    assert_eq!(read(by_subject), want_for(&|x| x.subject == q.subject));
    let by_predicate_object: Vec<Quad> = db
        .quads_for_pattern(None, Some(q.predicate.as_ref()), Some(q.object.as_ref()), None)
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(read(by_predicate_object), want_for(&|x| x.predicate == q.predicate && x.object == q.object));
    let by_object: Vec<Quad> =
        db.quads_for_pattern(None, None, Some(q.object.as_ref()), None).map(|r| r.unwrap()).collect();
    assert_eq!(read(by_object), want_for(&|x| x.object == q.object));
    let by_graph: Vec<Quad> =
        db.quads_for_pattern(None, None, None, Some(q.graph_name.as_ref())).map(|r| r.unwrap()).collect();
    assert_eq!(read(by_graph), want_for(&|x| x.graph_name == q.graph_name));
}

#[test]
fn quads_committed_and_flushed_read_back_through_the_prefix_filters() {
    use oxigraph::model::{GraphNameRef, NamedNode, NamedNodeRef, Quad};
    // The quad indexes keep Bloom filters of their first term in each SST file (the vendored
    // Oxigraph's `PATCHED.md`, change 8): a scan skips the files whose filter rules its subject
    // or graph out. Quads committed in transactions and flushed into many files, some written
    // again and some removed, must all still be found, and nothing else.
    let dir = tempfile::tempdir().unwrap();
    let db = oxigraph::store::Store::open(dir.path()).unwrap();
    let mut all: Vec<Quad> = Vec::new();
    for chunk in (0..6_000).collect::<Vec<_>>().chunks(500) {
        let mut tx = db.start_transaction().unwrap();
        for &n in chunk {
            let q = varied_quad(n);
            tx.insert(&q);
            all.push(q);
        }
        // A quad of an earlier file removed, inside a transaction that reads it first.
        let gone = varied_quad(chunk[0] / 2 + 1);
        if tx.contains(&gone).unwrap() {
            tx.remove(&gone);
            all.retain(|q| *q != gone);
        }
        // Written twice in one transaction (its batch keeps each write, change 9): the
        // transaction and then the store read the last.
        let first = varied_quad(chunk[0]);
        let fleeting = Quad::new(
            NamedNode::new(format!("https://example.org/fleeting{}", chunk[0])).unwrap(),
            first.predicate.clone(),
            first.object.clone(),
            first.graph_name.clone(),
        );
        tx.insert(&fleeting);
        tx.remove(&fleeting);
        tx.remove(&first);
        tx.insert(&first);
        assert!(!tx.contains(&fleeting).unwrap() && tx.contains(&first).unwrap());
        assert_eq!(tx.quads_for_pattern(Some(fleeting.subject.as_ref()), None, None, None).count(), 0);
        assert_eq!(
            tx.quads_for_pattern(None, None, None, Some(first.graph_name.as_ref()))
                .filter(|q| q.as_ref().unwrap() == &first)
                .count(),
            1
        );
        tx.commit().unwrap();
        assert!(!db.contains(&fleeting).unwrap() && db.contains(&first).unwrap());
        db.flush().unwrap();
    }
    all.sort_by_key(ToString::to_string);
    all.dedup();
    assert_eq!(db.len().unwrap(), all.len());
    for n in [0, 1, 2, 5, 11, 499, 500, 1_000, 3_333, 5_999] {
        reads_back_through_every_index(&db, &all, &varied_quad(n));
    }
    // A subject and a graph that are in no file are found nowhere, inside a transaction too.
    let absent = NamedNode::new("https://example.org/s-absent").unwrap();
    assert_eq!(db.quads_for_pattern(Some(absent.as_ref().into()), None, None, None).count(), 0);
    assert_eq!(db.quads_for_pattern(None, None, None, Some(GraphNameRef::NamedNode(absent.as_ref()))).count(), 0);
    let tx = db.start_transaction().unwrap();
    assert_eq!(tx.quads_for_pattern(Some(absent.as_ref().into()), None, None, None).count(), 0);
    let s0 = NamedNodeRef::new("https://example.org/s0").unwrap();
    assert_eq!(
        tx.quads_for_pattern(Some(s0.into()), None, None, None).count(),
        all.iter().filter(|q| q.subject.to_string() == s0.to_string()).count()
    );
}

/// The names of the files in `dir` that a bulk load names (`bulk-*`), sorted.
fn bulk_files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("bulk-"))
        .collect();
    names.sort();
    names
}

/// A process that stops during a bulk load leaves its runs and SST files in the store directory;
/// opening the store for writing removes them (and nothing else).
#[test]
fn opening_a_store_removes_what_an_unfinished_bulk_load_left() {
    let dir = tempfile::tempdir().unwrap();
    let (batch, offsets) = seed_batch(5);
    GraphStore::open(dir.path()).unwrap().apply("log", &batch, &offsets).unwrap();
    for name in ["bulk-1.run", "bulk-2.sst", "bulk-notes.txt"] {
        std::fs::write(dir.path().join(name), b"left by a load that stopped").unwrap();
    }
    let store = GraphStore::open(dir.path()).unwrap();
    assert_eq!(store.offsets("log").unwrap(), offsets, "the store itself is untouched");
    assert_eq!(bulk_files(dir.path()), ["bulk-notes.txt"]);
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
    assert_eq!(events.len(), 2, "the two events describe the entity: {events:?}");
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
    let (items, _) = seed_batch(20);
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

    /// Cached graphs, and the views decoded from them, equal the stored graphs after each event.
    #[test]
    fn cached_entity_graphs_follow_every_update_and_retraction() {
        let store = GraphStore::in_memory().unwrap();
        let mut seen = Vec::new();
        let sorted = |quads: &[oxigraph::model::Quad]| {
            let mut lines: Vec<String> = quads.iter().map(ToString::to_string).collect();
            lines.sort();
            lines
        };
        for (e, pos) in history() {
            let item = Applicable { event_id: e.id.0.clone(), mapped: map_event(&e, &pos).unwrap() };
            seen.push((e.kind, e.subject.0.clone(), item.mapped.graph.clone()));
            // Read every entity so far through the cache before and after the commit.
            for (kind, id, _) in &seen {
                store.entity_view(*kind, id, |quads| sorted(quads)).unwrap();
            }
            store.apply("log", std::slice::from_ref(&item), &Offsets::default()).unwrap();
            for (kind, id, graph) in &seen {
                let stored = sorted(&store.graph(graph).unwrap());
                let cached = sorted(&store.entity_graph(*kind, id).unwrap());
                assert_eq!(cached, stored, "{kind:?} {id} after event {}", e.id.0);
                let view = store.entity_view(*kind, id, |quads| sorted(quads)).unwrap();
                assert_eq!(*view, stored, "the view of {kind:?} {id} after event {}", e.id.0);
            }
        }
        assert!(store.cached_entity_graphs() > 0, "the reads above went through the cache");
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

/// The evidence projections equal their from-scratch SPARQL aggregates after any sequence of
/// creates, updates, retractions, links and recommendation-hierarchy changes, in any order.
mod projections {
    use super::*;
    use proptest::prelude::*;

    const PARTNERS: [&str; 4] = ["p0", "p1", "p2", "p3"];
    const COUNTRIES: [&str; 3] = ["FR", "JP", "BR"];
    const GROUPS: [&str; 3] = ["disabled", "lgbtq", "women"];
    /// rec-0 and rec-1 are numbered; rec-2 and rec-3 move around the hierarchy; rec-9 never exists.
    const RECS: [&str; 5] = ["rec-0", "rec-1", "rec-2", "rec-3", "rec-9"];

    /// One generated change: which entity, the event's parameters, and whether it retracts.
    #[derive(Debug, Clone)]
    struct Op {
        kind: u8,
        idx: usize,
        bits: u32,
        pick: usize,
        amount: i64,
        retract: bool,
    }

    fn op() -> impl Strategy<Value = Op> {
        (0u8..7, 0usize..4, any::<u32>(), 0usize..16, 0i64..1000, prop::bool::weighted(0.15))
            .prop_map(|(kind, idx, bits, pick, amount, retract)| Op { kind, idx, bits, pick, amount, retract })
    }

    fn subset<'a>(all: &[&'a str], bits: u32) -> Vec<&'a str> {
        all.iter().enumerate().filter(|(i, _)| bits & (1 << i) != 0).map(|(_, s)| *s).collect()
    }

    fn event_json(op: &Op, version: usize) -> String {
        let partner = PARTNERS[op.pick % 4];
        let rec_refs = subset(&RECS, op.bits >> 8);
        let (slug, id, data) = match op.kind {
            0 => {
                let id = format!("rec-{}", op.idx);
                let broader = match (op.idx, op.pick % 3) {
                    (0 | 1, _) => serde_json::Value::Null,
                    (_, 0) => serde_json::Value::Null,
                    (_, p) => serde_json::json!(RECS[(p + op.idx) % 4]),
                };
                let mut data = serde_json::json!({"id": id, "title": "Rec", "text": "Text"});
                if op.idx < 2 {
                    data["number"] = serde_json::json!(op.idx + 1);
                }
                if !broader.is_null() && broader != serde_json::json!(id) {
                    data["broader"] = broader;
                }
                ("recommendation", id, data)
            }
            1 => {
                let id = format!("cs-{}", op.idx % 3);
                let mut data = serde_json::json!({"id": id, "title": "Case", "narrative": "N",
                    "country": COUNTRIES[op.pick % 3], "partners": subset(&PARTNERS, op.bits),
                    "implements": rec_refs});
                // Some without a start date; the others in two years, so that dates tie.
                if op.bits & 0x1_0000 != 0 {
                    data["startDate"] = serde_json::json!(format!("202{}-01-01", op.pick % 2));
                }
                ("case-study", id, data)
            }
            2 => {
                let id = format!("act-{}", op.idx);
                let mut led = subset(&PARTNERS, op.bits);
                if led.is_empty() {
                    led.push(partner);
                }
                let mut data = serde_json::json!({"id": id, "title": "Act", "activityType": "workshop",
                    "date": format!("{}-0{}-01", 2022 + op.pick % 3, 1 + op.pick % 9), "ledBy": led,
                    "implements": rec_refs, "reach": op.amount});
                if op.bits & 0x8000 != 0 {
                    data["country"] = serde_json::json!(COUNTRIES[op.pick % 3]);
                }
                // Some part of a case study, which they may leave or change.
                if op.bits & 0x2_0000 != 0 {
                    data["caseStudy"] = serde_json::json!(format!("cs-{}", (op.pick / 4) % 3));
                }
                ("activity", id, data)
            }
            3 => {
                let id = format!("out-{}", op.idx);
                let measures = if op.bits & 1 == 0 {
                    serde_json::json!({"kind": "caseStudy", "id": format!("cs-{}", op.pick % 3)})
                } else {
                    serde_json::json!({"kind": "activity", "id": format!("act-{}", op.pick % 4)})
                };
                let data = serde_json::json!({"id": id, "description": "D", "metric": "m", "value": op.amount,
                    "unit": "people", "date": format!("202{}-0{}-1{}", op.pick % 5, 1 + op.bits % 9, op.idx),
                    "measures": measures});
                ("outcome", id, data)
            }
            4 => {
                let id = format!("dlg-{}", op.idx % 3);
                let data = serde_json::json!({"id": id, "title": "Dialogue", "date": "2024-01-01",
                    "country": COUNTRIES[op.pick % 3], "audienceGroups": subset(&GROUPS, op.bits),
                    "reach": op.amount});
                ("dialogue", id, data)
            }
            5 => {
                let id = format!("ev-{}", op.idx % 3);
                let mut data = serde_json::json!({"id": id, "measure": "trust", "group": GROUPS[op.pick % 3],
                    "year": 2024});
                if op.bits & 1 == 1 {
                    data["country"] = serde_json::json!(COUNTRIES[op.pick % 3]);
                }
                ("evidence", id, data)
            }
            _ => {
                let id = format!("link-{}", op.idx % 3);
                let subject = if op.bits & 1 == 0 {
                    serde_json::json!({"kind": "caseStudy", "id": format!("cs-{}", op.pick % 3)})
                } else {
                    serde_json::json!({"kind": "activity", "id": format!("act-{}", op.pick % 4)})
                };
                let data = serde_json::json!({"id": id, "subject": subject, "relation": "implements",
                    "recommendation": RECS[(op.bits as usize >> 4) % 5]});
                ("link", id, data)
            }
        };
        let verb = if slug == "link" { "created" } else { "submitted" };
        let mut envelope = serde_json::json!({"specversion": "1.0", "id": format!("ev-{version}"),
            "source": "/test", "type": format!("org.coalition.{slug}.{verb}.v1"), "subject": id,
            "time": "2024-11-01T10:00:00Z", "datacontenttype": "application/json", "partnerid": partner,
            "entityversion": version, "data": data});
        if op.retract {
            envelope["type"] = serde_json::json!(format!("org.coalition.{slug}.retracted.v1"));
            envelope["data"] = serde_json::json!({"id": id, "reason": "withdrawn"});
        }
        envelope.to_string()
    }

    fn items(ops: &[Op]) -> Vec<Applicable> {
        ops.iter()
            .enumerate()
            .map(|(i, op)| {
                let json = event_json(op, i + 1);
                let e = decode(json.as_bytes()).unwrap_or_else(|err| panic!("{json}: {err}"));
                applicable(&e, i as i64).0
            })
            .collect()
    }

    /// `items` in an order drawn from `seed` (xorshift, Fisher–Yates).
    fn shuffled(mut items: Vec<Applicable>, seed: u64) -> Vec<Applicable> {
        let mut state = seed | 1;
        for i in (1..items.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            items.swap(i, (state % (i as u64 + 1)) as usize);
        }
        items
    }

    /// Loads `items` (in this order) the way an initial load does: provenance of every new event
    /// in the first pass, facts of each graph's winner in the second, then the projections.
    fn load_all(items: &[Applicable]) -> GraphStore {
        let store = GraphStore::in_memory().unwrap();
        let mut plan = LoadPlan::default();
        let graph = store
            .initial_load("log", |loader| -> Result<(), StoreError> {
                for a in items {
                    if plan.record(a) != Verdict::Duplicate {
                        loader.add(a.mapped.provenance.iter().cloned())?;
                    }
                }
                for a in items {
                    if plan.take_winner(a) {
                        loader.add(a.mapped.facts.iter().chain(&a.mapped.generation).cloned())?;
                    }
                }
                Ok(())
            })
            .unwrap();
        store.finish_initial_load("log", &Offsets::default(), graph).unwrap();
        store
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn an_initial_load_equals_applying_the_same_events(
            ops in proptest::collection::vec(op(), 1..40),
            dups in proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
            batch in 1..8usize,
            shuffle in any::<u64>(),
        ) {
            let mut items = shuffled(items(&ops), shuffle);
            for d in dups {
                let copy = items[d.index(items.len())].clone();
                items.push(copy);
            }
            let applied = GraphStore::in_memory().unwrap();
            let mut counts = (0, 0, 0);
            for chunk in items.chunks(batch) {
                let stats = applied.apply("log", chunk, &Offsets::default()).unwrap();
                counts.0 += stats.applied;
                counts.1 += stats.stale_ids.len();
                counts.2 += stats.duplicate_ids.len();
            }
            let mut plan = LoadPlan::default();
            let mut verdicts = (0, 0, 0);
            for a in &items {
                match plan.record(a) {
                    Verdict::Applied => verdicts.0 += 1,
                    Verdict::Stale => verdicts.1 += 1,
                    Verdict::Duplicate => verdicts.2 += 1,
                }
            }
            prop_assert_eq!(verdicts, counts);
            let loaded = load_all(&items);
            prop_assert_eq!(projection::snapshot(&loaded).unwrap(), projection::from_scratch(&loaded).unwrap());
            prop_assert_eq!(digest(&loaded).unwrap(), digest(&applied).unwrap());
        }
    }

    #[test]
    fn an_unfinished_initial_load_is_discarded() {
        let items = items(&[Op { kind: 2, idx: 0, bits: 1, pick: 0, amount: 5, retract: false }]);
        let store = GraphStore::in_memory().unwrap();
        store.initial_load("log", |loader| loader.add(items[0].mapped.facts.iter().cloned())).unwrap();
        assert!(!store.is_empty().unwrap(), "the load is visible once committed");
        assert!(!store.discard_unfinished_load("other-log").unwrap(), "only the log's own load counts");
        assert!(store.discard_unfinished_load("log").unwrap());
        assert!(store.is_empty().unwrap());
        let finished = load_all(&items);
        assert!(!finished.discard_unfinished_load("log").unwrap(), "a finished load is kept");
        assert!(!finished.is_empty().unwrap());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn projections_equal_their_from_scratch_aggregates(
            ops in proptest::collection::vec(op(), 1..40),
            batch in 1..8usize,
            shuffle in any::<u64>(),
        ) {
            // Deliver in a shuffled order (versions decide which event wins).
            let items = shuffled(items(&ops), shuffle);
            let store = GraphStore::in_memory().unwrap();
            for chunk in items.chunks(batch) {
                store.apply("log", chunk, &Offsets::default()).unwrap();
                let maintained = projection::snapshot(&store).unwrap();
                let expected = projection::from_scratch(&store).unwrap();
                prop_assert_eq!(maintained, expected);
                // Read after every batch, so that a kept list must follow the next batch's changes.
                for rec in RECS {
                    prop_assert_eq!(kept_order(&store, rec), ordered_from_facts(&store, rec), "{}", rec);
                }
                // Outcome lists: some case studies read alone, then all together (kept and not).
                prop_assert_eq!(kept_outcomes(&store, &CASE_STUDIES[..1]), outcomes_from_facts(&store, &CASE_STUDIES[..1]));
                prop_assert_eq!(kept_outcomes(&store, &CASE_STUDIES), outcomes_from_facts(&store, &CASE_STUDIES));
            }
        }
    }

    /// Every case study the generated events name.
    const CASE_STUDIES: [&str; 3] = ["cs-0", "cs-1", "cs-2"];

    type OutcomeLists = BTreeMap<String, Vec<String>>;

    /// The outcome lists of `ids`, as the store keeps them.
    fn kept_outcomes(store: &GraphStore, ids: &[&str]) -> OutcomeLists {
        let iris: Vec<_> =
            ids.iter().map(|id| coalition_mapping::entity_iri(coalition_events::Kind::CaseStudy, id)).collect();
        let lists = store.case_study_outcomes(&iris).unwrap();
        assert_eq!(lists.len(), ids.len(), "every case study asked about is answered");
        lists
            .into_iter()
            .map(|(cs, list)| (cs.into_string(), list.iter().map(|o| o.as_str().to_owned()).collect()))
            .collect()
    }

    /// The same, each computed from the facts with a query of its own.
    fn outcomes_from_facts(store: &GraphStore, ids: &[&str]) -> OutcomeLists {
        ids.iter()
            .map(|id| {
                let cs = coalition_mapping::entity_iri(coalition_events::Kind::CaseStudy, id);
                let rows = store
                    .select(&format!(
                        "SELECT DISTINCT ?o WHERE {{ ?o a <{outcome}> . \
                         {{ ?o <{measures}> <{cs}> }} UNION {{ ?a <{part_of}> <{cs}> . ?o <{measures}> ?a }} }} ORDER BY ?o",
                        outcome = coal::OUTCOME,
                        measures = coal::MEASURES,
                        part_of = coal::PART_OF_CASE_STUDY,
                        cs = cs.as_str(),
                    ))
                    .unwrap();
                (cs.into_string(), rows.iter().filter_map(|row| literal(row, "o")).collect())
            })
            .collect()
    }

    /// `rec`'s case studies in page order, as the store keeps them.
    fn kept_order(store: &GraphStore, rec: &str) -> Vec<String> {
        let rec = coalition_mapping::entity_iri(coalition_events::Kind::Recommendation, rec);
        store.case_studies_in_order(&rec).unwrap().iter().map(|n| n.as_str().to_owned()).collect()
    }

    /// The same, computed from the case studies' facts.
    fn ordered_from_facts(store: &GraphStore, rec: &str) -> Vec<String> {
        let rec = coalition_mapping::entity_iri(coalition_events::Kind::Recommendation, rec);
        let rows = store
            .select(&format!(
                "SELECT DISTINCT ?e WHERE {{ ?e a <{}> ; <{}> <{}> OPTIONAL {{ ?e <{}> ?date }} }} ORDER BY ?date ?e",
                coal::CASE_STUDY,
                coal::IMPLEMENTS,
                rec.as_str(),
                vocab::schema::START_DATE
            ))
            .unwrap();
        rows.iter().filter_map(|row| literal(row, "e")).collect()
    }

    /// A store holding the built-in dataset, applied in one batch.
    fn seed_store() -> GraphStore {
        let store = GraphStore::in_memory().unwrap();
        let (batch, _) = seed_batch(seed_lines().count());
        store.apply("log", &batch, &Offsets::default()).unwrap();
        store
    }

    #[test]
    fn the_seed_dataset_projects_its_figures() {
        let store = seed_store();
        let maintained = projection::snapshot(&store).unwrap();
        assert_eq!(maintained, projection::from_scratch(&store).unwrap());
        let rec2 = projection::Observation::Dashboard {
            recommendation: coalition_mapping::entity_iri(
                coalition_events::Kind::Recommendation,
                "rec-2-diversity-in-research",
            ),
        };
        let row = &maintained[rec2.iri().as_str()];
        assert!(row[vocab::coal::CASE_STUDY_COUNT].parse::<i64>().unwrap() >= 1, "{row:?}");
    }

    /// H3 (`queries/h3-…sparql`) chooses its page by the list cells' IRIs, relying on them to sort
    /// as their case studies do. Over a list of three pages, with ids that sort differently as
    /// numbers and as strings, every page equals the same question computed from the facts.
    #[test]
    fn h3_pages_a_long_case_study_list_as_the_facts_do() {
        let store = seed_store();
        let rec = "rec-2-diversity-in-research";
        let mut batch = Vec::new();
        for i in 0..45 {
            let id = match i % 3 {
                0 => format!("cs-{i}"),
                1 => format!("{i}-x"),
                _ => format!("z{}", 100 - i),
            };
            let json = serde_json::json!({"specversion": "1.0", "id": format!("page-{i}"), "source": "/test",
                "type": "org.coalition.case-study.submitted.v1", "subject": id, "time": "2024-11-01T10:00:00Z",
                "datacontenttype": "application/json", "partnerid": "abbvie-gk", "entityversion": 1,
                "data": {"id": id, "title": format!("Case {i}"), "narrative": "N", "country": "FR",
                    "partners": ["abbvie-gk"], "implements": [rec]}});
            batch.push(applicable(&decode(json.to_string().as_bytes()).unwrap(), i).0);
        }
        store.apply("log", &batch, &Offsets::default()).unwrap();

        let rows = |query: &str| -> Vec<Vec<(String, String)>> {
            let mut rows: Vec<_> = store
                .select(query)
                .unwrap()
                .into_iter()
                .map(|row| row.into_iter().map(|(k, v)| (k, v.to_string())).collect())
                .collect();
            rows.sort();
            rows
        };
        let projected = include_str!("../../../queries/h3-recommendation-case-studies-outcomes.sparql");
        let computed = include_str!("../../../queries/raw/h3-recommendation-case-studies-outcomes.sparql");
        let mut pages = Vec::new();
        for offset in [0, 20, 40] {
            let page = |query: &str| {
                assert_eq!(query.matches("OFFSET 0").count(), 1, "the page is set by one OFFSET");
                rows(&query.replace("OFFSET 0", &format!("OFFSET {offset}")))
            };
            let got = page(projected);
            assert!(!got.is_empty(), "page at {offset}");
            assert_eq!(got, page(computed), "the page at {offset}");
            pages.push(got);
        }
        assert!(pages[0] != pages[1] && pages[1] != pages[2], "three different pages");
    }

    /// The `n`th version of the entity `data` describes, as an event of type `slug`.`verb`.
    fn event(n: i64, slug: &str, verb: &str, data: serde_json::Value) -> Applicable {
        let json = serde_json::json!({"specversion": "1.0", "id": format!("keep-{n}-{}", data["id"].as_str().unwrap()), "source": "/test",
            "type": format!("org.coalition.{slug}.{verb}.v1"), "subject": data["id"],
            "time": "2024-11-01T10:00:00Z", "datacontenttype": "application/json", "partnerid": "abbvie-gk",
            "entityversion": n, "data": data});
        applicable(&decode(json.to_string().as_bytes()).unwrap(), 1000 + n).0
    }

    /// A kept list outlives commits that cannot change it (the stream's activities), and follows
    /// those that can: a case study's new start date, and its retraction.
    #[test]
    fn a_kept_case_study_list_follows_its_case_studies_only() {
        let store = seed_store();
        let rec = "rec-2-diversity-in-research";
        let case_study = |n: i64, id: &str, start: &str| {
            event(
                n,
                "case-study",
                "submitted",
                serde_json::json!({"id": id, "title": "Kept", "narrative": "N",
                "country": "FR", "partners": ["abbvie-gk"], "implements": [rec], "startDate": start}),
            )
        };
        let first = [case_study(1, "cs-kept", "2030-01-01"), case_study(1, "cs-other", "2020-01-01")];
        store.apply("log", &first, &Offsets::default()).unwrap();
        let before = kept_order(&store, rec);
        assert_eq!(before, ordered_from_facts(&store, rec));
        assert!(before.len() >= 3 && before.last().unwrap().ends_with("/cs-kept"), "latest start last: {before:?}");
        assert_eq!(store.cache.lists(), 1);

        let activity = event(
            2,
            "activity",
            "submitted",
            serde_json::json!({"id": "act-kept", "title": "A",
            "activityType": "workshop", "date": "2024-02-01", "ledBy": ["abbvie-gk"], "implements": [rec]}),
        );
        store.apply("log", &[activity], &Offsets::default()).unwrap();
        assert_eq!(store.cache.lists(), 1, "an activity leaves the list kept");
        assert_eq!(kept_order(&store, rec), before);

        store.apply("log", &[case_study(3, "cs-kept", "1990-01-01")], &Offsets::default()).unwrap();
        assert_eq!(store.cache.lists(), 0, "a case study's change drops the list");
        let after = kept_order(&store, rec);
        assert_eq!(after, ordered_from_facts(&store, rec));
        let at = |list: &[String]| list.iter().position(|iri| iri.ends_with("/cs-kept"));
        assert!(at(&after) < at(&before), "an earlier start moves it up: {after:?}");

        let retraction = event(4, "case-study", "retracted", serde_json::json!({"id": "cs-kept", "reason": "r"}));
        store.apply("log", &[retraction], &Offsets::default()).unwrap();
        assert_eq!(kept_order(&store, rec), before[..before.len() - 1]);
    }

    /// A commit drops the outcome lists of the case studies it touches, and only those: an outcome
    /// measuring an activity drops its case study's list; an activity moving drops both lists.
    #[test]
    fn a_kept_outcome_list_follows_its_case_study_outcomes_and_activities() {
        let store = seed_store();
        let case_study = |id: &str| {
            event(
                1,
                "case-study",
                "submitted",
                serde_json::json!({"id": id, "title": "C", "narrative": "N",
                "country": "FR", "partners": ["abbvie-gk"], "implements": ["rec-2-diversity-in-research"]}),
            )
        };
        let activity = |n: i64, cs: &str| {
            event(
                n,
                "activity",
                "submitted",
                serde_json::json!({"id": "act-o", "title": "A", "activityType": "workshop",
                "date": "2024-02-01", "ledBy": ["abbvie-gk"], "caseStudy": cs}),
            )
        };
        let outcome = |id: &str, kind: &str, of: &str| {
            event(
                1,
                "outcome",
                "submitted",
                serde_json::json!({"id": id, "description": "D", "metric": "m",
                "value": 1, "unit": "people", "date": "2024-03-01", "measures": {"kind": kind, "id": of}}),
            )
        };
        let batch =
            [case_study("cs-a"), case_study("cs-b"), activity(1, "cs-a"), outcome("out-b", "caseStudy", "cs-b")];
        store.apply("log", &batch, &Offsets::default()).unwrap();
        let both = ["cs-a", "cs-b"];
        let expect = |lists: &[(&str, &[&str])]| -> OutcomeLists {
            let iri = |kind, id: &str| coalition_mapping::entity_iri(kind, id).into_string();
            lists
                .iter()
                .map(|(cs, outs)| {
                    let outs = outs.iter().map(|o| iri(coalition_events::Kind::Outcome, o)).collect();
                    (iri(coalition_events::Kind::CaseStudy, cs), outs)
                })
                .collect()
        };
        assert_eq!(kept_outcomes(&store, &both), expect(&[("cs-a", &[]), ("cs-b", &["out-b"])]));
        assert_eq!(store.cache.outcome_lists(), 2);

        store.apply("log", &[outcome("out-a", "activity", "act-o")], &Offsets::default()).unwrap();
        assert_eq!(store.cache.outcome_lists(), 1, "an outcome of cs-a's activity drops cs-a's list alone");
        assert_eq!(kept_outcomes(&store, &both), expect(&[("cs-a", &["out-a"]), ("cs-b", &["out-b"])]));

        store.apply("log", &[activity(2, "cs-b")], &Offsets::default()).unwrap();
        assert_eq!(store.cache.outcome_lists(), 0, "the activity left cs-a and joined cs-b");
        assert_eq!(kept_outcomes(&store, &both), expect(&[("cs-a", &[]), ("cs-b", &["out-a", "out-b"])]));
        assert_eq!(kept_outcomes(&store, &both), outcomes_from_facts(&store, &both));
    }

    #[test]
    fn a_store_maintained_before_the_case_study_lists_gets_them() {
        let store = seed_store();
        let mut want = Vec::new();
        store.dump_nquads(&mut want).unwrap();
        assert_eq!(store.add_missing_case_study_lists().unwrap(), 0, "a store with lists is left alone");
        // What a store maintained before the lists holds: no list, no case-study cell.
        let db = store.oxigraph();
        db.remove_named_graph(oxigraph::model::NamedNodeRef::new(vocab::CASE_STUDIES_GRAPH).unwrap()).unwrap();
        let cells = oxigraph::model::NamedNodeRef::new(vocab::PROJECTION_CELLS_GRAPH).unwrap();
        let listed: Vec<_> = db
            .quads_for_pattern(None, None, None, Some(cells.into()))
            .map(Result::unwrap)
            .filter(|q| q.subject.to_string().contains("/projection/case-studies/"))
            .collect();
        assert!(!listed.is_empty());
        for q in &listed {
            db.remove(q).unwrap();
        }
        assert_ne!(projection::snapshot(&store).unwrap(), projection::from_scratch(&store).unwrap());

        assert_eq!(store.add_missing_case_study_lists().unwrap(), 3, "the seed's three case studies");
        let mut got = Vec::new();
        store.dump_nquads(&mut got).unwrap();
        assert!(got == want, "the store equals one maintained with the lists all along");
    }
}

/// The epoch readers key kept answers by moves with every change they can see: a committed batch,
/// an initial load (its facts, then its projections and offsets), a store swapping in.
#[test]
fn the_epoch_moves_with_every_visible_change() {
    let store = GraphStore::in_memory().unwrap();
    let start = store.epoch();
    let (batch, offsets) = seed_batch(5);
    store.apply("log", &batch[..3], &offsets).unwrap();
    let applied = store.epoch();
    assert!(applied > start, "a batch: {applied} after {start}");
    assert_eq!(store.epoch(), applied, "reading moves nothing");
    store.apply("log", &batch[..3], &offsets).unwrap();
    let duplicates = store.epoch();
    assert!(duplicates > applied, "a batch of duplicates (its offsets still commit)");

    let loaded = GraphStore::in_memory().unwrap();
    let before = loaded.epoch();
    let graph =
        loaded.initial_load::<StoreError>("log", |l| l.add(batch.iter().flat_map(|a| a.mapped.facts.clone()))).unwrap();
    let facts = loaded.epoch();
    assert!(facts > before, "the load's facts: {facts} after {before}");
    loaded.finish_initial_load("log", &offsets, graph).unwrap();
    assert!(loaded.epoch() > facts, "the load's projections and offsets");

    store.replace_with(&loaded);
    assert!(store.epoch() > duplicates, "a store swapping in");
}
