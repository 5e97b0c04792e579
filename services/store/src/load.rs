//! Initial load: filling a store that holds nothing yet (a new replica, a rebuild's new
//! generation) from the log with Oxigraph's bulk loader, which writes sorted files straight into
//! RocksDB instead of going through transactions.
//!
//! The bulk loader can neither delete nor read what it is writing, so the caller decides which
//! event wins each entity graph (the greatest order key) before handing over its quads, and the
//! projections are computed afterwards from the loaded facts with the same contribution code the
//! incremental maintenance uses, reading them from what the [`Loader`] kept of them in memory
//! ([`LoadedFacts`]) rather than from the store. Guarantees: everything added becomes visible at
//! once, when the loader commits, together with a marker (in the offsets graph) saying the load
//! is unfinished; [`GraphStore::finish_initial_load`] then bulk-loads the projections, and writes
//! the offsets and removes the marker in one transaction. A store found holding the marker (the
//! process stopped in between) is cleared by [`GraphStore::discard_unfinished_load`] and loaded
//! again.

use crate::projection::{self, LoadedFacts};
use crate::{nn, str_hash, write_offsets, Applicable, GraphStore, StoreError};
use coalition_mapping::vocab::{self, coal};
use coalition_mapping::{Offsets, OrderKey};
use oxigraph::model::{GraphName, NamedNode, Quad};
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

/// Quads handed to the bulk loader at once: each batch becomes one set of sorted files, written
/// by one loader thread while the caller goes on filling the next. Three batches are in memory
/// at once (two loading, one filling): with 400,000 quads a 1M load peaked at 1,944 and 2,074 MiB
/// once its second pass got faster, with 300,000 at 1,828 MiB.
const BATCH_QUADS: usize = 300_000;
/// The same for the projections, loaded last: by then the blocks RocksDB read and the
/// accumulated cells are in memory too, and the load's peak is set there. On the 100k set the
/// phase's peak fell from 633–640 to 401–418 MB with these smaller batches, in the same time.
const PROJECTION_BATCH_QUADS: usize = 100_000;
/// Loader threads (each holding one batch).
const THREADS: usize = 2;
/// Room past a full batch in the buffer that collects it: the quads of one call to
/// [`Loader::add`] (an event's facts or provenance, a few dozen).
const ADD_HEADROOM: usize = 4_096;

fn marker(log: &str) -> Quad {
    Quad::new(
        NamedNode::new_unchecked(format!("{}initial-load/{}", vocab::ID, log)),
        nn(vocab::RDF_TYPE),
        nn(coal::INITIAL_LOAD),
        GraphName::NamedNode(nn(vocab::OFFSETS_GRAPH).into_owned()),
    )
}

/// What [`GraphStore::apply`] does with an event, decided in log order without a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The event becomes its entity's current state (for now): its provenance is kept.
    Applied,
    /// Its entity already has a newer event: its provenance is kept, its facts are not.
    Stale,
    /// An event with this id came before: nothing of it is kept.
    Duplicate,
}

/// The decisions of an initial load, made in two passes over the same records: the first, in
/// log order, says what [`GraphStore::apply`] would have done with each event (so counts and
/// provenance match a transactional replay); the second picks out the event that won each entity
/// graph, whose facts are the graph's.
///
/// Event ids and graph names are kept as their 128-bit SipHash ([`str_hash`]), not as strings: a
/// million conversations make 2.6 million of each. It is the hash Oxigraph keys its string
/// dictionary by, so the store already takes two strings with the same hash to be one string.
#[derive(Debug, Default)]
pub struct LoadPlan {
    seen: HashSet<u128>,
    winners: HashMap<u128, OrderKey>,
}

impl LoadPlan {
    /// First pass: records `item` and returns what a transactional apply would do with it.
    pub fn record(&mut self, item: &Applicable) -> Verdict {
        if !self.seen.insert(str_hash(&item.event_id)) {
            return Verdict::Duplicate;
        }
        let order = &item.mapped.order;
        match self.winners.entry(str_hash(item.mapped.graph.as_str())) {
            Entry::Occupied(current) if *current.get() >= *order => Verdict::Stale,
            Entry::Occupied(mut current) => {
                current.get_mut().clone_from(order);
                Verdict::Applied
            }
            Entry::Vacant(slot) => {
                slot.insert(order.clone());
                Verdict::Applied
            }
        }
    }

    /// Second pass: true for the event that won its entity graph, once (a later copy of the same
    /// event answers false).
    pub fn take_winner(&mut self, item: &Applicable) -> bool {
        let graph = str_hash(item.mapped.graph.as_str());
        if self.winners.get(&graph) != Some(&item.mapped.order) {
            return false;
        }
        self.winners.remove(&graph);
        true
    }
}

/// Collects quads for the bulk loader; see [`GraphStore::initial_load`].
pub struct Loader<'a> {
    bulk: oxigraph::store::BulkLoader<'a>,
    buffer: Vec<Quad>,
    batch: usize,
    loaded: usize,
    /// What the projections will read of the quads added, when they are still to be computed.
    facts: Option<LoadedFacts>,
}

