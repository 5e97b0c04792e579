//! Graph store apply throughput on generated events, without Kafka, HTTP or the index:
//! `cargo run --release -p coalition-store --example apply_bench -- EVENTS.jsonl BATCH [LIMIT]`
//! (events from `coalition-bench gen`). Prints events/s, quads/s and the peak resident memory.
use coalition_mapping::{map_event, LogPosition, Offsets};
use coalition_store::{Applicable, GraphStore};
use std::io::BufRead;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let file = std::fs::File::open(&args[1]).expect("events file");
    let batch: usize = args[2].parse().expect("batch size");
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
    let started = Instant::now();
    let mut offsets = Offsets::default();
    let mut quads = 0;
    for chunk in items.chunks(batch) {
        let batch: Vec<Applicable> = chunk.iter().map(|(_, a)| a.clone()).collect();
        for (p, _) in chunk {
            offsets.advance(p);
        }
        quads += store.apply("bench", &batch, &offsets).expect("apply").quads;
    }
    let s = started.elapsed().as_secs_f64();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let peak = status.lines().find(|l| l.starts_with("VmHWM")).unwrap_or("VmHWM: unknown");
    println!(
        "{} events, {quads} quads, {s:.1} s, {:.0} events/s, {:.0} quads/s; decode, map and validate \
         {:.0} µs per event (before the timed applies); peak memory {}",
        items.len(),
        items.len() as f64 / s,
        quads as f64 / s,
        mapping * 1e6 / items.len() as f64,
        peak.trim_start_matches("VmHWM:").trim()
    );
}
