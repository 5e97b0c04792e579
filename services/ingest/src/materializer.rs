//! The materializer: consumes every coalition topic and applies each batch to the graph and then
//! to the index, each sink committing its own offsets with its data.
//!
//! Three stages run at once, each on its own batch, joined by one-batch queues: the consumer
//! decodes, validates and maps batch N+2 while the graph commits batch N+1 and the index commits
//! batch N. While the graph stage is busy the consumer's next batch keeps growing, so batches grow
//! when the stages fall behind. Each sink still commits batches in log order, and the watermark of
//! each sink moves when that sink has committed.
//!
//! Partitions are assigned explicitly (no consumer-group rebalancing): every replica materializes
//! the whole log, and positions live in the sinks, not in Kafka's committed offsets.
//!
//! A materializer whose sinks hold nothing, on a log of at least
//! [`Materializer::initial_load_min`] records, first bulk-loads the log to its end
//! ([`crate::initial_load`]) and streams on from there.

use crate::{DeadLetter, EventProducer, IngestError, IngestMetrics, KafkaConfig};
use coalition_events::{Kind, DEAD_LETTER_TOPIC};
use coalition_mapping::{LogPosition, Offsets, SearchDoc, TopicPartition};
use coalition_search::SearchIndex;
use coalition_store::{Applicable, GraphStore};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
const LAG_REFRESH: Duration = Duration::from_secs(5);

/// Consumer context that treats end-of-partition as the normal event it is, not an error.
pub(crate) struct MaterializerContext;

impl ClientContext for MaterializerContext {
    fn error(&self, error: KafkaError, reason: &str) {
        let eof = matches!(error, KafkaError::PartitionEOF(_))
            || error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF);
        if eof {
            tracing::trace!(reason, "end of partition");
        } else {
            tracing::warn!(error = %error, reason, "kafka client error");
        }
    }
}

impl ConsumerContext for MaterializerContext {}

type MaterializerConsumer = StreamConsumer<MaterializerContext>;

/// What each sink has applied, published after every commit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Watermark {
    /// Next offset per partition committed to the graph.
    pub graph: Offsets,
    /// Next offset per partition committed to the index.
    pub index: Offsets,
    /// True once the materializer has applied the log up to where it stood at start.
    pub caught_up: bool,
    /// When the last batch was committed.
    pub committed_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Total events applied since start (not counting duplicates and dead letters).
    pub applied: u64,
    /// Total dead letters since start.
    pub dead_lettered: u64,
    /// For the last committed batch: milliseconds from the broker timestamp of its oldest record
    /// to the moment graph and index had both committed it.
    pub last_batch_lag_ms: i64,
    /// Broker-reported high watermarks minus applied offsets, summed over partitions, as of the
    /// last refresh (every few seconds). Some brokers misreport high watermarks: an estimate.
    pub lag_events: i64,
}

impl Watermark {
    /// True when both sinks have applied the record at `topic/partition/offset`.
    pub fn has_applied(&self, topic: &str, partition: i32, offset: i64) -> bool {
        let done = |o: &Offsets| o.next(topic, partition).is_some_and(|next| next > offset);
        done(&self.graph) && done(&self.index)
    }
}

pub struct Materializer {
    pub kafka: KafkaConfig,
    /// Identifies the log the stored offsets refer to (one per Kafka cluster).
    pub log: String,
    pub store: GraphStore,
    pub index: Arc<SearchIndex>,
    /// Where rejected records go; `None` when replaying a log whose rejects are already on the
    /// dead-letter topic (a rebuild), so they are counted but not produced twice.
    pub dead_letters: Option<EventProducer>,
    pub metrics: IngestMetrics,
    pub batch_max: usize,
    pub linger: Duration,
    /// With sinks that hold nothing, a log of at least this many records is bulk-loaded
    /// (`crate::initial_load`) before the pipeline starts; 0: never.
    pub initial_load_min: u64,
    /// The runtime the materializer runs on, its blocking work included (see
    /// [`crate::priority`]); `None`: the caller's.
    pub runtime: Option<tokio::runtime::Handle>,
}

/// Owner of a running materializer.
#[derive(Debug)]
pub struct MaterializerHandle {
    publisher: Arc<watch::Sender<Watermark>>,
    task: JoinHandle<Result<(), IngestError>>,
}

