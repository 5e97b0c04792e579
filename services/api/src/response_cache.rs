//! Answers to read requests, kept until the data changes.
//!
//! Why: the hot-path questions (the recommendation dashboard, evidence by group and country, a
//! partner's roll-up) are asked again and again, by many people at once, of data that changes
//! only when the materializer commits. Each answer costs milliseconds of a core; sixteen callers on
//! two cores queue behind each other. An answer computed since the last commit is the answer.
//!
//! Guarantee: an answer is served from here only while the epochs of what it reads — the store's
//! ([`coalition_store::GraphStore::epoch`]) and, for answers that search, the index's
//! ([`coalition_search::SearchIndex::epoch`]) — are the ones read before it was computed, and it
//! was kept only if they were still the same after: it was computed from one committed state,
//! and nothing it reads was committed since. (The index commits each batch apart from the store;
//! an answer that does not search outlives those commits. [`Reads`] says which an answer reads.) Both epochs move
//! before the materializer publishes a new watermark, so a request that waited for its consistency
//! token never gets an answer from before its write. Only successful answers are kept, and the
//! kept answers are bounded in bytes; a new state drops them all. Callers asking the same while it
//! is computed wait for that computation and share its answer, whatever it is (a timeout too):
//! one evaluation per question and state, however many ask. A request with `Cache-Control:
//! no-cache` is computed afresh.
//!
//! Under ingest the state moves many times a second, and each move would make the next callers of
//! every question wait for its evaluation. A request that accepts a [`Freshness::Recent`] answer —
//! one without a consistency token or a log position (`as-of`) — is answered at once with the
//! question's latest answer from an earlier state (kept in it, or computed across a commit) while
//! the question is being computed, if the state that answer was computed from was last seen
//! current within the cache's staleness bound ([`DEFAULT_MAX_STALE_MS`]); such requests start no
//! second computation of a question already being computed for any state. A request that waited
//! for its consistency token, or asks as of a position, gets the current state's answer, as
//! before.
//!
//! How old such an answer is: a state is *seen current* when a request reads the epochs and finds
//! it (the time taken just before reading them, so the state was current at least until then).
//! An answer kept in a state was that state's answer until the state was last seen; an answer
//! computed across a commit read that state or later ones, each current at least until the
//! state it began in was last seen (or until it began, if later). Staleness counts from there:
//! nothing in an answer served `stale` was superseded more than the bound before it is served. A
//! state nobody asked about for a while counts from the last request that saw it, so its answers
//! age out sooner, never later.
//!
//! Answers are kept gzip-compressed too, when that is smaller (a case-study page of ~116 KB
//! becomes ~10 KB): a request accepting `gzip` (`Accept-Encoding`) gets those bytes, compressed
//! once per computed answer instead of once per request; fewer bytes to hand from the server to
//! a client sharing its cores. Both count in the bound.

use axum::body::{to_bytes, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

/// The response header saying where an answer came from ([`Outcome`]): `hit`, `miss`, `bypass`,
/// `shared` or `stale`.
pub const HEADER: &str = "coalition-cache";

/// The default bound on kept answers, in MiB.
pub const DEFAULT_MAX_MIB: usize = 64;

/// The default staleness bound, in milliseconds: how long after its state was last seen current
/// an answer of an earlier state may still be served ([`Freshness::Recent`]).
pub const DEFAULT_MAX_STALE_MS: u64 = 250;

/// How recent an answer a request accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// One computed for this request (`Cache-Control: no-cache` or `no-store`); nothing is kept.
    Fresh,
    /// One of the current state: kept since the last commit, or computed now.
    Current,
    /// Also the latest one of an earlier state while the question is being computed, if its
    /// state was seen current within the cache's staleness bound.
    Recent,
}

/// What a request accepts: how recent an answer, and whether gzip-compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepts {
    pub freshness: Freshness,
    pub gzip: bool,
}

impl Accepts {
    /// [`Freshness::of`] the request, and whether its `Accept-Encoding` takes gzip.
    pub fn of(headers: &HeaderMap, as_of: bool) -> Accepts {
        Accepts { freshness: Freshness::of(headers, as_of), gzip: accepts_gzip(headers) }
    }
}

#[cfg(test)]
impl From<Freshness> for Accepts {
    /// Uncompressed answers of that freshness.
    fn from(freshness: Freshness) -> Accepts {
        Accepts { freshness, gzip: false }
    }
}

/// Whether `Accept-Encoding` lists `gzip` (or `*`) with a weight above zero (RFC 9110 §12.5.3).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    list_items(headers, header::ACCEPT_ENCODING).any(|coding| {
        let mut params = coding.split(';').map(str::trim);
        let name = params.next().unwrap_or_default();
        let weight = params
            .filter_map(|p| p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")))
            .find_map(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0);
        (name.eq_ignore_ascii_case("gzip") || name == "*") && weight > 0.0
    })
}

/// The items of a comma-separated list header (every occurrence of `name`), trimmed.
fn list_items(headers: &HeaderMap, name: header::HeaderName) -> impl Iterator<Item = &str> {
    headers.get_all(name).into_iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).map(str::trim)
}

/// Answers shorter than this are kept uncompressed only (their bytes are a packet or two).
const GZIP_MIN_BYTES: usize = 1024;

impl Freshness {
    /// What a request accepts: [`Freshness::Fresh`] with `Cache-Control: no-cache` or
    /// `no-store`; [`Freshness::Current`] with a consistency token (it waited for its writes) or
    /// when it asks `as_of` a log position; otherwise [`Freshness::Recent`].
    pub fn of(headers: &HeaderMap, as_of: bool) -> Freshness {
        if wants_fresh(headers) {
            Freshness::Fresh
        } else if as_of || headers.contains_key(crate::consistency::HEADER) {
            Freshness::Current
        } else {
            Freshness::Recent
        }
    }
}

/// One state of what readers can see: the store's and the index's epochs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Epoch {
    pub graph: u64,
    pub index: u64,
}

