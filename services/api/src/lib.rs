//! The HTTP API: GraphQL at `/graphql` (GraphiQL on GET), a read-only SPARQL 1.1 Protocol endpoint
//! at `/sparql`, `/healthz`, `/readyz` and Prometheus `/metrics`.
//!
//! Guarantees: every request runs as a [`auth::Principal`] resolved from its bearer token (or
//! anonymous); a bad, revoked or expired token is refused before any handler runs. Reads come from
//! the graph and index only; mutations authorise their caller, then validate their input, then
//! produce an event to Kafka (its `source` naming the token) and return its receipt — they never
//! write the store. GraphQL is rate-limited per token ([`ratelimit`]). Every error
//! carries a code from one table ([`errors::ErrorKind`]), the same over GraphQL and HTTP. SPARQL
//! queries are admitted in two lanes ([`sparql::Lane`]), so that reads of the evidence projections
//! do not wait for the slots that slow general queries hold. Answers to GraphQL queries and SPARQL
//! may be served from the [`response_cache`]; such an answer reflects the data as of the last
//! commit before the request, or — for a request without a consistency token or a log position,
//! while the question is being computed — as of an earlier state, last seen current at most the
//! staleness bound (250 ms) ago.
//! [`app`] returns a `Router` that can be tested without a socket.

pub mod auth;
pub mod consistency;
pub mod errors;
pub mod graphql;
pub mod jwt;
pub mod nesting;
pub mod operations;
pub mod query_shape;
pub mod ratelimit;
pub mod read;
pub mod response_cache;
pub mod sparql;

use async_graphql::http::GraphiQLSource;
use async_graphql_axum::GraphQLResponse;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use coalition_ingest::{EventProducer, Watermark};
use coalition_search::SearchIndex;
use coalition_store::GraphStore;
use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::Instrument;

/// The GraphQL batch loaders' default delay, in microseconds (see `docs/performance.md`).
pub const DEFAULT_GRAPHQL_BATCH_DELAY_US: u64 = 500;

/// Limits and behaviour of the API.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Acknowledge a mutation only once its event is applied (required when the log is in memory).
    pub ack_after_apply: bool,
    pub apply_timeout: Duration,
    pub sparql_timeout: Duration,
    pub max_result_rows: usize,
    pub max_query_bytes: usize,
    pub max_page_size: usize,
    pub max_depth: usize,
    pub max_complexity: usize,
    pub max_body_bytes: usize,
    /// How long a request carrying `Coalition-Consistency` waits for its events to be applied.
    pub consistency_timeout: Duration,
    pub introspection: bool,
    /// Anonymous callers may read (GraphQL queries, SPARQL). Writes always need a token.
    pub public_reads: bool,
    /// General SPARQL queries evaluating at once; more wait briefly, then get 503.
    pub max_concurrent_sparql: usize,
    /// SPARQL queries reading only the evidence projections evaluating at once, in a lane of their
    /// own ([`sparql::Lane::Projection`]); more wait a little longer, then get 503.
    pub max_concurrent_projection_sparql: usize,
    /// Per-token GraphQL rate limit (`None`: unlimited).
    pub rate_limit: Option<ratelimit::RateLimit>,
    /// How long a GraphQL batch loader collects keys before its blocking call: longer merges
    /// the same level of concurrent requests into one call, shorter answers a lone request
    /// sooner (see `graphql/loader.rs`).
    pub graphql_batch_delay: Duration,
    /// Bearer JWTs from an identity provider, accepted beside the server's own tokens (`None`:
    /// only the server's own).
    pub jwt: Option<Arc<jwt::JwtVerifier>>,
    /// Bytes of answers the response cache keeps for the current state of the data (0: none).
    pub response_cache_bytes: usize,
    /// How long after its state was last seen current an answer of an earlier state may be served
    /// to a request without a consistency token or a log position, while the question is being
    /// computed (zero: never; [`response_cache::Freshness::Recent`]).
    pub response_cache_max_stale: Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            ack_after_apply: false,
            apply_timeout: Duration::from_secs(10),
            sparql_timeout: Duration::from_secs(10),
            max_result_rows: 100_000,
            max_query_bytes: 64 * 1024,
            max_page_size: 500,
            max_depth: 12,
            max_complexity: 5_000,
            max_body_bytes: 1024 * 1024,
            consistency_timeout: Duration::from_secs(5),
            introspection: true,
            public_reads: true,
            max_concurrent_sparql: sparql::default_query_slots(),
            max_concurrent_projection_sparql: sparql::default_projection_slots(),
            rate_limit: Some(ratelimit::RateLimit::default()),
            graphql_batch_delay: Duration::from_micros(DEFAULT_GRAPHQL_BATCH_DELAY_US),
            jwt: None,
            response_cache_bytes: response_cache::DEFAULT_MAX_MIB * 1024 * 1024,
            response_cache_max_stale: Duration::from_millis(response_cache::DEFAULT_MAX_STALE_MS),
        }
    }
}

