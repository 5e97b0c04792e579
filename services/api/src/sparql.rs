//! The read-only SPARQL 1.1 Protocol endpoint: GET `?query=`, POST form, POST
//! `application/sparql-query`. Results by content negotiation (JSON, XML, CSV, TSV; Turtle,
//! N-Triples, RDF/XML for graphs), serialized by Oxigraph's own serializers. The default graph
//! is the union of all named graphs. Updates are refused with 403; each query runs on a blocking
//! thread under a timeout that cancels its evaluation. Reads need a token when reads are not public.
//!
//! Admission is cost-aware: a query is admitted through one of two [`Lane`]s, each a capped number
//! of evaluations at once ([`QuerySlots`]). Queries that read only the evidence projections — the
//! hot path, milliseconds however large the graph — have a lane of their own, so that slow general
//! queries holding every general slot until their timeout cannot make them queue and be refused.

use crate::auth::Principal;
use crate::errors::{ApiError, ErrorKind};
use crate::query_shape::{for_each_child, for_each_expression, for_each_operand};
use crate::response_cache::{Accepts, Key, Reads, ResponseCache};
use crate::{ApiMetrics, AppState};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use coalition_mapping::vocab::{self, coal};
use lru::LruCache;
use oxigraph::io::{RdfFormat, RdfSerializer};
use oxigraph::model::{Literal, NamedNode, Term};
use oxigraph::sparql::results::{QueryResultsFormat, QueryResultsSerializer};
use oxigraph::sparql::{CancellationToken, QueryResults, SparqlEvaluator};
use prometheus::{Histogram, IntCounter, IntGauge};
use serde::Deserialize;
use spargebra::algebra::{Expression, Function, GraphPattern};
use spargebra::term::{NamedNodePattern, TermPattern, TriplePattern};
use spargebra::Query;
use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

#[derive(Debug, Deserialize, Default)]
pub struct Params {
    query: Option<String>,
    update: Option<String>,
    #[serde(rename = "default-graph-uri")]
    default_graph_uri: Option<String>,
    /// A log position (`topic@partition:offset[,…]`): answer over the entity graphs whose current
    /// facts were already current then (entities changed since are left out).
    #[serde(rename = "as-of")]
    as_of: Option<String>,
}

/// The URL's parameters, refused with a coded error (not the framework's plain-text one) when
/// they do not parse.
fn url_params(query: Option<&str>) -> Result<Params, ApiError> {
    serde_urlencoded::from_str(query.unwrap_or_default())
        .map_err(|e| ApiError::new(ErrorKind::BadUserInput, format!("invalid URL parameters: {e}")))
}

pub async fn get(
    State(state): State<AppState>,
    Extension(slots): Extension<QuerySlots>,
    Extension(cache): Extension<Arc<ResponseCache>>,
    Extension(classified): Extension<Arc<Classified>>,
    principal: Principal,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = principal.authorize_read(state.config.public_reads) {
        return e.into_response();
    }
    let params = match url_params(query.as_deref()) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    respond(state, slots, &cache, &classified, params, &headers).await
}

#[allow(clippy::too_many_arguments)] // one per axum extractor
pub async fn post(
    State(state): State<AppState>,
    Extension(slots): Extension<QuerySlots>,
    Extension(cache): Extension<Arc<ResponseCache>>,
    Extension(classified): Extension<Arc<Classified>>,
    principal: Principal,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Err(e) = principal.authorize_read(state.config.public_reads) {
        return e.into_response();
    }
    let url = match url_params(query.as_deref()) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return ApiError::new(ErrorKind::TooLarge, format!("request body too large: {}", e.body_text()))
                .into_response()
        }
        Err(e) => {
            return ApiError::new(ErrorKind::BadUserInput, format!("cannot read the request body: {}", e.body_text()))
                .into_response()
        }
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let params = match content_type.as_str() {
        "application/sparql-query" => match String::from_utf8(body.to_vec()) {
            Ok(q) => Params { query: Some(q), ..url },
            Err(_) => return ApiError::new(ErrorKind::BadUserInput, "query body is not UTF-8").into_response(),
        },
        "application/sparql-update" => Params { update: Some(String::new()), ..url },
        "application/x-www-form-urlencoded" => match serde_urlencoded::from_bytes::<Params>(&body) {
            Ok(p) => p,
            Err(e) => return ApiError::new(ErrorKind::BadUserInput, format!("invalid form body: {e}")).into_response(),
        },
        other => {
            return ApiError::new(
                ErrorKind::BadUserInput,
                format!("unsupported content type \"{other}\": use application/sparql-query or a form with query="),
            )
            .into_response()
        }
    };
    respond(state, slots, &cache, &classified, params, &headers).await
}

