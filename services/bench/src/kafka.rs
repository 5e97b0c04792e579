//! Producing the workload (idempotent producer, acks from all in-sync replicas, every record
//! confirmed or re-sent) and counting the dead-letter topic.

use crate::workload::Record;
use anyhow::{bail, Context, Result};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::{BTreeSet, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Records which sends the broker did not confirm, by index into the batch.
#[derive(Default)]
struct Deliveries {
    failed: Mutex<Vec<usize>>,
    last_error: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = Box<usize>;
    fn delivery(&self, result: &DeliveryResult<'_>, index: Box<usize>) {
        if let Err((e, _)) = result {
            self.failed.lock().expect("lock").push(*index);
            *self.last_error.lock().expect("lock") = Some(e.to_string());
        }
    }
}

pub struct BenchProducer {
    producer: BaseProducer<Deliveries>,
}

impl BenchProducer {
    pub fn new(brokers: &str) -> Result<BenchProducer> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("client.id", "coalition-bench")
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "60000")
            .create_with_context(Deliveries::default())
            .context("creating the producer")?;
        Ok(BenchProducer { producer })
    }

    /// Produces `records` and returns once the broker has confirmed every one; unconfirmed ones
    /// are sent again (the consumer is idempotent by event id, so a resend is at worst a duplicate).
    pub fn send_all(&self, topic: &str, records: &[Record]) -> Result<usize> {
        let mut pending: Vec<usize> = (0..records.len()).collect();
        let mut resent = 0;
        for attempt in 0..5 {
            for &i in &pending {
                let r = &records[i];
                let mut rec = BaseRecord::with_opaque_to(topic, Box::new(i)).key(r.key.as_bytes()).payload(&r.value);
                if let Some(p) = r.partition {
                    rec = rec.partition(p);
                }
                loop {
                    match self.producer.send(rec) {
                        Ok(()) => break,
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                            rec = back;
                            self.producer.poll(Duration::from_millis(10));
                        }
                        Err((e, _)) => bail!("producing to {topic}: {e}"),
                    }
                }
            }
            self.producer.flush(Duration::from_secs(120)).context("flushing the producer")?;
            pending = std::mem::take(&mut *self.producer.context().failed.lock().expect("lock"));
            if pending.is_empty() {
                return Ok(resent);
            }
            resent += pending.len();
            eprintln!("  {} records not confirmed (attempt {attempt}), sending again", pending.len());
            std::thread::sleep(Duration::from_secs(1));
        }
        let last = self.producer.context().last_error.lock().expect("lock").clone();
        bail!("{} records still unconfirmed after 5 attempts: {last:?}", pending.len())
    }
}

/// Dead letters on `topic`: raw records and distinct source positions.
#[derive(Debug, Default, Clone)]
pub struct DeadLetters {
    pub raw: usize,
    pub distinct: usize,
    pub reasons: std::collections::BTreeMap<String, usize>,
}

/// Reads the dead-letter topic from the beginning until `expected` distinct source positions
/// have been seen and nothing new arrived for a few seconds, or `timeout` passes.
pub fn count_dead_letters(brokers: &str, topic: &str, expected: usize, timeout: Duration) -> Result<DeadLetters> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("coalition-bench-dlq-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .context("creating the dead-letter consumer")?;
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(30))?;
    let partitions = md.topics().first().map(|t| t.partitions().len()).unwrap_or(0);
    if partitions == 0 {
        bail!("dead-letter topic {topic} has no partitions");
    }
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let start = Instant::now();
    let mut last_new = Instant::now();
    let mut seen_offsets = HashSet::new();
    let mut sources = BTreeSet::new();
    let mut out = DeadLetters::default();
    loop {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                if !seen_offsets.insert((m.partition(), m.offset())) {
                    continue;
                }
                last_new = Instant::now();
                out.raw += 1;
                let mut source = (String::new(), String::new(), String::new());
                let mut reason = String::from("?");
                if let Some(h) = m.headers() {
                    for header in h.iter() {
                        let v = header.value.map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default();
                        match header.key {
                            "coalition.dlq.source.topic" => source.0 = v,
                            "coalition.dlq.source.partition" => source.1 = v,
                            "coalition.dlq.source.offset" => source.2 = v,
                            "coalition.dlq.reason" => reason = v,
                            _ => {}
                        }
                    }
                }
                if sources.insert(source) {
                    *out.reasons.entry(reason).or_default() += 1;
                }
                out.distinct = sources.len();
            }
            Some(Err(e)) => eprintln!("  dead-letter consumer: {e}"),
            None => {}
        }
        let quiet = last_new.elapsed() > Duration::from_secs(3);
        if quiet && out.distinct >= expected {
            return Ok(out);
        }
        if start.elapsed() > timeout {
            return Ok(out);
        }
    }
}
