use super::*;

const SEED: &str = include_str!("../../server/seed/coalition-seed.jsonl");

#[test]
fn every_seed_event_decodes() {
    let mut kinds = std::collections::BTreeSet::new();
    for (i, line) in SEED.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let event = decode(line.as_bytes()).unwrap_or_else(|e| panic!("seed line {}: {e}", i + 1));
        assert_eq!(event.subject, event.payload.subject());
        kinds.insert(event.kind);
    }
    for kind in Kind::ALL {
        assert!(kinds.contains(&kind), "seed has no {} event", kind.slug());
    }
}

fn first_activity() -> serde_json::Value {
    let line = SEED.lines().find(|l| l.contains("org.coalition.activity.submitted.v1")).expect("an activity");
    serde_json::from_str(line).unwrap()
}

fn code_of(value: &serde_json::Value) -> &'static str {
    decode(value.to_string().as_bytes()).expect_err("must be rejected").code()
}

#[test]
fn each_rejection_has_its_reason_code() {
    assert_eq!(decode(b"not json").unwrap_err().code(), "not_json");
    assert_eq!(decode(b"{\"id\": 1}").unwrap_err().code(), "not_cloudevent");
    let mut v = first_activity();
    v["specversion"] = "0.3".into();
    assert_eq!(code_of(&v), "not_cloudevent");
    let mut v = first_activity();
    v["type"] = "org.coalition.spaceship.submitted.v1".into();
    assert_eq!(code_of(&v), "unknown_type");
    let mut v = first_activity();
    v["subject"] = "some-other-id".into();
    assert_eq!(code_of(&v), "subject_mismatch");
}

#[test]
fn schema_violations_name_each_offending_field() {
    let mut v = first_activity();
    v["data"]["reach"] = (-1).into();
    v["data"]["date"] = "2024-13-45".into();
    v["data"]["unexpected"] = true.into();
    let err = decode(v.to_string().as_bytes()).unwrap_err();
    assert_eq!(err.code(), "schema_violation");
    let EventError::Schema { errors, .. } = &err else { panic!("{err}") };
    let pointers: Vec<&str> = errors.iter().map(|e| e.pointer.as_str()).collect();
    assert!(pointers.contains(&"/data/reach"), "{pointers:?}");
    assert!(pointers.contains(&"/data/date"), "{pointers:?}");
    assert!(pointers.contains(&"/data"), "additional property reported on data: {pointers:?}");
    assert!(err.to_string().contains("/data/reach"));
}

#[test]
fn events_round_trip_through_their_wire_form() {
    for line in SEED.lines().filter(|l| !l.trim().is_empty()) {
        let event = decode(line.as_bytes()).unwrap();
        assert_eq!(decode(&event.to_bytes()).unwrap(), event);
    }
}

#[test]
fn every_kind_has_a_topic_type_and_schema() {
    let topics: std::collections::BTreeSet<_> = Kind::ALL.iter().map(|k| k.topic()).collect();
    assert_eq!(topics.len(), Kind::ALL.len(), "one topic per kind");
    for kind in Kind::ALL {
        assert_eq!(Kind::from_event_type(kind.event_type()), Some(kind));
        assert_eq!(Kind::from_slug(kind.slug()), Some(kind));
        assert_eq!(schema_for(kind)["properties"]["type"]["const"], kind.event_type());
    }
}

#[test]
fn outcome_v2_is_upcast_to_v1() {
    let line = SEED.lines().find(|l| l.contains("org.coalition.outcome.submitted.v1")).unwrap();
    let v1: serde_json::Value = serde_json::from_str(line).unwrap();
    let mut v2 = v1.clone();
    v2["type"] = "org.coalition.outcome.submitted.v2".into();
    let data = v2["data"].as_object_mut().unwrap();
    let value = data.remove("value").unwrap();
    let unit = data.remove("unit").unwrap();
    data.insert("quantity".into(), serde_json::json!({ "value": value, "unit": unit }));
    let from_v2 = decode(v2.to_string().as_bytes()).expect("v2 accepted");
    let from_v1 = decode(v1.to_string().as_bytes()).unwrap();
    assert_eq!(from_v2, from_v1);
    // v2 has its own schema: the v1 shape under the v2 type is rejected.
    let mut wrong = v1.clone();
    wrong["type"] = "org.coalition.outcome.submitted.v2".into();
    let err = decode(wrong.to_string().as_bytes()).unwrap_err();
    assert_eq!(err.code(), "schema_violation");
    assert!(err.to_string().contains("quantity"), "{err}");
}

#[test]
fn unknown_versions_are_named_as_such() {
    let mut v = first_activity();
    v["type"] = "org.coalition.activity.submitted.v9".into();
    let err = decode(v.to_string().as_bytes()).unwrap_err();
    assert_eq!(err.code(), "unsupported_version");
    assert!(err.to_string().contains("v9"));
}

#[test]
fn retractions_decode_and_round_trip() {
    let e =
        Event::retraction(PartnerId("nachw".into()), "/t", Kind::Activity, EntityId("x-1".into()), Some("dup".into()));
    let back = decode(&e.to_bytes()).unwrap();
    assert_eq!(back.action(), Action::Retract);
    assert_eq!(back, e);
    let mut bad = serde_json::to_value(e.envelope()).unwrap();
    bad["data"]["extra"] = true.into();
    assert_eq!(code_of(&bad), "schema_violation");
}

#[test]
fn a_copy_as_another_entity_is_a_valid_event_of_that_entity() {
    for (i, line) in SEED.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let event = decode(line.as_bytes()).unwrap();
        let copy = event.copy_as(EntityId(format!("copy-{i}")), EventId(format!("copy-event-{i}")));
        assert_eq!(
            (copy.subject.0.as_str(), copy.id.0.as_str()),
            (format!("copy-{i}").as_str(), format!("copy-event-{i}").as_str())
        );
        assert_eq!(copy.payload.subject(), copy.subject);
        assert_eq!((copy.kind, &copy.partner, copy.time), (event.kind, &event.partner, event.time));
        // What it sends decodes as it is: the envelope's subject and the payload's id agree.
        assert_eq!(decode(&copy.to_bytes()).expect("the copy decodes").subject, copy.subject);
    }
}
