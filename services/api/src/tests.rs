#[test]
fn committed_sdl_matches_the_schema() {
    let committed = include_str!("../../../schema/graphql/schema.graphql");
    assert_eq!(
        committed,
        crate::graphql::sdl(),
        "schema/graphql/schema.graphql is stale: regenerate it with `coalition schema > schema/graphql/schema.graphql`"
    );
}

#[test]
fn error_codes_come_from_one_table() {
    use crate::errors::ErrorKind;
    assert_eq!(ErrorKind::BadUserInput.codes().1.as_u16(), 400);
    assert_eq!(ErrorKind::Unauthenticated.codes(), ("UNAUTHENTICATED", axum::http::StatusCode::UNAUTHORIZED));
    assert_eq!(ErrorKind::Forbidden.codes(), ("FORBIDDEN", axum::http::StatusCode::FORBIDDEN));
    assert_eq!(ErrorKind::ReadOnly.codes().1.as_u16(), 403);
}

#[test]
fn sparql_literals_are_escaped() {
    assert_eq!(crate::read::sparql_string("a\"b\\c\nd"), "\"a\\\"b\\\\c\\nd\"");
    assert!(crate::read::check_id("id", "x> } ; DROP ALL").is_err());
    assert!(crate::read::check_id("id", "rec-1-education").is_ok());
}

#[test]
fn graphql_requests_are_authorised_before_validation() {
    use crate::auth::{Principal, Role, TokenId};
    use crate::errors::ErrorKind;
    let token = |role| Principal::Token {
        id: TokenId("t1".into()),
        role,
        partner: (role == Role::Partner).then(|| "nachw".into()),
    };
    let check = |p: &Principal, public: bool, query: &str, op: Option<&str>| {
        let mut r = async_graphql::Request::new(query);
        if let Some(op) = op {
            r = r.operation_name(op);
        }
        crate::graphql::authorize_request(p, public, &mut r).err().map(|e| e.kind)
    };
    let submit = r#"mutation { submitActivity(partnerId: "nachw", input: { reach: -3 }) { eventId } }"#;
    let link = r#"mutation { linkToRecommendation(partnerId: "nachw", input: {}) { eventId } }"#;
    assert_eq!(check(&Principal::Anonymous, true, submit, None), Some(ErrorKind::Unauthenticated));
    assert_eq!(check(&token(Role::Reader), true, submit, None), Some(ErrorKind::Forbidden));
    assert_eq!(check(&token(Role::Policy), true, submit, None), Some(ErrorKind::Forbidden));
    assert_eq!(check(&token(Role::Partner), true, submit, None), None);
    assert_eq!(check(&token(Role::Admin), true, submit, None), None);
    assert_eq!(check(&token(Role::Partner), true, link, None), Some(ErrorKind::Forbidden));
    assert_eq!(check(&token(Role::Policy), true, link, None), None);
    // Mutations hidden in fragments, aliases and named operations are found.
    let hidden = r#"query Q { __typename } mutation M { ...F } fragment F on MutationRoot { x: linkToRecommendation(partnerId: "a", input: {}) { eventId } }"#;
    assert_eq!(check(&token(Role::Partner), true, hidden, Some("M")), Some(ErrorKind::Forbidden));
    assert_eq!(check(&token(Role::Partner), true, hidden, Some("Q")), None);
    let inline = r#"mutation { ... on MutationRoot { submitOutcome(partnerId: "a", input: {}) { eventId } } }"#;
    assert_eq!(check(&Principal::Anonymous, true, inline, None), Some(ErrorKind::Unauthenticated));
    // A mutation without its own rule is still closed to readers.
    let future = r#"mutation { someFutureMutation(id: "x") { eventId } }"#;
    assert_eq!(check(&token(Role::Reader), true, future, None), Some(ErrorKind::Forbidden));
    assert_eq!(check(&token(Role::Partner), true, future, None), None);
    // Reads: open by default, closed to anonymous callers on request.
    let read = "{ recommendations { totalCount } }";
    assert_eq!(check(&Principal::Anonymous, true, read, None), None);
    assert_eq!(check(&Principal::Anonymous, false, read, None), Some(ErrorKind::Unauthenticated));
    assert_eq!(check(&token(Role::Reader), false, read, None), None);
    assert_eq!(check(&Principal::Anonymous, false, "not graphql {", None), Some(ErrorKind::Unauthenticated));
    assert_eq!(check(&Principal::Anonymous, true, "not graphql {", None), None);
    // Which answers the response cache may keep: queries of the data only, and what they read.
    let kept = |query: &str| {
        crate::graphql::authorize_request(&token(Role::Admin), true, &mut async_graphql::Request::new(query)).unwrap()
    };
    let reads = |query: &str| kept(query).map(|k| k.reads);
    let keepable = |query: &str| kept(query).is_some();
    let as_of = |query: &str| kept(query).map(|k| k.as_of);
    use crate::response_cache::Reads;
    assert_eq!(reads(read), Some(Reads::Graph));
    assert_eq!(reads("{ search(query: \"trust\") { totalCount } }"), Some(Reads::GraphAndIndex));
    let hidden = "query { recommendations { totalCount } ...F } fragment F on QueryRoot { s: search(query: \"x\") { totalCount } }";
    assert_eq!(reads(hidden), Some(Reads::GraphAndIndex), "found through fragments and aliases");
    assert!(keepable(read));
    assert!(keepable("query Q { ...F } fragment F on QueryRoot { recommendations { totalCount } }"));
    assert!(!keepable("{ recommendations { totalCount } freshness { caughtUp } }"));
    assert!(!keepable("query { ... on QueryRoot { rebuildStatus { state } } }"));
    // A live field hidden deeper than the walk goes is not missed: such a query is not kept.
    let deep = format!("{{ {}freshness {{ caughtUp }}{} }}", "... on QueryRoot { ".repeat(9), " }".repeat(9));
    assert!(!keepable(&deep));
    let shallow =
        format!("{{ {}recommendations {{ totalCount }}{} }}", "... on QueryRoot { ".repeat(8), " }".repeat(8));
    assert!(keepable(&shallow));
    assert!(!keepable(submit));
    assert!(!keepable("not graphql {"));
    // A query asking as of a log position says so, however it is written; naming `asOf`
    // elsewhere (a string, an alias) does not.
    assert_eq!(as_of(read), Some(false));
    assert_eq!(as_of("{ node(id: \"activity/a\", asOf: \"t@0:1\") { id } }"), Some(true));
    assert_eq!(
        as_of("query Q($p: String) { ...F } fragment F on QueryRoot { n: node(id: \"x\", asOf: $p) { id } }"),
        Some(true)
    );
    assert_eq!(as_of("{ asOf: recommendations { totalCount } search(query: \"asOf\") { totalCount } }"), Some(false));
}