/// Answers a query, from the response cache when the data has not changed since the same query
/// (same text, `as-of` and accepted formats) was answered.
async fn respond(
    state: AppState,
    slots: QuerySlots,
    cache: &ResponseCache,
    classified: &Classified,
    params: Params,
    headers: &HeaderMap,
) -> Response {
    let evaluate = |state: AppState, params: Params| async move {
        match run(state, slots, params, headers).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        }
    };
    let (Some(query), None) = (&params.query, &params.update) else {
        return evaluate(state, params).await;
    };
    let accept = headers.get(header::ACCEPT).map(|v| v.as_bytes()).unwrap_or_default();
    let as_of = params.as_of.as_deref().unwrap_or_default();
    let reads = classified.reads(query, state.config.max_query_bytes);
    let key = Key::new("sparql", reads, &[query.as_bytes(), as_of.as_bytes(), accept]);
    let accepts = Accepts::of(headers, !as_of.is_empty());
    let answer = cache.answer(key, accepts, || state.epoch(), || evaluate(state.clone(), params)).await;
    state.cache_outcome("sparql", answer)
}

/// What the answers to recent queries read ([`reads`]), by query text: a query is parsed to know
/// it once, not on every request (parsing takes tens of microseconds, on a stack of its own).
#[derive(Debug)]
pub struct Classified(Mutex<LruCache<String, Reads>>);

/// Queries whose classification is kept, and the longest kept (hot-path queries are 1–2 KB).
const CLASSIFIED_QUERIES: usize = 1024;
const CLASSIFIED_MAX_BYTES: usize = 8 << 10;

impl Classified {
    pub fn new() -> Classified {
        Classified(Mutex::new(LruCache::new(NonZeroUsize::new(CLASSIFIED_QUERIES).unwrap_or(NonZeroUsize::MIN))))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<String, Reads>> {
        // Every step under the lock is one map operation: a poisoned lock is still consistent.
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What the answer to `query` reads.
    fn reads(&self, query: &str, max_query_bytes: usize) -> Reads {
        if let Some(reads) = self.lock().get(query) {
            return *reads;
        }
        let reads = reads(query, max_query_bytes);
        if query.len() <= CLASSIFIED_MAX_BYTES {
            self.lock().put(query.to_owned(), reads);
        }
        reads
    }
}

impl Default for Classified {
    fn default() -> Classified {
        Classified::new()
    }
}

/// What the answer to `query` reads: the index too when the query calls the text-score function,
/// as found in the parsed query (where prefixes, base IRIs and escapes are resolved, so no way of
/// writing the function's IRI escapes it), or when it cannot be parsed here (its evaluation then
/// refuses it, and says why).
fn reads(query: &str, max_query_bytes: usize) -> Reads {
    use crate::nesting::{check, on_query_stack, Language, MAX_NESTING};
    if query.len() > max_query_bytes || check(query, Language::Sparql, MAX_NESTING).is_err() {
        return Reads::GraphAndIndex;
    }
    on_query_stack(|| match spargebra::SparqlParser::new().parse_query(query) {
        Ok(parsed) if text_score_free(crate::query_shape::pattern_of(&parsed)).is_ok() => Reads::Graph,
        _ => Reads::GraphAndIndex,
    })
}

/// Ok when `p` calls the text-score function nowhere (walked as the lanes walk it).
fn text_score_free(p: &GraphPattern) -> Result<(), General> {
    for_each_child(p, &mut text_score_free)?;
    for_each_expression(p, &mut expression_text_score_free)
}

fn expression_text_score_free(e: &Expression) -> Result<(), General> {
    match e {
        Expression::Exists(p) => text_score_free(p),
        Expression::FunctionCall(Function::Custom(f), _) if f.as_str() == TEXT_SCORE => Err(General),
        other => for_each_operand(other, &mut expression_text_score_free),
    }
}

fn read_only() -> ApiError {
    ApiError::new(ErrorKind::ReadOnly, "this SPARQL endpoint is read-only: updates are not accepted; changes go through GraphQL mutations and Kafka events")
}

async fn run(state: AppState, slots: QuerySlots, params: Params, headers: &HeaderMap) -> Result<Response, ApiError> {
    if params.update.is_some() {
        return Err(read_only());
    }
    if params.default_graph_uri.is_some() {
        return Err(ApiError::new(ErrorKind::BadUserInput, "default-graph-uri is not supported: the default graph is the union of all graphs; use FROM or GRAPH in the query"));
    }
    let Some(query) = params.query else {
        return Err(ApiError::bad_input("query", "missing SPARQL query (parameter \"query\")"));
    };
    if query.len() > state.config.max_query_bytes {
        return Err(ApiError::new(
            ErrorKind::TooLarge,
            format!("query is {} bytes; the limit is {}", query.len(), state.config.max_query_bytes),
        ));
    }
    // Before anything parses it: the parser recurses once per level of nesting.
    crate::nesting::check(&query, crate::nesting::Language::Sparql, crate::nesting::MAX_NESTING)?;
    let token = CancellationToken::new();
    let evaluator = SparqlEvaluator::new()
        .with_cancellation_token(token.clone())
        .with_custom_function(NamedNode::new_unchecked(TEXT_SCORE), text_score(state.index.clone()));
    // On a stack of its own: a chain of operators parses into a tree as deep as it is long, and
    // the parser and the tree's drop (when the query is refused) recurse through it.
    let (parsed, lane) = crate::nesting::on_query_stack(|| {
        let parsed = match spargebra::SparqlParser::new().parse_query(&query) {
            Ok(p) => p,
            Err(e) => {
                if SparqlEvaluator::new().parse_update(&query).is_ok() {
                    return Err(read_only());
                }
                return Err(ApiError::new(ErrorKind::BadUserInput, format!("invalid SPARQL query: {e}")));
            }
        };
        crate::nesting::check_algebra(&parsed)?;
        crate::query_shape::check(&parsed)?;
        let lane = Lane::of(&parsed);
        Ok((parsed, lane))
    })?;
    let mut prepared = evaluator.for_query(parsed);
    if let Some(position) = &params.as_of {
        let position = crate::read::Position::parse(position)?;
        let store = state.store.clone();
        let graphs = tokio::task::spawn_blocking(move || crate::read::graphs_as_of(&store, &position))
            .await
            .map_err(ApiError::internal)??;
        let dataset = prepared.dataset_mut();
        dataset.set_available_named_graphs(graphs.iter().cloned().map(Into::into).collect());
        dataset.set_default_graph(graphs.into_iter().map(Into::into).collect());
    } else if prepared.dataset().is_default_dataset() {
        prepared.dataset_mut().set_default_graph_as_union();
    }
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let store = state.store.clone();
    let max_rows = state.config.max_result_rows;
    let timeout = state.config.sparql_timeout;
    let evaluation = async move {
        // The slot is held by the evaluation itself, so a query still winding down after its
        // timeout keeps counting until it has stopped.
        let slot = slots.acquire(lane).await?;
        let work = tokio::task::spawn_blocking(move || -> Result<(Vec<u8>, &'static str), ApiError> {
            let _slot = slot;
            // The optimizer and the evaluator recurse once per level of the algebra.
            crate::nesting::on_query_stack(|| {
                let results = prepared.on_store(&store.oxigraph()).execute().map_err(eval_error)?;
                serialize(results, &accept, max_rows)
            })
        });
        match tokio::time::timeout(timeout, work).await {
            Ok(joined) => joined.map_err(ApiError::internal)?,
            Err(_) => {
                token.cancel();
                tracing::info!("SPARQL query cancelled at its timeout");
                Err(ApiError::new(
                    ErrorKind::Timeout,
                    format!("query exceeded the {timeout:?} SPARQL timeout and was cancelled"),
                ))
            }
        }
    };
    let (body, content_type) = evaluation.instrument(tracing::info_span!("sparql", lane = %lane)).await?;
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response())
}

/// The evidence projection graphs: Data Cube observations, one per recommendation, audience
/// group and country, or partner, year and recommendation — their size follows the coalition's
/// breadth, not the number of events. (The cells behind them, among them the case studies of each
/// recommendation's list, are not: a query reading them takes the general lane.)
const PROJECTION_GRAPHS: [&str; 4] =
    [vocab::DASHBOARD_GRAPH, vocab::EVIDENCE_GRAPH, vocab::ROLLUP_GRAPH, vocab::CASE_STUDIES_GRAPH];

/// The lane a SPARQL query is admitted through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Reads the evidence projections and nothing else (see [`Lane::of`]).
    Projection,
    /// Everything else.
    General,
}

