//! The graph store: Oxigraph (RocksDB on disk) holding one named graph per entity, the PROV-O
//! provenance graph, and the consumed offsets.
//!
//! Guarantees: [`GraphStore::apply`] writes a batch's facts, provenance and offsets in one
//! transaction — all or nothing — so the offsets in the store are exactly the events it holds.
//! Events are idempotent by event id: an event already applied is skipped and counted. The
//! evidence projections ([`projection`]) change in the same transaction as the facts they count.
//! Calls are blocking; async callers go through `spawn_blocking`.
//!
//! Memtables are flushed every [`FLUSH_EVERY_EVENTS`] applied events, on a thread of their own:
//! RocksDB's write buffers (64 MiB per column family, eleven column families; Oxigraph sets no
//! smaller size) would otherwise grow to gigabytes, and every insert into a large skip list costs
//! more. Measured on 120k generated events: 16 % more events/s and 1.7 GiB less peak memory.

use arc_swap::ArcSwap;
use coalition_mapping::vocab::{self, coal};
use coalition_mapping::{Mapped, Offsets, OrderKey, TopicPartition};
use oxigraph::io::{RdfFormat, RdfSerializer};
use oxigraph::model::{
    GraphName, GraphNameRef, Literal, NamedNode, NamedNodeRef, NamedOrBlankNodeRef, Quad, QuadRef, Term, TermRef,
};
use oxigraph::sparql::{QueryResults, QuerySolution, QuerySolutionIter, SparqlEvaluator};
use std::collections::{BTreeMap, HashSet};
use std::io::Write;
#[cfg(feature = "rocksdb")]
use std::path::Path;
#[cfg(feature = "rocksdb")]
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

mod cache;
mod load;
pub mod projection;

pub use load::{LoadPlan, LoadedGraph, Loader, Verdict};

/// Applied events between two memtable flushes (see the module documentation).
pub const FLUSH_EVERY_EVENTS: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("graph storage error: {0}")]
    Storage(#[from] oxigraph::store::StorageError),
    #[error("invalid SPARQL query: {0}")]
    Syntax(String),
    #[error("SPARQL evaluation failed: {0}")]
    Evaluation(String),
    #[error("cannot write dump: {0}")]
    Io(#[from] std::io::Error),
}

/// One event ready to apply: its id and what it maps to.
#[derive(Debug, Clone)]
pub struct Applicable {
    pub event_id: String,
    pub mapped: Mapped,
}

/// What a batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// Events that became their entity's current state (including retractions).
    pub applied: usize,
    pub retracted: usize,
    pub quads: usize,
    /// Ids of events skipped because they had been applied before.
    pub duplicate_ids: Vec<String>,
    /// Ids of events recorded in provenance but not applied: their entity already had a newer one.
    pub stale_ids: Vec<String>,
    /// Per entity graph the batch changed, the event now behind it (what [`GraphStore::generator`]
    /// reads after the commit).
    pub generators: BTreeMap<String, Generator>,
}

/// The event behind an entity graph's current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generator {
    pub event_id: String,
    pub retracted: bool,
}

/// A row of a SELECT query: variable name to bound term.
pub type Row = BTreeMap<String, Term>;

/// A handle on the graph store. Clones share one store, swappable in place: every clone sees a
/// [`GraphStore::replace_with`] at once, while reads already running finish on the store they
/// started with. Clones share the entity-graph cache too ([`GraphStore::entity_graph`]).
#[derive(Clone)]
pub struct GraphStore {
    db: Arc<ArcSwap<oxigraph::store::Store>>,
    cache: Arc<cache::GraphCache>,
    #[cfg(feature = "rocksdb")]
    flushes: Arc<Flushes>,
}

/// Events applied since the last memtable flush, and the flush running, if any. When the last
/// handle goes, the flush is waited for, so that the store is closed (and its directory free to
/// open again) once the handles are dropped.
#[cfg(feature = "rocksdb")]
#[derive(Default)]
struct Flushes {
    pending: AtomicUsize,
    running: Arc<AtomicBool>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

#[cfg(feature = "rocksdb")]
impl Drop for Flushes {
    fn drop(&mut self) {
        let thread = self.thread.get_mut().map(Option::take).unwrap_or_default();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for GraphStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphStore").finish_non_exhaustive()
    }
}

fn nn(s: &str) -> NamedNodeRef<'_> {
    NamedNodeRef::new_unchecked(s)
}

