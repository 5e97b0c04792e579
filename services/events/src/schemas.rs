//! The JSON Schemas of `schema/events/v1`, compiled once and embedded in the binary so that a
//! deployed materializer validates exactly what the repository documents.

use crate::Kind;
use std::sync::OnceLock;

macro_rules! schema_files {
    ($($slug:literal),* $(,)?) => {
        const SCHEMAS: &[(&str, &str)] = &[
            $(($slug, include_str!(concat!("../../../schema/events/v1/", $slug, ".schema.json")))),*
        ];
    };
}

schema_files!(
    "partner",
    "person",
    "programme",
    "dialogue",
    "recommendation",
    "case-study",
    "activity",
    "outcome",
    "evidence",
    "source",
    "link",
);

#[derive(Debug, thiserror::Error)]
#[error("event schema {name} is invalid: {message}")]
pub struct SchemaError {
    pub name: String,
    pub message: String,
}

const RETRACTION_SCHEMA: &str = include_str!("../../../schema/events/v1/retraction.schema.json");

/// Names (kind slugs) of the embedded schemas.
pub fn schema_names() -> impl Iterator<Item = &'static str> {
    SCHEMAS.iter().map(|(name, _)| *name)
}

/// The raw JSON Schema of a kind's event type.
pub fn schema_for(kind: Kind) -> serde_json::Value {
    let text =
        SCHEMAS.iter().find(|(name, _)| *name == kind.slug()).map(|(_, text)| *text).expect("every kind has a schema");
    serde_json::from_str(text).expect("embedded schemas are JSON (checked by tests)")
}

fn validators() -> &'static Vec<(Kind, jsonschema::Validator)> {
    static VALIDATORS: OnceLock<Vec<(Kind, jsonschema::Validator)>> = OnceLock::new();
    VALIDATORS.get_or_init(|| {
        Kind::ALL
            .into_iter()
            .map(|kind| {
                let validator = jsonschema::validator_for(&schema_for(kind))
                    .unwrap_or_else(|e| panic!("schema for {} does not compile: {e}", kind.slug()));
                (kind, validator)
            })
            .collect()
    })
}

fn retraction_validator() -> &'static jsonschema::Validator {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        let schema: serde_json::Value = serde_json::from_str(RETRACTION_SCHEMA).expect("retraction schema is JSON");
        jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("retraction schema does not compile: {e}"))
    })
}

/// Validates a retraction event.
pub(crate) fn validate_retraction(event: &serde_json::Value) -> Vec<Violation> {
    violations(retraction_validator(), event)
}

/// One schema violation: the JSON pointer of the offending field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub pointer: String,
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "field \"{}\": {}", self.pointer, self.message)
    }
}

/// Validates a whole structured-mode event against its type's schema; returns one violation per
/// problem, each naming the JSON pointer of the offending field.
pub(crate) fn validate(kind: Kind, event: &serde_json::Value) -> Vec<Violation> {
    let (_, validator) = validators().iter().find(|(k, _)| *k == kind).expect("every kind has a validator");
    violations(validator, event)
}

pub(crate) fn violations(validator: &jsonschema::Validator, event: &serde_json::Value) -> Vec<Violation> {
    // Nearly every event is valid: answering that alone is cheaper than collecting no errors.
    if validator.is_valid(event) {
        return Vec::new();
    }
    validator
        .iter_errors(event)
        .map(|e| {
            let path = e.instance_path().to_string();
            let pointer = if path.is_empty() { "/".to_owned() } else { path };
            Violation { pointer, message: e.to_string() }
        })
        .collect()
}
