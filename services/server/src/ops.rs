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
    let store = coalition_store::GraphStore::open_read_only(&data_dir.join("graph"))
        .context("opening the graph store read-only")?;
    let (graph, quads) = coalition_store::digest(&store)?;
    let index =
        coalition_search::SearchIndex::open_reader(&data_dir.join("index")).context("opening the search index")?;
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
    println!("{:<10} {:<38} {:<20} {}", "dlq", "source", "reason", "message");
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

const STAGING: &str = "rebuild";
const READY_MARKER: &str = "READY";

/// Replays the whole log into fresh stores in `<data-dir>/rebuild`, beside the live ones (which
/// keep serving), with a progress bar; prints their digests; then swaps them in if no server
/// holds the data dir, or leaves them staged for the next `serve` to swap in at start.
pub async fn rebuild(data_dir: &Path, kafka: KafkaConfig) -> anyhow::Result<()> {
    use coalition_ingest::{IngestMetrics, Materializer};
    let staging = data_dir.join(STAGING);
    if staging.exists() {
        std::fs::remove_dir_all(&staging).with_context(|| format!("clearing {}", staging.display()))?;
    }
    std::fs::create_dir_all(&staging)?;
    let store = coalition_store::GraphStore::open(&staging.join("graph"))?;
    let index = std::sync::Arc::new(coalition_search::SearchIndex::open(&staging.join("index"))?);
    let metrics = IngestMetrics::register(&prometheus::Registry::new())?;
    let mut config = kafka.clone();
    config.consumer_group = format!("{}-rebuild", kafka.consumer_group);
    let started = Instant::now();
    let cancel = tokio_util::sync::CancellationToken::new();
    let handle = Materializer {
        kafka: config,
        log: "kafka".to_owned(),
        store: store.clone(),
        index: index.clone(),
        dead_letters: None,
        metrics,
        batch_max: 5000,
        linger: Duration::from_millis(50),
    }
    .spawn(cancel.clone())
    .await?;
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} rebuilding: {pos} records applied ({per_sec}) {msg}")
            .expect("static template"),
    );
    let mut watermark = handle.watermark();
    loop {
        let w = watermark.borrow_and_update().clone();
        bar.set_position((w.graph.total()) as u64);
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
    std::fs::write(staging.join(READY_MARKER), format!("{graph_digest}\n{index_digest}\n"))?;
    match coalition_store::GraphStore::open(&data_dir.join("graph")) {
        Ok(live) => {
            drop(live);
            swap_in_staged_rebuild(data_dir)?;
            println!("swapped the rebuilt stores in");
        }
        Err(e) => {
            println!(
                "a server holds {} ({e}); the rebuilt stores are staged and swap in at its next start",
                data_dir.display()
            );
        }
    }
    Ok(())
}

/// Swaps a completed rebuild (`<data-dir>/rebuild/READY`) in for the live stores; the previous
/// ones are kept as `graph.previous` and `index.previous` until the next swap.
pub fn swap_in_staged_rebuild(data_dir: &Path) -> anyhow::Result<()> {
    let staging = data_dir.join(STAGING);
    if !staging.join(READY_MARKER).exists() {
        return Ok(());
    }
    for part in ["graph", "index"] {
        let live = data_dir.join(part);
        let previous = data_dir.join(format!("{part}.previous"));
        if previous.exists() {
            std::fs::remove_dir_all(&previous)?;
        }
        if live.exists() {
            std::fs::rename(&live, &previous)?;
        }
        std::fs::rename(staging.join(part), &live)?;
    }
    std::fs::remove_dir_all(&staging)?;
    tracing::info!(data_dir = %data_dir.display(), "swapped in the rebuilt graph and index");
    Ok(())
}
