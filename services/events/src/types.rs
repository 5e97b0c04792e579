//! Payload types: the `data` of each event type. Field names are camelCase on the wire.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_type {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(s.to_owned())
            }
        }
    };
}

id_type!(
    /// Unique id of one event (CloudEvents `id`).
    EventId
);
id_type!(
    /// Id of an entity, unique within its kind: lowercase letters, digits and dashes.
    EntityId
);
id_type!(
    /// Id of a partner organisation (an [`EntityId`] of kind partner).
    PartnerId
);

/// ISO 3166-1 alpha-2 country code, upper case (e.g. `GB`, `US`, `BR`).
pub type Country = String;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Partner {
    pub id: EntityId,
    pub name: String,
    /// university | ngo | hospital | company | association | government | intergovernmental | foundation
    pub organisation_type: String,
    pub country: Option<Country>,
    #[serde(default)]
    pub coalition_member: bool,
    pub description: Option<String>,
    pub website: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Person {
    pub id: EntityId,
    pub name: String,
    /// Roles held, e.g. "Advisory Group member", "NextGen scholar", "speaker".
    #[serde(default)]
    pub roles: Vec<String>,
    /// Partner organisations the person is affiliated with.
    #[serde(default)]
    pub affiliations: Vec<EntityId>,
    pub job_title: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Programme {
    pub id: EntityId,
    pub name: String,
    pub description: Option<String>,
    /// Education | Dialogues | Influence
    pub pillar: Option<String>,
    pub country: Option<Country>,
    #[serde(default)]
    pub partners: Vec<EntityId>,
    pub start_date: Option<chrono::NaiveDate>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Quote {
    pub text: String,
    pub speaker: Option<String>,
    pub speaker_role: Option<String>,
    /// BCP 47 language tag of the quote; defaults to the dialogue's language.
    pub language: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dialogue {
    pub id: EntityId,
    pub title: String,
    pub date: chrono::NaiveDate,
    pub country: Country,
    /// Audience groups: women | ethnic-minority | disabled | lgbtq | aged-65-plus | general | healthcare-professionals | ...
    #[serde(default)]
    pub audience_groups: Vec<String>,
    /// People reached.
    pub reach: Option<i64>,
    /// true for an internal (employee) dialogue, false for an external one.
    #[serde(default)]
    pub internal: bool,
    pub summary: Option<String>,
    #[serde(default)]
    pub quotes: Vec<Quote>,
    #[serde(default)]
    pub partners: Vec<EntityId>,
    /// Recommendations this dialogue informs.
    #[serde(default)]
    pub informs: Vec<EntityId>,
    pub programme: Option<EntityId>,
    /// BCP 47 language tag of the summary and quotes; `en` when absent.
    pub language: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Recommendation {
    pub id: EntityId,
    /// Position in the report's list (1–6 for the top-level recommendations).
    pub number: Option<i64>,
    pub title: String,
    pub text: String,
    /// The broader recommendation this one refines.
    pub broader: Option<EntityId>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CaseStudy {
    pub id: EntityId,
    pub title: String,
    pub country: Country,
    pub narrative: String,
    #[serde(default)]
    pub partners: Vec<EntityId>,
    #[serde(default)]
    pub implements: Vec<EntityId>,
    pub start_date: Option<chrono::NaiveDate>,
    pub source: Option<EntityId>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Activity {
    pub id: EntityId,
    pub title: String,
    pub description: Option<String>,
    /// training | learning-session | app-launch | petition | scholarship | workshop | advocacy | convening | event | other
    pub activity_type: String,
    pub date: chrono::NaiveDate,
    pub country: Option<Country>,
    pub reach: Option<i64>,
    /// Partners leading the activity (at least one).
    pub led_by: Vec<EntityId>,
    pub case_study: Option<EntityId>,
    pub programme: Option<EntityId>,
    #[serde(default)]
    pub implements: Vec<EntityId>,
    #[serde(default)]
    pub audience_groups: Vec<String>,
}

/// What an outcome measures: a case study or an activity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Measured {
    pub kind: MeasuredKind,
    pub id: EntityId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum MeasuredKind {
    CaseStudy,
    Activity,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub id: EntityId,
    pub description: String,
    pub metric: String,
    pub value: f64,
    pub unit: String,
    pub date: chrono::NaiveDate,
    pub baseline: Option<f64>,
    pub target: Option<f64>,
    pub measures: Measured,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EvidenceStatistic {
    pub id: EntityId,
    /// What was measured, e.g. "trust-damaging experience".
    pub measure: String,
    pub description: Option<String>,
    /// The audience group the figure describes, e.g. "ethnic-minority-and-disabled".
    pub group: String,
    /// Country code, or absent for a figure across all surveyed countries.
    pub country: Option<Country>,
    pub percentage: Option<f64>,
    pub sample_size: Option<i64>,
    pub year: i64,
    #[serde(default)]
    pub supports: Vec<EntityId>,
    pub source: Option<EntityId>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceDocument {
    pub id: EntityId,
    pub title: String,
    pub publisher: Option<String>,
    pub year: Option<i64>,
    pub url: Option<String>,
}

/// What a link connects: a case study or activity implementing a recommendation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Link {
    pub id: EntityId,
    pub subject: Measured,
    /// implements
    pub relation: String,
    pub recommendation: EntityId,
}

/// A retraction: the entity of `kind` with `id` is withdrawn.
#[derive(Debug, Clone, PartialEq)]
pub struct Retraction {
    pub kind: crate::Kind,
    pub id: EntityId,
    pub reason: Option<String>,
}

/// The `data` of a retraction event on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetractionData {
    pub id: EntityId,
    pub reason: Option<String>,
}

/// The typed `data` of an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    Partner(Partner),
    Person(Person),
    Programme(Programme),
    Dialogue(Dialogue),
    Recommendation(Recommendation),
    CaseStudy(CaseStudy),
    Activity(Activity),
    Outcome(Outcome),
    Evidence(EvidenceStatistic),
    Source(SourceDocument),
    Link(Link),
    Retraction(Retraction),
}

impl Payload {
    pub fn kind(&self) -> crate::Kind {
        use crate::Kind;
        match self {
            Payload::Partner(_) => Kind::Partner,
            Payload::Person(_) => Kind::Person,
            Payload::Programme(_) => Kind::Programme,
            Payload::Dialogue(_) => Kind::Dialogue,
            Payload::Recommendation(_) => Kind::Recommendation,
            Payload::CaseStudy(_) => Kind::CaseStudy,
            Payload::Activity(_) => Kind::Activity,
            Payload::Outcome(_) => Kind::Outcome,
            Payload::Evidence(_) => Kind::Evidence,
            Payload::Source(_) => Kind::Source,
            Payload::Link(_) => Kind::Link,
            Payload::Retraction(r) => r.kind,
        }
    }

    /// The entity id, which is also the event's subject and Kafka key.
    pub fn subject(&self) -> EntityId {
        match self {
            Payload::Partner(p) => p.id.clone(),
            Payload::Person(p) => p.id.clone(),
            Payload::Programme(p) => p.id.clone(),
            Payload::Dialogue(p) => p.id.clone(),
            Payload::Recommendation(p) => p.id.clone(),
            Payload::CaseStudy(p) => p.id.clone(),
            Payload::Activity(p) => p.id.clone(),
            Payload::Outcome(p) => p.id.clone(),
            Payload::Evidence(p) => p.id.clone(),
            Payload::Source(p) => p.id.clone(),
            Payload::Link(p) => p.id.clone(),
            Payload::Retraction(r) => r.id.clone(),
        }
    }

    /// The entity id, to change it ([`Payload::subject`]).
    pub fn subject_mut(&mut self) -> &mut EntityId {
        match self {
            Payload::Partner(p) => &mut p.id,
            Payload::Person(p) => &mut p.id,
            Payload::Programme(p) => &mut p.id,
            Payload::Dialogue(p) => &mut p.id,
            Payload::Recommendation(p) => &mut p.id,
            Payload::CaseStudy(p) => &mut p.id,
            Payload::Activity(p) => &mut p.id,
            Payload::Outcome(p) => &mut p.id,
            Payload::Evidence(p) => &mut p.id,
            Payload::Source(p) => &mut p.id,
            Payload::Link(p) => &mut p.id,
            Payload::Retraction(r) => &mut r.id,
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        let v = match self {
            Payload::Partner(p) => serde_json::to_value(p),
            Payload::Person(p) => serde_json::to_value(p),
            Payload::Programme(p) => serde_json::to_value(p),
            Payload::Dialogue(p) => serde_json::to_value(p),
            Payload::Recommendation(p) => serde_json::to_value(p),
            Payload::CaseStudy(p) => serde_json::to_value(p),
            Payload::Activity(p) => serde_json::to_value(p),
            Payload::Outcome(p) => serde_json::to_value(p),
            Payload::Evidence(p) => serde_json::to_value(p),
            Payload::Source(p) => serde_json::to_value(p),
            Payload::Link(p) => serde_json::to_value(p),
            Payload::Retraction(r) => {
                serde_json::to_value(RetractionData { id: r.id.clone(), reason: r.reason.clone() })
            }
        };
        strip_nulls(v.expect("payloads always serialize"))
    }

    pub fn from_json(kind: crate::Kind, data: serde_json::Value) -> serde_json::Result<Payload> {
        use crate::Kind;
        Ok(match kind {
            Kind::Partner => Payload::Partner(serde_json::from_value(data)?),
            Kind::Person => Payload::Person(serde_json::from_value(data)?),
            Kind::Programme => Payload::Programme(serde_json::from_value(data)?),
            Kind::Dialogue => Payload::Dialogue(serde_json::from_value(data)?),
            Kind::Recommendation => Payload::Recommendation(serde_json::from_value(data)?),
            Kind::CaseStudy => Payload::CaseStudy(serde_json::from_value(data)?),
            Kind::Activity => Payload::Activity(serde_json::from_value(data)?),
            Kind::Outcome => Payload::Outcome(serde_json::from_value(data)?),
            Kind::Evidence => Payload::Evidence(serde_json::from_value(data)?),
            Kind::Source => Payload::Source(serde_json::from_value(data)?),
            Kind::Link => Payload::Link(serde_json::from_value(data)?),
        })
    }
}

/// Optional fields are omitted rather than sent as `null`, so the schemas can stay strict.
fn strip_nulls(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(map) => serde_json::Value::Object(
            map.into_iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k, strip_nulls(v))).collect(),
        ),
        serde_json::Value::Array(items) => serde_json::Value::Array(items.into_iter().map(strip_nulls).collect()),
        other => other,
    }
}
