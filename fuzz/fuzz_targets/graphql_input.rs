//! Arbitrary bytes as a GraphQL request to the real schema: parsing, authorisation of the whole
//! operation, argument and input coercion (mutation inputs, list filters, ids, positions), input
//! validation and, for what passes every check, the produce to an in-process broker.
//!
//! Input: byte 0 picks the caller (anonymous, reader, partner, policy, admin); byte 1 bit 0 sends
//! the rest as the raw body, otherwise the rest is `query \0 variables-json \0 operationName`.
//! Invariants: nothing panics; every status and every `extensions.code` comes from the error
//! table; an anonymous caller or a reader never gets an event produced.
#![no_main]

use axum::body::Body;
use axum::http::Request;
use coalition_fuzz::{table_codes, table_statuses, Caller, Fixture};
use libfuzzer_sys::fuzz_target;

thread_local! {
    // Built once; libFuzzer runs every input on this one thread.
    static FIXTURE: &'static Fixture = Box::leak(Box::new({
        let config = coalition_api::ApiConfig { rate_limit: None, ..coalition_api::ApiConfig::default() };
        Fixture::new(config, true)
    }));
}

fn body(rest: &[u8], raw: bool) -> Vec<u8> {
    if raw {
        return rest.to_vec();
    }
    let mut parts = rest.splitn(3, |b| *b == 0);
    let query = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let mut request = serde_json::json!({ "query": query });
    if let Some(variables) = parts.next().and_then(|v| serde_json::from_slice::<serde_json::Value>(v).ok()) {
        request["variables"] = variables;
    }
    if let Some(name) = parts.next() {
        request["operationName"] = String::from_utf8_lossy(name).into_owned().into();
    }
    request.to_string().into_bytes()
}

fuzz_target!(|data: &[u8]| {
    let [who, mode, rest @ ..] = data else { return };
    let f = FIXTURE.with(|f| *f);
    let caller = Caller::from_byte(*who);
    let mut request = Request::post("/graphql").header("content-type", "application/json");
    if let Some(authorization) = f.authorization(caller) {
        request = request.header("authorization", authorization);
    }
    let produced_before = f.produced();
    let (status, _, bytes) = f.send(request.body(Body::from(body(rest, mode & 1 == 1))).expect("request"));
    assert!(table_statuses().contains(&status), "status {status} is not in the error table");
    let response: serde_json::Value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("status {status}: body is not JSON ({e}): {}", String::from_utf8_lossy(&bytes)));
    if status != 200 {
        // A request refused as a whole carries its error's status.
        let code = response["errors"][0]["extensions"]["code"].as_str().unwrap_or_default();
        assert_eq!(coalition_fuzz::status_of(code), Some(status), "status {status} with {response}");
    }
    for error in response["errors"].as_array().into_iter().flatten() {
        let code = error["extensions"]["code"].as_str().unwrap_or_default();
        assert!(table_codes().contains(&code), "error without a code from the table: {error}");
    }
    if !caller.may_write() {
        assert_eq!(f.produced(), produced_before, "{caller:?} got an event produced: {response}");
    }
});