impl MaterializerHandle {
    pub fn watermark(&self) -> watch::Receiver<Watermark> {
        self.publisher.subscribe()
    }

    /// Where the watermark is published, to hand to the materializer that takes over from this
    /// one ([`Materializer::spawn_publishing`]).
    pub fn publisher(&self) -> Arc<watch::Sender<Watermark>> {
        self.publisher.clone()
    }

    /// Waits for the materializer to stop (after its cancellation token fired).
    pub async fn join(self) -> Result<(), IngestError> {
        self.task.await.map_err(|_| IngestError::Stopped)?
    }
}

/// Waits until both sinks have applied the record at `topic/partition/offset`.
pub async fn wait_applied(
    watermark: &mut watch::Receiver<Watermark>,
    topic: &str,
    partition: i32,
    offset: i64,
    timeout: Duration,
) -> Result<(), IngestError> {
    let wait = watermark.wait_for(|w| w.has_applied(topic, partition, offset));
    match tokio::time::timeout(timeout, wait).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(_)) => Err(IngestError::Stopped),
        Err(_) => Err(IngestError::ApplyTimeout(timeout)),
    }
}

/// An entity graph, its entity IRI, and per event id the documents it maps to.
type EntityDocs = (oxigraph::model::NamedNode, String, BTreeMap<String, Vec<SearchDoc>>);

struct Classified {
    graph: Vec<Applicable>,
    /// Per entity graph, every event of the batch about it (id → documents) that the index has
    /// not applied yet.
    docs: BTreeMap<String, EntityDocs>,
    dead: Vec<DeadLetter>,
    graph_offsets: Offsets,
    index_offsets: Offsets,
    count: usize,
    /// Broker timestamps (ms since the epoch) of the records in the batch, for freshness.
    produced_ms: Vec<i64>,
}

impl Classified {
    /// Adds `later`, classified after this batch from the position it left, to this batch.
    fn absorb(&mut self, later: Classified) {
        self.graph.extend(later.graph);
        for (key, (graph, entity, events)) in later.docs {
            self.docs.entry(key).or_insert_with(|| (graph, entity, BTreeMap::new())).2.extend(events);
        }
        self.dead.extend(later.dead);
        self.graph_offsets = later.graph_offsets;
        self.index_offsets = later.index_offsets;
        self.count += later.count;
        self.produced_ms.extend(later.produced_ms);
    }
}

/// What the graph stage hands the index stage: the documents to replace, and the offsets and
/// broker timestamps of the batch.
struct Indexable {
    replaced: Vec<String>,
    docs: Vec<SearchDoc>,
    offsets: Offsets,
    produced_ms: Vec<i64>,
}

/// An item on a pipeline queue: a batch, or the news that every partition has reached its end
/// (after the batches before it), for readiness.
enum Step<T> {
    Batch(T),
    AllEof,
}

impl Materializer {
    /// Starts the materializer on the runtime; it stops when `cancel` fires, after the batch in
    /// flight has committed.
    pub async fn spawn(self, cancel: CancellationToken) -> Result<MaterializerHandle, IngestError> {
        let (tx, _) = watch::channel(Watermark::default());
        self.spawn_publishing(cancel, Arc::new(tx)).await
    }

    /// Like [`Materializer::spawn`], publishing on an existing watermark channel: the materializer
    /// takes over from a stopped one (e.g. after its stores were swapped for rebuilt ones), and
    /// readers of the channel see one watermark that never goes back. Counters carry over, and so
    /// does `caught_up`: the new sinks are at least as far along as the old ones were.
    pub async fn spawn_publishing(
        self,
        cancel: CancellationToken,
        tx: Arc<watch::Sender<Watermark>>,
    ) -> Result<MaterializerHandle, IngestError> {
        let (graph, index) = {
            let store = self.store.clone();
            let search = self.index.clone();
            let log = self.log.clone();
            tokio::task::spawn_blocking(move || -> Result<_, IngestError> {
                // Facts without projections: cleared, and the log is loaded again.
                store.discard_unfinished_load(&log)?;
                Ok((store.offsets(&log)?, search.offsets(&log)?))
            })
            .await
            .map_err(|_| IngestError::Stopped)??
        };
        tx.send_modify(|w| {
            *w = Watermark {
                graph,
                index,
                caught_up: w.caught_up,
                applied: w.applied,
                dead_lettered: w.dead_lettered,
                ..Watermark::default()
            }
        });
        let span = tracing::info_span!("materializer", log = %self.log);
        let runtime = self.runtime.clone().unwrap_or_else(tokio::runtime::Handle::current);
        let task = runtime.spawn(self.run(cancel, tx.clone()).instrument(span));
        Ok(MaterializerHandle { publisher: tx, task })
    }

