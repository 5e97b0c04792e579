//! Mutation inputs and their conversion to event payloads. Shape checks are left to the event's
//! JSON Schema (one source of truth); this module only fills defaults and names references.

use crate::errors::ApiError;
use async_graphql::{Enum, InputObject, ID};
use chrono::NaiveDate;
use coalition_events::{
    Activity, CaseStudy, Dialogue, EntityId, Kind, Link, Measured, MeasuredKind, Outcome, Payload, Quote,
};

fn ids(v: Option<Vec<ID>>) -> Vec<EntityId> {
    v.unwrap_or_default().into_iter().map(|i| EntityId(i.0)).collect()
}

/// An id from the input, or a new one derived from the title.
fn id_or_new(id: Option<ID>, title: &str) -> EntityId {
    if let Some(id) = id {
        return EntityId(id.0);
    }
    let mut slug = String::new();
    for c in title.to_lowercase().chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
        if slug.len() >= 60 {
            break;
        }
    }
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    EntityId(format!("{}-{suffix}", slug.trim_end_matches('-')).trim_start_matches('-').to_owned())
}

#[derive(InputObject)]
pub struct ActivityInput {
    /// Optional: a new id is derived from the title when absent.
    pub id: Option<ID>,
    pub title: String,
    pub description: Option<String>,
    /// training | learning-session | app-launch | petition | scholarship | workshop | advocacy | convening | event | campaign | research | other
    pub activity_type: String,
    pub date: NaiveDate,
    pub country: Option<String>,
    pub reach: Option<i64>,
    /// Partners leading the activity; defaults to the submitting partner.
    pub led_by: Option<Vec<ID>>,
    pub case_study: Option<ID>,
    pub programme: Option<ID>,
    pub implements: Option<Vec<ID>>,
    pub audience_groups: Option<Vec<String>>,
}

impl ActivityInput {
    pub fn into_payload(self, partner: &ID) -> Result<Payload, ApiError> {
        let led_by = match self.led_by {
            Some(v) => ids(Some(v)),
            None => vec![EntityId(partner.0.clone())],
        };
        Ok(Payload::Activity(Activity {
            id: id_or_new(self.id, &self.title),
            title: self.title,
            description: self.description,
            activity_type: self.activity_type,
            date: self.date,
            country: self.country,
            reach: self.reach,
            led_by,
            case_study: self.case_study.map(|c| EntityId(c.0)),
            programme: self.programme.map(|p| EntityId(p.0)),
            implements: ids(self.implements),
            audience_groups: self.audience_groups.unwrap_or_default(),
        }))
    }
}

#[derive(InputObject)]
pub struct QuoteInput {
    pub text: String,
    pub speaker: Option<String>,
    pub speaker_role: Option<String>,
    /// BCP 47 language tag; defaults to the dialogue's.
    pub language: Option<String>,
}

#[derive(InputObject)]
pub struct DialogueInput {
    pub id: Option<ID>,
    pub title: String,
    pub date: NaiveDate,
    /// ISO 3166-1 alpha-2 code.
    pub country: String,
    pub audience_groups: Option<Vec<String>>,
    pub reach: Option<i64>,
    #[graphql(default)]
    pub internal: bool,
    pub summary: Option<String>,
    pub quotes: Option<Vec<QuoteInput>>,
    /// Organising partners; defaults to the submitting partner.
    pub partners: Option<Vec<ID>>,
    /// Recommendations the dialogue informs.
    pub informs: Option<Vec<ID>>,
    pub programme: Option<ID>,
    /// BCP 47 language tag of summary and quotes (default `en`).
    pub language: Option<String>,
}

impl DialogueInput {
    pub fn into_payload(self, partner: &ID) -> Result<Payload, ApiError> {
        let partners = match self.partners {
            Some(v) => ids(Some(v)),
            None => vec![EntityId(partner.0.clone())],
        };
        Ok(Payload::Dialogue(Dialogue {
            id: id_or_new(self.id, &self.title),
            title: self.title,
            date: self.date,
            country: self.country,
            audience_groups: self.audience_groups.unwrap_or_default(),
            reach: self.reach,
            internal: self.internal,
            summary: self.summary,
            quotes: self
                .quotes
                .unwrap_or_default()
                .into_iter()
                .map(|q| Quote { text: q.text, speaker: q.speaker, speaker_role: q.speaker_role, language: q.language })
                .collect(),
            partners,
            informs: ids(self.informs),
            programme: self.programme.map(|p| EntityId(p.0)),
            language: self.language,
        }))
    }
}

/// What an outcome measures or a link connects.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum SubjectKind {
    CaseStudy,
    Activity,
}