impl Epoch {
    fn is_after(self, other: Epoch) -> bool {
        self != other && self.graph >= other.graph && self.index >= other.index
    }
}

/// What an answer is read from, and so which commits change it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reads {
    /// The graph store alone.
    Graph,
    /// The graph store and the search index.
    GraphAndIndex,
}

impl Reads {
    /// The part of `epoch` an answer reading this depends on.
    fn of(self, epoch: Epoch) -> Epoch {
        match self {
            Reads::Graph => Epoch { graph: epoch.graph, index: 0 },
            Reads::GraphAndIndex => epoch,
        }
    }

    fn part(self) -> usize {
        match self {
            Reads::Graph => 0,
            Reads::GraphAndIndex => 1,
        }
    }
}

/// What identifies a request's answer: the endpoint, what the answer reads, and everything of
/// the request the answer depends on, as bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    endpoint: &'static str,
    reads: Reads,
    request: Vec<u8>,
}

impl Key {
    /// The key of a request to `endpoint` whose answer reads `reads` and depends on `parts` (each
    /// length-prefixed, so that no two different lists of parts give the same key).
    pub fn new(endpoint: &'static str, reads: Reads, parts: &[&[u8]]) -> Key {
        let mut request = Vec::with_capacity(parts.iter().map(|p| p.len() + 8).sum());
        for part in parts {
            request.extend_from_slice(&(part.len() as u64).to_le_bytes());
            request.extend_from_slice(part);
        }
        Key { endpoint, reads, request }
    }
}

/// Where an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Kept from an earlier computation, ready when asked.
    Hit,
    /// Computed for this caller, and kept.
    Miss,
    /// Computed for this caller, not kept.
    Bypass,
    /// Computed for another caller asking at the same time, waited for (kept or not: a failure,
    /// say, is shared and not kept).
    Shared,
    /// Kept in an earlier state, served while the question is being computed.
    Stale,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::Bypass => "bypass",
            Outcome::Shared => "shared",
            Outcome::Stale => "stale",
        }
    }
}

/// A computed answer, as the callers that share it get it.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    /// The body gzip-compressed, for a success that may be kept and is smaller so.
    gzip: Option<Bytes>,
    /// A success that may be kept (not marked [`not_kept`]).
    keepable: bool,
}

impl Answer {
    async fn of(response: Response) -> Answer {
        let keepable = response.status() == StatusCode::OK && response.extensions().get::<NotKept>().is_none();
        let (mut parts, body) = response.into_parts();
        // The length is the served body's, set when it is served.
        parts.headers.remove(header::CONTENT_LENGTH);
        match to_bytes(body, usize::MAX).await {
            Ok(body) => {
                let gzip = keepable.then(|| gzip(&body)).flatten();
                Answer { status: parts.status, headers: parts.headers, body, gzip, keepable }
            }
            Err(e) => {
                let (parts, body) = crate::errors::ApiError::internal(e).into_response().into_parts();
                let body = to_bytes(body, usize::MAX).await.unwrap_or_default();
                Answer { status: parts.status, headers: parts.headers, body, gzip: None, keepable: false }
            }
        }
    }

    /// The answer as a response, gzip-compressed if the caller takes it and it is kept so.
    fn response(&self, gzip: bool) -> Response {
        let body = match (&self.gzip, gzip) {
            (Some(compressed), true) => compressed.clone(),
            _ => self.body.clone(),
        };
        let mut response = (self.status, body).into_response();
        let mut headers = self.headers.clone();
        if self.gzip.is_some() {
            headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
            if gzip {
                headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            }
        }
        *response.headers_mut() = headers;
        response
    }

    /// Bytes kept for it: the body, and its compressed form.
    fn bytes(&self) -> usize {
        self.body.len() + self.gzip.as_ref().map_or(0, Bytes::len)
    }
}

/// `body` gzip-compressed at the fastest level, if it is long enough to gain and gains.
fn gzip(body: &[u8]) -> Option<Bytes> {
    use std::io::Write as _;
    if body.len() < GZIP_MIN_BYTES {
        return None;
    }
    let mut encoder = flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 4), flate2::Compression::fast());
    encoder.write_all(body).ok()?;
    let compressed = encoder.finish().ok()?;
    (compressed.len() < body.len()).then(|| Bytes::from(compressed))
}

/// A question's answer in one state: computed once, by the first caller to claim it.
#[derive(Debug, Default)]
struct SlotState {
    computed: OnceCell<Computed>,
    /// A caller has begun computing the answer, or waiting for it.
    claimed: AtomicBool,
}

type Slot = Arc<SlotState>;

/// An answer, whether it is kept, and until when what it says was seen current: from when its
/// computation began, later once the state it began in is left and known to have lasted.
#[derive(Debug, Clone)]
struct Computed {
    answer: Arc<Answer>,
    kept: bool,
    current: Instant,
}

impl Computed {
    /// Whether it was seen current at most `max_stale` ago.
    fn within(&self, max_stale: Duration) -> bool {
        self.current.elapsed() <= max_stale
    }

    /// The same answer, seen current until `seen` if that is later.
    fn seen_until(self, seen: Option<Instant>) -> Computed {
        let current = seen.map_or(self.current, |seen| seen.max(self.current));
        Computed { current, ..self }
    }
}

/// Answers kept for the current [`Epoch`], and each question's latest answer of an earlier state
/// (for [`Freshness::Recent`] callers); at most `max_bytes` of them together.
#[derive(Debug)]
pub struct ResponseCache {
    max_bytes: usize,
    max_stale: Duration,
    inner: Mutex<Inner>,
}

/// One [`Part`] per kind of [`Reads`], each following the epochs its answers depend on.
#[derive(Debug)]
struct Inner {
    parts: [Part; 2],
}

