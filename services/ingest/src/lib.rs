//! Kafka in and out: the idempotent event producer used by mutations and imports, the
//! materializer that turns topics into graph + index, and the dead-letter topic.
//!
//! Guarantees:
//! - a produced event is reported only once the broker acknowledged it (`acks=all`, idempotent);
//! - the materializer commits each batch to the graph together with its offsets, then to the
//!   index with the same offsets in the commit payload; on start each sink resumes from its own
//!   offsets, so nothing is applied twice and nothing acknowledged is skipped;
//! - a record that fails decoding, schema, mapping or SHACL goes to the dead-letter topic with a
//!   reason, its original bytes and headers, and its source position; the stream goes on.
//!
//! Oxigraph and Tantivy work runs on blocking threads; the runtime is never blocked.

mod dead_letter;
mod import;
mod initial_load;
mod materializer;
pub mod metrics;
pub mod priority;
mod producer;

pub use dead_letter::{DeadLetter, DLQ_HEADER_PREFIX};
pub use import::{import_file, ImportReport};
pub use materializer::{wait_applied, Materializer, MaterializerHandle, Watermark};
pub use metrics::IngestMetrics;
pub use producer::{EventProducer, Receipt};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("kafka error: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("kafka delivery of event {event_id} to {topic} failed: {message}")]
    Delivery { event_id: String, topic: String, message: String },
    #[error(transparent)]
    Store(#[from] coalition_store::StoreError),
    #[error(transparent)]
    Search(#[from] coalition_search::SearchError),
    #[error("cannot read {path}: {message}")]
    Io { path: String, message: String },
    #[error("timed out after {0:?} waiting for the event to be applied")]
    ApplyTimeout(Duration),
    #[error("materializer stopped")]
    Stopped,
}

/// How to reach Kafka.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    pub brokers: String,
    pub consumer_group: String,
    pub client_id: String,
    /// Extra librdkafka properties (e.g. SASL settings), applied last.
    pub extra: Vec<(String, String)>,
}

impl KafkaConfig {
    pub fn new(brokers: impl Into<String>) -> Self {
        KafkaConfig {
            brokers: brokers.into(),
            consumer_group: "coalition-materializer".to_owned(),
            client_id: "coalition".to_owned(),
            extra: Vec::new(),
        }
    }

    /// librdkafka client settings for this cluster (brokers, client id, extra properties).
    pub fn client_config(&self) -> ClientConfig {
        self.client(&[])
    }

    /// The settings of one client role: the cluster's, then the role's `defaults`, then the
    /// extra properties, so that an operator can override any default of any role.
    pub(crate) fn client(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers).set("client.id", &self.client_id);
        for (k, v) in defaults {
            c.set(*k, *v);
        }
        for (k, v) in &self.extra {
            c.set(k, v);
        }
        c
    }
}

/// Creates every coalition topic (and the dead-letter topic) that does not exist yet.
pub async fn ensure_topics(config: &KafkaConfig, partitions: i32, replication: i32) -> Result<(), IngestError> {
    let admin: AdminClient<DefaultClientContext> = config.client_config().create()?;
    let mut names: Vec<&str> = coalition_events::Kind::topics();
    names.push(coalition_events::DEAD_LETTER_TOPIC);
    let topics: Vec<NewTopic<'_>> =
        names.iter().map(|name| NewTopic::new(name, partitions, TopicReplication::Fixed(replication))).collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(&topics, &options).await? {
        match result {
            Ok(_) => {}
            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                tracing::warn!(%topic, ?code, "could not create topic");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::KafkaConfig;

    #[test]
    fn extra_properties_override_every_role_default() {
        let mut config = KafkaConfig::new("broker:9092");
        config.extra = vec![("fetch.wait.max.ms".to_owned(), "5".to_owned())];
        let client = config.client(&[("fetch.wait.max.ms", "50"), ("acks", "all")]);
        assert_eq!(client.get("fetch.wait.max.ms"), Some("5"));
        assert_eq!(client.get("acks"), Some("all"));
        assert_eq!(client.get("bootstrap.servers"), Some("broker:9092"));
    }
}
