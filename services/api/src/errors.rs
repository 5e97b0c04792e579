//! One table from error kind to GraphQL `extensions.code` and HTTP status, so clients see the
//! same codes on every endpoint.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    BadUserInput,
    NotFound,
    Unauthenticated,
    Forbidden,
    ReadOnly,
    Timeout,
    TooLarge,
    RateLimited,
    Unavailable,
    /// Asked as of a log position whose facts the store no longer keeps.
    HistoryUnavailable,
    Internal,
}

impl ErrorKind {
    /// (GraphQL extensions.code, HTTP status)
    pub fn codes(self) -> (&'static str, StatusCode) {
        match self {
            ErrorKind::BadUserInput => ("BAD_USER_INPUT", StatusCode::BAD_REQUEST),
            ErrorKind::NotFound => ("NOT_FOUND", StatusCode::NOT_FOUND),
            ErrorKind::Unauthenticated => ("UNAUTHENTICATED", StatusCode::UNAUTHORIZED),
            ErrorKind::Forbidden => ("FORBIDDEN", StatusCode::FORBIDDEN),
            ErrorKind::ReadOnly => ("READ_ONLY", StatusCode::FORBIDDEN),
            ErrorKind::Timeout => ("TIMEOUT", StatusCode::SERVICE_UNAVAILABLE),
            ErrorKind::TooLarge => ("LIMIT_EXCEEDED", StatusCode::PAYLOAD_TOO_LARGE),
            ErrorKind::RateLimited => ("RATE_LIMITED", StatusCode::TOO_MANY_REQUESTS),
            ErrorKind::Unavailable => ("UNAVAILABLE", StatusCode::SERVICE_UNAVAILABLE),
            ErrorKind::HistoryUnavailable => ("HISTORY_UNAVAILABLE", StatusCode::GONE),
            ErrorKind::Internal => ("INTERNAL", StatusCode::INTERNAL_SERVER_ERROR),
        }
    }
}

/// A field-level validation error.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// An API error. Deliberately not `Display`: it converts into a GraphQL error only through the
/// `From` impl below, which attaches the code, so no resolver can drop it by accident.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
    pub fields: Vec<FieldError>,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError { kind, message: message.into(), fields: Vec::new() }
    }

    pub fn bad_input(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        ApiError {
            kind: ErrorKind::BadUserInput,
            message: format!("invalid input: field \"{field}\": {message}"),
            fields: vec![FieldError { field: field.to_owned(), message }],
        }
    }

    pub fn internal(message: impl std::fmt::Display) -> Self {
        ApiError::new(ErrorKind::Internal, message.to_string())
    }
}

impl From<coalition_store::StoreError> for ApiError {
    fn from(e: coalition_store::StoreError) -> Self {
        match e {
            coalition_store::StoreError::Syntax(_) => ApiError::new(ErrorKind::BadUserInput, e.to_string()),
            other => ApiError::internal(other),
        }
    }
}

impl From<coalition_search::SearchError> for ApiError {
    fn from(e: coalition_search::SearchError) -> Self {
        match e {
            coalition_search::SearchError::Query { .. } => ApiError::new(ErrorKind::BadUserInput, e.to_string()),
            coalition_search::SearchError::QueryTooLarge(_) => ApiError::new(ErrorKind::TooLarge, e.to_string()),
            other => ApiError::internal(other),
        }
    }
}

impl From<coalition_ingest::IngestError> for ApiError {
    fn from(e: coalition_ingest::IngestError) -> Self {
        match e {
            coalition_ingest::IngestError::ApplyTimeout(_) => ApiError::new(ErrorKind::Timeout, e.to_string()),
            coalition_ingest::IngestError::Delivery { .. } | coalition_ingest::IngestError::Kafka(_) => {
                ApiError::new(ErrorKind::Unavailable, e.to_string())
            }
            other => ApiError::internal(other),
        }
    }
}

impl From<ApiError> for async_graphql::Error {
    fn from(e: ApiError) -> Self {
        let (code, status) = e.kind.codes();
        let fields = e.fields.clone();
        use async_graphql::ErrorExtensions;
        async_graphql::Error::new(e.message).extend_with(|_, ext| {
            ext.set("code", code);
            ext.set("status", status.as_u16());
            if !fields.is_empty() {
                let list: Vec<async_graphql::Value> = fields
                    .iter()
                    .map(|f| {
                        let mut m = async_graphql::indexmap::IndexMap::new();
                        m.insert(async_graphql::Name::new("field"), async_graphql::Value::from(f.field.clone()));
                        m.insert(async_graphql::Name::new("message"), async_graphql::Value::from(f.message.clone()));
                        async_graphql::Value::Object(m)
                    })
                    .collect();
                ext.set("fieldErrors", async_graphql::Value::List(list));
            }
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (code, status) = self.kind.codes();
        let body =
            serde_json::json!({ "error": { "code": code, "message": self.message, "fieldErrors": self.fields } });
        let mut response = (status, axum::Json(body)).into_response();
        if self.kind == ErrorKind::Unauthenticated {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"coalition\""),
            );
        }
        response
    }
}