fn offset_node(log: &str, tp: &TopicPartition) -> NamedNode {
    NamedNode::new_unchecked(format!("{}offset/{}/{}/{}", vocab::ID, log, tp.topic, tp.partition))
}

/// Replaces the offsets of `log` in the offsets graph with `offsets`, inside `tx`.
fn write_offsets(tx: &mut oxigraph::store::Transaction<'_>, log: &str, offsets: &Offsets) -> Result<(), StoreError> {
    let offsets_graph = nn(vocab::OFFSETS_GRAPH);
    for (tp, next) in &offsets.0 {
        let node = offset_node(log, tp);
        let old: Vec<Quad> = tx
            .quads_for_pattern(Some(node.as_ref().into()), None, None, Some(offsets_graph.into()))
            .collect::<Result<_, _>>()?;
        for q in &old {
            tx.remove(q);
        }
        let g = GraphName::NamedNode(offsets_graph.into_owned());
        let s = NamedOrBlankNodeRef::from(node.as_ref());
        tx.insert(QuadRef::new(s, nn(vocab::RDF_TYPE), nn(coal::OFFSET), &g));
        tx.insert(QuadRef::new(s, nn(coal::TOPIC), TermRef::from(Literal::new_simple_literal(&tp.topic).as_ref()), &g));
        tx.insert(QuadRef::new(s, nn(coal::PARTITION), &Term::from(Literal::from(i64::from(tp.partition))), &g));
        tx.insert(QuadRef::new(s, nn(coal::NEXT_OFFSET), &Term::from(Literal::from(*next)), &g));
    }
    Ok(())
}