impl Lane {
    /// The lane of `query`, decided from its algebra. A query takes the projection lane when
    /// - every triple and property-path pattern, wherever it stands (OPTIONAL, UNION, MINUS,
    ///   subqueries, `EXISTS`), is inside `GRAPH <g>` with `g` the constant IRI of an evidence
    ///   projection (dashboard, evidence, roll-up, case-study lists), the innermost `GRAPH` deciding — except
    ///   plain triple patterns reading the recommendation catalogue (`?r a coal:Recommendation`,
    ///   `?r coal:recommendationNumber ?n`), which may stand anywhere;
    /// - at least one pattern reads a projection graph (`ASK {}` reads nothing and stays general,
    ///   so that it still tells whether the general slots are free);
    /// - it calls no `coal:textScore` (a full-text search per query string), uses no `SERVICE`
    ///   and no `GRAPH ?g` (any graph), and is not a `DESCRIBE` (which reads descriptions outside
    ///   its pattern);
    /// - it has no `FROM` / `FROM NAMED`: they change which graphs the patterns read, so the
    ///   classification would have to follow them; such queries are rare and stay general.
    pub fn of(query: &Query) -> Lane {
        let (dataset, pattern) = match query {
            Query::Select { dataset, pattern, .. }
            | Query::Construct { dataset, pattern, .. }
            | Query::Ask { dataset, pattern, .. } => (dataset, pattern),
            Query::Describe { .. } => return Lane::General,
        };
        if dataset.is_some() {
            return Lane::General;
        }
        let mut reads_projection = false;
        match projection_only(pattern, false, &mut reads_projection) {
            Ok(()) if reads_projection => Lane::Projection,
            _ => Lane::General,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Projection => "projection",
            Lane::General => "general",
        }
    }
}

