//! Initial load: a materializer whose sinks hold nothing, started on a log of at least
//! [`Materializer::initial_load_min`] records (a new replica, a rebuild's new generation), loads
//! the log up to its end with the graph store's bulk loader and one index commit, then goes on
//! through the pipeline from there.
//!
//! Two passes read the same records, each with its own consumer: the first reads each partition
//! from its start to its end-of-partition event (high watermarks are not trusted for this: some
//! Kafka-protocol brokers report the last batch's first offset), the second up to where the first
//! stopped. The first decodes, validates and maps every record, dead-letters the bad ones (which
//! the second skips), loads the provenance of every new event and decides, in log order, what a
//! transactional apply would have done with it ([`LoadPlan::record`]); the second maps again,
//! without the SHACL check the first made, loads the facts of the event that won each entity
//! graph and adds its documents to the index. The graph's projections and offsets are then
//! written in one transaction, and the index commits with the same offsets. The result equals
//! replaying the records through the pipeline (a test compares the digests); a load that stops
//! half-way leaves nothing visible, or a store marked unfinished that the next start clears.

use crate::materializer::{decode_and_map, MaterializerContext, Shapes};
use crate::{DeadLetter, IngestError, Materializer};
use coalition_events::Action;
use coalition_mapping::{LogPosition, Offsets, TopicPartition};
use coalition_store::{Applicable, LoadPlan, Loader, Verdict};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Documents handed to the index writer at once during the second pass.
const DOCS_PER_ADD: usize = 10_000;
/// Records read from one partition's queue before turning to the next.
const POLLS_PER_TURN: usize = 500;

/// What an initial load did.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    /// Where the load stopped: the next offset of every partition it read.
    pub offsets: Offsets,
    pub applied: u64,
    pub stale: u64,
    pub duplicates: u64,
    /// Where the records the first pass dead-lettered sit: the second pass skips them.
    pub dead_lettered: HashSet<LogPosition>,
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
        let graph = self.store.initial_load(&self.log, |loader| -> Result<(), IngestError> {
            ends = self.read_log(partitions, None, cancel, |msg, pos| {
                self.first_pass(msg, pos, &mut plan, loader, &mut loaded, runtime)
            })?;
            tracing::info!(elapsed_s = started.elapsed().as_secs_f64(), "initial load: first pass done");
            let mut docs = Vec::new();
            self.read_log(partitions, Some(&ends), cancel, |msg, pos| {
                if loaded.dead_lettered.contains(&pos) {
                    return Ok(());
                }
                // The first pass checked every record it did not dead-letter.
                let Ok((event_id, mapped)) = decode_and_map(msg, &pos, Shapes::CheckedBefore) else { return Ok(()) };
                let item = Applicable { event_id, mapped };
                if plan.take_winner(&item) {
                    let m = item.mapped;
                    loader.add(m.facts.into_iter().chain(m.generation))?;
                    if m.action != Action::Retract {
                        docs.extend(m.docs);
                    }
                    if docs.len() >= DOCS_PER_ADD {
                        self.index.add_uncommitted(&std::mem::take(&mut docs))?;
                    }
                }
                Ok(())
            })?;
            self.index.add_uncommitted(&docs)?;
            Ok(())
        })?;
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
            stale = loaded.stale,
            duplicates = loaded.duplicates,
            dead_lettered = loaded.dead_lettered.len(),
            graph_loaded_s = graph_loaded,
            projections_s = projected - graph_loaded,
            index_commit_s = started.elapsed().as_secs_f64() - projected,
            "initial load done"
        );
        Ok(loaded)
    }

    /// First pass over one record: dead-letters it, or records what an apply would do with it
    /// and loads the provenance of a new event.
    fn first_pass(
        &self,
        msg: &BorrowedMessage<'_>,
        pos: LogPosition,
        plan: &mut LoadPlan,
        loader: &mut Loader<'_>,
        loaded: &mut Loaded,
        runtime: &tokio::runtime::Handle,
    ) -> Result<(), IngestError> {
        self.metrics.consumed.with_label_values(&[pos.topic.as_str()]).inc();
        match decode_and_map(msg, &pos, Shapes::Check) {
            Ok((event_id, mapped)) => {
                let item = Applicable { event_id, mapped };
                match plan.record(&item) {
                    Verdict::Duplicate => loaded.duplicates += 1,
                    verdict => {
                        if verdict == Verdict::Applied {
                            loaded.applied += 1;
                        } else {
                            loaded.stale += 1;
                        }
                        loader.add(item.mapped.provenance)?;
                    }
                }
            }
            Err((reason, message)) => {
                tracing::warn!(topic = %pos.topic, partition = pos.partition, offset = pos.offset, reason, %message, "dead-lettering record");
                runtime.block_on(self.dead_letter(&DeadLetter::of_record(msg, &pos, reason, message)))?;
                loaded.dead_lettered.insert(pos);
            }
        }
        Ok(())
    }

    /// Calls `each` on every record of `partitions` from the start, partition by partition in
    /// offset order, with a consumer of its own: up to `ends` if given, else up to where each
    /// partition ends when it is read (its end-of-partition event, read from the partition's own
    /// queue, so that it is known whose end it is). Returns the next offset of every partition it
    /// read records from.
    fn read_log(
        &self,
        partitions: &[TopicPartition],
        ends: Option<&Offsets>,
        cancel: &CancellationToken,
        mut each: impl FnMut(&BorrowedMessage<'_>, LogPosition) -> Result<(), IngestError>,
    ) -> Result<Offsets, IngestError> {
        let consumer: Arc<BaseConsumer<MaterializerContext>> =
            Arc::new(self.consumer_config().create_with_context(MaterializerContext)?);
        let end = |tp: &TopicPartition| ends.map(|e| e.next(&tp.topic, tp.partition).unwrap_or(0));
        let wanted: Vec<&TopicPartition> = partitions.iter().filter(|tp| end(tp) != Some(0)).collect();
        let mut tpl = TopicPartitionList::new();
        for tp in &wanted {
            tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Beginning)?;
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
                        Some(Err(KafkaError::PartitionEOF(_))) if ends.is_none() => {
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
            if idle && ends.is_some() {
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