impl From<SubjectKind> for MeasuredKind {
    fn from(k: SubjectKind) -> Self {
        match k {
            SubjectKind::CaseStudy => MeasuredKind::CaseStudy,
            SubjectKind::Activity => MeasuredKind::Activity,
        }
    }
}

#[derive(InputObject)]
pub struct OutcomeInput {
    pub id: Option<ID>,
    pub description: String,
    pub metric: String,
    pub value: f64,
    pub unit: String,
    pub date: NaiveDate,
    pub baseline: Option<f64>,
    pub target: Option<f64>,
    pub measures_kind: SubjectKind,
    pub measures_id: ID,
}

impl OutcomeInput {
    pub fn into_payload(self, _partner: &ID) -> Result<Payload, ApiError> {
        Ok(Payload::Outcome(Outcome {
            id: id_or_new(self.id, &self.metric),
            description: self.description,
            metric: self.metric,
            value: self.value,
            unit: self.unit,
            date: self.date,
            baseline: self.baseline,
            target: self.target,
            measures: Measured { kind: self.measures_kind.into(), id: EntityId(self.measures_id.0) },
        }))
    }
}

#[derive(InputObject)]
pub struct CaseStudyInput {
    pub id: Option<ID>,
    pub title: String,
    pub country: String,
    pub narrative: String,
    /// Leading partners; defaults to the submitting partner.
    pub partners: Option<Vec<ID>>,
    pub implements: Option<Vec<ID>>,
    pub start_date: Option<NaiveDate>,
}

impl CaseStudyInput {
    pub fn into_payload(self, partner: &ID) -> Result<Payload, ApiError> {
        let partners = match self.partners {
            Some(v) => ids(Some(v)),
            None => vec![EntityId(partner.0.clone())],
        };
        Ok(Payload::CaseStudy(CaseStudy {
            id: id_or_new(self.id, &self.title),
            title: self.title,
            country: self.country,
            narrative: self.narrative,
            partners,
            implements: ids(self.implements),
            start_date: self.start_date,
            source: None,
        }))
    }
}

#[derive(InputObject)]
pub struct LinkInput {
    pub subject_kind: SubjectKind,
    pub subject_id: ID,
    pub recommendation_id: ID,
}

impl LinkInput {
    pub fn into_payload(self, _partner: &ID) -> Result<Payload, ApiError> {
        let kind = match self.subject_kind {
            SubjectKind::CaseStudy => "case-study",
            SubjectKind::Activity => "activity",
        };
        let id = format!("{kind}-{}-implements-{}", self.subject_id.0, self.recommendation_id.0);
        let id: String = id.chars().take(128).collect();
        Ok(Payload::Link(Link {
            id: EntityId(id),
            subject: Measured { kind: self.subject_kind.into(), id: EntityId(self.subject_id.0) },
            relation: "implements".to_owned(),
            recommendation: EntityId(self.recommendation_id.0),
        }))
    }
}

/// Entities a payload references, as (input field, kind, id), for existence checks.
pub fn references(payload: &Payload) -> Vec<(String, Kind, String)> {
    let mut out = Vec::new();
    let mut many = |field: &str, kind: Kind, v: &[EntityId]| {
        for (i, id) in v.iter().enumerate() {
            out.push((format!("input.{field}.{i}"), kind, id.0.clone()));
        }
    };
    let measured = |m: &Measured| match m.kind {
        MeasuredKind::CaseStudy => (Kind::CaseStudy, m.id.0.clone()),
        MeasuredKind::Activity => (Kind::Activity, m.id.0.clone()),
    };
    match payload {
        Payload::Activity(a) => {
            many("ledBy", Kind::Partner, &a.led_by);
            many("implements", Kind::Recommendation, &a.implements);
            many("caseStudy", Kind::CaseStudy, a.case_study.as_slice());
            many("programme", Kind::Programme, a.programme.as_slice());
        }
        Payload::Dialogue(d) => {
            many("partners", Kind::Partner, &d.partners);
            many("informs", Kind::Recommendation, &d.informs);
            many("programme", Kind::Programme, d.programme.as_slice());
        }
        Payload::CaseStudy(c) => {
            many("partners", Kind::Partner, &c.partners);
            many("implements", Kind::Recommendation, &c.implements);
        }
        Payload::Outcome(o) => {
            let (kind, id) = measured(&o.measures);
            out.push(("input.measuresId".to_owned(), kind, id));
        }
        Payload::Link(l) => {
            let (kind, id) = measured(&l.subject);
            out.push(("input.subjectId".to_owned(), kind, id));
            out.push(("input.recommendationId".to_owned(), Kind::Recommendation, l.recommendation.0.clone()));
        }
        _ => {}
    }
    out
}