impl fmt::Display for Lane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a walk stopped: the query belongs in the general lane.
struct General;

/// Walks `p`, whose patterns match against a projection graph when `in_projection`, noting
/// whether any pattern reads one.
fn projection_only(p: &GraphPattern, in_projection: bool, reads_projection: &mut bool) -> Result<(), General> {
    match p {
        GraphPattern::Graph { name: NamedNodePattern::NamedNode(g), inner } => {
            return projection_only(inner, PROJECTION_GRAPHS.contains(&g.as_str()), reads_projection);
        }
        GraphPattern::Graph { name: NamedNodePattern::Variable(_), .. } | GraphPattern::Service { .. } => {
            return Err(General)
        }
        GraphPattern::Bgp { patterns } => {
            for t in patterns {
                if in_projection {
                    *reads_projection = true;
                } else if !is_catalogue(t) {
                    return Err(General);
                }
            }
        }
        GraphPattern::Path { .. } => {
            if !in_projection {
                return Err(General);
            }
            *reads_projection = true;
        }
        _ => {}
    }
    for_each_child(p, &mut |child| projection_only(child, in_projection, reads_projection))?;
    for_each_expression(p, &mut |e| expression_projection_only(e, in_projection, reads_projection))
}

fn expression_projection_only(e: &Expression, in_projection: bool, reads_projection: &mut bool) -> Result<(), General> {
    match e {
        Expression::Exists(p) => projection_only(p, in_projection, reads_projection),
        Expression::FunctionCall(Function::Custom(f), _) if f.as_str() == TEXT_SCORE => Err(General),
        other => {
            for_each_operand(other, &mut |operand| expression_projection_only(operand, in_projection, reads_projection))
        }
    }
}

/// The recommendation catalogue: `?r a coal:Recommendation` and `?r coal:recommendationNumber ?n`,
/// in any graph. Projection queries start from it (H1 lists every numbered recommendation, with
/// its dashboard observation if it has one), and it is as cheap to read as a projection: one
/// triple per recommendation, found through Oxigraph's predicate-first index, in a numbered list
/// the coalition curates — no GraphQL mutation creates a recommendation (only an event on the
/// log does), so its size follows the catalogue, not the traffic.
fn is_catalogue(t: &TriplePattern) -> bool {
    let NamedNodePattern::NamedNode(predicate) = &t.predicate else { return false };
    match predicate.as_str() {
        coal::RECOMMENDATION_NUMBER => true,
        vocab::RDF_TYPE => matches!(&t.object, TermPattern::NamedNode(class) if class.as_str() == coal::RECOMMENDATION),
        _ => false,
    }
}

/// Admission of SPARQL evaluations: per [`Lane`], a cap on queries evaluating at once, so that
/// expensive queries cannot take every core from the hot path (GraphQL, and projection reads over
/// SPARQL). A query waits for a slot of its own lane only — fairly, first come first served — and
/// past its lane's wait gets 503 `UNAVAILABLE` naming the lane and its limit.
#[derive(Debug, Clone)]
pub struct QuerySlots {
    projection: LaneSlots,
    general: LaneSlots,
}

/// A lane's cap: evaluations at once, and how long a query waits for one to finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaneLimit {
    pub permits: usize,
    pub wait: Duration,
}

#[derive(Debug, Clone)]
struct LaneSlots {
    lane: Lane,
    semaphore: Arc<Semaphore>,
    limit: LaneLimit,
    evaluating: IntGauge,
    admission_wait: Histogram,
    refused: IntCounter,
}

/// A lane's slot, held until the evaluation has stopped.
#[derive(Debug)]
struct Slot {
    _permit: OwnedSemaphorePermit,
    evaluating: IntGauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.evaluating.dec();
    }
}

impl QuerySlots {
    /// The lanes with their limits (at least one permit each), reporting to `metrics`.
    pub fn new(projection: LaneLimit, general: LaneLimit, metrics: &ApiMetrics) -> QuerySlots {
        let lane = |lane: Lane, limit: LaneLimit| {
            let limit = LaneLimit { permits: limit.permits.max(1), ..limit };
            let label = [lane.as_str()];
            metrics.sparql_slots.with_label_values(&label).set(limit.permits as i64);
            LaneSlots {
                lane,
                semaphore: Arc::new(Semaphore::new(limit.permits)),
                limit,
                evaluating: metrics.sparql_evaluating.with_label_values(&label),
                admission_wait: metrics.sparql_admission_wait_seconds.with_label_values(&label),
                refused: metrics.sparql_refused_total.with_label_values(&label),
            }
        };
        QuerySlots { projection: lane(Lane::Projection, projection), general: lane(Lane::General, general) }
    }

