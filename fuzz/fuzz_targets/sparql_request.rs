//! Arbitrary requests to the SPARQL 1.1 Protocol endpoint of the real router, over the built-in
//! dataset in memory: GET query strings, POST query bodies, form bodies and other content types,
//! with every `Accept` the endpoint negotiates.
//!
//! Input: byte 0 picks the request shape, byte 1 the `Accept` header (and a bearer token), the
//! rest is the query text, query string or body (for shape 4, `content-type \0 body`).
//! Invariants: nothing panics; the status is 200 or one from the error table; a refusal carries a
//! JSON error whose code's status is the response's; a success has a negotiated content type.
#![no_main]

use axum::body::Body;
use axum::http::Request;
use coalition_fuzz::{table_codes, Caller, Fixture};
use libfuzzer_sys::fuzz_target;
use std::time::Duration;

thread_local! {
    // Built once; libFuzzer runs every input on this one thread.
    static FIXTURE: &'static Fixture = Box::leak(Box::new({
        let config = coalition_api::ApiConfig {
            sparql_timeout: Duration::from_millis(500),
            max_result_rows: 2_000,
            ..coalition_api::ApiConfig::default()
        };
        Fixture::new(config, false)
    }));
}

const ACCEPT: &[&str] = &[
    "",
    "application/sparql-results+json",
    "application/sparql-results+xml",
    "text/csv",
    "text/tab-separated-values",
    "text/turtle",
    "application/n-triples",
    "application/rdf+xml",
    "application/n-quads",
    "*/*;q=0.1, text/csv;q=0.9",
];

const RESULT_TYPES: &[&str] = &[
    "application/sparql-results+json",
    "application/sparql-results+xml",
    "text/csv; charset=utf-8",
    "text/tab-separated-values; charset=utf-8",
    "text/turtle",
    "application/n-triples",
    "application/rdf+xml",
    "application/n-quads",
];

fn percent_encode(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    for b in bytes {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(b) {
            s.push(*b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

fn request(shape: u8, rest: &[u8]) -> Option<Request<Body>> {
    let r = match shape % 5 {
        0 => Request::get(format!("/sparql?query={}", percent_encode(rest))).body(Body::empty()),
        // A raw query string: whatever forms a valid URI.
        1 => Request::get(format!("/sparql?{}", std::str::from_utf8(rest).ok()?)).body(Body::empty()),
        2 => {
            Request::post("/sparql").header("content-type", "application/sparql-query").body(Body::from(rest.to_vec()))
        }
        3 => Request::post("/sparql")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(rest.to_vec())),
        _ => {
            let mut parts = rest.splitn(2, |b| *b == 0);
            let content_type = parts.next().unwrap_or_default();
            Request::post("/sparql").header("content-type", content_type).body(Body::from(parts.next()?.to_vec()))
        }
    };
    r.ok()
}

fuzz_target!(|data: &[u8]| {
    let [shape, accept, rest @ ..] = data else { return };
    let f = FIXTURE.with(|f| *f);
    let Some(mut request) = request(*shape, rest) else { return };
    let headers = request.headers_mut();
    let accept_value = ACCEPT[*accept as usize % ACCEPT.len()];
    if !accept_value.is_empty() {
        headers.insert("accept", accept_value.parse().expect("header"));
    }
    if accept & 0x80 != 0 {
        let authorization = f.authorization(Caller::Reader).expect("reader token");
        headers.insert("authorization", authorization.parse().expect("header"));
    }
    let (status, content_type, body) = f.send(request);
    if status == 200 {
        assert!(RESULT_TYPES.contains(&content_type.as_str()), "200 with content type {content_type:?}");
        return;
    }
    let error: serde_json::Value = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("status {status}: body is not JSON ({e}): {}", String::from_utf8_lossy(&body)));
    let code = error["error"]["code"].as_str().unwrap_or_default();
    assert!(table_codes().contains(&code), "status {status} without a code from the table: {error}");
    let expected = coalition_fuzz::status_of(code);
    assert_eq!(Some(status), expected, "code {code} came with status {status}: {error}");
});
