//! Initial load: a materializer whose sinks hold nothing, started on a log of at least
//! [`Materializer::initial_load_min`] records (a new replica, a rebuild's new generation), loads
//! the log up to its end with the graph store's bulk loader and one index commit, then goes on
//! through the pipeline from there.
//!
//! One pass reads each partition from its start to its end-of-partition event (high watermarks
//! are not trusted for this: some Kafka-protocol brokers report the last batch's first offset).
//! It decodes, validates and maps every record, dead-letters the bad ones, decides in log order
//! what a transactional apply would have done with each event ([`LoadPlan::record`]), loads the
//! provenance of every new event and, for the first event of each entity graph, its facts, and
//! adds its documents to the index. A graph that a later event changed gets its last state after
//! the bulk load: only those events are read again (the others are skipped undecoded), and each
//! replaces its graph's facts in a transaction and its entity's documents in the index. The
//! graph's projections and offsets are then written in one transaction, and the index commits
//! with the same offsets. The result equals replaying the records through the pipeline (a test
//! compares the digests); a load that stops half-way leaves nothing visible, or a store marked
//! unfinished that the next start clears.

use crate::materializer::{decode_and_map, MaterializerContext};
use crate::{DeadLetter, IngestError, Materializer};
use coalition_events::Action;
use coalition_mapping::{LogPosition, Offsets, SearchDoc, TopicPartition};
use coalition_store::{Applicable, LoadPlan, LoadedGraph, Loader, Verdict};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Documents handed to the index writer at once.
const DOCS_PER_ADD: usize = 10_000;
/// Replaced entity graphs written in one transaction after the bulk load.
const REPLACEMENTS_PER_TX: usize = 1_000;
/// Records read from one partition's queue before turning to the next.
const POLLS_PER_TURN: usize = 500;

/// What an initial load did.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    /// Where the load stopped: the next offset of every partition it read.
    pub offsets: Offsets,
    pub applied: u64,
    /// Applied events that replaced the state an earlier event had given their graph.
    pub replacing: u64,
    pub stale: u64,
    pub duplicates: u64,
    pub dead_lettered: u64,
}

impl Materializer {
    /// True if initial loads are on (`initial_load_min` > 0), the sinks hold nothing of any log and
    /// the log holds at least `initial_load_min` records below `highs` (the high watermarks at
    /// start).
    pub(crate) fn wants_initial_load(&self, start: &Offsets, highs: &Offsets) -> Result<bool, IngestError> {
        let records: i64 = highs.0.values().sum();
        Ok(self.initial_load_min > 0
            && start.0.is_empty()
            && records > 0
            && records as u64 >= self.initial_load_min
            && self.store.is_empty()?
            && self.index.num_docs() == 0)
    }

    /// Loads every record of `partitions` up to their ends (blocking; run it off the async
    /// runtime).
    pub(crate) fn initial_load(
        &self,
        partitions: &[TopicPartition],
        cancel: &CancellationToken,
        runtime: &tokio::runtime::Handle,
    ) -> Result<Loaded, IngestError> {
        let started = Instant::now();
        tracing::info!("initial load: the sinks are empty; bulk-loading the log up to its end");
        let mut plan = LoadPlan::default();
        let mut loaded = Loaded::default();
        let mut ends = Offsets::default();
        let mut graph = self.store.initial_load(&self.log, |loader| -> Result<(), IngestError> {
            let mut docs = Vec::new();
            ends = self.read_log(partitions, Span::ToEnd, cancel, |msg, pos| {
                self.load_record(msg, pos, &mut plan, loader, &mut docs, &mut loaded, runtime)
            })?;
            self.index.add_uncommitted(&docs)?;
            Ok(())
        })?;
        let bulk_loaded = started.elapsed().as_secs_f64();
        tracing::info!(elapsed_s = bulk_loaded, replacing = loaded.replacing, "initial load: the log is bulk-loaded");
        let replaced = self.replace_loaded(partitions, &mut plan, &mut graph, cancel)?;
        let graph_loaded = started.elapsed().as_secs_f64();
        let ends_total: i64 = ends.0.values().sum();
        loaded.offsets = ends;
        let quads = graph.quads();
        self.store.finish_initial_load(&self.log, &loaded.offsets, graph)?;
        let projected = started.elapsed().as_secs_f64();
        self.index.commit(&self.log, &loaded.offsets)?;
        self.metrics.applied.inc_by(loaded.applied);
        self.metrics.stale.inc_by(loaded.stale);
        self.metrics.duplicates.inc_by(loaded.duplicates);
        tracing::info!(
            records = ends_total,
            quads,
            applied = loaded.applied,
            replaced,
            stale = loaded.stale,
            duplicates = loaded.duplicates,
            dead_lettered = loaded.dead_lettered,
            bulk_loaded_s = bulk_loaded,
            replacements_s = graph_loaded - bulk_loaded,
            graph_loaded_s = graph_loaded,
            projections_s = projected - graph_loaded,
            index_commit_s = started.elapsed().as_secs_f64() - projected,
            "initial load done"
        );
        Ok(loaded)
    }