#[derive(Debug)]
struct Part {
    epoch: Epoch,
    slots: HashMap<Key, Slot>,
    /// Answers of states before `epoch`, the latest of each question, seen current within the
    /// staleness bound when the state moved.
    before: HashMap<Key, Computed>,
    /// Bytes of the answers in `slots` and `before`.
    bytes: usize,
    /// Questions being computed now, in any state, and by how many callers.
    running: HashMap<Key, usize>,
    /// When each of the last states was last seen current, the newest (`epoch`) last.
    seen: VecDeque<(Epoch, Instant)>,
}

/// States whose last sighting is remembered: enough for an answer computed across a few commits.
const SEEN_STATES: usize = 16;

impl Part {
    /// Makes the part serve the state `epoch` if it is newer ([`Part::moved`]); `false` when the
    /// part already serves a newer state.
    fn at(&mut self, epoch: Epoch, max_stale: Duration) -> bool {
        if epoch.is_after(self.epoch) {
            self.moved(epoch, max_stale);
        }
        epoch == self.epoch
    }

    /// Makes the part serve `epoch` as [`Part::at`], and notes that state as seen current at
    /// `seen` (taken before `epoch` was read).
    fn saw(&mut self, epoch: Epoch, seen: Instant, max_stale: Duration) -> bool {
        if !self.at(epoch, max_stale) {
            return false;
        }
        match self.seen.back_mut() {
            Some((e, at)) if *e == epoch => *at = (*at).max(seen),
            _ => self.seen.push_back((epoch, seen)),
        }
        if self.seen.len() > SEEN_STATES {
            self.seen.pop_front();
        }
        true
    }

    /// When the state `epoch` was last seen current, if it is remembered.
    fn last_seen(&self, epoch: Epoch) -> Option<Instant> {
        self.seen.iter().rev().find(|(e, _)| *e == epoch).map(|(_, at)| *at)
    }

    /// Moves to the state `epoch`: the answers kept in the state before become the ones a
    /// [`Freshness::Recent`] caller may get, beside the earlier ones of questions not answered
    /// since, as long as they were seen current within `max_stale`.
    fn moved(&mut self, epoch: Epoch, max_stale: Duration) {
        let left = self.last_seen(self.epoch);
        self.epoch = epoch;
        self.before.retain(|_, c| c.within(max_stale));
        for (key, slot) in self.slots.drain() {
            match slot.computed.get() {
                Some(c) if c.kept => {
                    let c = c.clone().seen_until(left);
                    if c.within(max_stale) {
                        self.before.insert(key, c);
                    }
                }
                _ => {}
            }
        }
        self.bytes = self.before.values().map(|c| c.answer.bytes()).sum();
    }

    /// Forgets the answers of earlier states, and their bytes.
    fn forget_before(&mut self) {
        self.bytes -= self.before.drain().map(|(_, c)| c.answer.bytes()).sum::<usize>();
    }
}

impl Inner {
    fn bytes(&self) -> usize {
        self.parts.iter().map(|p| p.bytes).sum()
    }
}

impl ResponseCache {
    /// A cache keeping at most `max_bytes` of answers (0 keeps none), serving none of the state
    /// before ([`ResponseCache::with_max_stale`]).
    pub fn new(max_bytes: usize) -> ResponseCache {
        ResponseCache {
            max_bytes,
            max_stale: Duration::ZERO,
            inner: Mutex::new(Inner {
                parts: std::array::from_fn(|_| Part {
                    epoch: Epoch { graph: 0, index: 0 },
                    slots: HashMap::new(),
                    before: HashMap::new(),
                    bytes: 0,
                    running: HashMap::new(),
                    seen: VecDeque::with_capacity(SEEN_STATES + 1),
                }),
            }),
        }
    }

