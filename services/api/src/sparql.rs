//! The read-only SPARQL 1.1 Protocol endpoint: GET `?query=`, POST form, POST
//! `application/sparql-query`. Results by content negotiation (JSON, XML, CSV, TSV; Turtle,
//! N-Triples, RDF/XML for graphs), serialized by Oxigraph's own serializers. The default graph
//! is the union of all named graphs. Updates are refused with 403; each query runs on a blocking
//! thread under a timeout that cancels its evaluation, and at most [`QuerySlots`] queries evaluate
//! at once. Reads need a token when reads are not public.

use crate::auth::Principal;
use crate::errors::{ApiError, ErrorKind};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use oxigraph::io::{RdfFormat, RdfSerializer};
use oxigraph::model::{Literal, NamedNode, Term};
use oxigraph::sparql::results::{QueryResultsFormat, QueryResultsSerializer};
use oxigraph::sparql::{CancellationToken, QueryResults, SparqlEvaluator};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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
    respond(state, slots, params, &headers).await
}

pub async fn post(
    State(state): State<AppState>,
    Extension(slots): Extension<QuerySlots>,
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
    respond(state, slots, params, &headers).await
}

async fn respond(state: AppState, slots: QuerySlots, params: Params, headers: &HeaderMap) -> Response {
    match run(state, slots, params, headers).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
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
    let parsed = match spargebra::SparqlParser::new().parse_query(&query) {
        Ok(p) => p,
        Err(e) => {
            if SparqlEvaluator::new().parse_update(&query).is_ok() {
                return Err(read_only());
            }
            return Err(ApiError::new(ErrorKind::BadUserInput, format!("invalid SPARQL query: {e}")));
        }
    };
    crate::query_shape::check(&parsed)?;
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
    // The slot is held by the evaluation itself, so a query still winding down after its
    // timeout keeps counting until it has stopped.
    let slot = slots.acquire().await?;
    let work = tokio::task::spawn_blocking(move || -> Result<(Vec<u8>, &'static str), ApiError> {
        let _slot = slot;
        let results = prepared.on_store(&store.oxigraph()).execute().map_err(eval_error)?;
        serialize(results, &accept, max_rows)
    });
    let (body, content_type) = match tokio::time::timeout(state.config.sparql_timeout, work).await {
        Ok(joined) => joined.map_err(ApiError::internal)??,
        Err(_) => {
            token.cancel();
            return Err(ApiError::new(
                ErrorKind::Timeout,
                format!("query exceeded the {:?} SPARQL timeout and was cancelled", state.config.sparql_timeout),
            ));
        }
    };
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response())
}

/// A cap on SPARQL queries evaluating at once, so that expensive queries cannot take every core
/// from the hot path (GraphQL). A query waits briefly for a slot, then gets 503 `UNAVAILABLE`.
#[derive(Debug, Clone)]
pub struct QuerySlots {
    slots: Arc<Semaphore>,
    limit: usize,
    wait: Duration,
}

impl QuerySlots {
    pub fn new(limit: usize, wait: Duration) -> QuerySlots {
        let limit = limit.max(1);
        QuerySlots { slots: Arc::new(Semaphore::new(limit)), limit, wait }
    }

    async fn acquire(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        match tokio::time::timeout(self.wait, self.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(closed)) => Err(ApiError::internal(closed)),
            Err(_) => Err(ApiError::new(
                ErrorKind::Unavailable,
                format!("too many concurrent SPARQL queries: the limit is {}; retry later", self.limit),
            )),
        }
    }
}

/// The default cap: half the cores, at least one.
pub fn default_query_slots() -> usize {
    std::thread::available_parallelism().map(|n| n.get() / 2).unwrap_or(1).max(1)
}

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

    #[tokio::test]
    async fn queries_past_the_cap_wait_then_get_unavailable() {
        let slots = QuerySlots::new(1, Duration::from_millis(20));
        let first = slots.acquire().await.unwrap();
        let refused = slots.acquire().await.unwrap_err();
        assert_eq!(refused.kind, ErrorKind::Unavailable);
        assert!(refused.message.contains("the limit is 1"), "{}", refused.message);
        drop(first);
        assert!(slots.acquire().await.is_ok());
    }
}