/// The router as clients see it, without a socket or a broker: refusals happen before anything
/// would be produced, so the producer points at nothing.
mod http {
    use crate::auth::{Role, TokenStore};
    use crate::{app, ApiConfig, ApiMetrics, AppContext, AppState};
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use serde_json::{json, Value};
    use std::sync::Arc;
    use tower::ServiceExt;

    struct Fixture {
        _dir: tempfile::TempDir,
        router: axum::Router,
        tokens: Arc<TokenStore>,
        store: coalition_store::GraphStore,
        index: Arc<coalition_search::SearchIndex>,
    }

    fn fixture(config: ApiConfig) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let registry = prometheus::Registry::new();
        let tokens = Arc::new(TokenStore::open(dir.path()).unwrap());
        let store = coalition_store::GraphStore::open(&dir.path().join("graph")).unwrap();
        let index = Arc::new(coalition_search::SearchIndex::in_memory().unwrap());
        let state = AppState::new(AppContext {
            store: store.clone(),
            index: index.clone(),
            producer: coalition_ingest::EventProducer::new(&coalition_ingest::KafkaConfig::new("127.0.0.1:9"), None)
                .unwrap(),
            watermark: tokio::sync::watch::channel(coalition_ingest::Watermark::default()).1,
            metrics: ApiMetrics::register(&registry).unwrap(),
            registry,
            config,
            tokens: tokens.clone(),
            operations: None,
        });
        Fixture { _dir: dir, router: app(state), tokens, store, index }
    }

    async fn graphql(f: &Fixture, token: Option<&str>, query: &str) -> (StatusCode, Option<String>, Value) {
        let mut r = Request::post("/graphql").header("content-type", "application/json");
        if let Some(t) = token {
            r = r.header("authorization", format!("Bearer {t}"));
        }
        let response =
            f.router.clone().oneshot(r.body(Body::from(json!({ "query": query }).to_string())).unwrap()).await.unwrap();
        let status = response.status();
        let challenge = response.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned());
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, challenge, serde_json::from_slice(&body).unwrap())
    }

    fn code(v: &Value) -> &str {
        v["errors"][0]["extensions"]["code"].as_str().unwrap_or("")
    }

    const SUBMIT_AS_NACHW: &str = r#"mutation { submitActivity(partnerId: "nachw", input: {
        title: "t", activityType: "training", date: "2025-01-01", reach: -3 }) { eventId } }"#;

    #[tokio::test]
    async fn refusals_carry_their_code_and_status() {
        let f = fixture(ApiConfig::default());
        let (_, partner) = f.tokens.create(Role::Partner, Some("nachw".into()), None, None).unwrap();
        let (_, other) = f.tokens.create(Role::Partner, Some("sanofi".into()), None, None).unwrap();
        let (_, reader) = f.tokens.create(Role::Reader, None, None, None).unwrap();
        let (revoked_record, revoked) = f.tokens.create(Role::Admin, None, None, None).unwrap();
        f.tokens.revoke(&revoked_record.id.0).unwrap();

        let (status, challenge, v) = graphql(&f, None, SUBMIT_AS_NACHW).await;
        assert_eq!((status, code(&v)), (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"), "{v}");
        assert_eq!(challenge.as_deref(), Some("Bearer realm=\"coalition\""));
        let (status, _, v) = graphql(&f, Some(reader.expose()), SUBMIT_AS_NACHW).await;
        assert_eq!((status, code(&v)), (StatusCode::FORBIDDEN, "FORBIDDEN"), "{v}");
        // The wrong partner is refused in the resolver, before the (invalid) input is looked at.
        let (status, _, v) = graphql(&f, Some(other.expose()), SUBMIT_AS_NACHW).await;
        assert_eq!((status, code(&v)), (StatusCode::OK, "FORBIDDEN"), "{v}");
        assert!(v["errors"][0]["extensions"].get("fieldErrors").is_none(), "{v}");
        // The right partner gets to validation.
        let (_, _, v) = graphql(&f, Some(partner.expose()), SUBMIT_AS_NACHW).await;
        assert_eq!(code(&v), "BAD_USER_INPUT", "{v}");
        assert_eq!(v["errors"][0]["extensions"]["fieldErrors"][0]["field"], "input.reach", "{v}");
        let (status, _, v) = graphql(&f, Some(revoked.expose()), "{ freshness { caughtUp } }").await;
        assert_eq!((status, code(&v)), (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"), "{v}");
        assert!(v["errors"][0]["message"].as_str().unwrap().contains("revoked"), "{v}");

        let response = f
            .router
            .clone()
            .oneshot(
                Request::get("/sparql?query=ASK%7B%7D")
                    .header("authorization", "Basic dTpw")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let response = f.router.clone().oneshot(Request::get("/healthz").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }

    async fn send(f: &Fixture, request: Request<Body>) -> (StatusCode, Value) {
        let response = f.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        let v = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {}", String::from_utf8_lossy(&body)));
        (status, v)
    }

    fn post_graphql(body: impl Into<Body>) -> Request<Body> {
        Request::post("/graphql").header("content-type", "application/json").body(body.into()).unwrap()
    }

    /// Whatever is wrong with a GraphQL request, the answer is JSON with a code from the table.
    #[tokio::test]
    async fn every_graphql_error_has_a_code() {
        let f = fixture(ApiConfig::default());
        let (status, v) = send(&f, post_graphql("{\"query\": 1")).await;
        assert_eq!((status, code(&v)), (StatusCode::BAD_REQUEST, "BAD_USER_INPUT"), "{v}");
        let (status, v) = send(&f, post_graphql(r#"[{"query": "{ __typename }"}]"#)).await;
        assert_eq!((status, code(&v)), (StatusCode::BAD_REQUEST, "BAD_USER_INPUT"), "{v}");
        for (query, expected) in [
            ("{ recommendations(", "BAD_USER_INPUT"),
            ("{ noSuchField }", "BAD_USER_INPUT"),
            ("{ recommendations(first: \"ten\") { totalCount } }", "BAD_USER_INPUT"),
            (
                &format!("{{ partners {{ items {{ {}id{} }} }} }}", "activities { ledBy { ".repeat(6), " }".repeat(12)),
                "LIMIT_EXCEEDED",
            ),
        ] {
            let (status, _, v) = graphql(&f, None, query).await;
            assert_eq!((status, code(&v)), (StatusCode::OK, expected), "{query}: {v}");
        }
        let (status, v) = send(
            &f,
            post_graphql(
                r#"{"query": "query($n: Int!) { activities(first: $n) { totalCount } }", "variables": {"n": "x"}}"#,
            ),
        )
        .await;
        assert_eq!((status, code(&v)), (StatusCode::OK, "BAD_USER_INPUT"), "{v}");
    }

    /// A deeply nested GraphQL request is refused before it is parsed (not answered with a parse
    /// error that quotes it whole), and a body over the limit without being read whole.
    #[tokio::test]
    async fn deep_and_large_graphql_requests_are_refused() {
        let f = fixture(ApiConfig { max_body_bytes: 1 << 20, ..ApiConfig::default() });
        let deep = format!("{}{}", "{a".repeat(200_000), "}".repeat(200_000));
        let (status, v) = send(&f, post_graphql(json!({ "query": deep }).to_string())).await;
        assert_eq!((status, code(&v)), (StatusCode::PAYLOAD_TOO_LARGE, "LIMIT_EXCEEDED"), "{v:.300}");
        let large = json!({ "query": "{ __typename }", "x": "a".repeat(2 << 20) }).to_string();
        let (status, v) = send(&f, post_graphql(large)).await;
        assert_eq!((status, code(&v)), (StatusCode::PAYLOAD_TOO_LARGE, "LIMIT_EXCEEDED"), "{v:.300}");
    }

    /// The SPARQL parser recurses once per nested bracket with no limit of its own: a query nested
    /// deep enough would overflow the stack and abort the process, so it is refused first.
    #[tokio::test]
    async fn deep_sparql_queries_are_refused_before_parsing() {
        let f = fixture(ApiConfig::default());
        let nested = format!("ASK {{ FILTER({}1{}) }}", "(".repeat(30_000), ")".repeat(30_000));
        let request = Request::post("/sparql")
            .header("content-type", "application/sparql-query")
            .body(Body::from(nested))
            .unwrap();
        let (status, v) = send(&f, request).await;
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (StatusCode::PAYLOAD_TOO_LARGE, Some("LIMIT_EXCEEDED")),
            "{v:.300}"
        );
    }

    /// Chains of operators nest without brackets: 60 KB of `&&` once overflowed the worker's stack
    /// in the parser's tree and aborted the process. Every kind of chain at the size limit is now
    /// refused with the limit it passed, and the endpoint goes on answering.
    #[tokio::test]
    async fn long_chains_of_operators_are_refused_and_the_endpoint_goes_on() {
        let f = fixture(ApiConfig::default());
        let size = 60_000;
        let fill = |unit: &str| unit.repeat(size / unit.len());
        for (query, limit) in [
            (format!("ASK {{ FILTER(true{}) }}", fill("&&true")), "more than 1000 patterns"),
            (format!("ASK {{ FILTER(1{}) }}", fill("+1")), "more than 1000 patterns"),
            (format!("ASK {{ {{}}{} }}", fill(" UNION {}")), "more than 1000 patterns"),
            (format!("ASK {{ {} }}", fill("MINUS {} ")), "more than 1000 patterns"),
            (format!("ASK {{ FILTER(1 IN ({}1)) }}", fill("1,")), "more than 1000 patterns"),
            (format!("ASK {{ {} }}", fill("?s ?p ?o . ")), "joins more than 64"),
            (format!("ASK {{ {} }}", fill("OPTIONAL {} ")), "joins more than 64"),
            (format!("ASK {{ ?s <urn:a>{} ?o }}", "/<urn:a>".repeat(7_000)), "joins more than 64"),
        ] {
            let request = Request::post("/sparql")
                .header("content-type", "application/sparql-query")
                .body(Body::from(query.clone()))
                .unwrap();
            let (status, v) = send(&f, request).await;
            assert_eq!(
                (status, v["error"]["code"].as_str()),
                (StatusCode::PAYLOAD_TOO_LARGE, Some("LIMIT_EXCEEDED")),
                "{:.60}: {v:.300}",
                query
            );
            let message = v["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains(limit), "{:.60}: {message}", query);
        }
        let (status, v) = send(&f, Request::get("/sparql?query=ASK%7B%7D").body(Body::empty()).unwrap()).await;
        assert_eq!((status, &v["boolean"]), (StatusCode::OK, &json!(true)), "{v}");
    }

    /// A search query nested deep enough once overflowed the stack inside Tantivy's parser and
    /// aborted the process; it is refused with the limit it passed, through GraphQL and SPARQL.
    #[tokio::test]
    async fn deep_search_queries_are_refused_and_the_endpoint_goes_on() {
        let f = fixture(ApiConfig::default());
        let deep = format!("{}trust{}", "(".repeat(400), ")".repeat(400));
        let (status, _, v) = graphql(&f, None, &format!(r#"{{ search(query: "{deep}") {{ totalCount }} }}"#)).await;
        assert_eq!((status, code(&v)), (StatusCode::OK, "LIMIT_EXCEEDED"), "{v:.300}");
        assert!(v.to_string().contains("nests 400 levels of brackets"), "{v:.300}");
        let (status, _, v) = graphql(&f, None, r#"{ search(query: "trust") { totalCount } }"#).await;
        assert!(status == StatusCode::OK && v["data"]["search"]["totalCount"].is_i64(), "{v:.300}");
    }

    /// Parameters the endpoint cannot read get a coded JSON error, not the framework's plain text.
    #[tokio::test]
    async fn unreadable_sparql_parameters_have_a_code() {
        let f = fixture(ApiConfig::default());
        for request in [
            Request::get("/sparql?query=ASK%7B%7D&query=ASK%7B%7D").body(Body::empty()).unwrap(),
            Request::post("/sparql?query=ASK%7B%7D&query=ASK%7B%7D")
                .header("content-type", "application/sparql-query")
                .body(Body::from("ASK {}"))
                .unwrap(),
        ] {
            let (status, v) = send(&f, request).await;
            assert_eq!((status, v["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("BAD_USER_INPUT")), "{v}");
        }
    }

    /// A JWT from the identity provider works like a token of its role; a bad one is refused on
    /// every route, and without a configured key a JWT is no token at all.
    #[tokio::test]
    async fn bearer_jwts_run_as_their_role() {
        use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwt");
        let public = std::fs::read(format!("{fixtures}/ed25519-public.pem")).unwrap();
        let private =
            EncodingKey::from_ed_pem(&std::fs::read(format!("{fixtures}/ed25519-private.pem")).unwrap()).unwrap();
        let jwt = |role: &str, exp_in: i64| {
            let exp = jsonwebtoken::get_current_timestamp() as i64 + exp_in;
            let claims = json!({ "sub": "ada", "aud": "coalition", "exp": exp, "role": role, "partner": "nachw" });
            encode(&Header::new(Algorithm::EdDSA), &claims, &private).unwrap()
        };
        let verifier = crate::jwt::JwtVerifier::from_bytes(&public, crate::jwt::JwtSettings::default()).unwrap();
        let f = fixture(ApiConfig { jwt: Some(Arc::new(verifier)), public_reads: false, ..ApiConfig::default() });

        let (status, _, v) = graphql(&f, Some(&jwt("reader", 600)), "{ freshness { caughtUp } }").await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert!(v.get("errors").is_none(), "{v}");
        let as_other = SUBMIT_AS_NACHW.replace("\"nachw\"", "\"sanofi\"");
        let (status, _, v) = graphql(&f, Some(&jwt("partner", 600)), &as_other).await;
        assert_eq!((status, code(&v)), (StatusCode::OK, "FORBIDDEN"), "{v}");
        assert!(v["errors"][0]["message"].as_str().unwrap().contains("jwt:ada"), "{v}");
        let (_, _, v) = graphql(&f, Some(&jwt("partner", 600)), SUBMIT_AS_NACHW).await;
        assert_eq!(code(&v), "BAD_USER_INPUT", "{v}");
        let (status, _, v) = graphql(&f, Some(&jwt("reader", -3600)), "{ freshness { caughtUp } }").await;
        assert_eq!((status, code(&v)), (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"), "{v}");
        assert!(v["errors"][0]["message"].as_str().unwrap().contains("expired"), "{v}");
        let request = Request::get("/sparql?query=ASK%7B%7D")
            .header("authorization", format!("Bearer {}", jwt("admin", -3600)))
            .body(Body::empty())
            .unwrap();
        let (status, v) = send(&f, request).await;
        assert_eq!((status, v["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("UNAUTHENTICATED")), "{v}");

        let without = fixture(ApiConfig::default());
        let (status, _, v) = graphql(&without, Some(&jwt("admin", 600)), "{ freshness { caughtUp } }").await;
        assert_eq!((status, code(&v)), (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"), "{v}");
        assert!(v["errors"][0]["message"].as_str().unwrap().contains("not a coalition token"), "{v}");
    }

    async fn metrics(f: &Fixture) -> String {
        let response = f.router.clone().oneshot(Request::get("/metrics").body(Body::empty()).unwrap()).await.unwrap();
        String::from_utf8(axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap().to_vec()).unwrap()
    }

    /// A counter's value in `/metrics` text (0 when absent).
    fn counter(text: &str, series: &str) -> u64 {
        text.lines().find_map(|l| l.strip_prefix(series)?.trim().parse().ok()).unwrap_or(0)
    }

    /// The built-in dataset, applied straight to the fixture's store and index; returns its events.
    fn load_seed(f: &Fixture) -> Vec<coalition_events::Event> {
        let events: Vec<coalition_events::Event> = include_str!("../../server/seed/coalition-seed.jsonl")
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| coalition_events::decode(line.as_bytes()).unwrap())
            .collect();
        apply_events(f, &events, 0);
        events
    }

    /// Maps `events` at consecutive offsets from `first` and applies them, as one batch, straight
    /// to the fixture's store and index.
    fn apply_events(f: &Fixture, events: &[coalition_events::Event], first: i64) {
        let mut offsets = coalition_mapping::Offsets::default();
        let batch: Vec<coalition_store::Applicable> = events
            .iter()
            .zip(first..)
            .map(|(event, offset)| {
                let pos = coalition_mapping::LogPosition { topic: event.kind.topic().into(), partition: 0, offset };
                offsets.advance(&pos);
                let mapped = coalition_mapping::map_event(event, &pos).unwrap();
                coalition_store::Applicable { event_id: event.id.0.clone(), mapped }
            })
            .collect();
        f.store.apply("seed", &batch, &offsets).unwrap();
        let docs: Vec<_> = batch.iter().flat_map(|a| a.mapped.docs.iter().cloned()).collect();
        f.index.apply("seed", &[], &docs, &offsets).unwrap();
    }

    /// Outcomes and statistics name no partner among their facts: the partner filter takes the
    /// partner of the event behind each one's current state, and follows it when a newer event by
    /// another partner replaces that state.
    #[tokio::test]
    async fn the_partner_filter_follows_the_event_behind_the_current_state() {
        let f = fixture(ApiConfig::default());
        let seed = load_seed(&f);
        let listed = |field: &'static str, partner: String| {
            let f = &f;
            async move {
                let q =
                    format!(r#"{{ {field}(filter: {{ partner: "{partner}" }}, first: 500) {{ items {{ id }} }} }}"#);
                let (status, _, v) = graphql(f, None, &q).await;
                assert_eq!(status, StatusCode::OK, "{v}");
                let items = v["data"][field]["items"].as_array().unwrap_or_else(|| panic!("{v}")).clone();
                items.iter().map(|i| i["id"].as_str().unwrap().to_owned()).collect::<std::collections::BTreeSet<_>>()
            }
        };
        use coalition_events::Kind;
        for (kind, field) in [(Kind::Outcome, "outcomes"), (Kind::Evidence, "evidence")] {
            let events: Vec<_> = seed.iter().filter(|e| e.kind == kind).collect();
            let partners: std::collections::BTreeSet<&str> = events.iter().map(|e| e.partner.0.as_str()).collect();
            assert!(!partners.is_empty(), "the seed has {field}");
            for partner in partners {
                let expected: std::collections::BTreeSet<String> =
                    events.iter().filter(|e| e.partner.0 == partner).map(|e| e.subject.0.clone()).collect();
                assert_eq!(listed(field, partner.to_owned()).await, expected, "{field} submitted by {partner}");
            }
        }
        // A newer version of one outcome, submitted by another partner.
        let old = seed.iter().find(|e| e.kind == Kind::Outcome).unwrap();
        let other = seed.iter().find(|e| e.partner != old.partner).unwrap().partner.clone();
        let mut newer = old.clone();
        newer.id = coalition_events::EventId(format!("{}-newer", old.id.0));
        newer.partner = other.clone();
        newer.version = Some(old.version.unwrap_or(0) + 1);
        apply_events(&f, &[newer], seed.len() as i64);
        let id = &old.subject.0;
        assert!(!listed("outcomes", old.partner.0.clone()).await.contains(id), "{id} left {}'s list", old.partner.0);
        assert!(listed("outcomes", other.0.clone()).await.contains(id), "{id} joined {}'s list", other.0);
    }

    /// Facet counts are computed when a search asks for them, and then count every match; the
    /// page and its count are the same either way.
    #[tokio::test]
    async fn search_facets_count_every_match_when_asked() {
        let f = fixture(ApiConfig::default());
        load_seed(&f);
        let page = "totalCount totalCountExact hits { iri score }";
        let (status, _, with) = graphql(
            &f,
            None,
            &format!(
                r#"{{ search(query: "trust", first: 2) {{ {page} facets {{ field values {{ value count }} }} }} }}"#
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{with}");
        let with = &with["data"]["search"];
        let total = with["totalCount"].as_u64().unwrap();
        assert!(total > 2, "the seed has more than a page of matches: {with}");
        let facets = with["facets"].as_array().unwrap();
        let kind = facets.iter().find(|f| f["field"] == "kind").unwrap_or_else(|| panic!("kind facet: {with}"));
        let counted: u64 = kind["values"].as_array().unwrap().iter().map(|v| v["count"].as_u64().unwrap()).sum();
        assert_eq!(counted, total, "the kind facet counts every match: {with}");
        let (_, _, without) =
            graphql(&f, None, &format!(r#"{{ search(query: "trust", first: 2) {{ {page} }} }}"#)).await;
        let without = &without["data"]["search"];
        assert_eq!(without["totalCount"], with["totalCount"], "{without}");
        assert_eq!(without["hits"], with["hits"], "{without}");
        // Below the counting limit every count is exact, asked for or not.
        let (_, _, exact) =
            graphql(&f, None, &format!(r#"{{ search(query: "trust", first: 2, exactCount: true) {{ {page} }} }}"#))
                .await;
        let exact = &exact["data"]["search"];
        for page in [with, without, exact] {
            assert_eq!(page["totalCountExact"], true, "{page}");
            assert_eq!(page["totalCount"], with["totalCount"], "{page}");
        }
    }

    /// A page's links are loaded a level at a time, one blocking call per loader and level,
    /// not one per entity (no N+1), and the metrics show it.
    #[tokio::test]
    async fn a_page_loads_its_links_in_one_batch_per_level() {
        let f = fixture(ApiConfig::default());
        load_seed(&f);
        let (status, _, v) = graphql(
            &f,
            None,
            "{ activities(first: 50) { items { id ledBy { id name } recommendations { id title } outcomes { metric } } } }",
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        let items = v["data"]["activities"]["items"].as_array().unwrap();
        let partners: std::collections::BTreeSet<&str> =
            items.iter().flat_map(|a| a["ledBy"].as_array().unwrap()).map(|p| p["id"].as_str().unwrap()).collect();
        let partners = partners.len();
        assert!(items.len() >= 20 && partners >= 10, "the seed's activities and their partners: {v}");
        let text = metrics(&f).await;
        let batches = counter(&text, "coalition_graphql_loader_batches_total{loader=\"entity\"}");
        let keys = counter(&text, "coalition_graphql_loader_keys_total{loader=\"entity\"}");
        // Levels: the partners, the recommendations and the outcomes of the page (each one
        // batch, possibly split once when a batch starts while the level is still asking).
        assert!((1..=6).contains(&batches), "{batches} entity batches for {} activities:\n{text}", items.len());
        assert!(keys >= partners as u64, "{keys} keys for {partners} distinct partners");
        let referrers = counter(&text, "coalition_graphql_loader_batches_total{loader=\"referrers\"}");
        assert!(referrers <= 2, "{referrers} referrer batches for {} activities' outcomes", items.len());
    }

    /// Each SPARQL query is admitted through its lane, and `/metrics` shows the lanes' figures.
    #[tokio::test]
    async fn sparql_lanes_are_reported_in_metrics() {
        let f = fixture(ApiConfig {
            max_concurrent_sparql: 1,
            max_concurrent_projection_sparql: 3,
            // Every query evaluated: none answered from the response cache.
            response_cache_bytes: 0,
            ..ApiConfig::default()
        });
        let h2 = include_str!("../../../queries/h2-evidence-group-country.sparql");
        for query in [h2, h2, "ASK {}"] {
            let request = Request::post("/sparql")
                .header("content-type", "application/x-www-form-urlencoded")
                .header("accept", "application/sparql-results+json")
                .body(Body::from(serde_urlencoded::to_string([("query", query)]).unwrap()))
                .unwrap();
            let (status, v) = send(&f, request).await;
            assert_eq!(status, StatusCode::OK, "{v}");
        }
        let response = f.router.clone().oneshot(Request::get("/metrics").body(Body::empty()).unwrap()).await.unwrap();
        let text =
            String::from_utf8(axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap().to_vec()).unwrap();
        for line in [
            "coalition_sparql_slots{lane=\"general\"} 1",
            "coalition_sparql_slots{lane=\"projection\"} 3",
            "coalition_sparql_admission_wait_seconds_count{lane=\"projection\"} 2",
            "coalition_sparql_admission_wait_seconds_count{lane=\"general\"} 1",
            "coalition_sparql_evaluating{lane=\"projection\"} 0",
            "coalition_sparql_refused_total{lane=\"projection\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in:\n{text}");
        }
    }

    /// A GET of `/sparql` with `query`, and `headers`: status, where the answer came from, body.
    async fn sparql_get(f: &Fixture, query: &str, headers: &[(&str, &str)]) -> (StatusCode, String, String) {
        let url = format!("/sparql?{}", serde_urlencoded::to_string([("query", query)]).unwrap());
        let mut request = Request::get(url);
        if !headers.iter().any(|(name, _)| *name == "accept") {
            request = request.header("accept", "application/sparql-results+json");
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = f.router.clone().oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
        let status = response.status();
        let outcome = response.headers().get("coalition-cache").map(|v| v.to_str().unwrap().to_owned());
        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (status, outcome.unwrap_or_default(), String::from_utf8(body.to_vec()).unwrap())
    }

    /// A query stopped by the SPARQL timeout stops evaluating and gives back its slot: the next
    /// query in the general lane (one slot here) is admitted rather than waiting out the lane's
    /// 2 s and being refused. Unbounded paths over every predicate between two variables went on
    /// evaluating after their timeout — 28 s at 10k conversations; here, over the seed and a
    /// 200,000-link chain, ~3 s, so the next query was refused (vendor/spareval/PATCHED.md).
    #[tokio::test]
    async fn a_query_stopped_by_the_timeout_gives_back_its_slot() {
        use oxigraph::model::{NamedNode, Quad};
        let f = fixture(ApiConfig {
            sparql_timeout: std::time::Duration::from_millis(300),
            max_concurrent_sparql: 1,
            ..ApiConfig::default()
        });
        load_seed(&f);
        let (links, next) = (200_000, NamedNode::new_unchecked("urn:test:next"));
        let chain_graph = NamedNode::new_unchecked("urn:test:chain");
        let node = |i: usize| NamedNode::new_unchecked(format!("urn:test:n{}", i % links));
        let chain = (0..links).map(|i| Quad::new(node(i), next.clone(), node(i + 1), chain_graph.clone()));
        f.store.oxigraph().extend(chain).unwrap();
        let fresh = [("cache-control", "no-cache")];
        let closure = "SELECT (COUNT(*) AS ?n) WHERE { ?s (!<urn:x>)*/(^!<urn:x>)* ?o }";
        let (status, _, body) = sparql_get(&f, closure, &fresh).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(body.contains("\"TIMEOUT\""), "{body}");
        let (status, _, body) = sparql_get(&f, "ASK { ?s ?p ?o }", &fresh).await;
        assert_eq!(status, StatusCode::OK, "the slot is still held: {body}");
    }

    /// Answers are kept while what they read (the store; the index too for those that search) is
    /// unchanged, and a commit to it makes the next request compute its answer from the new data;
    /// mutations, live fields and failures are never kept.
    #[tokio::test]
    async fn answers_are_kept_until_the_data_changes() {
        let f = fixture(ApiConfig::default());
        load_seed(&f);
        let count = "SELECT (COUNT(*) AS ?n) WHERE { GRAPH ?g { ?s ?p ?o } }";
        let (status, outcome, first) = sparql_get(&f, count, &[]).await;
        assert_eq!((status, outcome.as_str()), (StatusCode::OK, "miss"), "{first}");
        assert_eq!(sparql_get(&f, count, &[]).await, (StatusCode::OK, "hit".into(), first.clone()));
        assert_eq!(
            sparql_get(&f, count, &[("cache-control", "no-cache")]).await,
            (StatusCode::OK, "bypass".into(), first.clone())
        );
        // Another format is another answer.
        let (_, outcome, _) = sparql_get(&f, count, &[("accept", "text/csv")]).await;
        assert_eq!(outcome, "miss");

        // A commit of offsets alone adds the four quads of an offset record.
        let mut offsets = coalition_mapping::Offsets::default();
        offsets.advance(&coalition_mapping::LogPosition {
            topic: "coalition.activities".into(),
            partition: 0,
            offset: 6,
        });
        f.store.apply("other-log", &[], &offsets).unwrap();
        let (_, outcome, after) = sparql_get(&f, count, &[]).await;
        assert_eq!(outcome, "miss");
        let n = |body: &str| -> u64 {
            let v: Value = serde_json::from_str(body).unwrap();
            v["results"]["bindings"][0]["n"]["value"].as_str().unwrap().parse().unwrap()
        };
        assert_eq!(n(&after), n(&first) + 4, "{first} then {after}");
        assert_eq!(sparql_get(&f, count, &[]).await.1, "hit");
        // An index commit moves the state of the answers that search, and only theirs.
        let search = "PREFIX coal: <https://w3id.org/coalition/ns#> \
                      SELECT (COUNT(*) AS ?n) WHERE { ?s a coal:Dialogue FILTER(coal:textScore(?s, \"trust\") > 0) }";
        assert_eq!(sparql_get(&f, search, &[]).await.1, "miss");
        assert_eq!(sparql_get(&f, search, &[]).await.1, "hit");
        f.index.apply("seed", &[], &[], &offsets).unwrap();
        assert_eq!(sparql_get(&f, search, &[]).await.1, "miss");
        assert_eq!(sparql_get(&f, count, &[]).await.1, "hit");
        // Refusals are not kept.
        for _ in 0..2 {
            let (status, outcome, _) = sparql_get(&f, "SELECT * WHERE {", &[]).await;
            assert_eq!((status, outcome.as_str()), (StatusCode::BAD_REQUEST, "bypass"));
        }

        let outcome_of = |query: &'static str| {
            let router = f.router.clone();
            async move {
                let request = Request::post("/graphql")
                    .header("content-type", "application/json")
                    .body(Body::from(json!({ "query": query }).to_string()))
                    .unwrap();
                let response = router.oneshot(request).await.unwrap();
                response.headers().get("coalition-cache").map(|v| v.to_str().unwrap().to_owned())
            }
        };
        let totals = "{ recommendations { totalCount } }";
        assert_eq!(outcome_of(totals).await.as_deref(), Some("miss"));
        assert_eq!(outcome_of(totals).await.as_deref(), Some("hit"));
        assert_eq!(outcome_of("{ freshness { caughtUp } }").await, None, "live fields are not cached");
        assert_eq!(outcome_of(SUBMIT_AS_NACHW).await, None, "mutations are not cached");
        let failing = "{ recommendation(id: \"x> } ; DROP\") { id } }";
        assert_eq!(outcome_of(failing).await.as_deref(), Some("bypass"), "answers with errors are not kept");
        let text = metrics(&f).await;
        assert_eq!(counter(&text, "coalition_response_cache_total{endpoint=\"sparql\",outcome=\"hit\"}"), 4);
        assert_eq!(counter(&text, "coalition_response_cache_total{endpoint=\"graphql\",outcome=\"miss\"}"), 1);
    }

    #[tokio::test]
    async fn closed_reads_and_rate_limits() {
        let f = fixture(ApiConfig {
            public_reads: false,
            rate_limit: crate::ratelimit::RateLimit::per_token(1.0),
            ..ApiConfig::default()
        });
        let (_, reader) = f.tokens.create(Role::Reader, None, None, None).unwrap();
        let (status, _, v) = graphql(&f, None, "{ freshness { caughtUp } }").await;
        assert_eq!((status, code(&v)), (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"), "{v}");
        let response = f
            .router
            .clone()
            .oneshot(Request::get("/sparql?query=ASK%7B%7D").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

        let mut statuses = Vec::new();
        for _ in 0..3 {
            let (status, _, v) = graphql(&f, Some(reader.expose()), "{ freshness { caughtUp } }").await;
            statuses.push((status.as_u16(), code(&v).to_owned()));
        }
        assert_eq!(statuses, [(200, String::new()), (200, String::new()), (429, "RATE_LIMITED".to_owned())]);
    }
}