impl<'a> Loader<'a> {
    /// Oxigraph's bulk loader on [`THREADS`] threads, handed batches of `batch` quads
    /// ([`BATCH_QUADS`] or [`PROJECTION_BATCH_QUADS`]) as this loader fills them: each loading
    /// thread sizes its hash sets by the batch it is given.
    fn new(db: &'a oxigraph::store::Store, batch: usize, facts: Option<LoadedFacts>) -> Self {
        let bulk = db.bulk_loader().with_num_threads(THREADS);
        Loader { bulk, buffer: Self::empty_batch(batch), batch, loaded: 0, facts }
    }

    /// A buffer that holds a batch and the quads of the call that fills it without growing:
    /// grown by doubling instead, each batch's buffer was copied over and over into memory that
    /// had to be faulted in afresh (on the 1M set, a few percent of the first pass's samples in
    /// the kernel clearing pages).
    fn empty_batch(batch: usize) -> Vec<Quad> {
        Vec::with_capacity(batch + ADD_HEADROOM)
    }

    /// Adds quads; they are written in batches and become visible only when the load commits.
    pub fn add(&mut self, quads: impl IntoIterator<Item = Quad>) -> Result<(), StoreError> {
        match &mut self.facts {
            Some(facts) => self.buffer.extend(quads.into_iter().inspect(|q| facts.record(q))),
            None => self.buffer.extend(quads),
        }
        if self.buffer.len() >= self.batch {
            self.write_batch(Self::empty_batch(self.batch))?;
        }
        Ok(())
    }

    /// Hands the buffer over as a batch and goes on with `next`.
    fn write_batch(&mut self, next: Vec<Quad>) -> Result<(), StoreError> {
        self.loaded += self.buffer.len();
        let full = std::mem::replace(&mut self.buffer, next);
        // Handed over as one batch: `load_quads` would copy it into batches of exactly the
        // loader's size and start another batch with the few quads left over.
        self.bulk.load_batch(full)?;
        Ok(())
    }

    /// Writes what is left and makes every quad added visible at once.
    fn commit(mut self) -> Result<LoadedGraph, StoreError> {
        self.write_batch(Vec::new())?;
        self.bulk.commit()?;
        Ok(LoadedGraph { quads: self.loaded, facts: self.facts.unwrap_or_default() })
    }
}

/// The committed facts of an initial load, waiting for their projections
/// ([`GraphStore::finish_initial_load`]).
#[derive(Debug)]
pub struct LoadedGraph {
    quads: usize,
    facts: LoadedFacts,
}

impl LoadedGraph {
    /// The number of quads loaded.
    pub fn quads(&self) -> usize {
        self.quads
    }
}

impl GraphStore {
    /// Clears the store if it holds an initial load of `log` that did not finish; returns whether
    /// it did. Call before deciding how to resume: such a store has facts without projections.
    pub fn discard_unfinished_load(&self, log: &str) -> Result<bool, StoreError> {
        let db = self.db();
        if !db.contains(&marker(log))? {
            return Ok(false);
        }
        tracing::warn!(log, "the store holds an initial load that did not finish; clearing it to load again");
        db.clear()?;
        self.cache.cleared();
        Ok(true)
    }

    /// Bulk-loads the quads `fill` adds. When `fill` succeeds they become visible at once, marked
    /// as an unfinished load of `log` until [`GraphStore::finish_initial_load`]; when it fails,
    /// nothing is written. For a store that holds nothing: the loader adds quads without reading
    /// the store, so the caller must already have resolved which events win.
    pub fn initial_load<E: From<StoreError>>(
        &self,
        log: &str,
        fill: impl FnOnce(&mut Loader<'_>) -> Result<(), E>,
    ) -> Result<LoadedGraph, E> {
        let db = self.db();
        let mut loader = Loader::new(&db, BATCH_QUADS, Some(LoadedFacts::default()));
        fill(&mut loader)?;
        loader.add([marker(log)])?;
        let loaded = loader.commit()?;
        self.cache.cleared();
        Ok(loaded)
    }

    /// Finishes the initial load `loaded` of `log`: computes every projection from the loaded
    /// facts and bulk-loads it, then writes `offsets` (how far into the log the load went) and
    /// removes the unfinished-load marker in one transaction.
    pub fn finish_initial_load(&self, log: &str, offsets: &Offsets, loaded: LoadedGraph) -> Result<(), StoreError> {
        let db = self.db();
        let started = std::time::Instant::now();
        let maintenance = projection::Maintenance::account_all(&loaded.facts)?;
        drop(loaded);
        let accounted = started.elapsed().as_secs_f64();
        let mut loader = Loader::new(&db, PROJECTION_BATCH_QUADS, None);
        maintenance.initial_quads(|quad| loader.add([quad]))?;
        loader.commit()?;
        let projected = started.elapsed().as_secs_f64();
        let mut tx = db.start_transaction()?;
        write_offsets(&mut tx, log, offsets)?;
        tx.remove(&marker(log));
        tx.commit()?;
        tracing::info!(
            accounting_s = accounted,
            bulk_load_s = projected - accounted,
            offsets_commit_s = started.elapsed().as_secs_f64() - projected,
            "initial load: projections done"
        );
        // The projections and offsets became visible (no entity graph changed, but the lists of
        // case studies did): readers may see something new.
        self.cache.projections_rewritten();
        Ok(())
    }
}