    async fn acquire(&self, lane: Lane) -> Result<Slot, ApiError> {
        let slots = match lane {
            Lane::Projection => &self.projection,
            Lane::General => &self.general,
        };
        let started = Instant::now();
        match tokio::time::timeout(slots.limit.wait, slots.semaphore.clone().acquire_owned()).await {
            Ok(Ok(permit)) => {
                slots.admission_wait.observe(started.elapsed().as_secs_f64());
                slots.evaluating.inc();
                Ok(Slot { _permit: permit, evaluating: slots.evaluating.clone() })
            }
            Ok(Err(closed)) => Err(ApiError::internal(closed)),
            Err(_) => {
                slots.refused.inc();
                tracing::info!(lane = %slots.lane, limit = slots.limit.permits, "SPARQL lane full: query refused");
                Err(ApiError::new(
                    ErrorKind::Unavailable,
                    format!(
                        "too many concurrent SPARQL queries in the {} lane: its limit is {} evaluating at once and none finished within {:?}; retry later",
                        slots.lane, slots.limit.permits, slots.limit.wait
                    ),
                ))
            }
        }
    }
}

/// The general lane's default: half the cores, at least one, so that slow queries leave the
/// other half to GraphQL and projection reads.
pub fn default_query_slots() -> usize {
    std::thread::available_parallelism().map(|n| n.get() / 2).unwrap_or(1).max(1)
}

/// The projection lane's default: one per core, at least two. Its queries hold a core for
/// milliseconds, so one per core costs GraphQL little; two keep the lane moving on a small
/// machine while one projection query is unusually slow.
pub fn default_projection_slots() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).max(2)
}

/// How long a general query waits for a slot: a slow query holds its slot until its timeout, so
/// waiting long would only pile up connections behind it.
pub const GENERAL_WAIT: Duration = Duration::from_secs(2);

/// How long a projection query waits for a slot: longer, since the queries ahead of it take
/// milliseconds, so a burst of them drains well within it, and a refusal means the lane is
/// saturated rather than briefly busy.
pub const PROJECTION_WAIT: Duration = Duration::from_secs(5);

/// `coal:textScore(?node, "query")`: the BM25 score of `?node` (an entity, or a quote) for the
/// full-text query, unbound when it does not match. Joins text relevance with graph patterns:
/// `BIND(coal:textScore(?d, "listened") AS ?score) FILTER(BOUND(?score))`.
pub const TEXT_SCORE: &str = "https://w3id.org/coalition/ns#textScore";

/// Most hits one `textScore` query string considers.
const TEXT_SCORE_HITS: usize = 10_000;

type ScoreCache = HashMap<String, Option<HashMap<String, f32>>>;

fn text_score(index: Arc<coalition_search::SearchIndex>) -> impl Fn(&[Term]) -> Option<Term> + Send + Sync + 'static {
    let cache: Mutex<ScoreCache> = Mutex::new(HashMap::new());
    move |args: &[Term]| {
        let node = match args.first()? {
            Term::NamedNode(n) => n.as_str().to_owned(),
            _ => return None,
        };
        let Term::Literal(query) = args.get(1)? else { return None };
        let mut cache = cache.lock().ok()?;
        let scores = cache.entry(query.value().to_owned()).or_insert_with(|| {
            let results =
                index.search(query.value(), &coalition_search::SearchFilter::default(), TEXT_SCORE_HITS, 0).ok()?;
            let mut scores = HashMap::new();
            for hit in results.hits {
                let entry = scores.entry(hit.entity_iri.clone()).or_insert(hit.score);
                *entry = entry.max(hit.score);
                scores.insert(hit.iri, hit.score);
            }
            Some(scores)
        });
        let score = scores.as_ref()?.get(&node)?;
        Some(Literal::from(f64::from(*score)).into())
    }
}

fn eval_error(e: oxigraph::sparql::QueryEvaluationError) -> ApiError {
    let text = e.to_string();
    if text.to_ascii_lowercase().contains("cancel") {
        ApiError::new(ErrorKind::Timeout, format!("query cancelled: {text}"))
    } else if text.to_ascii_lowercase().contains("service") {
        ApiError::new(ErrorKind::Forbidden, format!("SERVICE (federated query) is disabled: {text}"))
    } else {
        ApiError::new(ErrorKind::BadUserInput, format!("query evaluation failed: {text}"))
    }
}

fn pick<T: Copy>(accept: &str, options: &[(&str, T)], default: T) -> T {
    for part in accept.split(',') {
        let media = part.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        if let Some((_, v)) = options.iter().find(|(m, _)| *m == media) {
            return *v;
        }
    }
    default
}

