//! `coalition-bench`: measurements against the real `coalition` binary and a real broker process.
//!
//! `gen` writes a deterministic synthetic coalition (events and N-Quads); `hot-path` ingests it
//! through Kafka and measures ingest, freshness, rebuild, RSS and the hot-path queries next to
//! raw Oxigraph (`docs/performance.md`).
//!
//! `abuse` runs hostile callers against a loaded server — cross-partner writes through GraphQL and
//! pathological SPARQL queries — while the hot-path queries run, and checks that no write gets
//! through or reaches Kafka, that the SPARQL timeout stops every pathological query, and how much
//! the hot path slows down.
//!
//! `faults` is the fault-injection harness: it streams a seeded workload (creates,
//! versioned updates, retractions, exact duplicates, out-of-order and poison records) through a
//! Tansu broker on durable S3 storage (moto), SIGKILLs the materializer at K random points,
//! restarts the broker mid-run, then checks every entity against the model and compares the live
//! store with a clean replica rebuilt from the log (`docs/faults.md` defines every field).
//!
//! Never trusts the broker's high watermarks (Tansu misreports them after batched writes): the
//! end of the stream is a marker record pinned to each partition, awaited in the graph.

mod abuse;
mod check;
mod gen;
mod hotpath;
mod kafka;
mod procs;
mod workload;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
#[command(name = "coalition-bench", about = "Benchmarks and fault injection for Coalition Graph")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Stream N events with SIGKILLs of the materializer and broker restarts; check nothing is
    /// lost or duplicated and that a clean rebuild gives the same digest.
    Faults(FaultArgs),
    /// Write a deterministic synthetic coalition as event files (and N-Quads of the same facts).
    Gen(GenArgs),
    /// Generate, ingest through Kafka, and measure ingest, freshness, rebuild, RSS and the
    /// hot-path queries against raw Oxigraph on the same data.
    HotPath(hotpath::HotPathArgs),
    /// Cross-partner writes and pathological SPARQL queries against a loaded server while the
    /// hot-path queries run: nothing may get through, every query must hit the timeout.
    Abuse(abuse::AbuseArgs),
}

#[derive(Debug, clap::Args)]
pub struct GenArgs {
    #[arg(long, default_value_t = 10_000)]
    pub conversations: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[arg(long, default_value = "target/bench/gen")]
    pub out_dir: PathBuf,
    /// Also write N-Quads of the same facts, for other engines.
    #[arg(long)]
    pub nquads: bool,
}

#[derive(Debug, clap::Args)]
pub struct FaultArgs {
    /// How many times to SIGKILL the coalition process.
    #[arg(long, default_value_t = 5)]
    pub kills: usize,
    /// How many records to produce (good events, duplicates and poison together).
    #[arg(long, default_value_t = 5000)]
    pub events: usize,
    /// Seed of the workload and of the fault schedule.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// How many times to restart the broker (at least 1; default kills/20).
    #[arg(long)]
    pub broker_restarts: Option<usize>,
    /// Partitions per topic.
    #[arg(long, default_value_t = 3)]
    pub partitions: u32,
    /// Where to write the result.
    #[arg(long, default_value = "target/bench/faults.json")]
    pub out: PathBuf,
    /// Scratch directory for data dirs and process logs (emptied first).
    #[arg(long, default_value = "target/bench/faults-work")]
    pub work_dir: PathBuf,
}

/// The same allocator as the `coalition` binary, so that raw Oxigraph, measured in this process,
/// is compared on equal terms.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Faults(args) => {
            let report = faults(&args)?;
            report.print();
            if let Some(dir) = args.out.parent() {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            }
            std::fs::write(&args.out, serde_json::to_string_pretty(&report.json)? + "\n")
                .with_context(|| format!("writing {}", args.out.display()))?;
            println!("wrote {}", args.out.display());
            if !report.passed() {
                eprintln!("FAILED: {}", report.failures().join(", "));
                std::process::exit(1);
            }
            Ok(())
        }
        Cmd::Gen(args) => {
            let report = gen::generate(args.conversations, args.seed, &args.out_dir, args.nquads)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Cmd::HotPath(args) => hotpath::run(args),
        Cmd::Abuse(args) => abuse::run(args),
    }
}

