//! Operator commands: `digest` (canonical digests of graph and index), `dlq list` and
//! `dlq replay` (inspect and re-submit dead letters).

use anyhow::Context as _;
use coalition_ingest::{EventProducer, KafkaConfig, DLQ_HEADER_PREFIX};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// Prints the digest of the graph (SHA-256 over sorted canonical N-Quads, provenance included,
/// consumed offsets excluded) and of the index (sorted document IRIs with every stored field).
pub fn digest(data_dir: &Path, json: bool) -> anyhow::Result<()> {
    let live = crate::stores::live_dir(data_dir);
    let store = coalition_store::GraphStore::open_read_only(&live.join("graph"))
        .context("opening the graph store read-only")?;
    let (graph, quads) = coalition_store::digest(&store)?;
    let index = coalition_search::SearchIndex::open_reader(&live.join("index")).context("opening the search index")?;
    let (index_digest, docs) = index.digest()?;
    if json {
        println!("{}", serde_json::json!({ "graph": graph, "quads": quads, "index": index_digest, "documents": docs }));
    } else {
        println!("graph  sha256:{graph}  ({quads} quads)");
        println!("index  sha256:{index_digest}  ({docs} documents)");
    }
    Ok(())
}

/// One dead letter as read back from the dead-letter topic.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeadLetterRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub reason: String,
    pub message: String,
    pub source_topic: String,
    pub source_partition: String,
    pub source_offset: String,
    pub time: String,
    #[serde(skip)]
    pub value: Vec<u8>,
    #[serde(skip)]
    pub original_headers: Vec<(String, Vec<u8>)>,
}

/// Reads every record of the dead-letter topic.
pub fn read_dead_letters(config: &KafkaConfig, timeout: Duration) -> anyhow::Result<Vec<DeadLetterRecord>> {
    let consumer: BaseConsumer = config
        .client_config()
        .set("group.id", format!("{}-dlq-reader", config.consumer_group))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .create()?;
    let topic = coalition_events::DEAD_LETTER_TOPIC;
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions = md.topics().first().map(|t| t.partitions().len()).unwrap_or(0) as i32;
    anyhow::ensure!(partitions > 0, "dead-letter topic {topic} does not exist");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut out = Vec::new();
    let mut eof = std::collections::BTreeSet::new();
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline && (eof.len() as i32) < partitions {
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                eof.insert(p);
            }
            Some(Err(e)) => tracing::warn!(error = %e, "reading dead letters"),
            Some(Ok(m)) => {
                eof.remove(&m.partition());
                let mut dlq = BTreeMap::new();
                let mut original = Vec::new();
                if let Some(h) = m.headers() {
                    for header in h.iter() {
                        let value = header.value.map(<[u8]>::to_vec).unwrap_or_default();
                        match header.key.strip_prefix(DLQ_HEADER_PREFIX) {
                            Some(name) => {
                                dlq.insert(name.to_owned(), String::from_utf8_lossy(&value).into_owned());
                            }
                            None => original.push((header.key.to_owned(), value)),
                        }
                    }
                }
                let field = |k: &str| dlq.get(k).cloned().unwrap_or_default();
                out.push(DeadLetterRecord {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                    reason: field("reason"),
                    message: field("message"),
                    source_topic: field("source.topic"),
                    source_partition: field("source.partition"),
                    source_offset: field("source.offset"),
                    time: field("time"),
                    value: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                    original_headers: original,
                });
            }
        }
    }
    out.sort_by_key(|r| (r.partition, r.offset));
    Ok(out)
}

pub fn list(config: &KafkaConfig, json: bool) -> anyhow::Result<()> {
    let records = read_dead_letters(config, Duration::from_secs(15))?;
    if json {
        for r in &records {
            println!("{}", serde_json::to_string(r)?);
        }
        return Ok(());
    }
    println!("{:<10} {:<38} {:<20} message", "dlq", "source", "reason");
    for r in &records {
        println!(
            "{:<10} {:<38} {:<20} {}",
            format!("{}/{}", r.partition, r.offset),
            format!("{}/{}/{}", r.source_topic, r.source_partition, r.source_offset),
            r.reason,
            r.message
        );
    }
    println!("{} dead letter(s)", records.len());
    Ok(())
}

/// Re-submits the chosen dead letters (by `partition/offset` on the dead-letter topic, or all)
/// to their source topics with their original key, value and headers.
pub async fn replay(config: &KafkaConfig, chosen: &[String], all: bool) -> anyhow::Result<()> {
    anyhow::ensure!(all || !chosen.is_empty(), "name dead letters to replay as PARTITION/OFFSET, or pass --all");
    let records = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || read_dead_letters(&config, Duration::from_secs(15))).await??
    };
    let producer = EventProducer::new(config, None)?;
    let mut replayed = 0;
    for r in records.iter().filter(|r| all || chosen.contains(&format!("{}/{}", r.partition, r.offset))) {
        anyhow::ensure!(!r.source_topic.is_empty(), "dead letter {}/{} has no source topic", r.partition, r.offset);
        let key = r.key.clone().unwrap_or_default();
        let receipt = producer
            .send(
                &r.source_topic,
                &key,
                &r.value,
                &format!("replay-of-dlq-{}-{}", r.partition, r.offset),
                r.original_headers.iter().filter(|(k, _)| k != "content-type").cloned().collect(),
            )
            .await?;
        println!("replayed {}/{} -> {}/{}/{}", r.partition, r.offset, receipt.topic, receipt.partition, receipt.offset);
        replayed += 1;
    }
    println!("{replayed} record(s) replayed");
    Ok(())
}