    async fn run(self, cancel: CancellationToken, tx: Arc<watch::Sender<Watermark>>) -> Result<(), IngestError> {
        let consumer: Arc<MaterializerConsumer> =
            Arc::new(self.consumer_config().create_with_context(MaterializerContext)?);
        let start = {
            let w = tx.borrow();
            let mut start = w.graph.clone();
            // Resume from the sink that is furthest behind; each sink skips what it already has.
            for (tp, next) in &w.index.0 {
                let e = start.0.entry(tp.clone()).or_insert(*next);
                *e = (*e).min(*next);
            }
            for tp in w.graph.0.keys() {
                if !w.index.0.contains_key(tp) {
                    start.0.remove(tp);
                }
            }
            start
        };
        let (partitions, highs) = {
            let c = consumer.clone();
            let cancel = cancel.clone();
            tokio::task::spawn_blocking(move || discover(&c, &cancel)).await.map_err(|_| IngestError::Stopped)??
        };
        let this = Arc::new(self);
        let start = if this.wants_initial_load(&start, &highs)? {
            let (loader, runtime, cancel) = (this.clone(), tokio::runtime::Handle::current(), cancel.clone());
            let parts = partitions.clone();
            let loaded = tokio::task::spawn_blocking(move || loader.initial_load(&parts, &cancel, &runtime))
                .await
                .map_err(|_| IngestError::Stopped)??;
            this.publish_watermark("graph", &loaded.offsets);
            this.publish_watermark("index", &loaded.offsets);
            tx.send_modify(|w| {
                w.graph.clone_from(&loaded.offsets);
                w.index.clone_from(&loaded.offsets);
                w.committed_at = Some(chrono::Utc::now());
                w.applied += loaded.applied;
                w.dead_lettered += loaded.dead_lettered.len() as u64;
                // The load went up to the end of every partition, past the high watermarks at
                // start: caught up, at once with the offsets.
                w.caught_up = true;
            });
            loaded.offsets
        } else {
            start
        };
        let mut tpl = TopicPartitionList::new();
        for tp in &partitions {
            let offset = match start.next(&tp.topic, tp.partition) {
                Some(next) => Offset::Offset(next),
                None => Offset::Beginning,
            };
            tpl.add_partition_offset(&tp.topic, tp.partition, offset)?;
        }
        consumer.assign(&tpl)?;
        tracing::info!(partitions = partitions.len(), "assigned; consuming");
        let mut eof_partitions = 0usize;
        let mut eof_announced = false;
        let mut last_lag = Instant::now() - LAG_REFRESH;
        let mut lag_task: Option<JoinHandle<()>> = None;
        this.update_caught_up(&tx, &highs, false);
        // Where classification has got to: ahead of the committed watermark by the batches in
        // the pipeline.
        let mut cursor = tx.borrow().clone();
        let (to_graph, graph_queue) = mpsc::channel(1);
        let (to_index, index_queue) = mpsc::channel(1);
        // Cancelled with `cancel`, or by a stage that failed, so the failure surfaces at once
        // even when no record arrives to find the queue closed.
        let stop = cancel.child_token();
        let graph_stage = tokio::spawn(
            stopping_on_error(this.clone().graph_stage(graph_queue, to_index, tx.clone()), stop.clone())
                .in_current_span(),
        );
        let index_stage = tokio::spawn(
            stopping_on_error(this.clone().index_stage(index_queue, tx.clone(), highs.clone()), stop.clone())
                .in_current_span(),
        );
        // Records classified but not yet taken by the graph stage: while it is busy, the next
        // batch keeps growing (up to `batch_max`), so the stages commit larger batches exactly
        // when they fall behind and the per-commit costs are shared by more events.
        let mut pending: Option<Classified> = None;
        loop {
            let room = pending.as_ref().is_none_or(|p| p.count < this.batch_max);
            let first = tokio::select! {
                _ = stop.cancelled() => break,
                permit = to_graph.reserve(), if pending.is_some() => {
                    let Ok(permit) = permit else { break };
                    if let Some(c) = pending.take() {
                        permit.send(Step::Batch(c));
                    }
                    continue;
                }
                m = consumer.recv(), if room => m,
            };
            let mut batch = Vec::new();
            match first {
                Ok(m) => batch.push(m.detach()),
                Err(KafkaError::PartitionEOF(_)) => eof_partitions += 1,
                Err(e) => {
                    tracing::warn!(error = %e, "consumer error");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            let deadline = tokio::time::Instant::now() + this.linger;
            while !batch.is_empty() && batch.len() < this.batch_max {
                match tokio::time::timeout_at(deadline, consumer.recv()).await {
                    Ok(Ok(m)) => batch.push(m.detach()),
                    Ok(Err(KafkaError::PartitionEOF(_))) => eof_partitions += 1,
                    Ok(Err(e)) => tracing::warn!(error = %e, "consumer error"),
                    Err(_) => break,
                }
            }
            if !batch.is_empty() {
                let c = this.classify(batch, &cursor);
                cursor.graph.clone_from(&c.graph_offsets);
                cursor.index.clone_from(&c.index_offsets);
                if c.count > 0 {
                    match pending.as_mut() {
                        Some(p) => p.absorb(c),
                        None => pending = Some(c),
                    }
                }
            }
            if let Some(c) = pending.take() {
                match to_graph.try_send(Step::Batch(c)) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(Step::Batch(c))) => pending = Some(c),
                    Err(_) => break,
                }
            }
            if !eof_announced && pending.is_none() && eof_partitions >= partitions.len() {
                eof_announced = true;
                if to_graph.send(Step::AllEof).await.is_err() {
                    break;
                }
            }
            let refreshing = lag_task.as_ref().is_some_and(|t| !t.is_finished());
            if last_lag.elapsed() >= LAG_REFRESH && !refreshing {
                last_lag = Instant::now();
                lag_task = Some(this.refresh_lag(&consumer, &partitions, &tx, &cancel));
            }
        }
        // The batches already queued still commit, in order; records classified but not handed
        // over are not committed and are consumed again by the next materializer.
        drop(to_graph);
        let graph_result = graph_stage.await.map_err(|_| IngestError::Stopped)?;
        let index_result = index_stage.await.map_err(|_| IngestError::Stopped)?;
        if let Some(task) = lag_task {
            let _ = task.await;
        }
        graph_result?;
        index_result?;
        tracing::info!("materializer stopped");
        Ok(())
    }