fn faults(args: &FaultArgs) -> Result<check::Report> {
    let started = Instant::now();
    let coalition = procs::coalition_bin();
    anyhow::ensure!(
        coalition.exists(),
        "{} not found: build it in the same profile (cargo build --workspace [--release]) or set COALITION_BIN",
        coalition.display()
    );
    let work = &args.work_dir;
    if work.exists() {
        std::fs::remove_dir_all(work).with_context(|| format!("emptying {}", work.display()))?;
    }
    std::fs::create_dir_all(work)?;
    let work = work.canonicalize()?;
    let mut rng = workload::Rng::new(args.seed.wrapping_mul(31).wrapping_add(17));

    let bucket = "coalition-bench";
    let moto = procs::Moto::start(&work, bucket)?;
    let mut tansu = procs::Tansu::start(&work, bucket, &moto.endpoint)?;
    let mut topics = coalition_events::Kind::topics();
    topics.push(coalition_events::DEAD_LETTER_TOPIC);
    for topic in topics {
        tansu.create_topic(topic, args.partitions)?;
    }
    println!("broker {} on s3://{bucket}/ (moto {})", tansu.bootstrap(), moto.endpoint);

    let mut wl = workload::generate(args.events, args.seed);
    let restarts_wanted = args.broker_restarts.unwrap_or(args.kills / 20).max(1);
    let chunks = (args.kills + restarts_wanted + 2).max(20).min(args.events.max(1));
    let chunk_size = wl.records.len().div_ceil(chunks).max(1);
    let chunks = wl.records.len().div_ceil(chunk_size);
    // The fault schedule: after which chunks to kill the server (repeats allowed when there are
    // more kills than chunks) and to restart the broker.
    let mut kill_at = vec![0usize; chunks];
    for _ in 0..args.kills {
        kill_at[rng.below(chunks as u64) as usize] += 1;
    }
    let mut restart_at = vec![false; chunks];
    // Mid-run (never after the last chunk), at distinct chunks while there are enough.
    let eligible = chunks.saturating_sub(1).max(1);
    let mut placed = 0;
    while placed < restarts_wanted {
        let i = rng.below(eligible as u64) as usize;
        if !restart_at[i] || placed >= eligible {
            restart_at[i] = true;
            placed += 1;
        }
    }
    println!(
        "workload: {} records ({} entities, {} duplicates, {} out of order, {} retractions, {} poison) in {chunks} chunks",
        wl.records.len(),
        wl.model.entities.len(),
        wl.model.duplicates,
        wl.model.out_of_order,
        wl.model.retractions,
        wl.model.poison
    );

    let mut live = procs::Coalition::new(work.join("live"), "live", tansu.bootstrap());
    live.start()?;
    let mut producer = kafka::BenchProducer::new(&tansu.bootstrap())?;
    let mut kills = 0;
    let mut broker_restarts = 0;
    let mut unexpected_exits = 0;
    let mut resent = 0;
    let mut produced = 0usize;
    let mut kills_while_behind = 0;
    for (i, chunk) in wl.records.chunks(chunk_size).enumerate() {
        let again = producer.send_all(workload::TOPIC, chunk)?;
        resent += again;
        if let Err(e) = live.check_alive() {
            eprintln!("  coalition died on its own: {e:#}");
            unexpected_exits += 1;
            live.start()?;
        }
        produced += chunk.len() + again;
        for k in 0..kill_at[i] {
            // Land the kill inside the server's work on the chunk just flushed. A second kill at
            // the same point first waits (bounded) until the restarted server has committed
            // something, so it does not hit a server that has done nothing yet.
            if k > 0 {
                let at_start = live.committed(workload::TOPIC).unwrap_or(0);
                let waited = Instant::now();
                while waited.elapsed() < Duration::from_secs(3) {
                    match live.committed(workload::TOPIC) {
                        Some(c) if c > at_start || c >= produced as i64 => break,
                        _ => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(rng.below(300)));
            if live.committed(workload::TOPIC).is_some_and(|c| c < produced as i64) {
                kills_while_behind += 1;
            }
            live.kill9();
            kills += 1;
            live.start()?;
        }
        if restart_at[i] {
            tansu.restart()?;
            broker_restarts += 1;
            // A fresh producer: the restarted broker need not remember the idempotent producer id.
            producer = kafka::BenchProducer::new(&tansu.bootstrap())?;
        }
        if (i + 1) % (chunks / 10).max(1) == 0 {
            println!(
                "  {:>3}% produced, {kills} kills, {broker_restarts} broker restarts, {:.0}s",
                (i + 1) * 100 / chunks,
                started.elapsed().as_secs_f64()
            );
        }
    }
    let markers: Vec<_> = (0..args.partitions as i32).map(|p| workload::marker(args.seed, p, &mut wl.model)).collect();
    producer.send_all(workload::TOPIC, &markers)?;
    drop(producer);

    let timeout = Duration::from_secs(300) + Duration::from_millis(10 * args.events as u64);
    if let Err(e) = live.check_alive() {
        eprintln!("  coalition died on its own: {e:#}");
        unexpected_exits += 1;
        live.start()?;
    }
    println!("waiting for the live replica to apply everything");
    let live_wait = check::wait_converged(&mut live, args.partitions, timeout)?;
    let mut observed = check::observe(&live)?;
    check::observe_graphql(&live, &wl.model, &mut observed)?;
    let dead = kafka::count_dead_letters(
        &tansu.bootstrap(),
        coalition_events::DEAD_LETTER_TOPIC,
        wl.model.poison,
        Duration::from_secs(120),
    )?;
    live.stop()?;
    let live_digest = live.digest()?;

    println!("rebuilding a clean replica from the log");
    let rebuild_started = Instant::now();
    let mut replica = procs::Coalition::new(work.join("replica"), &format!("replica-{}", args.seed), tansu.bootstrap());
    replica.start()?;
    check::wait_converged(&mut replica, args.partitions, timeout)?;
    let rebuild_s = rebuild_started.elapsed().as_secs_f64();
    let mut replica_observed = check::observe(&replica)?;
    check::observe_graphql(&replica, &wl.model, &mut replica_observed)?;
    replica.stop()?;
    let replica_digest = replica.digest()?;
    drop(tansu);
    drop(moto);

    Ok(check::Report::new(check::Inputs {
        args,
        model: &wl.model,
        produced: wl.records.len(),
        markers: markers.len(),
        kills,
        kills_while_behind,
        broker_restarts,
        unexpected_exits,
        resent,
        observed: &observed,
        replica_observed: &replica_observed,
        dead: &dead,
        live_digest,
        replica_digest,
        live_wait,
        rebuild_s,
        elapsed_s: started.elapsed().as_secs_f64(),
    }))
}
