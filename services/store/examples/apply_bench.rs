//! Graph store write throughput on generated events, without Kafka, HTTP or the index:
//! `cargo run --release -p coalition-store --example apply_bench -- EVENTS.jsonl BATCH [LIMIT]`
//! (events from `coalition-bench gen`). BATCH is the number of events per transaction, or
//! `initial-load` for the bulk path a store that holds nothing takes (two passes, bulk loader,
//! projections computed afterwards), with the time of each of its two phases. Prints events/s,
//! quads/s and the peak resident memory.
use coalition_mapping::{map_event, LogPosition, Offsets};
use coalition_store::{Applicable, GraphStore, LoadPlan, StoreError, Verdict};
use std::io::BufRead;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let file = std::fs::File::open(&args[1]).expect("events file");
    let batch = match args[2].as_str() {
        "initial-load" => None,
        n => Some(n.parse().expect("batch size or initial-load")),
    };
    let limit: usize = args.get(3).map_or(usize::MAX, |s| s.parse().expect("limit"));
    let dir = tempfile::tempdir().expect("tempdir");
    let store = GraphStore::open(dir.path()).expect("store");
    let mut items = Vec::new();
    let mapping = Instant::now();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate().take(limit) {
        let line = line.expect("line");
        let event = coalition_events::decode(line.as_bytes()).expect("event");
        let pos = LogPosition { topic: event.kind.topic().to_owned(), partition: 0, offset: i as i64 };
        let mapped = map_event(&event, &pos).expect("mapped");
        items.push((pos, Applicable { event_id: event.id.0.clone(), mapped }));
    }
    let mapping = mapping.elapsed().as_secs_f64();
    let mut offsets = Offsets::default();
    for (p, _) in &items {
        offsets.advance(p);
    }
    let started = Instant::now();
    let quads = match batch {
        Some(batch) => transactions(&store, &items, batch),
        None => initial_load(&store, &items, &offsets),
    };
    let s = started.elapsed().as_secs_f64();
    println!(
        "{} events, {quads} quads, {s:.1} s, {:.0} events/s, {:.0} quads/s; decode, map and validate \
         {:.0} µs per event (before the timed writes); peak memory {}",
        items.len(),
        items.len() as f64 / s,
        quads as f64 / s,
        mapping * 1e6 / items.len() as f64,
        peak_memory()
    );
}

/// The process's peak resident memory so far, as `/proc/self/status` gives it.
fn peak_memory() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let peak = status.lines().find(|l| l.starts_with("VmHWM")).unwrap_or("VmHWM: unknown");
    peak.trim_start_matches("VmHWM:").trim().to_owned()
}

fn transactions(store: &GraphStore, items: &[(LogPosition, Applicable)], batch: usize) -> usize {
    let mut offsets = Offsets::default();
    let mut quads = 0;
    for chunk in items.chunks(batch) {
        let batch: Vec<Applicable> = chunk.iter().map(|(_, a)| a.clone()).collect();
        for (p, _) in chunk {
            offsets.advance(p);
        }
        quads += store.apply("bench", &batch, &offsets).expect("apply").quads;
    }
    quads
}

fn initial_load(store: &GraphStore, items: &[(LogPosition, Applicable)], offsets: &Offsets) -> usize {
    let started = Instant::now();
    let mut plan = LoadPlan::default();
    let graph = store
        .initial_load("bench", |loader| -> Result<(), StoreError> {
            for (_, a) in items {
                if plan.record(a) != Verdict::Duplicate {
                    loader.add(a.mapped.provenance.iter().cloned())?;
                }
            }
            for (_, a) in items {
                if plan.take_winner(a) {
                    loader.add(a.mapped.facts.iter().chain(&a.mapped.generation).cloned())?;
                }
            }
            Ok(())
        })
        .expect("initial load");
    let loaded = started.elapsed().as_secs_f64();
    let quads = graph.quads();
    store.finish_initial_load("bench", offsets, graph).expect("projections");
    println!("bulk load {loaded:.1} s, projections and offsets {:.1} s", started.elapsed().as_secs_f64() - loaded);
    quads
}
