//! The idempotent producer behind mutations and imports.

use crate::{IngestError, IngestMetrics, KafkaConfig};
use coalition_events::{Event, CONTENT_TYPE};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Serialize;
use std::time::Duration;

const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the broker stored an event: returned to the caller as its receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Receipt {
    pub event_id: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

#[derive(Clone)]
pub struct EventProducer {
    producer: FutureProducer,
    metrics: Option<IngestMetrics>,
}

impl std::fmt::Debug for EventProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventProducer").finish_non_exhaustive()
    }
}

impl EventProducer {
    /// An idempotent producer with acknowledgement from all in-sync replicas.
    pub fn new(config: &KafkaConfig, metrics: Option<IngestMetrics>) -> Result<Self, IngestError> {
        let producer = config
            .client(&[
                ("enable.idempotence", "true"),
                ("acks", "all"),
                ("linger.ms", "2"),
                ("message.timeout.ms", "30000"),
            ])
            .create()?;
        Ok(EventProducer { producer, metrics })
    }

    /// Produces `event` to its kind's topic, keyed by entity id; resolves once the broker has it.
    pub async fn publish(&self, event: &Event) -> Result<Receipt, IngestError> {
        let topic = event.kind.topic();
        let bytes = event.to_bytes();
        self.send(topic, &event.subject.0, &bytes, &event.id.0, Vec::new()).await
    }

    /// Produces raw bytes (an already-encoded event, or a dead letter) with extra headers.
    pub async fn send(
        &self,
        topic: &str,
        key: &str,
        bytes: &[u8],
        event_id: &str,
        headers: Vec<(String, Vec<u8>)>,
    ) -> Result<Receipt, IngestError> {
        let mut owned = OwnedHeaders::new().insert(Header { key: "content-type", value: Some(CONTENT_TYPE) });
        for (k, v) in &headers {
            owned = owned.insert(Header { key: k.as_str(), value: Some(v.as_slice()) });
        }
        let record = FutureRecord::to(topic).key(key).payload(bytes).headers(owned);
        match self.producer.send(record, DELIVERY_TIMEOUT).await {
            Ok(delivery) => {
                if let Some(m) = &self.metrics {
                    m.produced.with_label_values(&[topic]).inc();
                }
                tracing::debug!(event_id, topic, partition = delivery.partition, offset = delivery.offset, "produced");
                Ok(Receipt {
                    event_id: event_id.to_owned(),
                    topic: topic.to_owned(),
                    partition: delivery.partition,
                    offset: delivery.offset,
                })
            }
            Err((e, _)) => Err(IngestError::Delivery {
                event_id: event_id.to_owned(),
                topic: topic.to_owned(),
                message: e.to_string(),
            }),
        }
    }
}