fn serialize(results: QueryResults<'_>, accept: &str, max_rows: usize) -> Result<(Vec<u8>, &'static str), ApiError> {
    let io = |e: std::io::Error| ApiError::internal(format!("cannot serialize results: {e}"));
    match results {
        QueryResults::Graph(triples) => {
            let format = pick(
                accept,
                &[
                    ("text/turtle", RdfFormat::Turtle),
                    ("application/n-triples", RdfFormat::NTriples),
                    ("application/rdf+xml", RdfFormat::RdfXml),
                    ("application/n-quads", RdfFormat::NQuads),
                ],
                RdfFormat::Turtle,
            );
            let mut ser = RdfSerializer::from_format(format).for_writer(Vec::new());
            for (i, t) in triples.enumerate() {
                if i >= max_rows {
                    return Err(too_many(max_rows));
                }
                ser.serialize_triple(&t.map_err(eval_error)?).map_err(io)?;
            }
            Ok((ser.finish().map_err(io)?, format.media_type()))
        }
        other => {
            let format = pick(
                accept,
                &[
                    ("application/sparql-results+json", QueryResultsFormat::Json),
                    ("application/json", QueryResultsFormat::Json),
                    ("application/sparql-results+xml", QueryResultsFormat::Xml),
                    ("application/xml", QueryResultsFormat::Xml),
                    ("text/csv", QueryResultsFormat::Csv),
                    ("text/tab-separated-values", QueryResultsFormat::Tsv),
                ],
                QueryResultsFormat::Json,
            );
            let serializer = QueryResultsSerializer::from_format(format);
            let body = match other {
                QueryResults::Boolean(b) => serializer.serialize_boolean_to_writer(Vec::new(), b).map_err(io)?,
                QueryResults::Solutions(solutions) => {
                    let mut w = serializer
                        .serialize_solutions_to_writer(Vec::new(), solutions.variables().to_vec())
                        .map_err(io)?;
                    for (i, s) in solutions.enumerate() {
                        if i >= max_rows {
                            return Err(too_many(max_rows));
                        }
                        w.serialize(&s.map_err(eval_error)?).map_err(io)?;
                    }
                    w.finish().map_err(io)?
                }
                QueryResults::Graph(_) => unreachable!("handled above"),
            };
            Ok((body, format.media_type()))
        }
    }
}

fn too_many(max_rows: usize) -> ApiError {
    ApiError::new(
        ErrorKind::TooLarge,
        format!("result exceeds the limit of {max_rows} rows; add LIMIT or narrow the query"),
    )
}

#[cfg(test)]
mod slot_tests {
    use super::*;

    fn slots(projection: usize, general: usize) -> (QuerySlots, ApiMetrics) {
        let metrics = ApiMetrics::register(&prometheus::Registry::new()).unwrap();
        let wait = Duration::from_millis(20);
        let slots =
            QuerySlots::new(LaneLimit { permits: projection, wait }, LaneLimit { permits: general, wait }, &metrics);
        (slots, metrics)
    }

    #[tokio::test]
    async fn queries_past_the_cap_wait_then_get_unavailable() {
        let (slots, metrics) = slots(2, 1);
        let first = slots.acquire(Lane::General).await.unwrap();
        let refused = slots.acquire(Lane::General).await.unwrap_err();
        assert_eq!(refused.kind, ErrorKind::Unavailable);
        assert!(refused.message.contains("in the general lane: its limit is 1"), "{}", refused.message);
        assert_eq!(metrics.sparql_refused_total.with_label_values(&["general"]).get(), 1);
        assert_eq!(metrics.sparql_evaluating.with_label_values(&["general"]).get(), 1);
        drop(first);
        assert_eq!(metrics.sparql_evaluating.with_label_values(&["general"]).get(), 0);
        assert!(slots.acquire(Lane::General).await.is_ok());

        let held = [slots.acquire(Lane::Projection).await.unwrap(), slots.acquire(Lane::Projection).await.unwrap()];
        let refused = slots.acquire(Lane::Projection).await.unwrap_err();
        assert!(refused.message.contains("in the projection lane: its limit is 2"), "{}", refused.message);
        drop(held);
    }

    /// A slow general query holding every general slot does not delay a projection query, and
    /// projection queries holding every projection slot do not delay a general one.
    #[tokio::test]
    async fn lanes_do_not_wait_for_each_other() {
        let (slots, metrics) = slots(2, 1);
        let general = slots.acquire(Lane::General).await.unwrap();
        let projection = slots.acquire(Lane::Projection).await.expect("admitted beside a held general slot");
        let second = slots.acquire(Lane::Projection).await.expect("admitted beside a held general slot");
        assert_eq!(metrics.sparql_evaluating.with_label_values(&["projection"]).get(), 2);
        drop(general);
        assert!(slots.acquire(Lane::General).await.is_ok(), "admitted beside full projection slots");
        assert_eq!(metrics.sparql_refused_total.with_label_values(&["projection"]).get(), 0);
        assert_eq!(metrics.sparql_admission_wait_seconds.with_label_values(&["projection"]).get_sample_count(), 2);
        drop((projection, second));
    }
}

#[cfg(test)]
mod lane_tests {
    use super::*;

    const PREFIXES: &str = "PREFIX coal: <https://w3id.org/coalition/ns#> \
        PREFIX dash: <https://w3id.org/coalition/graph/projection/dashboard> \
        PREFIX ev: <https://w3id.org/coalition/graph/projection/evidence> \
        PREFIX roll: <https://w3id.org/coalition/graph/projection/rollup> ";

