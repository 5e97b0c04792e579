//! Coalition events: the CloudEvents 1.0 envelope, the payload of every event type, the topic each
//! kind lives on, and validation of raw bytes against the JSON Schemas in `schema/events/v1`.
//!
//! Guarantees: an [`Event`] returned by [`decode`] has passed its type's JSON Schema and carries a
//! typed payload; every rejection is an [`EventError`] naming the reason and the offending field.
//! Never does I/O: the schemas are compiled into the crate.

mod schemas;
mod types;
mod upcast;

pub use schemas::{schema_for, schema_names, SchemaError, Violation};
pub use types::*;

use serde::{Deserialize, Serialize};

/// The CloudEvents spec version every event carries.
pub const SPEC_VERSION: &str = "1.0";
/// Content type of a structured-mode CloudEvent on Kafka.
pub const CONTENT_TYPE: &str = "application/cloudevents+json; charset=UTF-8";
/// The dead-letter topic: per-record rejects with their reason and original bytes.
pub const DEAD_LETTER_TOPIC: &str = "coalition.deadletter.v1";

/// Prefix of partner inbox topics, `coalition.inbox.<partner id>.v1`: a partner producing straight
/// to Kafka writes only to its own inbox (enforced by topic ACLs), and the materializer refuses
/// any event there that claims another partner.
pub const INBOX_PREFIX: &str = "coalition.inbox.";

/// The inbox topic of `partner`.
pub fn inbox_topic(partner: &str) -> String {
    format!("{INBOX_PREFIX}{partner}.v1")
}

/// The partner whose inbox `topic` is, if it is one.
pub fn inbox_partner(topic: &str) -> Option<&str> {
    topic.strip_prefix(INBOX_PREFIX)?.strip_suffix(".v1").filter(|p| !p.is_empty() && !p.contains('.'))
}

/// Every kind of entity (and the link relation) the coalition tracks, one topic each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Kind {
    Partner,
    Person,
    Programme,
    Dialogue,
    Recommendation,
    CaseStudy,
    Activity,
    Outcome,
    Evidence,
    Source,
    Link,
}

impl Kind {
    pub const ALL: [Kind; 11] = [
        Kind::Partner,
        Kind::Person,
        Kind::Programme,
        Kind::Dialogue,
        Kind::Recommendation,
        Kind::CaseStudy,
        Kind::Activity,
        Kind::Outcome,
        Kind::Evidence,
        Kind::Source,
        Kind::Link,
    ];

    /// Path segment used in IRIs, topic names and event types.
    pub fn slug(self) -> &'static str {
        match self {
            Kind::Partner => "partner",
            Kind::Person => "person",
            Kind::Programme => "programme",
            Kind::Dialogue => "dialogue",
            Kind::Recommendation => "recommendation",
            Kind::CaseStudy => "case-study",
            Kind::Activity => "activity",
            Kind::Outcome => "outcome",
            Kind::Evidence => "evidence",
            Kind::Source => "source",
            Kind::Link => "link",
        }
    }

    pub fn from_slug(slug: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.slug() == slug)
    }

    /// The Kafka topic holding this kind's events.
    pub fn topic(self) -> &'static str {
        match self {
            Kind::Partner => "coalition.partners.v1",
            Kind::Person => "coalition.people.v1",
            Kind::Programme => "coalition.programmes.v1",
            Kind::Dialogue => "coalition.dialogues.v1",
            Kind::Recommendation => "coalition.recommendations.v1",
            Kind::CaseStudy => "coalition.case-studies.v1",
            Kind::Activity => "coalition.activities.v1",
            Kind::Outcome => "coalition.outcomes.v1",
            Kind::Evidence => "coalition.evidence.v1",
            Kind::Source => "coalition.sources.v1",
            Kind::Link => "coalition.links.v1",
        }
    }

    /// The CloudEvents `type` of a submission of this kind.
    pub fn event_type(self) -> &'static str {
        match self {
            Kind::Partner => "org.coalition.partner.submitted.v1",
            Kind::Person => "org.coalition.person.submitted.v1",
            Kind::Programme => "org.coalition.programme.submitted.v1",
            Kind::Dialogue => "org.coalition.dialogue.submitted.v1",
            Kind::Recommendation => "org.coalition.recommendation.submitted.v1",
            Kind::CaseStudy => "org.coalition.case-study.submitted.v1",
            Kind::Activity => "org.coalition.activity.submitted.v1",
            Kind::Outcome => "org.coalition.outcome.submitted.v1",
            Kind::Evidence => "org.coalition.evidence.submitted.v1",
            Kind::Source => "org.coalition.source.submitted.v1",
            Kind::Link => "org.coalition.link.created.v1",
        }
    }

    /// The CloudEvents `type` of a retraction of this kind.
    pub fn retracted_type(self) -> String {
        format!("org.coalition.{}.retracted.v1", self.slug())
    }

    /// The kind of a submission type.
    pub fn from_event_type(ty: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.event_type() == ty)
    }

    /// The kind and action of any known event type.
    pub fn parse_event_type(ty: &str) -> Option<(Kind, Action)> {
        if let Some(kind) = Kind::from_event_type(ty) {
            return Some((kind, Action::Submit));
        }
        let slug = ty.strip_prefix("org.coalition.")?.strip_suffix(".retracted.v1")?;
        Some((Kind::from_slug(slug)?, Action::Retract))
    }

    /// Every topic the materializer consumes.
    pub fn topics() -> Vec<&'static str> {
        Kind::ALL.iter().map(|k| k.topic()).collect()
    }
}

