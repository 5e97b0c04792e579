//! The materializer's threads, optionally at a lower CPU priority than the threads that answer
//! queries.
//!
//! Why: on a machine whose cores both answer queries and apply the log, a query's latency is
//! mostly waiting for a core while a batch is applied (at 10k conversations, cached answers under
//! 500 events/s of ingest: p99 ≈ 30 ms; with no ingest ≈ 7 ms). Applying a batch can wait a few
//! milliseconds; a caller should not. The materializer therefore runs on a runtime of its own
//! whose threads — its worker and its blocking pool, where batches are mapped, validated and
//! committed — may have a higher nice value: when queries want the cores they get them, and
//! ingest takes the rest. The cost: whatever else keeps the cores busy also comes first, and
//! ingest falls behind, so the server leaves it off unless asked. (RocksDB's compactions already
//! run at the lowest priority; Tantivy's indexing threads and librdkafka's are not changed.)

/// A runtime for the materializer: worker threads (one per core) and a blocking pool of its own,
/// each thread running at `nice` (Linux nice values, 0–19; 0 leaves them as they are).
pub fn runtime(nice: i32) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .thread_name("ingest")
        .on_thread_start(move || lower_priority(nice))
        .enable_all()
        .build()
}

/// Sets the calling thread's nice value to `nice` (on Linux the nice value is per thread).
fn lower_priority(nice: i32) {
    if nice <= 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), nice) {
        tracing::warn!(nice, error = %e, "could not lower an ingest thread's CPU priority");
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    fn nice() -> i32 {
        rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap()
    }

    #[test]
    fn the_runtime_s_threads_run_at_the_nice_value() {
        let before = nice();
        let runtime = super::runtime(before + 7).unwrap();
        let worker = runtime.block_on(async { tokio::spawn(async { nice() }).await.unwrap() });
        let blocking = runtime.block_on(async { tokio::task::spawn_blocking(nice).await.unwrap() });
        assert_eq!((worker, blocking), (before + 7, before + 7));
        assert_eq!(nice(), before, "the caller's thread is unchanged");
    }
}