    /// Produces `d` to the dead-letter topic (unless this materializer replays a log whose rejects
    /// are there already) and counts it.
    pub(crate) async fn dead_letter(&self, d: &DeadLetter) -> Result<(), IngestError> {
        if let Some(producer) = &self.dead_letters {
            let key = d.key.as_deref().map(String::from_utf8_lossy).unwrap_or_default();
            producer.send(DEAD_LETTER_TOPIC, &key, &d.value, "dead-letter", d.record_headers()).await?;
        }
        self.metrics.dead_lettered.with_label_values(&[d.reason.as_str()]).inc();
        Ok(())
    }

    /// Explicit assignment, positions kept in the sinks (never committed to Kafka), only
    /// committed transactions. Prefetch is capped per partition: a consumer reading a long log
    /// faster than the sinks apply it (a rebuild, a new replica) would otherwise hold up to
    /// librdkafka's defaults (100,000 records or 64 MiB) for every partition — most of the log.
    pub(crate) fn consumer_config(&self) -> rdkafka::ClientConfig {
        self.kafka.client(&[
            ("group.id", &self.kafka.consumer_group),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("enable.partition.eof", "true"),
            ("auto.offset.reset", "earliest"),
            ("session.timeout.ms", "6000"),
            ("fetch.wait.max.ms", "50"),
            ("queued.min.messages", "10000"),
            ("queued.max.messages.kbytes", "8192"),
            ("isolation.level", "read_committed"),
        ])
    }

