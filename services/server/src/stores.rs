//! The data directory's stores and their generations: which graph and index are live, the
//! materializer feeding them, and rebuilding them from the log while reads go on.
//!
//! Layout: `<data-dir>/CURRENT` names the live generation (`<data-dir>/generation-<id>/graph` and
//! `.../index`); without it the stores are `<data-dir>/graph` and `<data-dir>/index` (a data dir
//! never rebuilt). A rebuild fills a new generation beside the live one and switches by renaming
//! one pointer file, so a crash leaves either the old or the new generation live, never a mix.
//! Generations no longer named are deleted at the next start.
//!
//! Online rebuild ([`LiveStores::start_rebuild`]): a second materializer replays the whole log
//! into the new generation; once it has caught up, the live materializer stops, the new one
//! catches up to exactly where the live one stopped, and the store and index handles every reader
//! shares switch to the new stores (queries already running finish on the old ones). A new live
//! materializer then resumes from the new stores' own offsets, publishing on the same watermark.

use anyhow::Context as _;
use coalition_api::errors::{ApiError, ErrorKind};
use coalition_api::operations::{Operations, RebuildStatus};
use coalition_ingest::{EventProducer, IngestMetrics, KafkaConfig, Materializer, MaterializerHandle, Watermark};
use coalition_search::SearchIndex;
use coalition_store::GraphStore;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const CURRENT: &str = "CURRENT";
/// A generation rebuilt offline while a server held the data dir: it becomes CURRENT at the next start.
const NEXT: &str = "NEXT";
const GENERATION_PREFIX: &str = "generation-";

/// The directory holding the live `graph` and `index`.
pub fn live_dir(data_dir: &Path) -> PathBuf {
    match std::fs::read_to_string(data_dir.join(CURRENT)) {
        Ok(name) if !name.trim().is_empty() => data_dir.join(name.trim()),
        _ => data_dir.to_path_buf(),
    }
}

/// Points `file` (CURRENT or NEXT) at `generation`, atomically.
fn point(data_dir: &Path, file: &str, generation: &str) -> std::io::Result<()> {
    let tmp = data_dir.join(format!("{file}.tmp"));
    std::fs::write(&tmp, generation)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, data_dir.join(file))
}

fn new_generation(data_dir: &Path) -> (String, PathBuf) {
    let name = format!("{GENERATION_PREFIX}{}", uuid::Uuid::now_v7().simple());
    let path = data_dir.join(&name);
    (name, path)
}

/// At start: makes an offline-built generation live, deletes generations no longer named, and
/// returns the live directory.
pub fn prepare(data_dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    if let Ok(next) = std::fs::read_to_string(data_dir.join(NEXT)) {
        std::fs::rename(data_dir.join(NEXT), data_dir.join(CURRENT))?;
        tracing::info!(generation = next.trim(), "swapped in the generation rebuilt offline");
    }
    let live = live_dir(data_dir);
    for entry in std::fs::read_dir(data_dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        let stale_generation = name.starts_with(GENERATION_PREFIX) && path != live;
        let superseded_root_store = live != data_dir && (name == "graph" || name == "index");
        if (stale_generation || superseded_root_store) && path.is_dir() {
            std::fs::remove_dir_all(&path).with_context(|| format!("removing {}", path.display()))?;
            tracing::info!(path = %path.display(), "removed stores no longer live");
        }
    }
    Ok(live)
}

/// What a materializer over some stores needs besides them.
#[derive(Clone)]
pub struct Feed {
    pub kafka: KafkaConfig,
    pub log: String,
    pub dead_letters: Option<EventProducer>,
    pub metrics: IngestMetrics,
    pub batch_max: usize,
    pub linger: Duration,
    /// Log records from which empty stores are bulk-loaded first; 0: never.
    pub initial_load_min: u64,
    /// Where the materializer runs (its own lower-priority threads); `None`: the caller's runtime.
    pub runtime: Option<tokio::runtime::Handle>,
}