impl GraphStore {
    /// Opens (or creates) the on-disk store at `path`.
    #[cfg(feature = "rocksdb")]
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(Self::from_store(oxigraph::store::Store::open(path)?))
    }

    /// Opens an existing store read-only (e.g. to dump it while a server holds it open).
    #[cfg(feature = "rocksdb")]
    pub fn open_read_only(path: &Path) -> Result<Self, StoreError> {
        Ok(Self::from_store(oxigraph::store::Store::open_read_only(path)?))
    }

    /// A store in memory, for tests.
    pub fn in_memory() -> Result<Self, StoreError> {
        Ok(Self::from_store(oxigraph::store::Store::new()?))
    }

    fn from_store(db: oxigraph::store::Store) -> Self {
        GraphStore {
            db: Arc::new(ArcSwap::from_pointee(db)),
            cache: Arc::new(cache::GraphCache::new(cache::ENTITY_CACHE_ENTRIES)),
            #[cfg(feature = "rocksdb")]
            flushes: Arc::default(),
        }
    }

    /// Counts `events` applied and, every [`FLUSH_EVERY_EVENTS`], starts a memtable flush on a
    /// thread of its own unless one is still running (a no-op for stores in memory).
    #[cfg(feature = "rocksdb")]
    fn applied(&self, db: &Arc<oxigraph::store::Store>, events: usize) {
        let pending = self.flushes.pending.fetch_add(events, Ordering::Relaxed) + events;
        if pending < FLUSH_EVERY_EVENTS || self.flushes.running.swap(true, Ordering::AcqRel) {
            return;
        }
        self.flushes.pending.store(0, Ordering::Relaxed);
        let (db, running) = (db.clone(), self.flushes.running.clone());
        let thread = std::thread::spawn(move || {
            if let Err(e) = db.flush() {
                tracing::warn!(error = %e, "memtable flush failed; RocksDB flushes on its own when they are full");
            }
            running.store(false, Ordering::Release);
        });
        // The previous flush has finished (`running` was false): its handle only needs reaping.
        let previous = self.flushes.thread.lock().map(|mut t| t.replace(thread));
        if let Ok(Some(previous)) = previous {
            let _ = previous.join();
        }
    }

    #[cfg(not(feature = "rocksdb"))]
    fn applied(&self, _db: &Arc<oxigraph::store::Store>, _events: usize) {}

    /// Makes every clone of this handle use `other`'s store from now on (a rebuilt store
    /// swapping in).
    pub fn replace_with(&self, other: &GraphStore) {
        self.db.store(other.db.load_full());
        self.cache.cleared();
    }

    fn db(&self) -> Arc<oxigraph::store::Store> {
        self.db.load_full()
    }

    /// A number that grows with every change readers can see — each committed batch, an initial
    /// load, a rebuilt store swapping in — and is read after the change is visible. Two equal
    /// readings mean nothing was committed between them: what was read in between can be kept
    /// for as long as the number stays the same.
    pub fn epoch(&self) -> u64 {
        self.cache.epoch()
    }

    /// The underlying Oxigraph store, for read-only SPARQL evaluation.
    pub fn oxigraph(&self) -> Arc<oxigraph::store::Store> {
        self.db()
    }

    /// Applies `batch` and advances the offsets of `log` to `offsets`, in one transaction.
    pub fn apply(&self, log: &str, batch: &[Applicable], offsets: &Offsets) -> Result<ApplyStats, StoreError> {
        let event_id_p = nn(coal::EVENT_ID);
        let mut stats = ApplyStats::default();
        let mut maintenance = projection::Maintenance::default();
        let mut outcome_lists = HashSet::new();
        let db = self.db();
        let mut tx = db.start_transaction()?;
        for item in batch {
            let id_literal = Literal::new_simple_literal(&item.event_id);
            let event = coalition_mapping::event_iri(&item.event_id);
            let seen = provenance_of(&tx, &event, Some(event_id_p), Some(id_literal.as_ref().into()))
                .next()
                .transpose()?
                .is_some();
            if seen {
                stats.duplicate_ids.push(item.event_id.clone());
                continue;
            }
            let m = &item.mapped;
            for q in &m.provenance {
                tx.insert(q);
            }
            let current = current_key(&tx, &m.graph)?;
            if current.is_some_and(|c| c >= m.order) {
                stats.stale_ids.push(item.event_id.clone());
                continue;
            }
            let before: Vec<Quad> = tx
                .quads_for_pattern(None, None, None, Some(GraphNameRef::NamedNode(m.graph.as_ref())))
                .collect::<Result<_, _>>()?;
            let change = projection::Change { old: &before, new: &m.facts };
            let affected = maintenance.affected(&tx, &change)?;
            projection::outcome_lists_touched(&tx, &change, &mut outcome_lists)?;
            maintenance.account(&tx, &affected, -1)?;
            tx.clear_graph(GraphNameRef::NamedNode(m.graph.as_ref()))?;
            // The graph's previous generation record is replaced; the old event stays in provenance.
            let old: Vec<Quad> = provenance_of(&tx, &m.graph, None, None).collect::<Result<_, _>>()?;
            for q in &old {
                tx.remove(q);
            }
            for q in m.facts.iter().chain(&m.generation) {
                tx.insert(q);
            }
            maintenance.applied();
            maintenance.account(&tx, &affected, 1)?;
            stats.applied += 1;
            let retracted = m.action == coalition_events::Action::Retract;
            if retracted {
                stats.retracted += 1;
            }
            stats
                .generators
                .insert(m.graph.as_str().to_owned(), Generator { event_id: item.event_id.clone(), retracted });
            stats.quads += m.facts.len() + m.provenance.len() + m.generation.len();
        }
        maintenance.write(&mut tx)?;
        write_offsets(&mut tx, log, offsets)?;
        tx.commit()?;
        // Before returning, so before the caller publishes the new watermark.
        self.cache.committed(stats.generators.keys().cloned(), outcome_lists);
        self.applied(&db, batch.len());
        Ok(stats)
    }

    /// The offsets of `log` committed so far.
    pub fn offsets(&self, log: &str) -> Result<Offsets, StoreError> {
        let prefix = format!("{}offset/{}/", vocab::ID, log);
        let mut out = Offsets::default();
        let rows = self.select(&format!(
            "SELECT ?node ?topic ?partition ?next WHERE {{ GRAPH <{}> {{
               ?node <{}> ?topic ; <{}> ?partition ; <{}> ?next }} }}",
            vocab::OFFSETS_GRAPH,
            coal::TOPIC,
            coal::PARTITION,
            coal::NEXT_OFFSET
        ))?;
        for row in rows {
            let Some(Term::NamedNode(node)) = row.get("node") else { continue };
            if !node.as_str().starts_with(&prefix) {
                continue;
            }
            let (Some(topic), Some(partition), Some(next)) =
                (literal(&row, "topic"), literal(&row, "partition"), literal(&row, "next"))
            else {
                continue;
            };
            if let (Ok(partition), Ok(next)) = (partition.parse(), next.parse()) {
                out.0.insert(TopicPartition { topic, partition }, next);
            }
        }
        Ok(out)
    }

    /// The event behind the current state of the entity graph `graph`, if any.
    pub fn generator(&self, graph: &NamedNode) -> Result<Option<Generator>, StoreError> {
        let db = self.db();
        let Some(ev) = provenance_object(&db, graph, nn(vocab::prov::WAS_GENERATED_BY))? else {
            return Ok(None);
        };
        let Term::NamedNode(ev) = ev else { return Ok(None) };
        let event_id = provenance_object(&db, &ev, nn(coal::EVENT_ID))?.map(|t| lexical(&t)).unwrap_or_default();
        let retracted = provenance_object(&db, graph, nn(coal::RETRACTED))?.is_some_and(|t| lexical(&t) == "true");
        Ok(Some(Generator { event_id, retracted }))
    }

    /// True if an event with this id has been applied (its provenance is there, under the event's
    /// IRI, as `apply` looks for it).
    pub fn has_event(&self, event_id: &str) -> Result<bool, StoreError> {
        let id_literal = Literal::new_simple_literal(event_id);
        let event = coalition_mapping::event_iri(event_id);
        let db = self.db();
        let quads = db.quads_for_pattern(
            Some(event.as_ref().into()),
            Some(nn(coal::EVENT_ID)),
            Some(id_literal.as_ref().into()),
            None,
        );
        Ok(in_provenance(quads).next().transpose()?.is_some())
    }

    /// Number of quads in the store.
    pub fn len(&self) -> Result<usize, StoreError> {
        Ok(self.db().len()?)
    }

    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.db().is_empty()?)
    }

    /// Evaluates a SELECT query with the union of all graphs as the default graph.
    pub fn select(&self, query: &str) -> Result<Vec<Row>, StoreError> {
        self.with_solutions(query, |solutions| solutions.map(|s| s.map(row).map_err(evaluation)).collect())
    }

    /// Rows `offset..offset + limit` of a SELECT query's solutions, and how many solutions there
    /// are: one evaluation, so the page and the count see the same state of the store, and an
    /// ordered list costs one evaluation rather than a count and a page.
    pub fn select_page(&self, query: &str, offset: usize, limit: usize) -> Result<(Vec<Row>, usize), StoreError> {
        self.with_solutions(query, |solutions| {
            let mut page = Vec::with_capacity(limit.min(1024));
            let mut total = 0;
            for solution in solutions {
                let solution = solution.map_err(evaluation)?;
                if total >= offset && page.len() < limit {
                    page.push(row(solution));
                }
                total += 1;
            }
            Ok((page, total))
        })
    }

    /// `f` over the solutions of a SELECT query, with the union of all graphs as the default graph.
    fn with_solutions<T>(
        &self,
        query: &str,
        f: impl FnOnce(QuerySolutionIter) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut prepared = SparqlEvaluator::new().parse_query(query).map_err(|e| StoreError::Syntax(e.to_string()))?;
        prepared.dataset_mut().set_default_graph_as_union();
        let db = self.db();
        let results = prepared.on_store(&db).execute().map_err(evaluation)?;
        let QueryResults::Solutions(solutions) = results else {
            return Err(StoreError::Evaluation("not a SELECT query".to_owned()));
        };
        f(solutions)
    }

    /// All quads of one named graph.
    pub fn graph(&self, graph: &NamedNode) -> Result<Vec<Quad>, StoreError> {
        Ok(self
            .db()
            .quads_for_pattern(None, None, None, Some(GraphNameRef::NamedNode(graph.as_ref())))
            .collect::<Result<_, _>>()?)
    }

    /// The quads of the entity's own graph (its current facts; empty if it has none), from the
    /// entity-graph cache when it holds them (see `cache.rs`: never older than the last commit
    /// finished before the call).
    pub fn entity_graph(&self, kind: coalition_events::Kind, id: &str) -> Result<Arc<[Quad]>, StoreError> {
        Ok(self.cached_graph(&coalition_mapping::graph_iri(kind, id))?.quads)
    }

    /// What `decode` makes of the entity graph of `kind` and `id` ([`GraphStore::entity_graph`]),
    /// kept beside the cached graph while it stays: decoded again only when the graph changed or
    /// left the cache (or a view of another type was kept).
    pub fn entity_view<T: std::any::Any + Send + Sync>(
        &self,
        kind: coalition_events::Kind,
        id: &str,
        decode: impl FnOnce(&[Quad]) -> T,
    ) -> Result<Arc<T>, StoreError> {
        let graph = coalition_mapping::graph_iri(kind, id);
        let cached = self.cached_graph(&graph)?;
        if let Some(view) = cached.view.and_then(|v| v.downcast::<T>().ok()) {
            return Ok(view);
        }
        let view = Arc::new(decode(&cached.quads));
        self.cache.attach(graph.as_str(), &cached.quads, view.clone());
        Ok(view)
    }

    /// `graph` from the cache, or read and cached.
    fn cached_graph(&self, graph: &NamedNode) -> Result<cache::Cached, StoreError> {
        let start = match self.cache.get(graph.as_str()) {
            Ok(cached) => return Ok(cached),
            Err(start) => start,
        };
        let quads: Arc<[Quad]> = self.graph(graph)?.into();
        self.cache.fill(graph.as_str(), start, &quads);
        Ok(cache::Cached { quads, view: None })
    }

    /// Entity graphs in the cache now.
    #[cfg(test)]
    pub(crate) fn cached_entity_graphs(&self) -> usize {
        self.cache.len()
    }

    /// Writes every quad except consumed offsets as N-Quads, sorted, so two stores holding the
    /// same facts dump identical bytes.
    pub fn dump_nquads(&self, out: &mut impl Write) -> Result<usize, StoreError> {
        let offsets = nn(vocab::OFFSETS_GRAPH);
        let mut lines = Vec::new();
        let db = self.db();
        for q in db.iter() {
            let q = q?;
            if q.graph_name.as_ref() == GraphNameRef::NamedNode(offsets) {
                continue;
            }
            let mut buf = Vec::new();
            let mut ser = RdfSerializer::from_format(RdfFormat::NQuads).for_writer(&mut buf);
            ser.serialize_quad(&q)?;
            ser.finish()?;
            lines.push(buf);
        }
        lines.sort();
        for line in &lines {
            out.write_all(line)?;
        }
        Ok(lines.len())
    }
}