    fn update_caught_up(&self, tx: &watch::Sender<Watermark>, highs: &Offsets, all_eof: bool) {
        if tx.borrow().caught_up {
            return;
        }
        let reached = {
            let w = tx.borrow();
            highs
                .0
                .iter()
                .all(|(tp, high)| *high == 0 || w.graph.next(&tp.topic, tp.partition).is_some_and(|n| n >= *high))
        };
        if reached || all_eof {
            tracing::info!(reached_start_high_watermarks = reached, all_eof, "caught up with the log");
            tx.send_modify(|w| w.caught_up = true);
        }
    }

    /// Refreshes the lag gauges on a blocking thread. The caller owns the handle, starts at most
    /// one refresh at a time, and joins it at shutdown; each broker call is short and the loop
    /// stops between partitions once `cancel` fires.
    fn refresh_lag(
        &self,
        consumer: &Arc<MaterializerConsumer>,
        partitions: &[TopicPartition],
        tx: &Arc<watch::Sender<Watermark>>,
        cancel: &CancellationToken,
    ) -> JoinHandle<()> {
        let consumer = consumer.clone();
        let partitions = partitions.to_vec();
        let applied = tx.borrow().graph.clone();
        let lag = self.metrics.lag.clone();
        let cancel = cancel.clone();
        let tx = tx.clone();
        tokio::task::spawn_blocking(move || {
            let mut total = 0;
            for tp in partitions {
                if cancel.is_cancelled() {
                    return;
                }
                if let Ok((_, high)) = consumer.fetch_watermarks(&tp.topic, tp.partition, Duration::from_millis(500)) {
                    let next = applied.next(&tp.topic, tp.partition).unwrap_or(0);
                    let behind = (high - next).max(0);
                    total += behind;
                    lag.with_label_values(&[tp.topic.as_str(), &tp.partition.to_string()]).set(behind);
                }
            }
            tx.send_modify(|w| w.lag_events = total);
        })
    }

    fn classify(&self, batch: Vec<OwnedMessage>, w: &Watermark) -> Classified {
        let mut out = Classified {
            graph: Vec::new(),
            docs: BTreeMap::new(),
            dead: Vec::new(),
            graph_offsets: w.graph.clone(),
            index_offsets: w.index.clone(),
            count: 0,
            produced_ms: Vec::new(),
        };
        for msg in batch {
            if let Some(ms) = msg.timestamp().to_millis() {
                out.produced_ms.push(ms);
            }
            let pos = LogPosition { topic: msg.topic().to_owned(), partition: msg.partition(), offset: msg.offset() };
            self.metrics.consumed.with_label_values(&[pos.topic.as_str()]).inc();
            let behind = |o: &Offsets| o.next(&pos.topic, pos.partition).is_none_or(|n| pos.offset >= n);
            let need_graph = behind(&w.graph);
            let need_index = behind(&w.index);
            if !need_graph && !need_index {
                continue;
            }
            out.count += 1;
            match decode_and_map(&msg, &pos, Shapes::Check) {
                Ok((event_id, mapped)) => {
                    if need_index {
                        let entry = out.docs.entry(mapped.graph.as_str().to_owned()).or_insert_with(|| {
                            (mapped.graph.clone(), mapped.entity.as_str().to_owned(), BTreeMap::new())
                        });
                        entry.2.insert(event_id.clone(), mapped.docs.clone());
                    }
                    if need_graph {
                        out.graph.push(Applicable { event_id, mapped });
                    }
                }
                Err((reason, message)) => {
                    tracing::warn!(topic = %pos.topic, partition = pos.partition, offset = pos.offset, reason, %message, "dead-lettering record");
                    if need_graph {
                        out.dead.push(DeadLetter::of_record(&msg, &pos, reason, message));
                    }
                }
            }
            if need_graph {
                out.graph_offsets.advance(&pos);
            }
            if need_index {
                out.index_offsets.advance(&pos);
            }
        }
        out
    }

    /// Commits each batch to the graph, in order, then resolves which documents the index must
    /// change (before the next batch can supersede them) and passes the batch on.
    async fn graph_stage(
        self: Arc<Self>,
        mut queue: mpsc::Receiver<Step<Classified>>,
        next: mpsc::Sender<Step<Indexable>>,
        tx: Arc<watch::Sender<Watermark>>,
    ) -> Result<(), IngestError> {
        while let Some(step) = queue.recv().await {
            let step = match step {
                Step::Batch(c) => Step::Batch(self.commit_graph(c, &tx).await?),
                Step::AllEof => Step::AllEof,
            };
            if next.send(step).await.is_err() {
                break;
            }
        }
        Ok(())
    }