/// API metric names, in one place.
#[derive(Clone, Debug)]
pub struct ApiMetrics {
    /// Request latency by route and status.
    pub request_seconds: HistogramVec,
    /// SPARQL slots per admission lane (its limit).
    pub sparql_slots: IntGaugeVec,
    /// SPARQL queries evaluating now, per lane.
    pub sparql_evaluating: IntGaugeVec,
    /// How long admitted SPARQL queries waited for a slot, per lane.
    pub sparql_admission_wait_seconds: HistogramVec,
    /// SPARQL queries refused with 503 because their lane stayed full, per lane.
    pub sparql_refused_total: IntCounterVec,
    /// Blocking calls made by each GraphQL batch loader (one per batch of keys).
    pub graphql_loader_batches_total: IntCounterVec,
    /// Keys those calls answered, per loader: keys over batches is the batching achieved.
    pub graphql_loader_keys_total: IntCounterVec,
    /// Read requests by endpoint and where their answer came from (`hit`, `miss`, `bypass`,
    /// `shared`; see [`response_cache::Outcome`]).
    pub response_cache_total: IntCounterVec,
}

impl ApiMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let request_seconds = registered(
            registry,
            HistogramVec::new(
                HistogramOpts::new("coalition_http_request_seconds", "HTTP request latency")
                    .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0]),
                &["route", "method", "status"],
            )?,
        )?;
        let lane = ["lane"];
        let sparql_slots = registered(
            registry,
            IntGaugeVec::new(Opts::new("coalition_sparql_slots", "SPARQL queries a lane evaluates at once"), &lane)?,
        )?;
        let sparql_evaluating = registered(
            registry,
            IntGaugeVec::new(Opts::new("coalition_sparql_evaluating", "SPARQL queries evaluating now"), &lane)?,
        )?;
        let sparql_admission_wait_seconds = registered(
            registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "coalition_sparql_admission_wait_seconds",
                    "time admitted SPARQL queries waited for a slot",
                )
                .buckets(vec![0.0001, 0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0]),
                &lane,
            )?,
        )?;
        let counter = |name: &str, help: &str, label: &str| {
            registered(registry, IntCounterVec::new(Opts::new(name, help), &[label])?)
        };
        let sparql_refused_total =
            counter("coalition_sparql_refused_total", "SPARQL queries refused because their lane stayed full", "lane")?;
        let graphql_loader_batches_total = counter(
            "coalition_graphql_loader_batches_total",
            "blocking calls made by a GraphQL batch loader",
            "loader",
        )?;
        let graphql_loader_keys_total = counter(
            "coalition_graphql_loader_keys_total",
            "keys answered by a GraphQL batch loader's calls",
            "loader",
        )?;
        let response_cache_total = registered(
            registry,
            IntCounterVec::new(
                Opts::new("coalition_response_cache_total", "read requests by where their answer came from"),
                &["endpoint", "outcome"],
            )?,
        )?;
        Ok(ApiMetrics {
            response_cache_total,
            request_seconds,
            sparql_slots,
            sparql_evaluating,
            sparql_admission_wait_seconds,
            sparql_refused_total,
            graphql_loader_batches_total,
            graphql_loader_keys_total,
        })
    }
}