fn lexical(t: &Term) -> String {
    match t {
        Term::Literal(l) => l.value().to_owned(),
        Term::NamedNode(n) => n.as_str().to_owned(),
        Term::BlankNode(b) => b.as_str().to_owned(),
    }
}

/// The object of `s p` in the provenance graph, looked up by subject ([`in_provenance`]).
fn provenance_object(
    db: &oxigraph::store::Store,
    s: &NamedNode,
    p: NamedNodeRef<'_>,
) -> Result<Option<Term>, StoreError> {
    Ok(in_provenance(db.quads_for_pattern(Some(s.as_ref().into()), Some(p), None, None))
        .next()
        .transpose()?
        .map(|q| q.object))
}

fn tx_object(
    tx: &oxigraph::store::Transaction<'_>,
    s: &NamedNode,
    p: NamedNodeRef<'_>,
) -> Result<Option<Term>, StoreError> {
    Ok(provenance_of(tx, s, Some(p), None).next().transpose()?.map(|q| q.object))
}

/// The quads of `s` (and `p`, `o` if given) in the provenance graph, inside the transaction
/// ([`in_provenance`]).
fn provenance_of<'a>(
    tx: &'a oxigraph::store::Transaction<'_>,
    s: &NamedNode,
    p: Option<NamedNodeRef<'_>>,
    o: Option<TermRef<'_>>,
) -> impl Iterator<Item = Result<Quad, oxigraph::store::StorageError>> + 'a {
    in_provenance(tx.quads_for_pattern(Some(s.as_ref().into()), p, o, None))
}