    async fn commit_graph(&self, c: Classified, tx: &watch::Sender<Watermark>) -> Result<Indexable, IngestError> {
        let span = tracing::info_span!("graph batch", events = c.count, dead = c.dead.len());
        async {
            // Dead letters first: the offsets that skip them are committed only after the broker has them.
            for d in &c.dead {
                self.dead_letter(d).await?;
            }
            let started = Instant::now();
            let (store, log, items, offsets) = (self.store.clone(), self.log.clone(), c.graph, c.graph_offsets.clone());
            let applied_count = items.len();
            let candidates = c.docs;
            let (stats, replaced, docs) = tokio::task::spawn_blocking(move || -> Result<_, IngestError> {
                let stats = store.apply(&log, &items, &offsets)?;
                // The index follows the graph: an entity's documents change only if the event now
                // behind its graph is in this batch (a stale or superseded event changes nothing).
                // The apply reports that event for the graphs it changed; the store is asked only
                // for the others (events the index lacks but the graph had, or stale ones).
                let mut replaced = Vec::new();
                let mut docs = Vec::new();
                for (graph, entity, events) in candidates.into_values() {
                    let generator = match stats.generators.get(graph.as_str()) {
                        Some(g) => g.clone(),
                        None => match store.generator(&graph)? {
                            Some(g) => g,
                            None => continue,
                        },
                    };
                    let Some(event_docs) = events.get(&generator.event_id) else { continue };
                    replaced.push(entity);
                    if !generator.retracted {
                        docs.extend(event_docs.iter().cloned());
                    }
                }
                Ok((stats, replaced, docs))
            })
            .await
            .map_err(|_| IngestError::Stopped)??;
            self.metrics.commit_seconds.with_label_values(&["graph"]).observe(started.elapsed().as_secs_f64());
            self.metrics.duplicates.inc_by(stats.duplicate_ids.len() as u64);
            self.metrics.stale.inc_by(stats.stale_ids.len() as u64);
            self.metrics.applied.inc_by(stats.applied as u64);
            self.metrics.batch_size.observe(applied_count as f64);
            self.publish_watermark("graph", &c.graph_offsets);
            tx.send_modify(|w| {
                w.graph = c.graph_offsets;
                w.applied += stats.applied as u64;
                w.dead_lettered += c.dead.len() as u64;
            });
            Ok(Indexable { replaced, docs, offsets: c.index_offsets, produced_ms: c.produced_ms })
        }
        .instrument(span)
        .await
    }

    /// Commits each batch to the index, in order; a batch is visible to readers once this stage
    /// has published it.
    async fn index_stage(
        self: Arc<Self>,
        mut queue: mpsc::Receiver<Step<Indexable>>,
        tx: Arc<watch::Sender<Watermark>>,
        highs: Offsets,
    ) -> Result<(), IngestError> {
        while let Some(step) = queue.recv().await {
            match step {
                Step::Batch(batch) => {
                    self.commit_index(batch, &tx).await?;
                    self.update_caught_up(&tx, &highs, false);
                }
                Step::AllEof => self.update_caught_up(&tx, &highs, true),
            }
        }
        Ok(())
    }

    async fn commit_index(&self, batch: Indexable, tx: &watch::Sender<Watermark>) -> Result<(), IngestError> {
        let started = Instant::now();
        let Indexable { replaced, docs, offsets, produced_ms } = batch;
        let (index, log) = (self.index.clone(), self.log.clone());
        let committed = offsets.clone();
        tokio::task::spawn_blocking(move || index.apply(&log, &replaced, &docs, &committed))
            .await
            .map_err(|_| IngestError::Stopped)??;
        self.metrics.commit_seconds.with_label_values(&["index"]).observe(started.elapsed().as_secs_f64());
        let now = chrono::Utc::now();
        let mut oldest_ms = 0;
        for produced in &produced_ms {
            let lag_ms = (now.timestamp_millis() - produced).max(0);
            oldest_ms = oldest_ms.max(lag_ms);
            self.metrics.visible_seconds.observe(lag_ms as f64 / 1000.0);
        }
        self.publish_watermark("index", &offsets);
        tx.send_modify(|w| {
            w.index = offsets;
            w.committed_at = Some(now);
            w.last_batch_lag_ms = oldest_ms;
        });
        Ok(())
    }