    /// Loads one record: dead-letters it, or records what an apply would do with it, loads the
    /// provenance of a new event, and the facts and documents of its graph's first state.
    #[allow(clippy::too_many_arguments)]
    fn load_record(
        &self,
        msg: &BorrowedMessage<'_>,
        pos: LogPosition,
        plan: &mut LoadPlan,
        loader: &mut Loader<'_>,
        docs: &mut Vec<SearchDoc>,
        loaded: &mut Loaded,
        runtime: &tokio::runtime::Handle,
    ) -> Result<(), IngestError> {
        self.metrics.consumed.with_label_values(&[pos.topic.as_str()]).inc();
        match decode_and_map(msg, &pos) {
            Ok((event_id, mapped)) => {
                let item = Applicable { event_id, mapped };
                let verdict = plan.record(&item, &pos);
                match verdict {
                    Verdict::Duplicate => loaded.duplicates += 1,
                    Verdict::Stale => loaded.stale += 1,
                    Verdict::Applied => loaded.applied += 1,
                    Verdict::Replacing => {
                        loaded.applied += 1;
                        loaded.replacing += 1;
                    }
                }
                if verdict == Verdict::Duplicate {
                    return Ok(());
                }
                let m = item.mapped;
                loader.add(m.provenance)?;
                if verdict == Verdict::Applied {
                    loader.add(m.facts.into_iter().chain(m.generation))?;
                    if m.action != Action::Retract {
                        docs.extend(m.docs);
                    }
                    if docs.len() >= DOCS_PER_ADD {
                        self.index.add_uncommitted(&std::mem::take(docs))?;
                    }
                }
            }
            Err((reason, message)) => {
                tracing::warn!(topic = %pos.topic, partition = pos.partition, offset = pos.offset, reason, %message, "dead-lettering record");
                runtime.block_on(self.dead_letter(&DeadLetter::of_record(msg, &pos, reason, message)))?;
                loaded.dead_lettered += 1;
            }
        }
        Ok(())
    }

    /// Gives each entity graph whose loaded first state a later event replaced its last state,
    /// in the graph and in the index: reads those events again (decoding no other record) and
    /// writes them [`REPLACEMENTS_PER_TX`] to a transaction. Returns how many graphs it replaced.
    fn replace_loaded(
        &self,
        partitions: &[TopicPartition],
        plan: &mut LoadPlan,
        graph: &mut LoadedGraph,
        cancel: &CancellationToken,
    ) -> Result<usize, IngestError> {
        let wanted = plan.replacements();
        if wanted.is_empty() {
            return Ok(0);
        }
        let mut from = Offsets::default();
        let mut until = Offsets::default();
        for at in &wanted {
            until.advance(at);
            let tp = TopicPartition { topic: at.topic.clone(), partition: at.partition };
            let first = from.0.entry(tp).or_insert(at.offset);
            *first = (*first).min(at.offset);
        }
        let mut winners = Vec::new();
        let mut found = 0;
        self.read_log(partitions, Span::Within { from: &from, until: &until }, cancel, |msg, pos| {
            if !wanted.contains(&pos) {
                return Ok(());
            }
            let Ok((event_id, mapped)) = decode_and_map(msg, &pos) else { return Ok(()) };
            let item = Applicable { event_id, mapped };
            if plan.take_winner(&item) {
                found += 1;
                winners.push(item);
                if winners.len() >= REPLACEMENTS_PER_TX {
                    self.replace(graph, &mut winners)?;
                }
            }
            Ok(())
        })?;
        self.replace(graph, &mut winners)?;
        if found != wanted.len() {
            return Err(IngestError::Io {
                path: format!("the log {}", self.log),
                message: format!(
                    "{} of the {} events that replace an entity graph's first state were not found again where the initial load read them",
                    wanted.len() - found,
                    wanted.len()
                ),
            });
        }
        Ok(found)
    }

