//! Schema evolution: older or newer versions of an event type are validated against their own
//! schema, then rewritten ("upcast") to the version the mapping understands. Adding a version
//! means adding its schema under `schema/events/vN/` and one arm here.

use crate::schemas::Violation;
use serde_json::Value;
use std::sync::OnceLock;

const OUTCOME_V2_TYPE: &str = "org.coalition.outcome.submitted.v2";
const OUTCOME_V2_SCHEMA: &str = include_str!("../../../schema/events/v2/outcome.schema.json");

fn outcome_v2() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| {
        let schema: Value = serde_json::from_str(OUTCOME_V2_SCHEMA).expect("outcome v2 schema is JSON");
        jsonschema::validator_for(&schema).expect("outcome v2 schema compiles")
    })
}

/// If `event` has an upcastable type, validates it against that version's schema and rewrites it
/// in place to the current version. Returns `Ok(true)` when it upcast something.
pub(crate) fn upcast(event: &mut Value) -> Result<bool, Vec<Violation>> {
    let ty = event.get("type").and_then(Value::as_str).unwrap_or_default();
    if ty != OUTCOME_V2_TYPE {
        return Ok(false);
    }
    let errors = crate::schemas::violations(outcome_v2(), event);
    if !errors.is_empty() {
        return Err(errors);
    }
    event["type"] = Value::from(crate::Kind::Outcome.event_type());
    let data = event["data"].as_object_mut().expect("validated: data is an object");
    if let Some(Value::Object(quantity)) = data.remove("quantity") {
        for (k, v) in quantity {
            data.insert(k, v);
        }
    }
    Ok(true)
}

/// True for `org.coalition.<known kind>.<action>.vN` with a version nobody can read.
pub(crate) fn is_unsupported_version(ty: &str) -> bool {
    let Some(rest) = ty.strip_prefix("org.coalition.") else { return false };
    let Some((head, version)) = rest.rsplit_once('.') else { return false };
    let Some((slug, _action)) = head.split_once('.') else { return false };
    version.starts_with('v') && crate::Kind::from_slug(slug).is_some()
}