    fn publish_watermark(&self, sink: &str, offsets: &Offsets) {
        for (tp, next) in &offsets.0 {
            self.metrics.watermark.with_label_values(&[sink, tp.topic.as_str(), &tp.partition.to_string()]).set(*next);
        }
    }
}

/// Runs a pipeline stage; if it fails, cancels `stop` so that the consumer stops too.
async fn stopping_on_error(
    stage: impl std::future::Future<Output = Result<(), IngestError>>,
    stop: CancellationToken,
) -> Result<(), IngestError> {
    let result = stage.await;
    if result.is_err() {
        stop.cancel();
    }
    result
}

/// Whether [`decode_and_map`] checks a record's quads against the SHACL shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shapes {
    Check,
    /// The same record was decoded, mapped and checked before (by an initial load's first pass),
    /// and mapping is a pure function of the record.
    CheckedBefore,
}

/// Decodes, validates and maps one record; on failure returns (reason code, message).
pub(crate) fn decode_and_map(
    msg: &impl Message,
    pos: &LogPosition,
    shapes: Shapes,
) -> Result<(String, coalition_mapping::Mapped), (&'static str, String)> {
    let Some(bytes) = msg.payload() else {
        return Err(("empty_record", format!("record at {}/{}/{} has no value", pos.topic, pos.partition, pos.offset)));
    };
    let event = coalition_events::decode(bytes).map_err(|e| (e.code(), e.to_string()))?;
    if let Some(owner) = coalition_events::inbox_partner(&pos.topic) {
        if event.partner.0 != owner {
            return Err((
                "partner_mismatch",
                format!(
                    "event {} claims partner \"{}\" but arrived on the inbox of partner \"{owner}\", which only that partner may write",
                    event.id, event.partner
                ),
            ));
        }
    } else if event.kind.topic() != pos.topic {
        return Err((
            "wrong_topic",
            format!(
                "event {} of type {} belongs on topic {}, not {}",
                event.id,
                event.kind.event_type(),
                event.kind.topic(),
                pos.topic
            ),
        ));
    }
    let mapped = match shapes {
        Shapes::Check => coalition_mapping::map_event(&event, pos).map_err(|e| (e.code(), e.to_string()))?,
        Shapes::CheckedBefore => coalition_mapping::map_event_unchecked(&event, pos),
    };
    Ok((event.id.0, mapped))
}