/// Default for [`Feed::initial_load_min`]: below this the pipeline is about as fast.
pub const INITIAL_LOAD_MIN: u64 = 10_000;

impl Feed {
    fn materializer(&self, store: &GraphStore, index: &Arc<SearchIndex>) -> Materializer {
        Materializer {
            kafka: self.kafka.clone(),
            log: self.log.clone(),
            store: store.clone(),
            index: index.clone(),
            dead_letters: self.dead_letters.clone(),
            metrics: self.metrics.clone(),
            batch_max: self.batch_max,
            linger: self.linger,
            initial_load_min: self.initial_load_min,
            runtime: self.runtime.clone(),
        }
    }

    /// The same feed for a replay into fresh stores: its own consumer group and metrics, and no
    /// dead-letter producer (the log's rejects are on the dead-letter topic already).
    fn for_replay(&self) -> anyhow::Result<Feed> {
        let mut kafka = self.kafka.clone();
        kafka.consumer_group = format!("{}-rebuild", self.kafka.consumer_group);
        Ok(Feed {
            kafka,
            log: self.log.clone(),
            dead_letters: None,
            metrics: IngestMetrics::register(&prometheus::Registry::new())?,
            batch_max: self.batch_max.max(5000),
            linger: self.linger,
            initial_load_min: self.initial_load_min,
            runtime: self.runtime.clone(),
        })
    }
}

/// True when `w` has applied everything `target` has, in both sinks.
fn covers(w: &Watermark, target: &Watermark) -> bool {
    let at_least = |have: &coalition_mapping::Offsets, want: &coalition_mapping::Offsets| {
        want.0.iter().all(|(tp, next)| have.next(&tp.topic, tp.partition).is_some_and(|h| h >= *next))
    };
    at_least(&w.graph, &target.graph) && at_least(&w.index, &target.index)
}

struct Running {
    cancel: CancellationToken,
    handle: MaterializerHandle,
}