/// What an event does to its entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Action {
    /// Creates the entity or replaces its facts.
    Submit,
    /// Removes the entity's facts; the retraction stays in provenance.
    Retract,
}

/// A CloudEvents 1.0 structured-mode event as it travels on Kafka.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub specversion: String,
    pub id: EventId,
    /// URI reference of the producer, e.g. `/partners/nachw` or `/coalition/seed`.
    pub source: String,
    #[serde(rename = "type")]
    pub ty: String,
    /// The entity id; also the Kafka key.
    pub subject: EntityId,
    pub time: chrono::DateTime<chrono::Utc>,
    pub datacontenttype: String,
    /// Extension attribute: the partner organisation that submitted the event.
    pub partnerid: PartnerId,
    /// Extension attribute: the entity's version (absent = 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entityversion: Option<i64>,
    pub data: serde_json::Value,
}

/// A validated event with its typed payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: EventId,
    pub kind: Kind,
    pub source: String,
    pub subject: EntityId,
    pub time: chrono::DateTime<chrono::Utc>,
    pub partner: PartnerId,
    /// The entity version the event carries, if any.
    pub version: Option<i64>,
    pub payload: Payload,
}

impl Event {
    /// A copy of this event about entity `subject` instead, as event `id`: the same payload
    /// otherwise (what load generators send as new entities).
    pub fn copy_as(&self, subject: EntityId, id: EventId) -> Event {
        let mut e = self.clone();
        *e.payload.subject_mut() = subject.clone();
        e.subject = subject;
        e.id = id;
        e
    }

    /// Builds an event for `payload`, submitted by `partner`, with a fresh time-ordered id.
    pub fn new(partner: PartnerId, source: impl Into<String>, payload: Payload) -> Event {
        Event {
            id: EventId(uuid::Uuid::now_v7().to_string()),
            kind: payload.kind(),
            source: source.into(),
            subject: payload.subject(),
            time: chrono::Utc::now(),
            partner,
            version: None,
            payload,
        }
    }

    /// Builds a retraction of the entity of `kind` with `id`.
    pub fn retraction(
        partner: PartnerId,
        source: impl Into<String>,
        kind: Kind,
        id: EntityId,
        reason: Option<String>,
    ) -> Event {
        Event::new(partner, source, Payload::Retraction(Retraction { kind, id, reason }))
    }

    pub fn action(&self) -> Action {
        match self.payload {
            Payload::Retraction(_) => Action::Retract,
            _ => Action::Submit,
        }
    }

    /// The CloudEvents `type` of this event.
    pub fn event_type(&self) -> String {
        match self.action() {
            Action::Submit => self.kind.event_type().to_owned(),
            Action::Retract => self.kind.retracted_type(),
        }
    }

    /// Total order of events about one entity: version, then time, then event id. The greatest
    /// key wins, whatever order the events arrive in.
    pub fn order_key(&self) -> (i64, chrono::DateTime<chrono::Utc>, &str) {
        (self.version.unwrap_or(0), self.time, self.id.0.as_str())
    }

    pub fn envelope(&self) -> Envelope {
        Envelope {
            specversion: SPEC_VERSION.to_owned(),
            id: self.id.clone(),
            source: self.source.clone(),
            ty: self.event_type(),
            subject: self.subject.clone(),
            time: self.time,
            datacontenttype: "application/json".to_owned(),
            partnerid: self.partner.clone(),
            entityversion: self.version,
            data: self.payload.to_json(),
        }
    }

    /// Structured-mode JSON bytes, as produced to Kafka.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.envelope()).expect("events always serialize")
    }
}

