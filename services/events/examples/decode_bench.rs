//! Times `decode` over the events of a JSON-lines file: `decode_bench FILE [LIMIT]`.

use std::io::BufRead;
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: decode_bench FILE [LIMIT]");
    let limit: usize = args.next().map_or(usize::MAX, |n| n.parse().expect("LIMIT is a number"));
    let file = std::io::BufReader::new(std::fs::File::open(&path).expect("FILE opens"));
    let lines: Vec<Vec<u8>> = file.split(b'\n').take(limit).map(|l| l.expect("FILE reads")).collect();
    for round in 0..3 {
        let started = Instant::now();
        let mut bad = 0;
        for line in &lines {
            bad += usize::from(coalition_events::decode(line).is_err());
        }
        let us = started.elapsed().as_secs_f64() * 1e6 / lines.len() as f64;
        println!("round {round}: {} events, {bad} rejected, {us:.2} µs an event", lines.len());
    }
}