/// The live graph and index, the materializer feeding them, and their rebuilds.
pub struct LiveStores {
    data_dir: PathBuf,
    /// The graph store was empty when opened (before the materializer started).
    pub was_empty: bool,
    pub store: GraphStore,
    pub index: Arc<SearchIndex>,
    feed: Feed,
    publisher: Arc<watch::Sender<Watermark>>,
    running: tokio::sync::Mutex<Option<Running>>,
    status: Mutex<RebuildStatus>,
    shutdown: CancellationToken,
    rebuild_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl LiveStores {
    /// Opens the live stores of `data_dir` (after [`prepare`]) and starts feeding them.
    pub async fn start(data_dir: &Path, feed: Feed, shutdown: CancellationToken) -> anyhow::Result<Arc<Self>> {
        let live = live_dir(data_dir);
        let store = GraphStore::open(&live.join("graph")).context("opening the graph store")?;
        let listed = store.add_missing_case_study_lists().context("listing the case studies of each recommendation")?;
        if listed > 0 {
            tracing::info!(
                case_studies = listed,
                "listed the case studies of each recommendation (a store from before the lists)"
            );
        }
        let index = Arc::new(SearchIndex::open(&live.join("index")).context("opening the search index")?);
        let was_empty = store.is_empty()?;
        let (publisher, _) = watch::channel(Watermark::default());
        let stores = Arc::new(LiveStores {
            data_dir: data_dir.to_path_buf(),
            was_empty,
            store,
            index,
            feed,
            publisher: Arc::new(publisher),
            running: tokio::sync::Mutex::new(None),
            status: Mutex::new(RebuildStatus { state: "idle".to_owned(), ..RebuildStatus::default() }),
            shutdown,
            rebuild_task: Mutex::new(None),
        });
        stores.resume().await?;
        Ok(stores)
    }

    pub fn watermark(&self) -> watch::Receiver<Watermark> {
        self.publisher.subscribe()
    }

    /// Starts the live materializer over the current stores, from their own offsets.
    async fn resume(&self) -> anyhow::Result<()> {
        let mut running = self.running.lock().await;
        anyhow::ensure!(running.is_none(), "the live materializer is already running");
        let cancel = self.shutdown.child_token();
        let handle = self
            .feed
            .materializer(&self.store, &self.index)
            .spawn_publishing(cancel.clone(), self.publisher.clone())
            .await?;
        *running = Some(Running { cancel, handle });
        Ok(())
    }

    /// Stops the live materializer after the batch in flight has committed.
    async fn pause(&self) -> anyhow::Result<()> {
        if let Some(r) = self.running.lock().await.take() {
            r.cancel.cancel();
            r.handle.join().await?;
        }
        Ok(())
    }

    /// Stops everything: a running rebuild, then the live materializer.
    pub async fn stop(&self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let task = self.rebuild_task.lock().expect("rebuild task lock").take();
        if let Some(task) = task {
            let _ = task.await;
        }
        self.pause().await
    }

    fn set_status(&self, f: impl FnOnce(&mut RebuildStatus)) {
        f(&mut self.status.lock().expect("status lock"));
    }

    fn begin_rebuild(self: &Arc<Self>) -> Result<RebuildStatus, ApiError> {
        let mut status = self.status.lock().expect("status lock");
        if matches!(status.state.as_str(), "replaying" | "swapping") {
            return Err(ApiError::new(ErrorKind::Unavailable, "a rebuild is already running"));
        }
        let (generation, dir) = new_generation(&self.data_dir);
        *status = RebuildStatus {
            state: "replaying".to_owned(),
            started_at: Some(chrono::Utc::now().to_rfc3339()),
            generation: Some(generation.clone()),
            ..RebuildStatus::default()
        };
        let snapshot = status.clone();
        drop(status);
        let stores = self.clone();
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let result = stores.clone().rebuild(&generation, &dir).await;
            let finished_at = Some(chrono::Utc::now().to_rfc3339());
            match result {
                Ok(()) => {
                    tracing::info!(%generation, seconds = started.elapsed().as_secs_f64(), "rebuilt stores swapped in");
                    stores.set_status(|s| {
                        s.state = "done".to_owned();
                        s.finished_at = finished_at;
                    });
                }
                Err(e) => {
                    tracing::error!(%generation, error = %format!("{e:#}"), "rebuild failed; the live stores stay");
                    stores.set_status(|s| {
                        s.state = "failed".to_owned();
                        s.finished_at = finished_at;
                        s.message = Some(format!("{e:#}"));
                    });
                    let _ = std::fs::remove_dir_all(&dir);
                }
            }
        });
        *self.rebuild_task.lock().expect("rebuild task lock") = Some(task);
        Ok(snapshot)
    }

    async fn rebuild(self: Arc<Self>, generation: &str, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let store = GraphStore::open(&dir.join("graph")).context("creating the rebuilt graph store")?;
        let index = Arc::new(SearchIndex::open(&dir.join("index")).context("creating the rebuilt index")?);
        let cancel = self.shutdown.child_token();
        let replay = self.feed.for_replay()?.materializer(&store, &index).spawn(cancel.clone()).await?;
        let mut progress = replay.watermark();
        let outcome = async {
            // 1. Replay the log up to where it stood when the replay started.
            loop {
                let w = progress.borrow_and_update().clone();
                self.set_status(|s| s.records = w.graph.total());
                if w.caught_up {
                    break;
                }
                tokio::select! {
                    changed = progress.changed() => changed.context("the replay stopped")?,
                    _ = self.shutdown.cancelled() => anyhow::bail!("shutting down"),
                }
            }
            // 2. Stop the live materializer, let the replay reach exactly where it stopped.
            self.set_status(|s| s.state = "swapping".to_owned());
            self.pause().await?;
            let target = self.publisher.borrow().clone();
            let reached = tokio::time::timeout(Duration::from_secs(120), progress.wait_for(|w| covers(w, &target)));
            match reached.await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(_)) => Err(anyhow::anyhow!("the replay stopped before reaching the live stores")),
                Err(_) => Err(anyhow::anyhow!("the replay did not reach the live stores within 120 s")),
            }
        }
        .await;
        cancel.cancel();
        let joined = replay.join().await;
        if let Err(e) = outcome.and_then(|()| joined.map_err(anyhow::Error::from)) {
            // The live stores stay; make sure they are fed again.
            if self.running.lock().await.is_none() && !self.shutdown.is_cancelled() {
                self.resume().await.context("restarting the live materializer after a failed rebuild")?;
            }
            return Err(e);
        }
        // 3. Switch every reader's handles, record the new generation, feed it.
        self.store.replace_with(&store);
        self.index.replace_with(&index);
        drop((store, index));
        point(&self.data_dir, CURRENT, generation).context("recording the new generation")?;
        self.resume().await.context("restarting the live materializer over the rebuilt stores")?;
        let records = self.publisher.borrow().graph.total();
        self.set_status(|s| s.records = records);
        Ok(())
    }
}