/// `metric`, once registered in `registry`.
fn registered<M: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: M,
) -> prometheus::Result<M> {
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

/// Everything a request needs, behind one reference count: the router clones the state of every
/// route for every connection it accepts, so a clone must cost little.
#[derive(Clone)]
pub struct AppState(Arc<AppContext>);

impl AppState {
    pub fn new(context: AppContext) -> AppState {
        AppState(Arc::new(context))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppContext;

    fn deref(&self) -> &AppContext {
        &self.0
    }
}

/// What an [`AppState`] holds.
pub struct AppContext {
    pub store: GraphStore,
    pub index: Arc<SearchIndex>,
    pub producer: EventProducer,
    pub watermark: watch::Receiver<Watermark>,
    pub registry: Registry,
    pub metrics: ApiMetrics,
    pub config: ApiConfig,
    /// The issued bearer tokens (`<data-dir>/tokens.json`).
    pub tokens: Arc<auth::TokenStore>,
    /// Operations on the running server (rebuild); `None` where nothing can run them.
    pub operations: Option<Arc<dyn operations::Operations>>,
}

impl AppState {
    /// The state of the data readers see now (see [`response_cache`]).
    pub fn epoch(&self) -> response_cache::Epoch {
        response_cache::Epoch { graph: self.store.epoch(), index: self.index.epoch() }
    }

    /// Counts where an answer of `endpoint` came from and says so in its headers.
    pub(crate) fn cache_outcome(
        &self,
        endpoint: &str,
        (response, outcome): (Response, response_cache::Outcome),
    ) -> Response {
        self.metrics.response_cache_total.with_label_values(&[endpoint, outcome.as_str()]).inc();
        response_cache::marked(response, outcome)
    }
}

/// The whole HTTP application.
pub fn app(state: AppState) -> Router {
    let schema = graphql::build_schema(state.clone());
    let body_limit = state.config.max_body_bytes;
    let mut graphql_post = post(graphql_handler);
    if let Some(limit) = state.config.rate_limit {
        graphql_post =
            graphql_post.layer(middleware::from_fn_with_state(ratelimit::RateLimiter::new(limit), ratelimit::limit));
    }
    Router::new()
        .route("/graphql", get(graphiql).merge(graphql_post))
        .route("/sparql", get(sparql::get).post(sparql::post))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/", get(index))
        .layer(axum::Extension(schema))
        .layer(axum::Extension(Arc::new(
            response_cache::ResponseCache::new(state.config.response_cache_bytes)
                .with_max_stale(state.config.response_cache_max_stale),
        )))
        .layer(axum::Extension(Arc::new(sparql::Classified::new())))
        .layer(axum::Extension(sparql::QuerySlots::new(
            sparql::LaneLimit { permits: state.config.max_concurrent_projection_sparql, wait: sparql::PROJECTION_WAIT },
            sparql::LaneLimit { permits: state.config.max_concurrent_sparql, wait: sparql::GENERAL_WAIT },
            &state.metrics,
        )))
        .layer(middleware::from_fn_with_state(state.clone(), consistency::wait_for_tokens))
        .layer(middleware::from_fn_with_state(state.clone(), auth::authenticate))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// Runs a GraphQL request as its principal, after refusing what the principal may not do at all.
async fn graphql_handler(
    State(state): State<AppState>,
    axum::Extension(schema): axum::Extension<graphql::CoalitionSchema>,
    axum::Extension(cache): axum::Extension<Arc<response_cache::ResponseCache>>,
    principal: auth::Principal,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let mut request = match graphql::read_request(&parts.headers, body, state.config.max_body_bytes).await {
        Ok(r) => r,
        Err(e) => return graphql::refusal(e),
    };
    let keepable = match graphql::authorize_request(&principal, state.config.public_reads, &mut request) {
        Ok(keepable) => keepable,
        Err(e) => return graphql::refusal(e),
    };
    let key = keepable.map(|k| (graphql_cache_key(&principal, k.reads, &request), k.as_of));
    let execute = || async move {
        let mut response = schema.execute(request.data(principal)).await;
        graphql::code_errors(&mut response.errors);
        // Only answers without errors may be kept: an error can be the moment's (a timeout).
        let keep = response.errors.is_empty();
        let response = GraphQLResponse::from(response).into_response();
        if keep {
            response
        } else {
            response_cache::not_kept(response)
        }
    };
    match key {
        Some((key, as_of)) => {
            let accepts = response_cache::Accepts::of(&parts.headers, as_of);
            let answer = cache.answer(key, accepts, || state.epoch(), execute).await;
            state.cache_outcome("graphql", answer)
        }
        None => execute().await,
    }
}

/// What a GraphQL query's answer depends on besides the data it `reads`: who asks, and the
/// request's text, operation and variables.
fn graphql_cache_key(
    principal: &auth::Principal,
    reads: response_cache::Reads,
    request: &async_graphql::Request,
) -> response_cache::Key {
    let variables = serde_json::to_vec(&request.variables).unwrap_or_default();
    let principal = format!("{principal:?}");
    let operation = request.operation_name.as_deref().unwrap_or_default();
    response_cache::Key::new(
        "graphql",
        reads,
        &[principal.as_bytes(), request.query.as_bytes(), operation.as_bytes(), &variables],
    )
}

async fn graphiql() -> Html<String> {
    Html(GraphiQLSource::build().endpoint("/graphql").title("Coalition Graph").finish())
}

async fn index() -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "name": "coalition-graph",
        "graphql": "/graphql",
        "sparql": "/sparql",
        "health": "/healthz",
        "ready": "/readyz",
        "metrics": "/metrics",
    }))
}

async fn healthz() -> &'static str {
    "ok"
}

/// Ready once the materializer has caught up with the log as it stood at start.
async fn readyz(State(state): State<AppState>) -> Response {
    let w = state.watermark.borrow().clone();
    let body = serde_json::json!({
        "ready": w.caught_up,
        "graph": w.graph,
        "index": w.index,
        "applied": w.applied,
        "deadLettered": w.dead_lettered,
        "committedAt": w.committed_at.map(|t| t.to_rfc3339()),
    });
    let status = if w.caught_up { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut buf = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&state.registry.gather(), &mut buf) {
        return errors::ApiError::internal(e).into_response();
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], buf).into_response()
}

async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().to_string();
    let started = Instant::now();
    let span = tracing::info_span!("request", %route, %method, principal = tracing::field::Empty);
    let response = next.run(request).instrument(span).await;
    state
        .metrics
        .request_seconds
        .with_label_values(&[route.as_str(), method.as_str(), response.status().as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}

#[cfg(test)]
mod tests;