    /// Writes `winners` over their graphs' loaded states and their entities' documents, and
    /// empties it.
    fn replace(&self, graph: &mut LoadedGraph, winners: &mut Vec<Applicable>) -> Result<(), IngestError> {
        if winners.is_empty() {
            return Ok(());
        }
        self.store.replace_loaded(graph, winners)?;
        let entities: Vec<String> = winners.iter().map(|w| w.mapped.entity.as_str().to_owned()).collect();
        let docs: Vec<SearchDoc> =
            winners.drain(..).filter(|w| w.mapped.action != Action::Retract).flat_map(|w| w.mapped.docs).collect();
        self.index.replace_uncommitted(&entities, &docs)?;
        Ok(())
    }

    /// Calls `each` on the records of `partitions` that `span` covers, partition by partition in
    /// offset order, with a consumer of its own. Returns the next offset of every partition it
    /// read records from.
    fn read_log(
        &self,
        partitions: &[TopicPartition],
        span: Span<'_>,
        cancel: &CancellationToken,
        mut each: impl FnMut(&BorrowedMessage<'_>, LogPosition) -> Result<(), IngestError>,
    ) -> Result<Offsets, IngestError> {
        let consumer: Arc<BaseConsumer<MaterializerContext>> =
            Arc::new(self.consumer_config().create_with_context(MaterializerContext)?);
        let (from, end) = match span {
            Span::ToEnd => (None, None),
            Span::Within { from, until } => (Some(from), Some(until)),
        };
        let end = |tp: &TopicPartition| end.map(|e| e.next(&tp.topic, tp.partition).unwrap_or(0));
        let wanted: Vec<&TopicPartition> = partitions.iter().filter(|tp| end(tp) != Some(0)).collect();
        let mut tpl = TopicPartitionList::new();
        for tp in &wanted {
            let start = from.and_then(|f| f.next(&tp.topic, tp.partition)).map_or(Offset::Beginning, Offset::Offset);
            tpl.add_partition_offset(&tp.topic, tp.partition, start)?;
        }
        consumer.assign(&tpl)?;
        let mut queues = Vec::new();
        for tp in wanted {
            let queue = consumer.split_partition_queue(&tp.topic, tp.partition).ok_or_else(|| {
                IngestError::Kafka(KafkaError::Subscription(format!("no queue for {}/{}", tp.topic, tp.partition)))
            })?;
            queues.push((tp, queue));
        }
        let mut reached = Offsets::default();
        while !queues.is_empty() {
            if cancel.is_cancelled() {
                return Err(IngestError::Stopped);
            }
            let mut idle = true;
            let mut through = BTreeSet::new();
            for (k, (tp, queue)) in queues.iter().enumerate() {
                // A slice of each partition in turn, so no queue fills while another is read.
                for _ in 0..POLLS_PER_TURN {
                    match queue.poll(Duration::ZERO) {
                        None => break,
                        Some(Ok(msg)) => {
                            idle = false;
                            let pos =
                                LogPosition { topic: tp.topic.clone(), partition: tp.partition, offset: msg.offset() };
                            let limit = end(tp);
                            if limit.is_none_or(|limit| pos.offset < limit) {
                                reached.advance(&pos);
                                each(&msg, pos.clone())?;
                            }
                            if limit.is_some_and(|limit| pos.offset + 1 >= limit) {
                                through.insert(k);
                                break;
                            }
                        }
                        Some(Err(KafkaError::PartitionEOF(_))) if matches!(span, Span::ToEnd) => {
                            through.insert(k);
                            break;
                        }
                        Some(Err(KafkaError::PartitionEOF(_))) => break,
                        Some(Err(e)) => tracing::warn!(error = %e, "consumer error during the initial load"),
                    }
                }
            }
            // Callbacks are served on the consumer's own queue; it also paces an idle loop.
            let _ = consumer.poll(if idle { Duration::from_millis(5) } else { Duration::ZERO });
            if idle && matches!(span, Span::Within { .. }) {
                // A partition ending in transaction markers never yields its last offset: its
                // position says it is through.
                let positions = consumer.position()?;
                for (k, (tp, _)) in queues.iter().enumerate() {
                    let position = positions.find_partition(&tp.topic, tp.partition).map(|e| e.offset());
                    if let (Some(Offset::Offset(next)), Some(limit)) = (position, end(tp)) {
                        if next >= limit {
                            through.insert(k);
                        }
                    }
                }
            }
            for k in through.into_iter().rev() {
                queues.remove(k);
            }
        }
        Ok(reached)
    }
}

/// Which records of each partition [`Materializer::read_log`] reads.
#[derive(Debug, Clone, Copy)]
enum Span<'a> {
    /// From its start to where it ends when it is read (its end-of-partition event, read from the
    /// partition's own queue, so that it is known whose end it is).
    ToEnd,
    /// From the offset in `from` (its start if none) up to the next offset in `until`; a partition
    /// not in `until` is not read.
    Within { from: &'a Offsets, until: &'a Offsets },
}