/// The provenance graph's quads among `quads`, which a lookup by subject in every graph found.
///
/// Provenance is read by subject, not by graph: the quad indexes keep Bloom filters of their
/// first term (the vendored Oxigraph's `PATCHED.md`, change 8), so a subject that no file holds —
/// a new entity's graph, a new event — is found absent without reading any file, where a lookup
/// that starts with the provenance graph searches every file (each holds that graph). The
/// subjects asked about (entity graphs, events) have quads in the provenance graph only.
fn in_provenance<'a>(
    quads: impl Iterator<Item = Result<Quad, oxigraph::store::StorageError>> + 'a,
) -> impl Iterator<Item = Result<Quad, oxigraph::store::StorageError>> + 'a {
    let provenance = GraphNameRef::NamedNode(nn(vocab::PROVENANCE_GRAPH));
    quads.filter(move |q| q.as_ref().map_or(true, |q| q.graph_name.as_ref() == provenance))
}

/// The order key of the event behind the graph's current state, read inside the transaction.
fn current_key(tx: &oxigraph::store::Transaction<'_>, graph: &NamedNode) -> Result<Option<OrderKey>, StoreError> {
    let Some(Term::NamedNode(ev)) = tx_object(tx, graph, nn(vocab::prov::WAS_GENERATED_BY))? else {
        return Ok(None);
    };
    let version = tx_object(tx, &ev, nn(coal::ENTITY_VERSION))?.and_then(|t| lexical(&t).parse().ok()).unwrap_or(0);
    let time = tx_object(tx, &ev, nn(vocab::prov::STARTED_AT_TIME))?
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(&lexical(&t)).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
        .unwrap_or_default();
    let event_id = tx_object(tx, &ev, nn(coal::EVENT_ID))?.map(|t| lexical(&t)).unwrap_or_default();
    Ok(Some(OrderKey { version, time, event_id }))
}

