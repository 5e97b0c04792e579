//! Index commit cost on generated events, without Kafka or the graph:
//! `cargo run --release -p coalition-search --example commit_bench -- EVENTS.jsonl BATCH [LIMIT]`
//! (events from `coalition-bench gen`). Applies the events' documents in batches of BATCH, one
//! commit and reader reload per batch as the materializer does, and prints the commit time's
//! percentiles.
use coalition_mapping::{map_event, LogPosition, Offsets};
use coalition_search::SearchIndex;
use std::io::BufRead;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let file = std::fs::File::open(&args[1]).expect("events file");
    let batch: usize = args[2].parse().expect("batch size");
    let limit: usize = args.get(3).map_or(usize::MAX, |s| s.parse().expect("limit"));
    let mut items = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate().take(limit) {
        let event = coalition_events::decode(line.expect("line").as_bytes()).expect("event");
        let pos = LogPosition { topic: event.kind.topic().to_owned(), partition: 0, offset: i as i64 };
        let mapped = map_event(&event, &pos).expect("mapped");
        items.push((pos, mapped));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let index = SearchIndex::open(dir.path()).expect("index");
    let mut offsets = Offsets::default();
    let mut commits = Vec::new();
    let started = Instant::now();
    for chunk in items.chunks(batch) {
        let replaced: Vec<String> = chunk.iter().map(|(_, m)| m.entity.as_str().to_owned()).collect();
        let docs: Vec<_> = chunk.iter().flat_map(|(_, m)| m.docs.iter().cloned()).collect();
        for (p, _) in chunk {
            offsets.advance(p);
        }
        let t = Instant::now();
        index.apply("bench", &replaced, &docs, &offsets).expect("apply");
        commits.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let total = started.elapsed().as_secs_f64();
    commits.sort_by(f64::total_cmp);
    let pct = |q: f64| commits[((commits.len() - 1) as f64 * q).round() as usize];
    println!(
        "{} events in {} commits, {total:.1} s, {:.0} events/s; per commit ms p50 {:.1} p90 {:.1} p99 {:.1} max {:.1}; {} docs visible",
        items.len(),
        commits.len(),
        items.len() as f64 / total,
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(1.0),
        index.num_docs()
    );
}