/// The binary's side of the API's operations.
pub struct Ops(pub Arc<LiveStores>);

impl Operations for Ops {
    fn start_rebuild(&self) -> Result<RebuildStatus, ApiError> {
        self.0.begin_rebuild()
    }

    fn rebuild_status(&self) -> RebuildStatus {
        self.0.status.lock().expect("status lock").clone()
    }
}

/// `coalition rebuild`: replays the whole log into a new generation beside the live stores (which
/// keep serving) with a progress bar, prints its digests, then makes it live if no server holds the
/// data dir, or leaves it for the next `serve` to swap in at start.
pub async fn rebuild_offline(data_dir: &Path, kafka: KafkaConfig) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir)?;
    let (generation, dir) = new_generation(data_dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let store = GraphStore::open(&dir.join("graph"))?;
    let index = Arc::new(SearchIndex::open(&dir.join("index"))?);
    let feed = Feed {
        kafka,
        log: "kafka".to_owned(),
        dead_letters: None,
        metrics: IngestMetrics::register(&prometheus::Registry::new())?,
        batch_max: 5000,
        linger: Duration::from_millis(50),
        initial_load_min: INITIAL_LOAD_MIN,
        runtime: None,
    }
    .for_replay()?;
    let started = Instant::now();
    let cancel = CancellationToken::new();
    let handle = feed.materializer(&store, &index).spawn(cancel.clone()).await?;
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} rebuilding: {pos} records applied ({per_sec}) {msg}")
            .expect("static template"),
    );
    let mut watermark = handle.watermark();
    loop {
        let w = watermark.borrow_and_update().clone();
        bar.set_position(w.graph.total().max(0) as u64);
        if w.caught_up {
            break;
        }
        if tokio::time::timeout(Duration::from_millis(200), watermark.changed()).await.is_ok_and(|r| r.is_err()) {
            anyhow::bail!("the materializer stopped during the rebuild");
        }
    }
    cancel.cancel();
    handle.join().await?;
    bar.finish_and_clear();
    let (graph_digest, quads) = coalition_store::digest(&store)?;
    let (index_digest, docs) = index.digest()?;
    drop((store, index));
    println!("rebuilt in {:.1}s", started.elapsed().as_secs_f64());
    println!("graph  sha256:{graph_digest}  ({quads} quads)");
    println!("index  sha256:{index_digest}  ({docs} documents)");
    let live = live_dir(data_dir);
    match GraphStore::open(&live.join("graph")) {
        Ok(held) => {
            drop(held);
            point(data_dir, CURRENT, &generation)?;
            prepare(data_dir)?;
            println!("swapped the rebuilt stores in");
        }
        Err(e) => {
            point(data_dir, NEXT, &generation)?;
            println!(
                "a server holds {} ({e}); the rebuilt stores swap in at its next start \
                 (a running server rebuilds without a restart with the GraphQL mutation `rebuild`)",
                data_dir.display()
            );
        }
    }
    Ok(())
}