/// SHA-256 (hex) of the store's canonical dump: sorted N-Quads of every graph but the offsets.
pub fn digest(store: &GraphStore) -> Result<(String, usize), StoreError> {
    use sha2::{Digest, Sha256};
    let mut dump = Vec::new();
    let quads = store.dump_nquads(&mut dump)?;
    Ok((format!("{:x}", Sha256::digest(&dump)), quads))
}

fn evaluation(e: impl std::fmt::Display) -> StoreError {
    StoreError::Evaluation(e.to_string())
}

fn row(solution: QuerySolution) -> Row {
    solution.iter().map(|(var, term)| (var.as_str().to_owned(), term.clone())).collect()
}

/// The lexical value of a bound literal (or the IRI string of a bound IRI).
pub fn literal(row: &Row, var: &str) -> Option<String> {
    match row.get(var)? {
        Term::Literal(l) => Some(l.value().to_owned()),
        Term::NamedNode(n) => Some(n.as_str().to_owned()),
        Term::BlankNode(b) => Some(b.as_str().to_owned()),
    }
}

/// The 128-bit SipHash-2-4 of `s`, as Oxigraph's `StrHash`: the hash Oxigraph keys its string
/// dictionary by, so the store already takes two strings with the same hash to be one string.
pub(crate) fn str_hash(s: &str) -> u128 {
    use siphasher::sip128::{Hasher128, SipHasher24};
    use std::hash::Hasher;
    let mut hasher = SipHasher24::new();
    hasher.write(s.as_bytes());
    hasher.finish128().into()
}

#[cfg(test)]
mod tests;
