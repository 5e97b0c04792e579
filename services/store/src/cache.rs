//! Bounded caches for readers: entity graphs ([`crate::GraphStore::entity_graph`]), each
//! recommendation's case studies in page order ([`crate::GraphStore::case_studies_in_order`]),
//! and each case study's outcomes ([`crate::GraphStore::case_study_outcomes`]).
//!
//! Why: reading an entity graph from Oxigraph decodes every term of every quad, and each term
//! that is not stored inline (IRIs, longer strings) is one RocksDB read of the term dictionary —
//! about 3.5 reads per quad. A GraphQL page of 25 case studies with their ~350 outcomes spent
//! half of its 25 ms there (measured with `perf` at 10k conversations). The entities a page shows
//! are mostly the same from request to request, and change only when an event for them is
//! applied.
//!
//! Guarantee: a read never returns an entity graph older than the last commit that finished
//! before the read began. [`GraphStore::apply`](crate::GraphStore::apply) invalidates the graphs
//! it changed after its commit and before it returns, so before the materializer publishes the
//! new watermark: a request that waited for a consistency token sees its write. A read that
//! raced a commit — it looked at the store while a commit of the same graph happened — does not
//! put what it read into the cache, since it may be the state before; it is recognised by the
//! commit counter (`epoch`) it started at and the graphs each recent commit changed.
//! Whole-store changes (an initial load, a rebuilt store swapping in) empty the cache and refuse
//! every read that started before them.
//!
//! A reader may keep what it decodes from a cached graph beside it, as a *view* (the GraphQL API
//! keeps its entity, a map of properties: decoding one copies every term of its ~15 quads, ~30 %
//! of a case-study page's CPU with its ~1,000 outcomes). A view is attached only to the very graph
//! it was decoded from (the same allocation), so it goes when the graph goes.
//!
//! Case-study lists: ordering a recommendation's case studies by start date reads every one of
//! them (1,667 a list at 1M conversations: ~24 ms warm, before the page is chosen), though they
//! change only when a case study, link or recommendation does — rarely, next to the activities,
//! outcomes and dialogues that make up the stream. A commit that changes a graph of one of those
//! kinds, or rewrites projections, drops every kept list, and a list read that started before such
//! a commit is not kept: the same guarantee as for entity graphs.
//!
//! Outcome lists: a case study's outcomes are those measuring it or one of its activities. Finding
//! them walks every activity of the case study (a page of 50 case studies at 1M conversations:
//! ~5,000 activities, ~1,000 outcomes, ~10 ms warm), though a page's lists change only when an
//! outcome or activity of one of its case studies does. The outcome lists are the stream's, so
//! each commit names the case studies whose lists it may have changed
//! ([`crate::projection::outcome_lists_touched`]) and drops those alone; they are remembered
//! with the commit's graphs (case-study IRIs and graph IRIs never coincide), so that a read that
//! raced such a commit is not kept, as for entity graphs.

use lru::LruCache;
use oxigraph::model::{NamedNode, Quad};
use std::any::Any;
use std::collections::{HashSet, VecDeque};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard};

/// Entity graphs kept (about 2–4 KB each, plus a view if a reader attached one; serving at 1M
/// conversations stayed at 780–844 MiB resident with both).
pub(crate) const ENTITY_CACHE_ENTRIES: usize = 10_000;

/// Commits whose changed graphs are remembered. A read that started more commits ago than this
/// does not fill the cache (reads take micro- to milliseconds, commits come every ~100 ms).
const RECENT_COMMITS: usize = 64;

/// Case-study lists kept (one per recommendation asked about; a list holds at most every case
/// study, ~80 bytes each).
pub(crate) const LIST_CACHE_ENTRIES: usize = 64;

/// Case studies whose outcome lists are kept (a list is its outcomes' IRIs, ~20 at 1M
/// conversations: ~1.5 KB).
pub(crate) const OUTCOME_LIST_ENTRIES: usize = 4_096;

/// What a reader decoded from a graph ([`crate::GraphStore::entity_view`]).
pub(crate) type View = Arc<dyn Any + Send + Sync>;

/// A cached entity graph, and the view decoded from it if one was attached.
#[derive(Debug, Clone)]
pub(crate) struct Cached {
    pub(crate) quads: Arc<[Quad]>,
    pub(crate) view: Option<View>,
}

pub(crate) struct GraphCache {
    inner: Mutex<Inner>,
}

struct Inner {
    graphs: LruCache<String, Cached>,
    /// Commits (and whole-store changes) so far.
    epoch: u64,
    /// Reads that started before this epoch never fill the cache (a whole-store change).
    floor: u64,
    /// The graphs each of the last commits changed, and the case studies whose outcome lists it
    /// may have changed, the newest last (commit `epoch` is last).
    recent: VecDeque<HashSet<String>>,
    /// Case-study lists by recommendation IRI.
    lists: LruCache<String, Arc<[NamedNode]>>,
    /// The epoch of the last change that may have changed a list: reads that started before it
    /// never fill `lists`.
    lists_changed: u64,
    /// Outcome lists by case-study IRI.
    outcomes: LruCache<String, Arc<[NamedNode]>>,
}