/// Finds every partition of every coalition topic and its high watermark at start.
fn discover(
    consumer: &MaterializerConsumer,
    cancel: &CancellationToken,
) -> Result<(Vec<TopicPartition>, Offsets), IngestError> {
    let mut partitions = Vec::new();
    let mut highs = Offsets::default();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut topics: Vec<String> = Kind::topics().into_iter().map(str::to_owned).collect();
    // Partner inboxes that exist now; one created later is picked up at the next start.
    let all = consumer.fetch_metadata(None, METADATA_TIMEOUT)?;
    let mut inboxes: Vec<String> = all
        .topics()
        .iter()
        .map(|t| t.name().to_owned())
        .filter(|name| coalition_events::inbox_partner(name).is_some())
        .collect();
    inboxes.sort();
    topics.extend(inboxes);
    for topic in &topics {
        let topic = topic.as_str();
        let count = loop {
            let md = consumer.fetch_metadata(Some(topic), METADATA_TIMEOUT)?;
            let count = md.topics().first().map(|t| t.partitions().len()).unwrap_or(0);
            if count > 0 || Instant::now() > deadline || cancel.is_cancelled() {
                break count;
            }
            tracing::info!(topic, "waiting for topic to exist");
            std::thread::sleep(Duration::from_millis(500));
        };
        for p in 0..count as i32 {
            let tp = TopicPartition { topic: topic.to_owned(), partition: p };
            let (_, high) = consumer.fetch_watermarks(topic, p, METADATA_TIMEOUT)?;
            highs.0.insert(tp.clone(), high);
            partitions.push(tp);
        }
    }
    Ok((partitions, highs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::Timestamp;

    const SEED: &str = include_str!("../../server/seed/coalition-seed.jsonl");

    fn record(topic: &str, payload: Option<&[u8]>) -> (OwnedMessage, LogPosition) {
        let msg = OwnedMessage::new(
            payload.map(<[u8]>::to_vec),
            Some(b"k".to_vec()),
            topic.to_owned(),
            Timestamp::NotAvailable,
            0,
            7,
            None,
        );
        (msg, LogPosition { topic: topic.to_owned(), partition: 0, offset: 7 })
    }

    fn reason(topic: &str, payload: Option<&[u8]>) -> &'static str {
        let (msg, pos) = record(topic, payload);
        decode_and_map(&msg, &pos, Shapes::Check).err().map(|(r, _)| r).unwrap_or("accepted")
    }

    fn activity_line() -> String {
        SEED.lines().find(|l| l.contains("org.coalition.activity.submitted.v1")).unwrap().to_owned()
    }

    #[test]
    fn every_dead_letter_reason_is_reported_per_record() {
        let activity = activity_line();
        assert_eq!(reason("coalition.activities.v1", Some(activity.as_bytes())), "accepted");
        assert_eq!(reason("coalition.activities.v1", None), "empty_record");
        assert_eq!(reason("coalition.activities.v1", Some(b"\xff\xfe")), "not_json");
        assert_eq!(reason("coalition.activities.v1", Some(b"{\"type\": 1}")), "not_cloudevent");
        let retyped = activity.replace("org.coalition.activity.submitted.v1", "org.coalition.gadget.submitted.v1");
        assert_eq!(reason("coalition.activities.v1", Some(retyped.as_bytes())), "unknown_type");
        let future = activity.replace("org.coalition.activity.submitted.v1", "org.coalition.activity.submitted.v7");
        assert_eq!(reason("coalition.activities.v1", Some(future.as_bytes())), "unsupported_version");
        let mut bad: serde_json::Value = serde_json::from_str(&activity).unwrap();
        bad["data"]["reach"] = (-1).into();
        assert_eq!(reason("coalition.activities.v1", Some(bad.to_string().as_bytes())), "schema_violation");
        let mut mismatch: serde_json::Value = serde_json::from_str(&activity).unwrap();
        mismatch["subject"] = "someone-else".into();
        assert_eq!(reason("coalition.activities.v1", Some(mismatch.to_string().as_bytes())), "subject_mismatch");
        assert_eq!(reason("coalition.dialogues.v1", Some(activity.as_bytes())), "wrong_topic");
        // `shacl_violation`: the JSON Schemas already refuse what the shapes would, so it is
        // defence in depth; the mapping's tests exercise it directly.
        let owner =
            serde_json::from_str::<serde_json::Value>(&activity).unwrap()["partnerid"].as_str().unwrap().to_owned();
        assert_eq!(reason(&coalition_events::inbox_topic(&owner), Some(activity.as_bytes())), "accepted");
        assert_eq!(
            reason(&coalition_events::inbox_topic("someone-else"), Some(activity.as_bytes())),
            "partner_mismatch"
        );
    }

    #[test]
    fn the_dead_letter_keeps_bytes_headers_and_source() {
        let d = DeadLetter {
            reason: "not_json".into(),
            message: "bad".into(),
            source: LogPosition { topic: "coalition.activities.v1".into(), partition: 2, offset: 9 },
            key: Some(b"k".to_vec()),
            value: b"raw bytes".to_vec(),
            headers: vec![("trace".into(), b"abc".to_vec()), ("content-type".into(), b"x".to_vec())],
            time: chrono::Utc::now(),
        };
        let h: std::collections::BTreeMap<String, Vec<u8>> = d.record_headers().into_iter().collect();
        assert_eq!(h["trace"], b"abc");
        assert_eq!(h["coalition.dlq.reason"], b"not_json");
        assert_eq!(h["coalition.dlq.source.topic"], b"coalition.activities.v1");
        assert_eq!(h["coalition.dlq.source.partition"], b"2");
        assert_eq!(h["coalition.dlq.source.offset"], b"9");
        assert!(!h.contains_key("content-type"), "the dead letter gets its own content type");
    }
}
