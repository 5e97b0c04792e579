//! Graph store write throughput on generated events, without Kafka, HTTP or the index:
//! `cargo run --release -p coalition-store --example apply_bench -- EVENTS.jsonl MODE [LIMIT]
//! [--store DIR] [--new-activities COUNT]` (events from `coalition-bench gen`).
//!
//! - MODE a number: the events are applied in transactions of that many events.
//! - MODE `initial-load`: the bulk path a store that holds nothing takes (two passes over the
//!   file, bulk loader, projections computed afterwards), with the time of each phase. The file
//!   is read twice rather than held, so a million conversations fit in memory.
//! - `--store DIR`: the store at DIR (opened or created, and kept) instead of a temporary one.
//! - `--new-activities COUNT`: instead of the file's events, COUNT new activities, each a copy of
//!   the file's first activity with a new id (what the hot-path benchmark's background load
//!   sends), in transactions of MODE events; events/s is printed for each tenth of them. With
//!   `--store` this measures the live write path on a store of any size, e.g. a copy of one
//!   `initial-load --store` filled.
//!
//! Prints events/s, quads/s and the peak resident memory.
use coalition_events::{EntityId, Event, EventId, Kind};
use coalition_mapping::{map_event, LogPosition, Offsets};
use coalition_store::{Applicable, GraphStore, LoadPlan, StoreError, Verdict};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Instant;

struct Args {
    events: PathBuf,
    batch: Option<usize>,
    limit: usize,
    store: Option<PathBuf>,
    new_activities: Option<usize>,
}

fn parse_args() -> Args {
    let mut positional = Vec::new();
    let (mut store, mut new_activities) = (None, None);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--store" => store = Some(PathBuf::from(args.next().expect("--store DIR"))),
            "--new-activities" => {
                new_activities = Some(args.next().and_then(|n| n.parse().ok()).expect("--new-activities COUNT"))
            }
            _ => positional.push(a),
        }
    }
    let batch = match positional.get(1).map(String::as_str) {
        Some("initial-load") => None,
        Some(n) => Some(n.parse().expect("MODE: a batch size or initial-load")),
        None => panic!("usage: apply_bench EVENTS.jsonl MODE [LIMIT] [--store DIR] [--new-activities COUNT]"),
    };
    Args {
        events: PathBuf::from(&positional[0]),
        batch,
        limit: positional.get(2).map_or(usize::MAX, |s| s.parse().expect("LIMIT")),
        store,
        new_activities,
    }
}

fn main() {
    let args = parse_args();
    let temporary = tempfile::tempdir().expect("tempdir");
    let store = GraphStore::open(args.store.as_deref().unwrap_or(temporary.path())).expect("store");
    let started = Instant::now();
    let (events, quads) = match (args.batch, args.new_activities) {
        (None, _) => initial_load(&store, &args.events, args.limit),
        (Some(batch), None) => {
            let ((positions, items), mapping) = mapped(events(&args.events, args.limit));
            println!("decode, map and validate {:.0} µs per event (before the timed writes)", mapping * 1e6);
            transactions(&store, &positions, &items, batch, false)
        }
        (Some(batch), Some(count)) => {
            let template = events(&args.events, usize::MAX)
                .map(|(_, e)| e)
                .find(|e| e.kind == Kind::Activity)
                .expect("an activity in the events file");
            let ((positions, items), _) = mapped((0..count).map(|n| {
                let (id, event_id) = (format!("bench-activity-{n:08}"), format!("bench-event-{n:08}"));
                (n as i64, template.copy_as(EntityId(id), EventId(event_id)))
            }));
            transactions(&store, &positions, &items, batch, true)
        }
    };
    let s = started.elapsed().as_secs_f64();
    println!(
        "{events} events, {quads} quads, {s:.1} s, {:.0} events/s, {:.0} quads/s; peak memory {}",
        events as f64 / s,
        quads as f64 / s,
        peak_memory()
    );
}

