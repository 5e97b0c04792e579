//! Dead letters: a rejected record is re-produced to the dead-letter topic with its original
//! value and headers untouched, plus `coalition.dlq.*` headers saying why and where it came from.

use coalition_mapping::LogPosition;

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