    /// The same cache, serving [`Freshness::Recent`] callers an answer of an earlier state seen
    /// current at most `max_stale` ago (zero: never).
    pub fn with_max_stale(self, max_stale: Duration) -> ResponseCache {
        ResponseCache { max_stale, ..self }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // No step under the lock leaves the maps half-changed: a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The answer to `key` in the state `epoch` reads (of which the answer depends on the part its
    /// [`Reads`] says): kept, or computed by `compute` — once for all callers asking at the same
    /// time, who share it — and kept if it succeeded and that part still reads the same
    /// afterwards. A [`Freshness::Recent`] caller arriving while the question is being computed,
    /// for any state, gets its latest answer of an earlier state if there is one within the
    /// staleness bound; [`Freshness::Fresh`] computes without looking or keeping. Answers that
    /// went through the cache are served gzip-compressed to callers that accept it.
    pub async fn answer<C, F>(
        &self,
        key: Key,
        accepts: Accepts,
        epoch: impl Fn() -> Epoch,
        compute: C,
    ) -> (Response, Outcome)
    where
        C: FnOnce() -> F,
        F: Future<Output = Response>,
    {
        let Accepts { freshness, gzip } = accepts;
        if freshness == Freshness::Fresh || self.max_bytes == 0 {
            return (compute().await, Outcome::Bypass);
        }
        let reads = key.reads;
        let epoch = || reads.of(epoch());
        let seen = Instant::now();
        let started = epoch();
        let Some((slot, before, running)) = self.slot(&key, started, seen, freshness == Freshness::Recent) else {
            // A newer state is already being served: this request read an older one.
            return (compute().await, Outcome::Bypass);
        };
        if let Some(Computed { answer, kept: true, .. }) = slot.computed.get() {
            return (answer.response(gzip), Outcome::Hit);
        }
        // With an earlier answer to give, a question is computed once at a time: while it is
        // computed for any state, its callers get that answer and do not start another.
        if let Some(before) = before {
            if running || slot.claimed.swap(true, Ordering::AcqRel) {
                return (before.answer.response(gzip), Outcome::Stale);
            }
        } else {
            slot.claimed.store(true, Ordering::Release);
        }
        let mut computed = false;
        let Computed { answer, kept, .. } = slot
            .computed
            .get_or_init(|| async {
                computed = true;
                let _running = Running::start(self, &key);
                let began = Instant::now();
                let answer = Arc::new(Answer::of(compute().await).await);
                let keepable = answer.keepable && answer.bytes() <= self.max_bytes;
                let now = epoch();
                let computed = Computed { answer: answer.clone(), kept: true, current: began };
                let kept = if !keepable {
                    self.settled(&key, started, &slot, None)
                } else if now == started {
                    self.settled(&key, started, &slot, Some(answer.bytes()))
                } else {
                    // Computed across a commit: not the current state's answer, but the latest
                    // one begun before it.
                    self.offer_before(&key, started, now, computed.clone());
                    false
                };
                Computed { kept, ..computed }
            })
            .await
            .clone();
        let outcome = match (computed, kept) {
            (true, true) => Outcome::Miss,
            (true, false) => Outcome::Bypass,
            (false, _) => Outcome::Shared,
        };
        (answer.response(gzip), outcome)
    }

    /// The slot of `key` in the state `epoch` (read after `seen`), moving to that state if it is
    /// newer (see [`Part::moved`]); with `recent`, the answer of an earlier state within the
    /// staleness bound; and whether `key` is being computed now, in any state. `None` when the
    /// cache already serves a newer state than `epoch`.
    fn slot(&self, key: &Key, epoch: Epoch, seen: Instant, recent: bool) -> Option<(Slot, Option<Computed>, bool)> {
        let mut inner = self.lock();
        let part = &mut inner.parts[key.reads.part()];
        if !part.saw(epoch, seen, self.max_stale) {
            return None;
        }
        let before = recent.then(|| part.before.get(key).filter(|c| c.within(self.max_stale)).cloned()).flatten();
        let running = part.running.contains_key(key);
        Some((part.slots.entry(key.clone()).or_default().clone(), before, running))
    }

    /// Accounts for the answer computed into `slot` for `key` in the state `epoch` (`bytes`: its
    /// size, when it may be kept), and returns whether it is kept: the slot is forgotten when the
    /// answer may not be kept (so a later caller computes it again) or would pass the bound.
    /// The answers of earlier states go first when the bound is reached.
    fn settled(&self, key: &Key, epoch: Epoch, slot: &Slot, bytes: Option<usize>) -> bool {
        let mut inner = self.lock();
        if bytes.is_some_and(|b| inner.bytes() + b > self.max_bytes) {
            inner.parts.iter_mut().for_each(Part::forget_before);
        }
        let total = inner.bytes();
        let part = &mut inner.parts[key.reads.part()];
        if part.epoch != epoch || !part.slots.get(key).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            return false;
        }
        match bytes {
            Some(bytes) if total + bytes <= self.max_bytes => {
                part.bytes += bytes;
                true
            }
            _ => {
                part.slots.remove(key);
                false
            }
        }
    }

    /// Keeps `computed`, a success whose computation began in the state `started` and ended in
    /// a later one, `now`, as `key`'s latest answer of a state before `now` — unless the cache
    /// already serves a later state, holds a more recent one, or has no room for it.
    fn offer_before(&self, key: &Key, started: Epoch, now: Epoch, computed: Computed) {
        let mut inner = self.lock();
        let total = inner.bytes();
        let part = &mut inner.parts[key.reads.part()];
        let computed = computed.seen_until(part.last_seen(started));
        if !part.at(now, self.max_stale) {
            return;
        }
        let replaced = match part.before.get(key) {
            Some(held) if held.current >= computed.current => return,
            Some(held) => held.answer.bytes(),
            None => 0,
        };
        let bytes = computed.answer.bytes();
        if !computed.within(self.max_stale) || total - replaced + bytes > self.max_bytes {
            return;
        }
        part.bytes = part.bytes - replaced + bytes;
        part.before.insert(key.clone(), computed);
    }

    /// Answers kept now, and their bytes.
    #[cfg(test)]
    fn usage(&self) -> (usize, usize) {
        let inner = self.lock();
        let kept =
            inner.parts.iter().flat_map(|p| p.slots.values()).filter(|s| s.computed.get().is_some_and(|c| c.kept));
        (kept.count(), inner.bytes())
    }
}

/// A computation of a question, counted in its part's `running` from its start until it ends or
/// is dropped.
struct Running<'a> {
    cache: &'a ResponseCache,
    key: &'a Key,
}

impl<'a> Running<'a> {
    fn start(cache: &'a ResponseCache, key: &'a Key) -> Running<'a> {
        *cache.lock().parts[key.reads.part()].running.entry(key.clone()).or_default() += 1;
        Running { cache, key }
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let mut inner = self.cache.lock();
        let running = &mut inner.parts[self.key.reads.part()].running;
        if let Some(n) = running.get_mut(self.key) {
            *n -= 1;
            if *n == 0 {
                running.remove(self.key);
            }
        }
    }
}

/// Whether the caller asked for a fresh answer (`Cache-Control: no-cache` or `no-store`).
pub fn wants_fresh(headers: &HeaderMap) -> bool {
    list_items(headers, header::CACHE_CONTROL)
        .any(|d| d.eq_ignore_ascii_case("no-cache") || d.eq_ignore_ascii_case("no-store"))
}

/// Marks `response` with where it came from.
pub fn marked(mut response: Response, outcome: Outcome) -> Response {
    response.headers_mut().insert(HEADER, HeaderValue::from_static(outcome.as_str()));
    response
}

/// Marks a successful response that must not be kept (a GraphQL answer carrying errors).
pub fn not_kept(mut response: Response) -> Response {
    response.extensions_mut().insert(NotKept);
    response
}

