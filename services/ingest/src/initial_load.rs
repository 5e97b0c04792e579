//! Initial load: a materializer whose sinks hold nothing, started on a log of at least
//! [`Materializer::initial_load_min`] records (a new replica, a rebuild's new generation), loads
//! the log up to where it stood at start with the graph store's bulk loader and one index commit,
//! then goes on through the pipeline from there.
//!
//! Two passes read the same records (each partition from its start to its high watermark at
//! start), each with its own consumer. The first decodes, validates and maps every record,
//! dead-letters the bad ones, loads the provenance of every new event and decides, in log order,
//! what a transactional apply would have done with it ([`LoadPlan::record`]); the second loads
//! the facts of the event that won each entity graph and adds its documents to the index. The
//! graph's projections and offsets are then written in one transaction, and the index commits
//! with the same offsets. The result equals replaying the records through the pipeline (a test
//! compares the digests); a load that stops half-way leaves nothing visible, or a store marked
//! unfinished that the next start clears.

use crate::materializer::{dead_letter, decode_and_map, MaterializerContext};
use crate::{IngestError, Materializer};
use coalition_events::{Action, DEAD_LETTER_TOPIC};
use coalition_mapping::{LogPosition, Offsets, TopicPartition};
use coalition_store::{Applicable, LoadPlan, Loader, Verdict};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Documents handed to the index writer at once during the second pass.
const DOCS_PER_ADD: usize = 10_000;

/// What an initial load did.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    /// Where the load stopped: the next offset of every partition it read.
    pub offsets: Offsets,
    pub applied: u64,
    pub stale: u64,
    pub duplicates: u64,
    pub dead_lettered: u64,
}

impl Materializer {
    /// True if the sinks hold nothing of any log and the log holds at least
    /// `initial_load_min` records below `highs`.
    pub(crate) fn wants_initial_load(&self, start: &Offsets, highs: &Offsets) -> Result<bool, IngestError> {
        let records: i64 = highs.0.values().sum();
        Ok(start.0.is_empty()
            && records > 0
            && records as u64 >= self.initial_load_min
            && self.store.is_empty()?
            && self.index.num_docs() == 0)
    }

    /// Loads every record below `highs` (blocking; run it off the async runtime).
    pub(crate) fn initial_load(
        &self,
        partitions: &[TopicPartition],
        highs: &Offsets,
        cancel: &CancellationToken,
        runtime: &tokio::runtime::Handle,
    ) -> Result<Loaded, IngestError> {
        let started = Instant::now();
        let records: i64 = highs.0.values().sum();
        tracing::info!(records, "initial load: the sinks are empty; bulk-loading the log up to its start");
        let mut plan = LoadPlan::default();
        let mut loaded = Loaded::default();
        let quads = self.store.initial_load(&self.log, |loader| -> Result<(), IngestError> {
            self.read_log(partitions, highs, cancel, |msg, pos| {
                self.first_pass(msg, pos, &mut plan, loader, &mut loaded, runtime)
            })?;
            tracing::info!(elapsed_s = started.elapsed().as_secs_f64(), "initial load: first pass done");
            let mut docs = Vec::new();
            self.read_log(partitions, highs, cancel, |msg, pos| {
                let Ok((event_id, mapped)) = decode_and_map(msg, &pos) else { return Ok(()) };
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
        loaded.offsets = highs.clone();
        loaded.offsets.0.retain(|_, next| *next > 0);
        self.store.finish_initial_load(&self.log, &loaded.offsets)?;
        let projected = started.elapsed().as_secs_f64();
        self.index.commit(&self.log, &loaded.offsets)?;
        self.metrics.applied.inc_by(loaded.applied);
        self.metrics.stale.inc_by(loaded.stale);
        self.metrics.duplicates.inc_by(loaded.duplicates);
        tracing::info!(
            records,
            quads,
            applied = loaded.applied,
            stale = loaded.stale,
            duplicates = loaded.duplicates,
            dead_lettered = loaded.dead_lettered,
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
        match decode_and_map(msg, &pos) {
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
                let d = dead_letter(msg, &pos, reason, message);
                if let Some(producer) = &self.dead_letters {
                    let key = d.key.as_deref().map(String::from_utf8_lossy).unwrap_or_default();
                    runtime.block_on(producer.send(
                        DEAD_LETTER_TOPIC,
                        &key,
                        &d.value,
                        "dead-letter",
                        d.record_headers(),
                    ))?;
                }
                self.metrics.dead_lettered.with_label_values(&[d.reason.as_str()]).inc();
                loaded.dead_lettered += 1;
            }
        }
        Ok(())
    }

    /// Calls `each` on every record below `highs`, partition by partition in offset order, with a
    /// consumer of its own.
    fn read_log(
        &self,
        partitions: &[TopicPartition],
        highs: &Offsets,
        cancel: &CancellationToken,
        mut each: impl FnMut(&BorrowedMessage<'_>, LogPosition) -> Result<(), IngestError>,
    ) -> Result<(), IngestError> {
        let consumer: BaseConsumer<MaterializerContext> =
            self.consumer_config().create_with_context(MaterializerContext)?;
        let high = |topic: &str, partition: i32| highs.next(topic, partition).unwrap_or(0);
        let mut remaining: BTreeSet<(String, i32)> = BTreeSet::new();
        let mut tpl = TopicPartitionList::new();
        for tp in partitions.iter().filter(|tp| high(&tp.topic, tp.partition) > 0) {
            tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Beginning)?;
            remaining.insert((tp.topic.clone(), tp.partition));
        }
        consumer.assign(&tpl)?;
        while !remaining.is_empty() {
            if cancel.is_cancelled() {
                return Err(IngestError::Stopped);
            }
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(msg)) => {
                    let pos =
                        LogPosition { topic: msg.topic().to_owned(), partition: msg.partition(), offset: msg.offset() };
                    let end = high(&pos.topic, pos.partition);
                    if pos.offset < end {
                        each(&msg, pos.clone())?;
                    }
                    if pos.offset + 1 >= end {
                        remaining.remove(&(pos.topic, pos.partition));
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) | None => {
                    // A partition ending in transaction markers never yields its last offset:
                    // its position says it is through.
                    for elem in consumer.position()?.elements() {
                        if let Offset::Offset(next) = elem.offset() {
                            if next >= high(elem.topic(), elem.partition()) {
                                remaining.remove(&(elem.topic().to_owned(), elem.partition()));
                            }
                        }
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "consumer error during the initial load");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        Ok(())
    }
}