    fn lane(q: &str) -> Lane {
        let query = spargebra::SparqlParser::new()
            .parse_query(&format!("{PREFIXES}{q}"))
            .unwrap_or_else(|e| panic!("{q}: {e}"));
        Lane::of(&query)
    }

    #[test]
    fn queries_reading_only_projections_take_the_projection_lane() {
        for q in [
            "SELECT * WHERE { GRAPH dash: { ?o coal:refRecommendation ?r } }",
            // OPTIONAL, UNION, MINUS, EXISTS, property paths and a subquery, all inside projections.
            "SELECT ?o WHERE { GRAPH ev: { ?o coal:dialogueCount ?d OPTIONAL { ?o coal:peopleReached ?r } \
               { ?o a ?t } UNION { ?o coal:refPartner/coal:refPeriod ?y } MINUS { ?o coal:statisticCount 0 } \
               FILTER EXISTS { ?o ^coal:refRecommendation* ?q } } \
             { SELECT ?o WHERE { GRAPH roll: { ?o coal:activityCount ?n } } LIMIT 5 } }",
            "SELECT * WHERE { GRAPH dash: { ?o ?p ?v } FILTER NOT EXISTS { GRAPH roll: { ?o ?p ?v } } }",
            "SELECT ?r (SUM(?n) AS ?total) WHERE { GRAPH roll: { ?o coal:refRecommendation ?r ; \
               coal:activityCount ?n } } GROUP BY ?r ORDER BY DESC(?total)",
            "ASK { GRAPH ev: { ?o coal:dialogueCount ?d } BIND(xsd:integer(?d) AS ?i) }"
                .replace("xsd:integer", "<http://www.w3.org/2001/XMLSchema#integer>")
                .as_str(),
            "CONSTRUCT { ?o ?p ?v } WHERE { GRAPH dash: { ?o ?p ?v } }",
            "SELECT ?r ?n WHERE { GRAPH <https://w3id.org/coalition/graph/projection/case-studies> \
               { ?o coal:refRecommendation ?r ; coal:caseStudyCount ?n } }",
            // The recommendation catalogue beside a projection.
            "SELECT * WHERE { ?r a coal:Recommendation ; coal:recommendationNumber ?n \
               OPTIONAL { GRAPH dash: { ?o coal:refRecommendation ?r } } }",
        ] {
            assert_eq!(lane(q), Lane::Projection, "{q}");
        }
    }

    #[test]
    fn anything_else_takes_the_general_lane() {
        for q in [
            // One pattern outside the projections, wherever it stands.
            "SELECT * WHERE { GRAPH dash: { ?o ?p ?v } ?o ?q ?w }",
            "SELECT * WHERE { GRAPH dash: { ?o ?p ?v } OPTIONAL { ?o ?q ?w } }",
            "SELECT * WHERE { { GRAPH dash: { ?o ?p ?v } } UNION { ?o ?q ?w } }",
            "SELECT * WHERE { GRAPH dash: { ?o ?p ?v } MINUS { ?o ?q ?w } }",
            "SELECT * WHERE { GRAPH dash: { ?o ?p ?v } FILTER EXISTS { ?o ?q ?w } }",
            "SELECT * WHERE { GRAPH dash: { ?o ?p ?v } BIND(EXISTS { ?o ?q ?w } AS ?b) }",
            "SELECT * WHERE { GRAPH dash: { ?o ?p ?v } { SELECT ?o WHERE { ?o ?q ?w } LIMIT 1 } }",
            "SELECT * WHERE { GRAPH dash: { ?o ?p ?v } ?o coal:refPartner* ?w }",
            // Another graph, or a projection graph with another inside it.
            "SELECT * WHERE { GRAPH dash: { ?o ?p ?v } GRAPH <https://w3id.org/coalition/graph/provenance> { ?o ?q ?w } }",
            "SELECT * WHERE { GRAPH <https://w3id.org/coalition/graph/projection-cells> { ?o ?p ?v } }",
            "SELECT * WHERE { GRAPH dash: { GRAPH <https://w3id.org/coalition/graph/offsets> { ?o ?p ?v } } }",
            // Any graph.
            "SELECT * WHERE { GRAPH ?g { ?o ?p ?v } }",
            "SELECT * WHERE { GRAPH dash: { ?o ?p ?v } GRAPH ?g { ?o coal:refPartner ?w } }",
            // Full-text search, wherever it is called.
            "SELECT * WHERE { GRAPH dash: { ?o coal:refRecommendation ?r } BIND(coal:textScore(?r, \"x\") AS ?s) }",
            "SELECT * WHERE { GRAPH dash: { ?o coal:refRecommendation ?r } FILTER(coal:textScore(?r, \"x\") > 0) }",
            "SELECT * WHERE { GRAPH dash: { ?o coal:refRecommendation ?r } } ORDER BY coal:textScore(?r, \"x\")",
            "SELECT (MAX(coal:textScore(?r, \"x\")) AS ?m) WHERE { GRAPH dash: { ?o coal:refRecommendation ?r } }",
            "SELECT * WHERE { GRAPH dash: { ?o coal:refRecommendation ?r \
               FILTER EXISTS { GRAPH ev: { ?e ?p ?v FILTER(coal:textScore(?r, \"x\") > 1) } } } }",
            // Federation, datasets, DESCRIBE.
            "SELECT * WHERE { GRAPH dash: { ?o ?p ?v } SERVICE <http://example.org/sparql> { GRAPH dash: { ?o ?p ?v } } }",
            "SELECT * FROM dash: WHERE { GRAPH dash: { ?o ?p ?v } }",
            "SELECT * FROM NAMED dash: WHERE { GRAPH dash: { ?o ?p ?v } }",
            "DESCRIBE ?o WHERE { GRAPH dash: { ?o ?p ?v } }",
            // Reads no projection at all.
            "ASK {}",
            "SELECT * WHERE { VALUES ?x { 1 2 } }",
            "SELECT * WHERE { ?r a coal:Recommendation ; coal:recommendationNumber ?n }",
            // Only the recommendation catalogue is read outside projections.
            "SELECT * WHERE { ?r a coal:Activity OPTIONAL { GRAPH dash: { ?o coal:refRecommendation ?r } } }",
            "SELECT * WHERE { ?r a ?class OPTIONAL { GRAPH dash: { ?o coal:refRecommendation ?r } } }",
            "SELECT * WHERE { ?r coal:recommendationNumber+ ?n OPTIONAL { GRAPH dash: { ?o coal:refRecommendation ?r } } }",
        ] {
            assert_eq!(lane(q), Lane::General, "{q}");
        }
    }