/// The first `limit` events of the file, each with its line number.
fn events(file: &Path, limit: usize) -> impl Iterator<Item = (i64, Event)> {
    let file = std::fs::File::open(file).expect("events file");
    std::io::BufReader::new(file).lines().take(limit).enumerate().map(|(i, line)| {
        let event = coalition_events::decode(line.expect("line").as_bytes()).expect("event");
        (i as i64, event)
    })
}

/// Maps an event found at `offset` of its topic's partition 0.
fn map(offset: i64, event: &Event) -> (LogPosition, Applicable) {
    let pos = LogPosition { topic: event.kind.topic().to_owned(), partition: 0, offset };
    let mapped = map_event(event, &pos).expect("mapped");
    (pos, Applicable { event_id: event.id.0.clone(), mapped })
}

/// The events mapped (their positions, and what the store applies), and the mapping's seconds
/// per event.
fn mapped(events: impl Iterator<Item = (i64, Event)>) -> ((Vec<LogPosition>, Vec<Applicable>), f64) {
    let started = Instant::now();
    let items: (Vec<_>, Vec<_>) = events.map(|(offset, e)| map(offset, &e)).unzip();
    let per_event = started.elapsed().as_secs_f64() / items.0.len().max(1) as f64;
    (items, per_event)
}

/// The process's peak resident memory so far, as `/proc/self/status` gives it.
fn peak_memory() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let peak = status.lines().find(|l| l.starts_with("VmHWM")).unwrap_or("VmHWM: unknown");
    peak.trim_start_matches("VmHWM:").trim().to_owned()
}

/// Applies `items`, found at `positions`, in transactions of `batch`; with `by_tenths`, prints the
/// rate of each tenth.
fn transactions(
    store: &GraphStore,
    positions: &[LogPosition],
    items: &[Applicable],
    batch: usize,
    by_tenths: bool,
) -> (usize, usize) {
    let mut offsets = Offsets::default();
    let mut quads = 0;
    let tenth = items.len().div_ceil(10).max(1);
    let (mut tenth_started, mut tenth_done) = (Instant::now(), 0);
    for (i, (chunk, chunk_positions)) in items.chunks(batch).zip(positions.chunks(batch)).enumerate() {
        for p in chunk_positions {
            offsets.advance(p);
        }
        quads += store.apply("bench", chunk, &offsets).expect("apply").quads;
        let done = ((i + 1) * batch).min(items.len());
        if by_tenths && (done - tenth_done >= tenth || done == items.len()) {
            let s = tenth_started.elapsed().as_secs_f64();
            println!("events {}..{done}: {:.0} events/s", tenth_done, (done - tenth_done) as f64 / s);
            (tenth_started, tenth_done) = (Instant::now(), done);
        }
    }
    (items.len(), quads)
}

/// Bulk-loads the file's first `limit` events, reading it twice: the first pass resolves what
/// each event does, the second hands over the winners' facts.
fn initial_load(store: &GraphStore, file: &Path, limit: usize) -> (usize, usize) {
    let started = Instant::now();
    let mut plan = LoadPlan::default();
    let mut offsets = Offsets::default();
    let mut count = 0;
    let graph = store
        .initial_load("bench", |loader| -> Result<(), StoreError> {
            for (offset, event) in events(file, limit) {
                let (pos, a) = map(offset, &event);
                offsets.advance(&pos);
                count += 1;
                if plan.record(&a) != Verdict::Duplicate {
                    loader.add(a.mapped.provenance)?;
                }
            }
            for (offset, event) in events(file, limit) {
                let (_, a) = map(offset, &event);
                if plan.take_winner(&a) {
                    loader.add(a.mapped.facts.into_iter().chain(a.mapped.generation))?;
                }
            }
            Ok(())
        })
        .expect("initial load");
    let loaded = started.elapsed().as_secs_f64();
    let quads = graph.quads();
    store.finish_initial_load("bench", &offsets, graph).expect("projections");
    println!("bulk load {loaded:.1} s, projections and offsets {:.1} s", started.elapsed().as_secs_f64() - loaded);
    (count, quads)
}