#[derive(Debug, Clone, Copy)]
struct NotKept;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    /// A data state the tests move by hand, and a computation counting its runs.
    struct World {
        graph: AtomicU64,
        index: AtomicU64,
        runs: AtomicUsize,
    }

    impl World {
        fn new() -> World {
            World { graph: AtomicU64::new(1), index: AtomicU64::new(0), runs: AtomicUsize::new(0) }
        }

        fn epoch(&self) -> Epoch {
            Epoch { graph: self.graph.load(Ordering::SeqCst), index: self.index.load(Ordering::SeqCst) }
        }

        /// An answer naming the state it was computed in.
        async fn compute(&self) -> Response {
            self.runs.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
            format!("state {}", self.graph.load(Ordering::SeqCst)).into_response()
        }
    }

    async fn body(response: Response) -> String {
        String::from_utf8(to_bytes(response.into_body(), usize::MAX).await.unwrap().to_vec()).unwrap()
    }

    async fn ask(cache: &ResponseCache, world: &World, key: &str) -> (String, Outcome) {
        ask_as(cache, world, Freshness::Current, key).await
    }

    /// Asks for `key` as a caller accepting `freshness`.
    async fn ask_as(cache: &ResponseCache, world: &World, freshness: Freshness, key: &str) -> (String, Outcome) {
        let (response, outcome) = cache
            .answer(
                Key::new("t", Reads::GraphAndIndex, &[key.as_bytes()]),
                freshness.into(),
                || world.epoch(),
                || world.compute(),
            )
            .await;
        (body(response).await, outcome)
    }

    #[tokio::test]
    async fn an_answer_is_kept_until_the_state_changes() {
        let (cache, world) = (ResponseCache::new(1 << 20), World::new());
        assert_eq!(ask(&cache, &world, "q").await, ("state 1".into(), Outcome::Miss));
        assert_eq!(ask(&cache, &world, "q").await, ("state 1".into(), Outcome::Hit));
        assert_eq!(ask(&cache, &world, "other").await, ("state 1".into(), Outcome::Miss));
        assert_eq!(world.runs.load(Ordering::SeqCst), 2);
        world.graph.store(2, Ordering::SeqCst);
        assert_eq!(ask(&cache, &world, "q").await, ("state 2".into(), Outcome::Miss));
        assert_eq!(ask(&cache, &world, "q").await, ("state 2".into(), Outcome::Hit));
        assert_eq!(cache.usage(), (1, "state 2".len()), "the older state's answers are dropped");
        // Asked to, it computes afresh and keeps nothing new.
        let (response, outcome) = cache
            .answer(
                Key::new("t", Reads::GraphAndIndex, &[b"q"]),
                Freshness::Fresh.into(),
                || world.epoch(),
                || world.compute(),
            )
            .await;
        assert_eq!((body(response).await, outcome), ("state 2".into(), Outcome::Bypass));
        assert_eq!(world.runs.load(Ordering::SeqCst), 4);
    }

    async fn ask_reading(cache: &ResponseCache, world: &World, reads: Reads, key: &str) -> (String, Outcome) {
        let (response, outcome) = cache
            .answer(
                Key::new("t", reads, &[key.as_bytes()]),
                Freshness::Current.into(),
                || world.epoch(),
                || world.compute(),
            )
            .await;
        (body(response).await, outcome)
    }

    #[tokio::test]
    async fn an_answer_that_does_not_search_outlives_the_index_commits() {
        let (cache, world) = (ResponseCache::new(1 << 20), World::new());
        let ask = |reads| ask_reading(&cache, &world, reads, "q");
        assert_eq!(ask(Reads::Graph).await.1, Outcome::Miss);
        assert_eq!(ask(Reads::GraphAndIndex).await.1, Outcome::Miss);
        world.index.store(1, Ordering::SeqCst);
        assert_eq!(ask(Reads::Graph).await.1, Outcome::Hit, "an index commit keeps it");
        assert_eq!(ask(Reads::GraphAndIndex).await.1, Outcome::Miss, "an index commit drops it");
        assert_eq!(cache.usage(), (2, 2 * "state 1".len()));
        world.graph.store(2, Ordering::SeqCst);
        assert_eq!(ask(Reads::Graph).await, ("state 2".into(), Outcome::Miss), "a graph commit drops both");
        assert_eq!(ask(Reads::GraphAndIndex).await, ("state 2".into(), Outcome::Miss));
        assert_eq!(cache.usage(), (2, 2 * "state 2".len()));
        // An answer computed across an index commit is kept when it does not search.
        let across = |reads| {
            cache.answer(
                Key::new("t", reads, &[b"x"]),
                Freshness::Current.into(),
                || world.epoch(),
                || async {
                    let response = world.compute().await;
                    world.index.fetch_add(1, Ordering::SeqCst);
                    response
                },
            )
        };
        assert_eq!(across(Reads::GraphAndIndex).await.1, Outcome::Bypass);
        assert_eq!(across(Reads::Graph).await.1, Outcome::Miss);
    }

    #[tokio::test]
    async fn the_bound_holds_for_both_kinds_of_answers_together() {
        let (cache, world) = (ResponseCache::new("state 1".len() + 3), World::new());
        assert_eq!(ask_reading(&cache, &world, Reads::Graph, "a").await.1, Outcome::Miss);
        assert_eq!(
            ask_reading(&cache, &world, Reads::GraphAndIndex, "b").await.1,
            Outcome::Bypass,
            "the bound is full"
        );
        assert_eq!(cache.usage(), (1, "state 1".len()));
    }

    #[tokio::test]
    async fn an_answer_computed_across_a_change_is_not_kept() {
        let (cache, world) = (ResponseCache::new(1 << 20), World::new());
        let key = || Key::new("t", Reads::GraphAndIndex, &[b"q"]);
        let moving = || async {
            let response = world.compute().await;
            world.graph.store(2, Ordering::SeqCst);
            response
        };
        let (response, outcome) = cache.answer(key(), Freshness::Current.into(), || world.epoch(), moving).await;
        assert_eq!((body(response).await, outcome), ("state 1".into(), Outcome::Bypass));
        assert_eq!(cache.usage(), (0, 0));
        assert_eq!(ask(&cache, &world, "q").await, ("state 2".into(), Outcome::Miss));
        // A request that read an older state than the one served neither reads nor resets it.
        let (response, outcome) =
            cache.answer(key(), Freshness::Current.into(), || Epoch { graph: 1, index: 0 }, || world.compute()).await;
        assert_eq!(outcome, Outcome::Bypass);
        drop(response);
        assert_eq!(ask(&cache, &world, "q").await, ("state 2".into(), Outcome::Hit));
    }

    #[tokio::test]
    async fn callers_asking_at_once_share_one_computation() {
        let (cache, world) = (ResponseCache::new(1 << 20), World::new());
        let answers = futures::future::join_all((0..8).map(|_| ask(&cache, &world, "q"))).await;
        assert_eq!(world.runs.load(Ordering::SeqCst), 1, "{answers:?}");
        assert!(answers.iter().all(|(b, _)| b == "state 1"), "{answers:?}");
        let count = |outcome| answers.iter().filter(|(_, o)| *o == outcome).count();
        assert_eq!((count(Outcome::Miss), count(Outcome::Shared)), (1, 7), "{answers:?}");
        assert_eq!(ask(&cache, &world, "q").await.1, Outcome::Hit, "kept, and ready when asked again");
    }

    #[tokio::test]
    async fn failures_and_answers_past_the_bound_are_not_kept() {
        let world = World::new();
        let cache = ResponseCache::new("state 1".len() + 3);
        let failing = || async { (StatusCode::SERVICE_UNAVAILABLE, "busy").into_response() };
        for _ in 0..2 {
            let (response, outcome) = cache
                .answer(
                    Key::new("t", Reads::GraphAndIndex, &[b"f"]),
                    Freshness::Current.into(),
                    || world.epoch(),
                    failing,
                )
                .await;
            assert_eq!((response.status(), outcome), (StatusCode::SERVICE_UNAVAILABLE, Outcome::Bypass));
        }
        let marked = || async { not_kept("with errors".into_response()) };
        let (response, outcome) = cache
            .answer(Key::new("t", Reads::GraphAndIndex, &[b"m"]), Freshness::Current.into(), || world.epoch(), marked)
            .await;
        assert_eq!((body(response).await, outcome), ("with errors".into(), Outcome::Bypass));
        assert_eq!(ask(&cache, &world, "a").await.1, Outcome::Miss);
        // The first answer fills the bound: the second is answered, not kept.
        assert_eq!(ask(&cache, &world, "b").await, ("state 1".into(), Outcome::Bypass));
        assert_eq!(ask(&cache, &world, "b").await.1, Outcome::Bypass);
        assert_eq!(ask(&cache, &world, "a").await.1, Outcome::Hit);
        assert_eq!(cache.usage(), (1, "state 1".len()));
    }

    #[tokio::test]
    async fn callers_asking_at_once_share_a_failure_and_the_next_computes_again() {
        let (cache, world) = (ResponseCache::new(1 << 20), World::new());
        let failing = || async {
            world.runs.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
            (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, "1")], "busy").into_response()
        };
        let ask_failing = || {
            cache.answer(
                Key::new("t", Reads::GraphAndIndex, &[b"f"]),
                Freshness::Current.into(),
                || world.epoch(),
                failing,
            )
        };
        let answers = futures::future::join_all((0..4).map(|_| ask_failing())).await;
        assert_eq!(world.runs.load(Ordering::SeqCst), 1);
        let outcomes: Vec<Outcome> = answers.iter().map(|(_, o)| *o).collect();
        assert_eq!(outcomes, [Outcome::Bypass, Outcome::Shared, Outcome::Shared, Outcome::Shared]);
        for (response, _) in answers {
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(response.headers()[header::RETRY_AFTER], "1");
            assert_eq!(body(response).await, "busy");
        }
        assert_eq!(ask_failing().await.1, Outcome::Bypass, "a failure is not kept");
        assert_eq!(world.runs.load(Ordering::SeqCst), 2);
    }

    /// Three callers of "q" at once in state 2, with state 1's answer held: the first computes it
    /// (yielding once, so the others arrive meanwhile); a recent caller gets state 1's answer at
    /// once; a caller that waited for its consistency token waits for the current answer.
    async fn three_callers_in_state_2(cache: &ResponseCache, world: &World) {
        let (first, recent, current) = tokio::join!(
            ask_as(cache, world, Freshness::Recent, "q"),
            ask_as(cache, world, Freshness::Recent, "q"),
            ask_as(cache, world, Freshness::Current, "q"),
        );
        assert_eq!(first, ("state 2".into(), Outcome::Miss));
        assert_eq!(recent, ("state 1".into(), Outcome::Stale));
        assert_eq!(current, ("state 2".into(), Outcome::Shared));
    }

    #[tokio::test]
    async fn recent_callers_get_the_state_before_while_one_caller_computes_the_current() {
        let cache = ResponseCache::new(1 << 20).with_max_stale(Duration::from_secs(60));
        let world = World::new();
        assert_eq!(ask_as(&cache, &world, Freshness::Recent, "q").await, ("state 1".into(), Outcome::Miss));
        world.graph.store(2, Ordering::SeqCst);
        three_callers_in_state_2(&cache, &world).await;
        assert_eq!(world.runs.load(Ordering::SeqCst), 2);
        // Once the current answer is kept, nobody gets the state before.
        assert_eq!(ask_as(&cache, &world, Freshness::Recent, "q").await, ("state 2".into(), Outcome::Hit));
        // A question never answered before has no earlier answer: its callers share one evaluation.
        world.graph.store(3, Ordering::SeqCst);
        let (a, b) = tokio::join!(
            ask_as(&cache, &world, Freshness::Recent, "new"),
            ask_as(&cache, &world, Freshness::Recent, "new")
        );
        assert_eq!((a.1, b.1), (Outcome::Miss, Outcome::Shared));
        assert_eq!((a.0.as_str(), b.0.as_str()), ("state 3", "state 3"));
    }

    #[tokio::test]
    async fn an_answer_computed_across_a_commit_is_the_state_before_for_the_next() {
        let cache = ResponseCache::new(1 << 20).with_max_stale(Duration::from_secs(60));
        let world = World::new();
        let key = || Key::new("t", Reads::GraphAndIndex, &[b"q"]);
        let moving = || async {
            let response = world.compute().await;
            world.graph.store(2, Ordering::SeqCst);
            response
        };
        let (response, outcome) = cache.answer(key(), Freshness::Recent.into(), || world.epoch(), moving).await;
        assert_eq!(
            (body(response).await, outcome),
            ("state 1".into(), Outcome::Bypass),
            "not kept as the current answer"
        );
        three_callers_in_state_2(&cache, &world).await;
        // An answer begun before the last state but one is not offered: the cache serves a later one.
        let (response, outcome) =
            cache.answer(key(), Freshness::Recent.into(), || Epoch { graph: 1, index: 0 }, || world.compute()).await;
        assert_eq!((body(response).await, outcome), ("state 2".into(), Outcome::Bypass));
        assert_eq!(ask_as(&cache, &world, Freshness::Recent, "q").await, ("state 2".into(), Outcome::Hit));
    }

    #[tokio::test]
    async fn a_question_is_computed_once_at_a_time_for_callers_with_an_earlier_answer() {
        let cache = ResponseCache::new(1 << 20).with_max_stale(Duration::from_secs(60));
        let world = World::new();
        assert_eq!(ask_as(&cache, &world, Freshness::Recent, "q").await.1, Outcome::Miss);
        world.graph.store(2, Ordering::SeqCst);
        let (gate, opened) = tokio::sync::oneshot::channel::<()>();
        let slow = async {
            cache
                .answer(
                    Key::new("t", Reads::GraphAndIndex, &[b"q"]),
                    Freshness::Recent.into(),
                    || world.epoch(),
                    || async {
                        world.runs.fetch_add(1, Ordering::SeqCst);
                        let _ = opened.await;
                        "slow".into_response()
                    },
                )
                .await
        };
        let later = async {
            tokio::task::yield_now().await;
            // Two commits while the state 2 answer is computed: a caller in state 4 gets the
            // earlier answer and starts nothing; a caller with a consistency token computes.
            world.graph.store(4, Ordering::SeqCst);
            let recent = ask_as(&cache, &world, Freshness::Recent, "q").await;
            let runs = world.runs.load(Ordering::SeqCst);
            let current = ask_as(&cache, &world, Freshness::Current, "q").await;
            let _ = gate.send(());
            (recent, runs, current)
        };
        let ((response, outcome), (recent, runs_then, current)) = tokio::join!(slow, later);
        assert_eq!(recent, ("state 1".into(), Outcome::Stale));
        assert_eq!(runs_then, 2, "no second computation for the recent caller");
        assert_eq!(current, ("state 4".into(), Outcome::Miss));
        assert_eq!((body(response).await, outcome), ("slow".into(), Outcome::Bypass));
        assert_eq!(ask_as(&cache, &world, Freshness::Recent, "q").await, ("state 4".into(), Outcome::Hit));
    }

    #[tokio::test]
    async fn an_answer_of_the_state_before_is_not_served_past_the_bound() {
        for (bound, expected) in [(Duration::ZERO, Outcome::Shared), (Duration::from_millis(20), Outcome::Shared)] {
            let (cache, world) = (ResponseCache::new(1 << 20).with_max_stale(bound), World::new());
            assert_eq!(ask_as(&cache, &world, Freshness::Recent, "q").await.1, Outcome::Miss);
            tokio::time::sleep(Duration::from_millis(30)).await;
            world.graph.store(2, Ordering::SeqCst);
            let (first, second) = tokio::join!(
                ask_as(&cache, &world, Freshness::Recent, "q"),
                ask_as(&cache, &world, Freshness::Recent, "q")
            );
            assert_eq!(first, ("state 2".into(), Outcome::Miss), "bound {bound:?}");
            assert_eq!(second, ("state 2".into(), expected), "bound {bound:?}");
        }
    }

    #[tokio::test]
    async fn staleness_counts_from_when_the_state_was_last_seen_current() {
        let bound = Duration::from_millis(200);
        let (cache, world) = (ResponseCache::new(1 << 20).with_max_stale(bound), World::new());
        assert_eq!(ask_as(&cache, &world, Freshness::Recent, "q").await.1, Outcome::Miss);
        // State 1 lasts longer than the bound, and a request sees it current just before it ends.
        tokio::time::sleep(bound + Duration::from_millis(50)).await;
        assert_eq!(ask_as(&cache, &world, Freshness::Recent, "other").await.1, Outcome::Miss);
        world.graph.store(2, Ordering::SeqCst);
        let (first, second) = tokio::join!(
            ask_as(&cache, &world, Freshness::Recent, "q"),
            ask_as(&cache, &world, Freshness::Recent, "q")
        );
        assert_eq!(first, ("state 2".into(), Outcome::Miss));
        assert_eq!(second, ("state 1".into(), Outcome::Stale), "state 1 was seen current within the bound");
        // An answer computed across a commit is current until its state was last seen: here,
        // state 2 is seen current after the computation began, then left.
        let (gate, opened) = tokio::sync::oneshot::channel::<()>();
        world.graph.store(3, Ordering::SeqCst);
        let slow = cache.answer(
            Key::new("t", Reads::GraphAndIndex, &[b"q"]),
            Freshness::Recent.into(),
            || world.epoch(),
            || async {
                let _ = opened.await;
                world.graph.store(4, Ordering::SeqCst);
                "slow".into_response()
            },
        );
        let later = async {
            tokio::time::sleep(bound + Duration::from_millis(50)).await;
            // State 3 seen current, past the bound after the slow computation began.
            assert_eq!(ask_as(&cache, &world, Freshness::Recent, "other").await.1, Outcome::Miss);
            let _ = gate.send(());
        };
        let ((response, outcome), ()) = tokio::join!(slow, later);
        assert_eq!((body(response).await, outcome), ("slow".into(), Outcome::Bypass));
        let (first, second) = tokio::join!(
            ask_as(&cache, &world, Freshness::Recent, "q"),
            ask_as(&cache, &world, Freshness::Recent, "q")
        );
        assert_eq!(first, ("state 4".into(), Outcome::Miss));
        assert_eq!(second, ("slow".into(), Outcome::Stale), "its state was seen current within the bound");
    }

    /// An answer of `len` bytes of JSON-like text, asked for by a caller taking gzip or not.
    async fn ask_long(cache: &ResponseCache, world: &World, len: usize, gzip: bool) -> Response {
        let accepts = Accepts { freshness: Freshness::Current, gzip };
        let text = "{\"value\":1.0}".repeat(len / 13 + 1)[..len].to_owned();
        let compute = || async move {
            world.runs.fetch_add(1, Ordering::SeqCst);
            ([(header::CONTENT_TYPE, "application/json")], text).into_response()
        };
        cache
            .answer(Key::new("t", Reads::Graph, &[len.to_string().as_bytes()]), accepts, || world.epoch(), compute)
            .await
            .0
    }

    #[tokio::test]
    async fn answers_are_kept_compressed_too_and_served_so_to_callers_that_take_gzip() {
        use std::io::Read as _;
        let (cache, world) = (ResponseCache::new(1 << 20), World::new());
        let plain = ask_long(&cache, &world, 20_000, false).await;
        assert!(!plain.headers().contains_key(header::CONTENT_ENCODING));
        assert_eq!(plain.headers()[header::VARY], "accept-encoding");
        let text = body(plain).await;
        let compressed = ask_long(&cache, &world, 20_000, true).await;
        assert_eq!(world.runs.load(Ordering::SeqCst), 1, "compressed once, from the kept answer");
        assert_eq!(compressed.headers()[header::CONTENT_ENCODING], "gzip");
        assert_eq!(compressed.headers()[header::CONTENT_TYPE], "application/json");
        let bytes = to_bytes(compressed.into_body(), usize::MAX).await.unwrap();
        let mut decoded = String::new();
        flate2::read::GzDecoder::new(&bytes[..]).read_to_string(&mut decoded).unwrap();
        assert_eq!(decoded, text);
        assert_eq!(cache.usage(), (1, text.len() + bytes.len()), "both forms count in the bound");
        // A short answer is kept as it is.
        let short = ask_long(&cache, &world, 100, true).await;
        assert!(!short.headers().contains_key(header::CONTENT_ENCODING));
        assert!(!short.headers().contains_key(header::VARY));
        assert_eq!(body(short).await.len(), 100);
    }

    #[tokio::test]
    async fn answers_of_the_state_before_count_in_the_bound_and_go_first() {
        let world = World::new();
        let cache = ResponseCache::new(2 * "state 1".len()).with_max_stale(Duration::from_secs(60));
        assert_eq!(ask_as(&cache, &world, Freshness::Recent, "a").await.1, Outcome::Miss);
        assert_eq!(ask_as(&cache, &world, Freshness::Recent, "b").await.1, Outcome::Miss);
        world.graph.store(2, Ordering::SeqCst);
        // Both earlier answers are still held (and counted) in the new state, until a new answer
        // needs their room.
        assert_eq!(ask_as(&cache, &world, Freshness::Recent, "c").await.1, Outcome::Miss);
        assert_eq!(cache.usage(), (1, "state 2".len()));
        let (first, second) = tokio::join!(
            ask_as(&cache, &world, Freshness::Recent, "a"),
            ask_as(&cache, &world, Freshness::Recent, "a")
        );
        assert_eq!((first.1, second.1), (Outcome::Miss, Outcome::Shared), "the state before was forgotten");
    }

    #[test]
    fn what_a_request_accepts() {
        let with = |name: &'static str, v: &str| {
            HeaderMap::from_iter([(header::HeaderName::from_static(name), HeaderValue::from_str(v).unwrap())])
        };
        assert_eq!(Freshness::of(&HeaderMap::new(), false), Freshness::Recent);
        assert_eq!(Freshness::of(&HeaderMap::new(), true), Freshness::Current);
        assert_eq!(Freshness::of(&with("coalition-consistency", "t@0:1"), false), Freshness::Current);
        assert_eq!(Freshness::of(&with("cache-control", "no-cache"), false), Freshness::Fresh);

        for (value, gzip) in [
            ("gzip, deflate, br", true),
            ("br;q=1.0, GZIP;q=0.5", true),
            ("*", true),
            ("gzip;q=0", false),
            ("deflate, br", false),
            ("identity", false),
        ] {
            assert_eq!(Accepts::of(&with("accept-encoding", value), false).gzip, gzip, "{value}");
        }
        assert!(!Accepts::of(&HeaderMap::new(), false).gzip);
    }

    #[test]
    fn keys_do_not_run_parts_together() {
        assert_ne!(
            Key::new("t", Reads::GraphAndIndex, &[b"ab", b"c"]),
            Key::new("t", Reads::GraphAndIndex, &[b"a", b"bc"])
        );
        assert_ne!(Key::new("sparql", Reads::Graph, &[b"q"]), Key::new("graphql", Reads::Graph, &[b"q"]));
        assert_ne!(Key::new("t", Reads::Graph, &[b"q"]), Key::new("t", Reads::GraphAndIndex, &[b"q"]));
    }

    #[test]
    fn no_cache_and_no_store_ask_for_a_fresh_answer() {
        let headers = |v: &str| HeaderMap::from_iter([(header::CACHE_CONTROL, HeaderValue::from_str(v).unwrap())]);
        assert!(wants_fresh(&headers("no-cache")));
        assert!(wants_fresh(&headers("max-age=0, No-Store")));
        assert!(!wants_fresh(&headers("max-age=60")));
        assert!(!wants_fresh(&HeaderMap::new()));
    }
}