/// Where a read that missed the cache started.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReadStart(u64);

impl GraphCache {
    pub(crate) fn new(entries: usize) -> GraphCache {
        GraphCache {
            inner: Mutex::new(Inner {
                graphs: LruCache::new(NonZeroUsize::new(entries.max(1)).unwrap_or(NonZeroUsize::MIN)),
                epoch: 0,
                floor: 0,
                recent: VecDeque::with_capacity(RECENT_COMMITS),
                lists: LruCache::new(NonZeroUsize::new(LIST_CACHE_ENTRIES).unwrap_or(NonZeroUsize::MIN)),
                lists_changed: 0,
                outcomes: LruCache::new(NonZeroUsize::new(OUTCOME_LIST_ENTRIES).unwrap_or(NonZeroUsize::MIN)),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the cache consistent (every step is one map
        // operation), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The cached graph and its view, or where the read of the store that replaces it starts.
    pub(crate) fn get(&self, graph: &str) -> Result<Cached, ReadStart> {
        let inner = &mut *self.lock();
        kept(&mut inner.graphs, graph, inner.epoch)
    }

    /// Keeps what a read that started at `start` found, unless a commit changed the graph (or
    /// the whole store) since.
    pub(crate) fn fill(&self, graph: &str, start: ReadStart, quads: &Arc<[Quad]>) {
        let mut inner = self.lock();
        if !inner.raced(graph, start) {
            inner.graphs.put(graph.to_owned(), Cached { quads: quads.clone(), view: None });
        }
    }

    /// Keeps `view`, decoded from `quads`, beside the graph if the cache still holds those very
    /// quads.
    pub(crate) fn attach(&self, graph: &str, quads: &Arc<[Quad]>, view: View) {
        if let Some(cached) = self.lock().graphs.peek_mut(graph) {
            if Arc::ptr_eq(&cached.quads, quads) {
                cached.view = Some(view);
            }
        }
    }

    /// The kept outcome list of `case_study`, or where the read that replaces it starts.
    pub(crate) fn outcomes(&self, case_study: &str) -> Result<Arc<[NamedNode]>, ReadStart> {
        let inner = &mut *self.lock();
        kept(&mut inner.outcomes, case_study, inner.epoch)
    }

    /// Keeps the outcome list a read that started at `start` found, unless a commit may have
    /// changed it (or the whole store) since.
    pub(crate) fn fill_outcomes(&self, case_study: &str, start: ReadStart, list: &Arc<[NamedNode]>) {
        let mut inner = self.lock();
        if !inner.raced(case_study, start) {
            inner.outcomes.put(case_study.to_owned(), list.clone());
        }
    }

    /// The kept case-study list of `recommendation`, or where the read that replaces it starts.
    pub(crate) fn list(&self, recommendation: &str) -> Result<Arc<[NamedNode]>, ReadStart> {
        let inner = &mut *self.lock();
        kept(&mut inner.lists, recommendation, inner.epoch)
    }

    /// Keeps the list a read that started at `start` found, unless something that may change
    /// lists was committed since.
    pub(crate) fn fill_list(&self, recommendation: &str, start: ReadStart, list: &Arc<[NamedNode]>) {
        let mut inner = self.lock();
        if start.0 >= inner.floor && start.0 >= inner.lists_changed {
            inner.lists.put(recommendation.to_owned(), list.clone());
        }
    }

    /// A commit changed `graphs` and may have changed the outcome lists of `case_studies`: drops
    /// them and remembers them for reads running now; drops the case-study lists too when one of
    /// the graphs can change them.
    pub(crate) fn committed(
        &self,
        graphs: impl IntoIterator<Item = String>,
        case_studies: impl IntoIterator<Item = String>,
    ) {
        let mut changed: HashSet<String> = graphs.into_iter().collect();
        let lists = changed.iter().any(|g| crate::projection::shapes_case_study_lists(g));
        changed.extend(case_studies);
        self.lock().commit(changed, lists);
    }

    /// A commit rewrote projections, no entity graph: readers may see something new, and the
    /// case-study lists may have changed.
    pub(crate) fn projections_rewritten(&self) {
        self.lock().commit(HashSet::new(), true);
    }

    /// The whole store changed: forgets everything, and refuses reads that started before.
    pub(crate) fn cleared(&self) {
        let mut inner = self.lock();
        inner.graphs.clear();
        inner.outcomes.clear();
        inner.recent.clear();
        inner.epoch += 1;
        inner.floor = inner.epoch;
        inner.drop_lists();
    }

    /// Commits and whole-store changes so far: a value that changes whenever what readers can
    /// see may have changed, read after the change is visible.
    pub(crate) fn epoch(&self) -> u64 {
        self.lock().epoch
    }

    /// Graphs cached now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().graphs.len()
    }

    /// Case-study lists kept now.
    #[cfg(test)]
    pub(crate) fn lists(&self) -> usize {
        self.lock().lists.len()
    }

    /// Outcome lists kept now.
    #[cfg(test)]
    pub(crate) fn outcome_lists(&self) -> usize {
        self.lock().outcomes.len()
    }
}

/// `map`'s entry for `key`, or where a read that replaces it starts (at `epoch`, now).
fn kept<V: Clone>(map: &mut LruCache<String, V>, key: &str, epoch: u64) -> Result<V, ReadStart> {
    map.get(key).cloned().ok_or(ReadStart(epoch))
}

impl Inner {
    /// Whether what a read of `key` (a graph, or a case study's outcome list) that started at
    /// `start` found may be older than the last commit: a commit since changed it, or the whole
    /// store, or more commits happened than are remembered.
    fn raced(&self, key: &str, start: ReadStart) -> bool {
        let since = self.epoch - start.0;
        start.0 < self.floor
            || since > self.recent.len() as u64
            || self.recent.iter().rev().take(since as usize).any(|changed| changed.contains(key))
    }

    fn commit(&mut self, changed: HashSet<String>, lists: bool) {
        for key in &changed {
            self.graphs.pop(key);
            self.outcomes.pop(key);
        }
        self.epoch += 1;
        if lists {
            self.drop_lists();
        }
        if self.recent.len() == RECENT_COMMITS {
            self.recent.pop_front();
        }
        self.recent.push_back(changed);
    }

    /// Forgets the kept lists, and refuses list reads that started before now.
    fn drop_lists(&mut self) {
        self.lists.clear();
        self.lists_changed = self.epoch;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxigraph::model::{GraphName, Literal, NamedNode};

    fn quads(value: &str) -> Arc<[Quad]> {
        let n = NamedNode::new_unchecked("https://example.org/s");
        vec![Quad::new(n.clone(), n.clone(), Literal::new_simple_literal(value), GraphName::NamedNode(n))].into()
    }

    /// A read of `g` that missed and found `value`, kept if the cache allows.
    fn read(cache: &GraphCache, g: &str, value: &str) {
        let start = cache.get(g).unwrap_err();
        cache.fill(g, start, &quads(value));
    }

    fn cached(cache: &GraphCache, g: &str) -> Option<String> {
        cache.get(g).ok().map(|c| c.quads[0].object.to_string())
    }

    #[test]
    fn a_read_that_raced_a_commit_of_its_graph_is_not_kept() {
        let cache = GraphCache::new(8);
        let start = cache.get("g").unwrap_err();
        cache.committed(["g".to_owned()], None);
        cache.fill("g", start, &quads("before the commit"));
        assert_eq!(cached(&cache, "g"), None);
        // A commit of another graph does not stop it.
        let start = cache.get("h").unwrap_err();
        cache.committed(["g".to_owned()], None);
        cache.fill("h", start, &quads("h"));
        assert_eq!(cached(&cache, "h").as_deref(), Some("\"h\""));
    }

    #[test]
    fn a_commit_drops_the_graphs_it_changed() {
        let cache = GraphCache::new(8);
        read(&cache, "g", "v1");
        assert_eq!(cached(&cache, "g").as_deref(), Some("\"v1\""));
        cache.committed(["g".to_owned()], None);
        assert_eq!(cached(&cache, "g"), None);
        read(&cache, "g", "v2");
        assert_eq!(cached(&cache, "g").as_deref(), Some("\"v2\""));
    }

    #[test]
    fn clearing_refuses_reads_that_started_before() {
        let cache = GraphCache::new(8);
        let old = cache.get("g").unwrap_err();
        read(&cache, "h", "h");
        cache.cleared();
        assert_eq!(cache.len(), 0);
        cache.fill("g", old, &quads("old store"));
        assert_eq!(cached(&cache, "g"), None);
    }

    #[test]
    fn a_read_older_than_the_remembered_commits_is_not_kept() {
        let cache = GraphCache::new(8);
        let start = cache.get("g").unwrap_err();
        for _ in 0..=RECENT_COMMITS {
            cache.committed(["other".to_owned()], None);
        }
        cache.fill("g", start, &quads("g"));
        assert_eq!(cached(&cache, "g"), None);
    }

    fn list(name: &str) -> Arc<[NamedNode]> {
        vec![NamedNode::new_unchecked(format!("https://example.org/{name}"))].into()
    }

    #[test]
    fn a_list_is_kept_until_a_change_that_can_shape_lists() {
        let case_study = format!("{}case-study/cs-1", coalition_mapping::vocab::GRAPH);
        let activity = format!("{}activity/a-1", coalition_mapping::vocab::GRAPH);
        let cache = GraphCache::new(8);
        let start = cache.list("r").unwrap_err();
        cache.fill_list("r", start, &list("v1"));
        cache.committed([activity.clone()], None);
        assert_eq!(cache.list("r").ok(), Some(list("v1")), "an activity's commit keeps it");
        cache.committed([case_study.clone()], None);
        assert!(cache.list("r").is_err(), "a case study's commit drops it");

        // A read that raced a case study's commit is not kept; one that raced an activity's is.
        let start = cache.list("r").unwrap_err();
        cache.committed([case_study], None);
        cache.fill_list("r", start, &list("before the commit"));
        assert!(cache.list("r").is_err());
        let start = cache.list("r").unwrap_err();
        cache.committed([activity], None);
        cache.fill_list("r", start, &list("v2"));
        assert_eq!(cache.list("r").ok(), Some(list("v2")));

        // Rewritten projections and whole-store changes drop the lists, and refuse older reads.
        for change in [GraphCache::projections_rewritten, GraphCache::cleared] {
            let start = cache.list("s").unwrap_err();
            change(&cache);
            assert!(cache.list("r").is_err());
            cache.fill_list("s", start, &list("old"));
            assert_eq!(cache.lists(), 0);
            let start = cache.list("r").unwrap_err();
            cache.fill_list("r", start, &list("v3"));
        }
    }

    #[test]
    fn an_outcome_list_is_dropped_by_the_commits_that_name_its_case_study() {
        let (cs1, cs2) = (format!("{}case-study/cs-1", coalition_mapping::vocab::ID), "cs-2".to_owned());
        let cache = GraphCache::new(8);
        for cs in [&cs1, &cs2] {
            let start = cache.outcomes(cs).unwrap_err();
            cache.fill_outcomes(cs, start, &list(cs));
        }
        // A commit of graphs alone, even the case study's own graph, keeps both.
        cache.committed([format!("{}case-study/cs-1", coalition_mapping::vocab::GRAPH)], None);
        assert_eq!(cache.outcome_lists(), 2);
        cache.committed(["g".to_owned()], Some(cs1.clone()));
        assert!(cache.outcomes(&cs1).is_err(), "named: dropped");
        assert_eq!(cache.outcomes(&cs2).ok(), Some(list(&cs2)), "not named: kept");

        // A read that raced a commit naming its case study is not kept; one naming another is.
        let start = cache.outcomes(&cs1).unwrap_err();
        cache.committed(None, Some(cs1.clone()));
        cache.fill_outcomes(&cs1, start, &list("before the commit"));
        assert!(cache.outcomes(&cs1).is_err());
        let start = cache.outcomes(&cs1).unwrap_err();
        cache.committed(None, Some(cs2.clone()));
        cache.fill_outcomes(&cs1, start, &list("v2"));
        assert_eq!(cache.outcomes(&cs1).ok(), Some(list("v2")));

        // A whole-store change forgets them and refuses older reads.
        let start = cache.outcomes(&cs2).unwrap_err();
        cache.cleared();
        assert_eq!(cache.outcome_lists(), 0);
        cache.fill_outcomes(&cs2, start, &list("old store"));
        assert_eq!(cache.outcome_lists(), 0);
    }

    #[test]
    fn a_view_stays_with_the_graph_it_was_decoded_from() {
        let cache = GraphCache::new(8);
        read(&cache, "g", "v1");
        let v1 = cache.get("g").unwrap().quads;
        cache.attach("g", &v1, Arc::new("decoded v1"));
        let view = |cache: &GraphCache| cache.get("g").ok()?.view?.downcast::<&str>().ok().map(|v| *v);
        assert_eq!(view(&cache), Some("decoded v1"));

        // A commit drops both; a view of the old quads is not attached to the new ones.
        cache.committed(["g".to_owned()], None);
        read(&cache, "g", "v2");
        cache.attach("g", &v1, Arc::new("decoded v1"));
        assert_eq!(view(&cache), None);
        let v2 = cache.get("g").unwrap().quads;
        cache.attach("g", &v2, Arc::new("decoded v2"));
        assert_eq!(view(&cache), Some("decoded v2"));
    }

    #[test]
    fn the_least_recently_used_graph_goes_first() {
        let cache = GraphCache::new(2);
        for g in ["a", "b"] {
            read(&cache, g, g);
        }
        assert!(cache.get("a").is_ok());
        read(&cache, "c", "c");
        assert!(cache.get("b").is_err());
        assert!(cache.get("a").is_ok() && cache.get("c").is_ok());
    }
}