/// Why an event was rejected. `code()` is the stable reason code written to the dead-letter topic.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EventError {
    #[error("event is not valid JSON: {0}")]
    NotJson(String),
    #[error("event is not a CloudEvents 1.0 envelope: {0}")]
    NotCloudEvent(String),
    #[error("unknown event type \"{0}\"")]
    UnknownType(String),
    #[error("unsupported version of event type \"{0}\": this build reads v1 (and v2 outcomes)")]
    UnsupportedVersion(String),
    #[error("invalid event {id}: {}", errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Schema { id: String, errors: Vec<Violation> },
    #[error("invalid event {id}: subject \"{subject}\" does not match data id \"{data_id}\"")]
    SubjectMismatch { id: String, subject: String, data_id: String },
    #[error("invalid event {id}: {message}")]
    Payload { id: String, message: String },
}

impl EventError {
    pub fn code(&self) -> &'static str {
        match self {
            EventError::NotJson(_) => "not_json",
            EventError::NotCloudEvent(_) => "not_cloudevent",
            EventError::UnknownType(_) => "unknown_type",
            EventError::UnsupportedVersion(_) => "unsupported_version",
            EventError::Schema { .. } => "schema_violation",
            EventError::SubjectMismatch { .. } => "subject_mismatch",
            EventError::Payload { .. } => "payload_invalid",
        }
    }
}

/// Parses and validates raw structured-mode bytes into an [`Event`].
pub fn decode(bytes: &[u8]) -> Result<Event, EventError> {
    let mut value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| EventError::NotJson(e.to_string()))?;
    let upcast_id = value.get("id").and_then(|t| t.as_str()).unwrap_or("?").to_owned();
    upcast::upcast(&mut value).map_err(|errors| EventError::Schema { id: upcast_id, errors })?;
    let ty = value
        .get("type")
        .and_then(|t| t.as_str())
        .ok_or_else(|| EventError::NotCloudEvent("missing string attribute \"type\"".into()))?;
    let id = value.get("id").and_then(|t| t.as_str()).unwrap_or("?").to_owned();
    if value.get("specversion").and_then(|v| v.as_str()) != Some(SPEC_VERSION) {
        return Err(EventError::NotCloudEvent(format!(
            "event {id}: attribute \"specversion\" must be \"{SPEC_VERSION}\""
        )));
    }
    let (kind, action) = Kind::parse_event_type(ty).ok_or_else(|| {
        if upcast::is_unsupported_version(ty) {
            EventError::UnsupportedVersion(ty.to_owned())
        } else {
            EventError::UnknownType(ty.to_owned())
        }
    })?;
    let errors = match action {
        Action::Submit => schemas::validate(kind, &value),
        Action::Retract => schemas::validate_retraction(&value),
    };
    if !errors.is_empty() {
        return Err(EventError::Schema { id, errors });
    }
    let mut envelope: Envelope =
        serde_json::from_value(value).map_err(|e| EventError::NotCloudEvent(format!("event {id}: {e}")))?;
    let data = envelope.data.take();
    let payload = match action {
        Action::Submit => Payload::from_json(kind, data),
        Action::Retract => serde_json::from_value::<RetractionData>(data)
            .map(|d| Payload::Retraction(Retraction { kind, id: d.id, reason: d.reason })),
    }
    .map_err(|e| EventError::Payload { id: id.clone(), message: e.to_string() })?;
    let data_id = payload.subject();
    if data_id != envelope.subject {
        return Err(EventError::SubjectMismatch { id, subject: envelope.subject.0, data_id: data_id.0 });
    }
    Ok(Event {
        id: envelope.id,
        kind,
        source: envelope.source,
        subject: envelope.subject,
        time: envelope.time,
        partner: envelope.partnerid,
        version: envelope.entityversion,
        payload,
    })
}

/// Validates only the `data` of a would-be event of `kind`, as a mutation does before producing.
/// Errors name the JSON pointer of each offending field.
pub fn validate_payload(payload: &Payload) -> Result<(), EventError> {
    let probe = Event::new(PartnerId("validation".into()), "/validation", payload.clone());
    let value = serde_json::to_value(probe.envelope()).expect("envelope serializes");
    let errors = match probe.action() {
        Action::Submit => schemas::validate(probe.kind, &value),
        Action::Retract => schemas::validate_retraction(&value),
    };
    if errors.is_empty() {
        Ok(())
    } else {
        Err(EventError::Schema { id: probe.id.0, errors })
    }
}

#[cfg(test)]
mod tests;
