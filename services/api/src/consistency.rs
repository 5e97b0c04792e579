//! Read-your-writes. Every mutation receipt carries a consistency token naming where its event
//! sits in the log (`topic@partition:offset`). A request that sends it back in the
//! `Coalition-Consistency` header (several tokens may be comma-separated) is answered only once
//! both the graph and the index have applied those events, or gets a `TIMEOUT` error after a
//! bounded wait.

use crate::errors::{ApiError, ErrorKind};
use crate::AppState;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The request header carrying consistency tokens.
pub const HEADER: &str = "coalition-consistency";

/// A position in the log that a reader wants to see applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsistencyToken {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

impl ConsistencyToken {
    pub fn encode(&self) -> String {
        format!("{}@{}:{}", self.topic, self.partition, self.offset)
    }

    pub fn parse(token: &str) -> Result<Self, ApiError> {
        let bad = || {
            ApiError::new(
                ErrorKind::BadUserInput,
                format!("invalid consistency token \"{token}\": expected topic@partition:offset as returned in a mutation receipt"),
            )
        };
        let (topic, rest) = token.trim().rsplit_once('@').ok_or_else(bad)?;
        let (partition, offset) = rest.split_once(':').ok_or_else(bad)?;
        if topic.is_empty() {
            return Err(bad());
        }
        Ok(ConsistencyToken {
            topic: topic.to_owned(),
            partition: partition.parse().map_err(|_| bad())?,
            offset: offset.parse().map_err(|_| bad())?,
        })
    }
}

/// Middleware: waits for the tokens in the request's header to be applied.
pub async fn wait_for_tokens(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(header) = request.headers().get(HEADER) else {
        return next.run(request).await;
    };
    let tokens: Result<Vec<ConsistencyToken>, ApiError> = match header.to_str() {
        Ok(text) => text.split(',').filter(|t| !t.trim().is_empty()).map(ConsistencyToken::parse).collect(),
        Err(_) => Err(ApiError::new(ErrorKind::BadUserInput, "the Coalition-Consistency header is not text")),
    };
    let tokens = match tokens {
        Ok(t) => t,
        Err(e) => return refuse(request, e).await,
    };
    let timeout = state.config.consistency_timeout;
    let mut watermark = state.watermark.clone();
    for t in &tokens {
        if coalition_ingest::wait_applied(&mut watermark, &t.topic, t.partition, t.offset, timeout).await.is_err() {
            let error = ApiError::new(
                ErrorKind::Timeout,
                format!(
                    "graph and index have not applied {} within {:?}; retry, or read without the Coalition-Consistency header",
                    t.encode(),
                    timeout
                ),
            );
            return refuse(request, error).await;
        }
    }
    next.run(request).await
}

/// Answers with `error` after reading the request body, so the connection stays usable.
async fn refuse(request: Request, error: ApiError) -> Response {
    let _ = axum::body::to_bytes(request.into_body(), 1024 * 1024).await;
    error.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_garbage() {
        let t = ConsistencyToken { topic: "coalition.activities.v1".into(), partition: 2, offset: 15 };
        assert_eq!(t.encode(), "coalition.activities.v1@2:15");
        assert_eq!(ConsistencyToken::parse(&t.encode()).unwrap(), t);
        for bad in ["", "x", "topic@1", "topic@a:1", "@1:2", "t@1:x"] {
            assert!(ConsistencyToken::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
