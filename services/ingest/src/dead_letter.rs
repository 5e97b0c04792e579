//! Dead letters: a rejected record is re-produced to the dead-letter topic with its original
//! value and headers untouched, plus `coalition.dlq.*` headers saying why and where it came from.

use coalition_mapping::LogPosition;
use rdkafka::message::{Headers, Message};

/// Prefix of the headers a dead letter carries.
pub const DLQ_HEADER_PREFIX: &str = "coalition.dlq.";

#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// Stable reason code, e.g. `schema_violation`, `shacl_violation`, `not_json`.
    pub reason: String,
    pub message: String,
    pub source: LogPosition,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub time: chrono::DateTime<chrono::Utc>,
}

impl DeadLetter {
    /// The dead letter of the record `msg` at `pos`, rejected for `reason`.
    pub(crate) fn of_record(msg: &impl Message, pos: &LogPosition, reason: &str, message: String) -> DeadLetter {
        let headers = msg
            .headers()
            .map(|h| {
                h.iter()
                    .map(|header| (header.key.to_owned(), header.value.map(<[u8]>::to_vec).unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default();
        DeadLetter {
            reason: reason.to_owned(),
            message,
            source: pos.clone(),
            key: msg.key().map(<[u8]>::to_vec),
            value: msg.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            headers,
            time: chrono::Utc::now(),
        }
    }

    /// The headers of the dead-letter record: the original ones, then the reason and source.
    pub fn record_headers(&self) -> Vec<(String, Vec<u8>)> {
        let mut h: Vec<(String, Vec<u8>)> = self.headers.iter().filter(|(k, _)| k != "content-type").cloned().collect();
        let mut add = |name: &str, value: String| h.push((format!("{DLQ_HEADER_PREFIX}{name}"), value.into_bytes()));
        add("reason", self.reason.clone());
        add("message", self.message.clone());
        add("source.topic", self.source.topic.clone());
        add("source.partition", self.source.partition.to_string());
        add("source.offset", self.source.offset.to_string());
        add("time", self.time.to_rfc3339());
        h
    }
}
