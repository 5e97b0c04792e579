//! What the API fuzz targets share: the real `coalition_api::app` router over the built-in dataset
//! (graph and index in memory), a bearer token per role, and — for targets that let mutations
//! through — an in-process Kafka-protocol broker (librdkafka's mock cluster, as the embedded
//! server uses), so an accepted mutation is really produced and nothing waits on a missing broker.
//!
//! Built once per fuzzing process; each input is one request through `tower::ServiceExt::oneshot`.

use axum::body::Body;
use axum::http::{Request, Response};
use coalition_api::auth::{Role, TokenStore};
use coalition_api::errors::ErrorKind;
use coalition_api::{app, ApiConfig, ApiMetrics, AppContext, AppState};
use coalition_ingest::{EventProducer, IngestMetrics, KafkaConfig, Watermark};
use coalition_mapping::{LogPosition, Offsets};
use coalition_search::SearchIndex;
use coalition_store::{Applicable, GraphStore};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use std::collections::BTreeMap;
use std::sync::Arc;
use tower::ServiceExt;

const SEED: &str = include_str!("../../services/server/seed/coalition-seed.jsonl");

/// The partner the partner token is bound to (it owns entities in the built-in dataset).
pub const PARTNER: &str = "nachw";

/// Who a fuzzed request runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    Anonymous,
    Reader,
    Partner,
    Policy,
    Admin,
}

impl Caller {
    pub fn from_byte(b: u8) -> Caller {
        match b % 5 {
            0 => Caller::Anonymous,
            1 => Caller::Reader,
            2 => Caller::Partner,
            3 => Caller::Policy,
            _ => Caller::Admin,
        }
    }

    /// May this caller ever produce an event?
    pub fn may_write(self) -> bool {
        !matches!(self, Caller::Anonymous | Caller::Reader)
    }
}

pub struct Fixture {
    pub runtime: tokio::runtime::Runtime,
    pub router: axum::Router,
    /// Events produced by mutations, by topic (the producer's own counter).
    produced: prometheus::IntCounterVec,
    secrets: BTreeMap<&'static str, String>,
    _dir: tempfile::TempDir,
    _broker: Option<MockCluster<'static, DefaultProducerContext>>,
}

/// The HTTP statuses of the error table, and 200.
pub fn table_statuses() -> Vec<u16> {
    let mut s: Vec<u16> = all_kinds().iter().map(|k| k.codes().1.as_u16()).collect();
    s.push(200);
    s
}

/// The `extensions.code` values of the error table.
pub fn table_codes() -> Vec<&'static str> {
    all_kinds().iter().map(|k| k.codes().0).collect()
}

/// The HTTP status the error table gives `code`.
pub fn status_of(code: &str) -> Option<u16> {
    all_kinds().iter().find(|k| k.codes().0 == code).map(|k| k.codes().1.as_u16())
}

fn all_kinds() -> [ErrorKind; 11] {
    [
        ErrorKind::BadUserInput,
        ErrorKind::NotFound,
        ErrorKind::Unauthenticated,
        ErrorKind::Forbidden,
        ErrorKind::ReadOnly,
        ErrorKind::Timeout,
        ErrorKind::TooLarge,
        ErrorKind::RateLimited,
        ErrorKind::Unavailable,
        ErrorKind::HistoryUnavailable,
        ErrorKind::Internal,
    ]
}