    #[test]
    fn the_hot_path_files_take_the_projection_lane() {
        let file = |name: &str| {
            let path = format!("{}/../../queries/{name}.sparql", env!("CARGO_MANIFEST_DIR"));
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            Lane::of(&spargebra::SparqlParser::new().parse_query(&text).unwrap())
        };
        for name in ["h1-recommendation-dashboard", "h2-evidence-group-country", "h4-partner-rollup"] {
            assert_eq!(file(name), Lane::Projection, "{name}");
        }
        for name in [
            "h3-recommendation-case-studies-outcomes",
            "h5-search-to-recommendations",
            "raw/h1-recommendation-dashboard",
            "raw/h2-evidence-group-country",
            "raw/h3-recommendation-case-studies-outcomes",
            "raw/h4-partner-rollup",
        ] {
            assert_eq!(file(name), Lane::General, "{name}");
        }
    }
}

#[cfg(test)]
mod reads_tests {
    use super::*;

    #[test]
    fn a_query_reads_the_index_only_when_it_calls_the_text_score_function() {
        let reads = |q: &str| reads(q, 1 << 20);
        for q in [
            include_str!("../../../queries/h1-recommendation-dashboard.sparql"),
            include_str!("../../../queries/h3-recommendation-case-studies-outcomes.sparql"),
            "SELECT ?s WHERE { ?s ?p \"textScore\" }",
        ] {
            assert_eq!(reads(q), Reads::Graph, "{q}");
        }
        for q in [
            include_str!("../../../queries/h5-search-to-recommendations.sparql"),
            // However its IRI is written: a prefix holding part of it, an escape, a base IRI.
            "PREFIX c: <https://w3id.org/coalition/ns#textSc> SELECT (c:ore(\"x\", ?s) AS ?v) WHERE { ?s ?p ?o }",
            "SELECT ?s WHERE { ?s ?p ?o FILTER(<https://w3id.org/coalition/ns#text\\u0053core>(\"x\", ?s) > 0) }",
            "BASE <https://w3id.org/coalition/ns> SELECT ?s WHERE { ?s ?p ?o } ORDER BY DESC(<#textScore>(\"x\", ?s))",
            // What cannot be parsed here is not known not to search.
            "SELECT nonsense",
            &format!("SELECT * WHERE {}", "{".repeat(1000)),
        ] {
            assert_eq!(reads(q), Reads::GraphAndIndex, "{q}");
        }
        assert_eq!(super::reads("SELECT ?s WHERE { ?s ?p ?o }", 10), Reads::GraphAndIndex, "past the size limit");
    }

    #[test]
    fn classifications_are_kept_by_query_text() {
        let classified = Classified::new();
        let graph = "SELECT ?s WHERE { ?s ?p ?o }";
        let search = include_str!("../../../queries/h5-search-to-recommendations.sparql");
        for _ in 0..2 {
            assert_eq!(classified.reads(graph, 1 << 20), Reads::Graph);
            assert_eq!(classified.reads(search, 1 << 20), Reads::GraphAndIndex);
        }
        assert_eq!(classified.lock().len(), 2);
        let long = format!("SELECT ?s WHERE {{ ?s ?p ?o }} # {}", "x".repeat(CLASSIFIED_MAX_BYTES));
        assert_eq!(classified.reads(&long, 1 << 20), Reads::Graph);
        assert_eq!(classified.lock().len(), 2, "a long query is classified, not kept");
    }
}
