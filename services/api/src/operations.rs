//! Operations the API can start on the running server, implemented by the binary (which owns the
//! materializer and the data directory): today, rebuilding the stores from the log while reads go on.

use crate::errors::ApiError;
use async_graphql::SimpleObject;

/// Where a rebuild stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, SimpleObject, serde::Serialize)]
pub struct RebuildStatus {
    /// `idle`, `replaying` (fresh stores filling from the log beside the live ones), `swapping`
    /// (the live materializer paused while the fresh stores catch up to it), `done` or `failed`.
    pub state: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// Records applied to the fresh stores so far.
    pub records: i64,
    /// The store generation being built (`done`: now serving).
    pub generation: Option<String>,
    /// Why it failed, when it did.
    pub message: Option<String>,
}

pub trait Operations: Send + Sync {
    /// Starts a rebuild: the log replays into fresh stores beside the live ones, which swap in
    /// once caught up; reads are served throughout. Refused while one is running.
    fn start_rebuild(&self) -> Result<RebuildStatus, ApiError>;

    fn rebuild_status(&self) -> RebuildStatus;
}