/// Applies the built-in dataset to an in-memory graph and index, as the materializer would.
fn load_seed(store: &GraphStore, index: &SearchIndex) -> Offsets {
    let log = "fuzz";
    let mut offsets = Offsets::default();
    let mut batch = Vec::new();
    let mut docs = BTreeMap::new();
    for (n, line) in SEED.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let event = coalition_events::decode(line.as_bytes()).expect("the built-in dataset decodes");
        let position = LogPosition { topic: event.kind.topic().to_owned(), partition: 0, offset: n as i64 };
        let mapped = coalition_mapping::map_event(&event, &position).expect("the built-in dataset maps");
        offsets.advance(&position);
        docs.insert(mapped.entity.as_str().to_owned(), mapped.docs.clone());
        batch.push(Applicable { event_id: event.id.0.clone(), mapped });
    }
    store.apply(log, &batch, &offsets).expect("the built-in dataset applies");
    let replaced: Vec<String> = docs.keys().cloned().collect();
    let docs: Vec<_> = docs.into_values().flatten().collect();
    index.apply(log, &replaced, &docs, &offsets).expect("the built-in dataset indexes");
    offsets
}

impl Fixture {
    /// The router with `config`; `broker`: start the in-process broker so mutations that pass
    /// every check are produced (otherwise the producer points at nothing and such a mutation
    /// would wait for its delivery timeout).
    pub fn new(config: ApiConfig, broker: bool) -> Fixture {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let dir = tempfile::tempdir().expect("temp dir");
        let store = GraphStore::in_memory().expect("store");
        let index = Arc::new(SearchIndex::in_memory().expect("index"));
        let offsets = load_seed(&store, &index);
        let (cluster, bootstrap) = if broker {
            let cluster = MockCluster::new(1).expect("mock cluster");
            for topic in coalition_events::Kind::topics() {
                cluster.create_topic(topic, 3, 1).expect("topic");
            }
            let bootstrap = cluster.bootstrap_servers();
            (Some(cluster), bootstrap)
        } else {
            (None, "127.0.0.1:9".to_owned())
        };
        let registry = prometheus::Registry::new();
        let ingest = IngestMetrics::register(&registry).expect("metrics");
        let produced = ingest.produced.clone();
        let producer = {
            let _guard = runtime.enter();
            EventProducer::new(&KafkaConfig::new(bootstrap), Some(ingest)).expect("producer")
        };
        let tokens = Arc::new(TokenStore::open(dir.path()).expect("token store"));
        let mut secrets = BTreeMap::new();
        for (name, role, partner) in [
            ("reader", Role::Reader, None),
            ("partner", Role::Partner, Some(PARTNER)),
            ("policy", Role::Policy, None),
            ("admin", Role::Admin, None),
        ] {
            let (_, secret) = tokens.create(role, partner.map(|p| p.into()), None, None).expect("token");
            secrets.insert(name, secret.expose().to_owned());
        }
        let watermark = Watermark { graph: offsets.clone(), index: offsets, caught_up: true, ..Watermark::default() };
        let state = AppState::new(AppContext {
            store,
            index,
            producer,
            watermark: tokio::sync::watch::channel(watermark).1,
            metrics: ApiMetrics::register(&registry).expect("metrics"),
            registry,
            config,
            tokens,
            operations: None,
        });
        let router = app(state);
        Fixture { runtime, router, produced, secrets, _dir: dir, _broker: cluster }
    }

    /// `Authorization` header value for `caller`, if any.
    pub fn authorization(&self, caller: Caller) -> Option<String> {
        let name = match caller {
            Caller::Anonymous => return None,
            Caller::Reader => "reader",
            Caller::Partner => "partner",
            Caller::Policy => "policy",
            Caller::Admin => "admin",
        };
        Some(format!("Bearer {}", self.secrets[name]))
    }

    /// Events produced so far, over every topic.
    pub fn produced(&self) -> u64 {
        coalition_events::Kind::topics().iter().map(|t| self.produced.with_label_values(&[*t]).get()).sum()
    }

    /// Sends `request` through the router; returns the status, the content type and the body.
    pub fn send(&self, request: Request<Body>) -> (u16, String, Vec<u8>) {
        self.runtime.block_on(async {
            let response: Response<Body> = self.router.clone().oneshot(request).await.expect("infallible");
            let status = response.status().as_u16();
            let content_type =
                response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
            let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("body");
            (status, content_type, body.to_vec())
        })
    }
}
