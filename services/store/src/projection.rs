//! Evidence projections: the hot-path aggregates kept as Data Cube observations in their own
//! named graph, maintained inside the transaction that applies the events changing them.
//!
//! Each projected entity (case study, activity, outcome, dialogue, evidence statistic) has a
//! *contribution*: the amounts it adds to observation counters and reference-count cells, read
//! from the store's current state (its own facts, links that name it, the recommendation
//! hierarchy, what an outcome measures). Applying an event computes the contributions of every
//! entity whose contribution the event can change — before and after the change — and adds the
//! difference. Contributions are functions of the state, so the projections are a function of
//! the state too: any delivery order converges, and a rebuild digests the same.
//!
//! Distinct counts (partners, countries) and the latest outcome date are derived from reference
//! counts per value ([`coal::PROJECTION_CELL`] nodes in their own graph); a counter, cell or
//! observation at zero is removed, never kept at zero.
//!
//! Cost: O(1) index lookups per applied entity, except a change to a recommendation's type or
//! broader link, which recomputes the entities implementing its narrower tree.

use crate::{str_hash, StoreError};
use coalition_events::Kind;
use coalition_mapping::vocab::{self, coal, dcterms, qb, skos};
use coalition_mapping::{encode_segment, parse_entity_iri};
use oxigraph::model::{
    GraphName, GraphNameRef, Literal, NamedNode, NamedNodeRef, NamedOrBlankNodeRef, Quad, QuadRef, Term, TermRef,
};
use oxigraph::store::Transaction;
use siphasher::sip128::{Hasher128, SipHasher24};
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::Hash;
use std::sync::Arc;

fn nn(s: &str) -> NamedNodeRef<'_> {
    NamedNodeRef::new_unchecked(s)
}

/// One observation of one of the four data sets.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Observation {
    /// Recommendation dashboard: a recommendation over its narrower tree.
    Dashboard { recommendation: NamedNode },
    /// Evidence by audience group and country (`None`: statistics given for no country).
    Evidence { group: String, country: Option<String> },
    /// A partner's activities by year and implemented recommendation (`None`: implements none).
    Rollup { partner: NamedNode, year: i64, recommendation: Option<NamedNode> },
    /// The case studies implementing a recommendation (itself, not its narrower ones), each a
    /// [`Dimension::CaseStudy`] cell: what a page of them is read from.
    CaseStudies { recommendation: NamedNode },
}

fn tail(iri: &NamedNode) -> String {
    match parse_entity_iri(iri.as_str()) {
        Some((_, id)) => id,
        None => encode_segment(iri.as_str()),
    }
}

impl Observation {
    pub fn iri(&self) -> NamedNode {
        let base = format!("{}projection/", vocab::ID);
        NamedNode::new_unchecked(match self {
            Observation::Dashboard { recommendation } => format!("{base}dashboard/{}", tail(recommendation)),
            Observation::Evidence { group, country } => format!(
                "{base}evidence/{}/{}",
                encode_segment(group),
                country.as_deref().map_or_else(|| "any".to_owned(), encode_segment)
            ),
            Observation::Rollup { partner, year, recommendation } => format!(
                "{base}rollup/{}/{year}/{}",
                tail(partner),
                recommendation.as_ref().map_or_else(|| "none".to_owned(), tail)
            ),
            Observation::CaseStudies { recommendation } => format!("{base}case-studies/{}", tail(recommendation)),
        })
    }

    /// The named graph of the observation's data set.
    pub fn graph(&self) -> GraphName {
        GraphName::NamedNode(NamedNode::new_unchecked(match self {
            Observation::Dashboard { .. } => vocab::DASHBOARD_GRAPH,
            Observation::Evidence { .. } => vocab::EVIDENCE_GRAPH,
            Observation::Rollup { .. } => vocab::ROLLUP_GRAPH,
            Observation::CaseStudies { .. } => vocab::CASE_STUDIES_GRAPH,
        }))
    }

    /// The data set and dimension values written when the observation comes into being.
    fn header(&self) -> Vec<(&'static str, Term)> {
        let dataset = |iri: &str| (qb::DATA_SET, Term::NamedNode(NamedNode::new_unchecked(iri)));
        let mut out = vec![(vocab::RDF_TYPE, Term::NamedNode(NamedNode::new_unchecked(qb::OBSERVATION)))];
        match self {
            Observation::Dashboard { recommendation } => {
                out.push(dataset(vocab::DASHBOARD_DATASET));
                out.push((coal::REF_RECOMMENDATION, recommendation.clone().into()));
            }
            Observation::Evidence { group, country } => {
                out.push(dataset(vocab::EVIDENCE_DATASET));
                out.push((coal::REF_GROUP, Literal::new_simple_literal(group).into()));
                if let Some(c) = country {
                    out.push((coal::REF_AREA, Literal::new_simple_literal(c).into()));
                }
            }
            Observation::Rollup { partner, year, recommendation } => {
                out.push(dataset(vocab::ROLLUP_DATASET));
                out.push((coal::REF_PARTNER, partner.clone().into()));
                out.push((coal::REF_PERIOD, Literal::from(*year).into()));
                if let Some(r) = recommendation {
                    out.push((coal::REF_RECOMMENDATION, r.clone().into()));
                }
            }
            Observation::CaseStudies { recommendation } => {
                out.push(dataset(vocab::CASE_STUDIES_DATASET));
                out.push((coal::REF_RECOMMENDATION, recommendation.clone().into()));
            }
        }
        out
    }
}

/// What a reference-count cell counts, and the counter it drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dimension {
    Partner,
    Country,
    Date,
    CaseStudy,
}

impl Dimension {
    /// The counter of distinct values the dimension drives (the date drives the latest date).
    fn counter(self) -> Option<&'static str> {
        match self {
            Dimension::Partner => Some(coal::PARTNER_COUNT),
            Dimension::Country => Some(coal::COUNTRY_COUNT),
            Dimension::Date => None,
            Dimension::CaseStudy => Some(coal::CASE_STUDY_COUNT),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Dimension::Partner => "partner",
            Dimension::Country => "country",
            Dimension::Date => "date",
            Dimension::CaseStudy => "case-study",
        }
    }
}

/// A unit of a contribution.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Cell {
    /// A counter measure of an observation.
    Counter(Observation, &'static str),
    /// A reference count of one value of an observation.
    Refcount(Observation, Dimension, Term),
}

/// An observation with each of its terms replaced by its index in [`Terms`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum ObsKey {
    Dashboard(u32),
    Evidence(u32, Option<u32>),
    Rollup(u32, i64, Option<u32>),
    CaseStudies(u32),
}

/// A [`Cell`] with its terms replaced by their index in [`Terms`]: the cells accumulated over a
/// whole store (an initial load: over a million at 1M conversations, most of them a partner's
/// roll-up) hold no strings of their own, each distinct term being kept once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum CellKey {
    Counter(ObsKey, &'static str),
    Refcount(ObsKey, Dimension, u32),
}

/// Distinct terms, each kept once and known by its index; looked up by their 128-bit SipHash.
#[derive(Debug, Default)]
struct Terms {
    ids: HashMap<u128, u32>,
    all: Vec<Term>,
}

impl Terms {
    fn hash(term: &Term) -> u128 {
        let mut hasher = SipHasher24::new();
        term.hash(&mut hasher);
        hasher.finish128().into()
    }

    /// The index of the term whose hash is `hash`, keeping `term()` if it is new.
    fn intern(&mut self, hash: u128, term: impl FnOnce() -> Term) -> u32 {
        match self.ids.entry(hash) {
            Entry::Occupied(id) => *id.get(),
            Entry::Vacant(slot) => {
                let id = u32::try_from(self.all.len()).expect("fewer than 2^32 distinct terms");
                self.all.push(term());
                *slot.insert(id)
            }
        }
    }

    fn id(&mut self, term: Term) -> u32 {
        self.intern(Self::hash(&term), || term)
    }

    /// [`Terms::id`] of a borrowed term, copied only if it is new.
    fn id_of(&mut self, term: &Term) -> u32 {
        self.intern(Self::hash(term), || term.clone())
    }

    /// The index of `term`, if it is kept.
    fn get(&self, term: &Term) -> Option<u32> {
        self.ids.get(&Self::hash(term)).copied()
    }

    fn node_id(&mut self, node: NamedNode) -> u32 {
        self.id(node.into())
    }

    fn string_id(&mut self, value: String) -> u32 {
        self.id(Literal::new_simple_literal(value).into())
    }

    fn term(&self, id: u32) -> &Term {
        &self.all[id as usize]
    }

    fn node(&self, id: u32) -> NamedNode {
        match self.term(id) {
            Term::NamedNode(n) => n.clone(),
            other => unreachable!("term {other} was interned as a named node"),
        }
    }

    fn string(&self, id: u32) -> String {
        lexical(self.term(id))
    }

    /// The cell `key` stands for (the inverse of [`Terms::key`]).
    fn cell(&self, key: CellKey) -> Cell {
        match key {
            CellKey::Counter(obs, measure) => Cell::Counter(self.observation(obs), measure),
            CellKey::Refcount(obs, dim, value) => Cell::Refcount(self.observation(obs), dim, self.term(value).clone()),
        }
    }

    fn key(&mut self, cell: Cell) -> CellKey {
        match cell {
            Cell::Counter(obs, measure) => CellKey::Counter(self.obs_key(obs), measure),
            Cell::Refcount(obs, dim, value) => {
                let obs = self.obs_key(obs);
                CellKey::Refcount(obs, dim, self.id(value))
            }
        }
    }

    fn obs_key(&mut self, obs: Observation) -> ObsKey {
        match obs {
            Observation::Dashboard { recommendation } => ObsKey::Dashboard(self.node_id(recommendation)),
            Observation::Evidence { group, country } => {
                ObsKey::Evidence(self.string_id(group), country.map(|c| self.string_id(c)))
            }
            Observation::Rollup { partner, year, recommendation } => {
                ObsKey::Rollup(self.node_id(partner), year, recommendation.map(|r| self.node_id(r)))
            }
            Observation::CaseStudies { recommendation } => ObsKey::CaseStudies(self.node_id(recommendation)),
        }
    }

    fn observation(&self, key: ObsKey) -> Observation {
        match key {
            ObsKey::Dashboard(r) => Observation::Dashboard { recommendation: self.node(r) },
            ObsKey::Evidence(group, country) => {
                Observation::Evidence { group: self.string(group), country: country.map(|c| self.string(c)) }
            }
            ObsKey::Rollup(partner, year, recommendation) => Observation::Rollup {
                partner: self.node(partner),
                year,
                recommendation: recommendation.map(|r| self.node(r)),
            },
            ObsKey::CaseStudies(r) => Observation::CaseStudies { recommendation: self.node(r) },
        }
    }
}

/// Difference of contributions, accumulated over a batch and written once at its end.
#[derive(Debug, Default)]
pub(crate) struct Maintenance {
    deltas: HashMap<CellKey, i64>,
    terms: Terms,
    /// Ancestors-or-self of a recommendation that are recommendations; valid until a
    /// recommendation changes.
    ancestors: HashMap<NamedNode, Vec<NamedNode>>,
    /// The change being applied alters the recommendation hierarchy.
    reshapes: bool,
}

/// Facts of `entity`'s graph before and after one event: what the event changes.
pub(crate) struct Change<'a> {
    pub old: &'a [Quad],
    pub new: &'a [Quad],
}

type Contribution = Vec<(Cell, i64)>;

/// Counter deltas or values per (observation, measure).
type Counters = BTreeMap<(Observation, &'static str), i64>;

impl Maintenance {
    /// The entities whose contribution `change` can alter, read before the change is applied.
    pub(crate) fn affected(&mut self, tx: &Transaction<'_>, change: &Change<'_>) -> Result<Vec<NamedNode>, StoreError> {
        // Entities only: nodes inside an entity's graph (a dialogue's quotes) contribute nothing.
        let mut subjects = BTreeSet::new();
        for q in change.old.iter().chain(change.new) {
            if let oxigraph::model::NamedOrBlankNode::NamedNode(s) = &q.subject {
                if let Some((kind, id)) = parse_entity_iri(s.as_str()) {
                    if !id.contains('/') {
                        subjects.insert((kind, s.clone()));
                    }
                }
            }
        }
        let mut out = BTreeSet::new();
        for (kind, s) in subjects {
            if kind == Kind::Recommendation && hierarchy_changed(&s, change) {
                self.ancestors.clear();
                self.reshapes = true;
                for r in subtree(tx, &s)? {
                    for e in subjects_of(tx, coal::IMPLEMENTS, r.as_ref().into())? {
                        out.extend(measured_by(tx, &e)?);
                        out.insert(e);
                    }
                }
            }
            // Outcomes measure case studies and activities only.
            if matches!(kind, Kind::CaseStudy | Kind::Activity) {
                out.extend(measured_by(tx, &s)?);
            }
            out.insert(s);
        }
        Ok(out.into_iter().collect())
    }

    /// Marks the change returned by [`Maintenance::affected`] as applied to the facts.
    pub(crate) fn applied(&mut self) {
        if std::mem::take(&mut self.reshapes) {
            self.ancestors.clear();
        }
    }

    /// Adds `sign` times the current contribution of each entity.
    pub(crate) fn account<F: Facts + ?Sized>(
        &mut self,
        facts: &F,
        entities: &[NamedNode],
        sign: i64,
    ) -> Result<(), StoreError> {
        self.account_cells(facts, entities, sign, |_| true)
    }

    /// [`Maintenance::account`] for the cells `keep` accepts only.
    fn account_cells<F: Facts + ?Sized>(
        &mut self,
        facts: &F,
        entities: &[NamedNode],
        sign: i64,
        keep: impl Fn(&Cell) -> bool,
    ) -> Result<(), StoreError> {
        for e in entities {
            let Some((kind, _)) = parse_entity_iri(e.as_str()) else { continue };
            let contribution = self.contribution(facts, kind, Subject::Iri(e))?;
            self.add(contribution, sign, &keep);
        }
        Ok(())
    }

    /// Adds `sign` times the cells of `contribution` that `keep` accepts.
    fn add(&mut self, contribution: Contribution, sign: i64, keep: impl Fn(&Cell) -> bool) {
        for (cell, amount) in contribution {
            if keep(&cell) {
                let key = self.terms.key(cell);
                *self.deltas.entry(key).or_default() += sign * amount;
            }
        }
    }

    /// The contribution of every projected entity of an initial load, from what `facts` kept of
    /// it: the projections from scratch, for a store that has none yet. Two threads take a share
    /// of the projected classes each, listing their entities from `facts` in one pass each,
    /// and the smaller share's cells are then added to the larger's. Nothing is read from the
    /// store: listing the entities from its type index decoded each subject and graph name from
    /// the string dictionary, ~60 % of this work on the 100k set. An entity's kind is its
    /// projected class's: the mapping gives an entity's own IRI its kind's class and no other
    /// projected class (as [`Maintenance::account`] takes the kind from the IRI).
    pub(crate) fn account_all(facts: &LoadedFacts) -> Result<Self, StoreError> {
        // Activities contribute the most cells (the dashboard and a partner's roll-up); the other
        // classes together about as many.
        const SHARES: [&[(&str, Kind)]; 2] = [
            &[(coal::ACTIVITY, Kind::Activity)],
            &[
                (coal::CASE_STUDY, Kind::CaseStudy),
                (coal::OUTCOME, Kind::Outcome),
                (coal::DIALOGUE, Kind::Dialogue),
                (coal::EVIDENCE_STATISTIC, Kind::Evidence),
            ],
        ];
        let shares = std::thread::scope(|s| {
            let threads: Vec<_> = SHARES
                .iter()
                .map(|classes| {
                    s.spawn(move || {
                        let mut share = Maintenance::default();
                        facts.each_typed(classes, |kind, subject| {
                            let contribution = share.contribution(facts, kind, subject)?;
                            share.add(contribution, 1, |_| true);
                            Ok::<_, StoreError>(())
                        })?;
                        Ok::<_, StoreError>(share)
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().expect("an accounting thread panicked")).collect::<Result<Vec<_>, _>>()
        })?;
        let mut shares = shares.into_iter();
        let mut all = shares.next().unwrap_or_default();
        for mut share in shares {
            if share.deltas.len() > all.deltas.len() {
                std::mem::swap(&mut all, &mut share);
            }
            for (key, delta) in share.deltas {
                let cell = share.terms.cell(key);
                *all.deltas.entry(all.terms.key(cell)).or_default() += delta;
            }
        }
        Ok(all)
    }

    /// The cells entity `e` of kind `kind` adds to, as `facts` hold it.
    fn contribution<F: Facts + ?Sized>(
        &mut self,
        facts: &F,
        kind: Kind,
        e: Subject<'_>,
    ) -> Result<Contribution, StoreError> {
        let mut out = Vec::new();
        match kind {
            Kind::Activity | Kind::CaseStudy => {
                let class = if kind == Kind::Activity { coal::ACTIVITY } else { coal::CASE_STUDY };
                if !facts.has_type(e, class)? {
                    return Ok(out);
                }
                let recs = named_objects(facts, e, coal::IMPLEMENTS)?;
                let partners = named_objects(facts, e, coal::LED_BY)?;
                let countries = facts.objects(e, coal::COUNTRY)?;
                let reach = integer(facts, e, coal::REACH)?;
                let counter = if kind == Kind::Activity { coal::ACTIVITY_COUNT } else { coal::CASE_STUDY_COUNT };
                for x in self.ancestors_of_all(facts, &recs)? {
                    let obs = Observation::Dashboard { recommendation: x };
                    out.push((Cell::Counter(obs.clone(), counter), 1));
                    if kind == Kind::Activity {
                        out.push((Cell::Counter(obs.clone(), coal::PEOPLE_REACHED), reach));
                    }
                    for p in &partners {
                        out.push((Cell::Refcount(obs.clone(), Dimension::Partner, p.clone().into()), 1));
                    }
                    for c in &countries {
                        out.push((Cell::Refcount(obs.clone(), Dimension::Country, c.clone()), 1));
                    }
                }
                if kind == Kind::CaseStudy {
                    let iri = facts.iri(e);
                    for r in &recs {
                        let obs = Observation::CaseStudies { recommendation: r.clone() };
                        out.push((Cell::Refcount(obs, Dimension::CaseStudy, iri.clone().into()), 1));
                    }
                }
                if kind == Kind::Activity {
                    let year = facts.objects(e, dcterms::DATE)?.iter().find_map(year);
                    if let Some(year) = year {
                        let recs: Vec<Option<NamedNode>> =
                            if recs.is_empty() { vec![None] } else { recs.into_iter().map(Some).collect() };
                        for partner in &partners {
                            for recommendation in &recs {
                                let obs = Observation::Rollup {
                                    partner: partner.clone(),
                                    year,
                                    recommendation: recommendation.clone(),
                                };
                                out.push((Cell::Counter(obs.clone(), coal::ACTIVITY_COUNT), 1));
                                out.push((Cell::Counter(obs, coal::PEOPLE_REACHED), reach));
                            }
                        }
                    }
                }
            }
            Kind::Outcome => {
                if !facts.has_type(e, coal::OUTCOME)? {
                    return Ok(out);
                }
                let mut recs = BTreeSet::new();
                for m in named_objects(facts, e, coal::MEASURES)? {
                    recs.extend(named_objects(facts, Subject::Iri(&m), coal::IMPLEMENTS)?);
                }
                let recs: Vec<NamedNode> = recs.into_iter().collect();
                let dates = facts.objects(e, dcterms::DATE)?;
                for x in self.ancestors_of_all(facts, &recs)? {
                    let obs = Observation::Dashboard { recommendation: x };
                    out.push((Cell::Counter(obs.clone(), coal::OUTCOME_COUNT), 1));
                    for d in &dates {
                        out.push((Cell::Refcount(obs.clone(), Dimension::Date, d.clone()), 1));
                    }
                }
            }
            Kind::Dialogue => {
                if !facts.has_type(e, coal::DIALOGUE)? {
                    return Ok(out);
                }
                let reach = integer(facts, e, coal::REACH)?;
                let groups = strings(facts, e, coal::AUDIENCE_GROUP)?;
                for country in strings(facts, e, coal::COUNTRY)? {
                    for group in &groups {
                        let obs = Observation::Evidence { group: group.clone(), country: Some(country.clone()) };
                        out.push((Cell::Counter(obs.clone(), coal::DIALOGUE_COUNT), 1));
                        out.push((Cell::Counter(obs, coal::PEOPLE_REACHED), reach));
                    }
                }
            }
            Kind::Evidence => {
                if !facts.has_type(e, coal::EVIDENCE_STATISTIC)? {
                    return Ok(out);
                }
                let countries: Vec<Option<String>> = match strings(facts, e, coal::COUNTRY)? {
                    c if c.is_empty() => vec![None],
                    c => c.into_iter().map(Some).collect(),
                };
                for group in strings(facts, e, coal::GROUP)? {
                    for country in &countries {
                        let obs = Observation::Evidence { group: group.clone(), country: country.clone() };
                        out.push((Cell::Counter(obs, coal::STATISTIC_COUNT), 1));
                    }
                }
            }
            _ => {}
        }
        Ok(out)
    }

    /// Recommendations reached from any of `recs` by `skos:broader*`, each once.
    fn ancestors_of_all<F: Facts + ?Sized>(
        &mut self,
        facts: &F,
        recs: &[NamedNode],
    ) -> Result<BTreeSet<NamedNode>, StoreError> {
        let mut out = BTreeSet::new();
        for r in recs {
            if !self.ancestors.contains_key(r) {
                let found = ancestors(facts, r)?;
                self.ancestors.insert(r.clone(), found);
            }
            out.extend(self.ancestors[r].iter().cloned());
        }
        Ok(out)
    }

    /// The accumulated differences without the zeros: counter deltas per (observation, measure),
    /// and reference-count deltas per cell.
    fn split(self) -> (Counters, Vec<(Observation, Dimension, Term, i64)>) {
        let terms = self.terms;
        let mut counters = BTreeMap::new();
        let mut refcounts = Vec::new();
        for (key, delta) in self.deltas.into_iter().filter(|(_, delta)| *delta != 0) {
            match terms.cell(key) {
                Cell::Counter(obs, measure) => *counters.entry((obs, measure)).or_default() += delta,
                Cell::Refcount(obs, dim, value) => refcounts.push((obs, dim, value, delta)),
            }
        }
        (counters, refcounts)
    }

    /// Writes the accumulated differences: reference counts first (their transitions through
    /// zero move the distinct counters and the latest date), then counters, then observations
    /// that came into being or reached zero.
    pub(crate) fn write(self, tx: &mut Transaction<'_>) -> Result<(), StoreError> {
        let cells_graph = GraphName::NamedNode(NamedNode::new_unchecked(vocab::PROJECTION_CELLS_GRAPH));
        let (mut counters, refcounts) = self.split();
        let mut dates_added: BTreeMap<Observation, Vec<Term>> = BTreeMap::new();
        let mut dates_removed: BTreeMap<Observation, Vec<Term>> = BTreeMap::new();
        for (obs, dim, value, delta) in refcounts {
            let node = cell_iri(&obs, dim, &value);
            let before = integer_in(tx, &node, coal::CELL_COUNT, &cells_graph)?;
            let after = before + delta;
            let obs_iri = obs.iri();
            if before == 0 {
                for q in cell_quads(&obs, dim, &value, &node) {
                    tx.insert(&q);
                }
            }
            set_integer(tx, &node, coal::CELL_COUNT, before, after, &cells_graph);
            if after == 0 {
                tx.remove(QuadRef::new(&obs_iri, nn(coal::CELL), &node, &cells_graph));
                for q in quads(tx, &node, None, &cells_graph)? {
                    tx.remove(&q);
                }
            }
            let step = i64::from(after > 0) - i64::from(before > 0);
            if step == 0 {
                continue;
            }
            match dim.counter() {
                Some(measure) => *counters.entry((obs, measure)).or_default() += step,
                None if step > 0 => dates_added.entry(obs).or_default().push(value),
                None => dates_removed.entry(obs).or_default().push(value),
            }
        }
        let mut touched = BTreeSet::new();
        for ((obs, measure), delta) in counters {
            if delta == 0 {
                continue;
            }
            let node = obs.iri();
            let projections = obs.graph();
            let before = integer_in(tx, &node, measure, &projections)?;
            set_integer(tx, &node, measure, before, before + delta, &projections);
            touched.insert(obs);
        }
        let dated: BTreeSet<Observation> = dates_added.keys().chain(dates_removed.keys()).cloned().collect();
        for obs in dated {
            let node = obs.iri();
            let projections = obs.graph();
            let current = quads(tx, &node, Some(coal::LATEST_OUTCOME_DATE), &projections)?;
            let current_value = current.first().map(|q| q.object.clone());
            let removed = dates_removed.get(&obs).map(Vec::as_slice).unwrap_or_default();
            let latest = if current_value.as_ref().is_none_or(|c| removed.contains(c)) {
                // The latest date went away (or there was none): find the greatest still counted.
                latest_date(tx, &node, &cells_graph)?
            } else {
                let added = dates_added.get(&obs).into_iter().flatten();
                added.chain(current_value.as_ref()).max_by(|a, b| lexical(a).cmp(&lexical(b))).cloned()
            };
            if latest != current_value {
                for q in &current {
                    tx.remove(q);
                }
                if let Some(latest) = &latest {
                    tx.insert(QuadRef::new(&node, nn(coal::LATEST_OUTCOME_DATE), latest, &projections));
                }
            }
            touched.insert(obs);
        }
        for obs in touched {
            let node = obs.iri();
            let projections = obs.graph();
            let has_counter = MEASURES.iter().any(|m| {
                tx.quads_for_pattern(Some(node.as_ref().into()), Some(nn(m)), None, Some(projections.as_ref()))
                    .next()
                    .is_some()
            });
            let header = obs.header();
            let exists = tx
                .quads_for_pattern(
                    Some(node.as_ref().into()),
                    Some(nn(vocab::RDF_TYPE)),
                    None,
                    Some(projections.as_ref()),
                )
                .next()
                .is_some();
            if has_counter && !exists {
                for (p, o) in &header {
                    tx.insert(QuadRef::new(&node, nn(p), o, &projections));
                }
            } else if !has_counter && exists {
                for q in quads(tx, &node, None, &projections)? {
                    tx.remove(&q);
                }
            }
        }
        Ok(())
    }

    /// The quads [`Maintenance::write`] would write into a store that holds no projections yet,
    /// without reading it: what an initial load hands to the bulk loader after
    /// [`Maintenance::account_all`]. (A test checks the result equals the incremental
    /// maintenance's.) The quads go to `out` as they are made, so that they are never all held
    /// at once.
    pub(crate) fn initial_quads<E>(self, mut out: impl FnMut(Quad) -> Result<(), E>) -> Result<(), E> {
        let cells_graph = GraphName::NamedNode(NamedNode::new_unchecked(vocab::PROJECTION_CELLS_GRAPH));
        let Maintenance { deltas, terms, .. } = self;
        // Counters and latest dates stay keyed by index: an observation's terms are looked up
        // only as its quads are made.
        let mut counters: BTreeMap<(ObsKey, &'static str), i64> = BTreeMap::new();
        let mut latest: BTreeMap<ObsKey, u32> = BTreeMap::new();
        for (cell, delta) in deltas {
            let (key, dim, value) = match cell {
                _ if delta == 0 => continue,
                CellKey::Counter(key, measure) => {
                    *counters.entry((key, measure)).or_default() += delta;
                    continue;
                }
                CellKey::Refcount(key, dim, value) => (key, dim, value),
            };
            let obs = terms.observation(key);
            let node = cell_iri(&obs, dim, terms.term(value));
            for quad in cell_quads(&obs, dim, terms.term(value), &node) {
                out(quad)?;
            }
            out(Quad::new(node, nn(coal::CELL_COUNT), Literal::from(delta), cells_graph.clone()))?;
            if delta < 0 {
                continue;
            }
            match dim.counter() {
                Some(measure) => *counters.entry((key, measure)).or_default() += 1,
                None => {
                    let entry = latest.entry(key).or_insert(value);
                    if lexical(terms.term(value)) > lexical(terms.term(*entry)) {
                        *entry = value;
                    }
                }
            }
        }
        let mut counted = BTreeSet::new();
        for ((key, measure), value) in counters {
            if value != 0 {
                let obs = terms.observation(key);
                out(Quad::new(obs.iri(), nn(measure), Literal::from(value), obs.graph()))?;
                counted.insert(key);
            }
        }
        for (key, date) in latest {
            let obs = terms.observation(key);
            out(Quad::new(obs.iri(), nn(coal::LATEST_OUTCOME_DATE), terms.term(date).clone(), obs.graph()))?;
        }
        for key in counted {
            let obs = terms.observation(key);
            for (p, o) in obs.header() {
                out(Quad::new(obs.iri(), nn(p), o, obs.graph()))?;
            }
        }
        Ok(())
    }
}

/// Every counter measure an observation can carry.
const MEASURES: &[&str] = &[
    coal::CASE_STUDY_COUNT,
    coal::ACTIVITY_COUNT,
    coal::PARTNER_COUNT,
    coal::COUNTRY_COUNT,
    coal::PEOPLE_REACHED,
    coal::OUTCOME_COUNT,
    coal::DIALOGUE_COUNT,
    coal::STATISTIC_COUNT,
];

/// The quads that bring the cell `node` (`obs`'s count of `value` along `dim`) into being; its
/// count is written beside them.
fn cell_quads(obs: &Observation, dim: Dimension, value: &Term, node: &NamedNode) -> [Quad; 4] {
    let g = GraphName::NamedNode(NamedNode::new_unchecked(vocab::PROJECTION_CELLS_GRAPH));
    [
        Quad::new(obs.iri(), nn(coal::CELL), node.clone(), g.clone()),
        Quad::new(node.clone(), nn(vocab::RDF_TYPE), nn(coal::PROJECTION_CELL), g.clone()),
        Quad::new(node.clone(), nn(coal::CELL_DIMENSION), Literal::new_simple_literal(dim.name()), g.clone()),
        Quad::new(node.clone(), nn(coal::CELL_VALUE), value.clone(), g),
    ]
}

fn cell_iri(obs: &Observation, dim: Dimension, value: &Term) -> NamedNode {
    NamedNode::new_unchecked(format!("{}/{}/{}", obs.iri().as_str(), dim.name(), encode_segment(&lexical(value))))
}

fn lexical(t: &Term) -> String {
    match t {
        Term::Literal(l) => l.value().to_owned(),
        Term::NamedNode(n) => n.as_str().to_owned(),
        Term::BlankNode(b) => b.as_str().to_owned(),
    }
}

fn year(t: &Term) -> Option<i64> {
    let Term::Literal(l) = t else { return None };
    l.value().get(..4)?.parse().ok()
}

/// True when the recommendation facts that shape the hierarchy (type, broader) differ.
fn hierarchy_changed(rec: &NamedNode, change: &Change<'_>) -> bool {
    let shape = |quads: &[Quad]| -> BTreeSet<(String, String)> {
        quads
            .iter()
            .filter(|q| q.subject.as_ref() == NamedOrBlankNodeRef::from(rec.as_ref()))
            .filter(|q| q.predicate.as_str() == vocab::RDF_TYPE || q.predicate.as_str() == skos::BROADER)
            .map(|q| (q.predicate.as_str().to_owned(), q.object.to_string()))
            .collect()
    };
    shape(change.old) != shape(change.new)
}

fn quads(tx: &Transaction<'_>, s: &NamedNode, p: Option<&str>, g: &GraphName) -> Result<Vec<Quad>, StoreError> {
    Ok(tx.quads_for_pattern(Some(s.as_ref().into()), p.map(nn), None, Some(g.as_ref())).collect::<Result<_, _>>()?)
}

/// The subject of the facts a contribution reads: known by its IRI, or by the 128-bit hash of its
/// IRI ([`str_hash`]), which is all [`LoadedFacts`] keeps of most subjects.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Subject<'a> {
    Iri(&'a NamedNode),
    Hash(u128),
}

/// Where a contribution reads an entity's facts: the store inside a transaction, or what an
/// initial load handed to the bulk loader ([`LoadedFacts`]).
pub(crate) trait Facts {
    /// The objects of `s p` in any graph, each once.
    fn objects(&self, s: Subject<'_>, p: &str) -> Result<Vec<Term>, StoreError>;

    /// Whether `s` has the type `class` in any graph.
    fn has_type(&self, s: Subject<'_>, class: &str) -> Result<bool, StoreError>;

    /// The IRI of `s`, a case study.
    fn iri(&self, s: Subject<'_>) -> NamedNode;
}

/// The IRI a transaction reads `s` by: contributions inside transactions are of entities named by
/// their IRI ([`Maintenance::account`]).
fn iri_of(s: Subject<'_>) -> &NamedNode {
    match s {
        Subject::Iri(iri) => iri,
        Subject::Hash(_) => unreachable!("inside a transaction, entities are known by their IRI"),
    }
}

impl Facts for Transaction<'_> {
    fn objects(&self, s: Subject<'_>, p: &str) -> Result<Vec<Term>, StoreError> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for q in self.quads_for_pattern(Some(iri_of(s).as_ref().into()), Some(nn(p)), None, None) {
            let o = q?.object;
            if seen.insert(o.clone()) {
                out.push(o);
            }
        }
        Ok(out)
    }

    fn has_type(&self, s: Subject<'_>, class: &str) -> Result<bool, StoreError> {
        Ok(self
            .quads_for_pattern(Some(iri_of(s).as_ref().into()), Some(nn(vocab::RDF_TYPE)), Some(nn(class).into()), None)
            .next()
            .transpose()?
            .is_some())
    }

    fn iri(&self, s: Subject<'_>) -> NamedNode {
        iri_of(s).clone()
    }
}

/// The predicates contributions read ([`Maintenance::contribution`] and [`ancestors`]).
const READ: [&str; 10] = [
    vocab::RDF_TYPE,
    coal::IMPLEMENTS,
    coal::LED_BY,
    coal::COUNTRY,
    coal::REACH,
    dcterms::DATE,
    coal::MEASURES,
    coal::AUDIENCE_GROUP,
    coal::GROUP,
    skos::BROADER,
];
/// The types contributions test.
const CLASSES: [&str; 6] =
    [coal::ACTIVITY, coal::CASE_STUDY, coal::OUTCOME, coal::DIALOGUE, coal::EVIDENCE_STATISTIC, coal::RECOMMENDATION];

/// What contributions read of the quads an initial load hands to the bulk loader, kept as they
/// go by, so that the projections are computed afterwards without reading the store: on the 1M
/// set reads per entity and predicate were index seeks into a 27 GB store, most of the
/// projections phase, and listing the entities from the type index was still most of what was
/// left. Only the [`READ`] predicates are kept (types only of the [`CLASSES`]), subjects by their
/// 128-bit SipHash (the hash Oxigraph keys its dictionary by), objects by index; the IRIs of case
/// studies (a refcount value of H3's lists) are kept too.
#[derive(Debug, Default)]
pub struct LoadedFacts {
    subjects: HashMap<u128, Vec<(u8, u32)>>,
    terms: Terms,
    case_studies: HashMap<u128, NamedNode>,
}

impl LoadedFacts {
    /// Keeps what contributions read of `quad`.
    pub(crate) fn record(&mut self, quad: &Quad) {
        let Some(p) = READ.iter().position(|p| *p == quad.predicate.as_str()) else { return };
        let oxigraph::model::NamedOrBlankNode::NamedNode(s) = &quad.subject else { return };
        if p == 0 && !matches!(&quad.object, Term::NamedNode(c) if CLASSES.contains(&c.as_str())) {
            return;
        }
        let key = str_hash(s.as_str());
        if p == 0 && matches!(&quad.object, Term::NamedNode(c) if c.as_str() == coal::CASE_STUDY) {
            self.case_studies.entry(key).or_insert_with(|| s.clone());
        }
        let object = self.terms.id_of(&quad.object);
        let facts = self.subjects.entry(key).or_default();
        if !facts.contains(&(p as u8, object)) {
            facts.push((p as u8, object));
        }
    }

    /// Calls `each` with every subject of one of `classes` (of the [`CLASSES`]), by the hash of its
    /// IRI, and that class's kind: once per class it has, in one pass over the subjects.
    fn each_typed<E>(
        &self,
        classes: &[(&str, Kind)],
        mut each: impl FnMut(Kind, Subject<'static>) -> Result<(), E>,
    ) -> Result<(), E> {
        let ids: Vec<(u32, Kind)> = classes
            .iter()
            .filter_map(|(class, kind)| Some((self.terms.get(&Term::NamedNode(nn(class).into_owned()))?, *kind)))
            .collect();
        for (key, facts) in &self.subjects {
            for (id, kind) in &ids {
                if facts.contains(&(0, *id)) {
                    each(*kind, Subject::Hash(*key))?;
                }
            }
        }
        Ok(())
    }
}

impl Facts for LoadedFacts {
    fn objects(&self, s: Subject<'_>, p: &str) -> Result<Vec<Term>, StoreError> {
        let Some(p) = READ.iter().position(|r| *r == p) else {
            unreachable!("contributions read {p}, which LoadedFacts does not keep: add it to READ")
        };
        let key = match s {
            Subject::Iri(iri) => str_hash(iri.as_str()),
            Subject::Hash(key) => key,
        };
        let facts = self.subjects.get(&key).map(Vec::as_slice).unwrap_or_default();
        Ok(facts.iter().filter(|(q, _)| usize::from(*q) == p).map(|(_, o)| self.terms.term(*o).clone()).collect())
    }

    fn has_type(&self, s: Subject<'_>, class: &str) -> Result<bool, StoreError> {
        assert!(CLASSES.contains(&class), "contributions test the type {class}, which LoadedFacts does not keep");
        Ok(self.objects(s, vocab::RDF_TYPE)?.iter().any(|t| matches!(t, Term::NamedNode(c) if c.as_str() == class)))
    }

    fn iri(&self, s: Subject<'_>) -> NamedNode {
        match s {
            Subject::Iri(iri) => iri.clone(),
            // Kept with the type, which contributions test before asking.
            Subject::Hash(key) => self.case_studies[&key].clone(),
        }
    }
}

fn named_objects<F: Facts + ?Sized>(facts: &F, s: Subject<'_>, p: &str) -> Result<Vec<NamedNode>, StoreError> {
    Ok(facts
        .objects(s, p)?
        .into_iter()
        .filter_map(|t| match t {
            Term::NamedNode(n) => Some(n),
            _ => None,
        })
        .collect())
}

fn strings<F: Facts + ?Sized>(facts: &F, s: Subject<'_>, p: &str) -> Result<Vec<String>, StoreError> {
    Ok(facts
        .objects(s, p)?
        .into_iter()
        .filter_map(|t| match t {
            Term::Literal(l) => Some(l.value().to_owned()),
            _ => None,
        })
        .collect())
}

/// The sum of the integer values of `s p` (0 when none).
fn integer<F: Facts + ?Sized>(facts: &F, s: Subject<'_>, p: &str) -> Result<i64, StoreError> {
    Ok(facts.objects(s, p)?.iter().filter_map(|t| lexical(t).parse::<i64>().ok()).sum())
}

fn integer_in(tx: &Transaction<'_>, s: &NamedNode, p: &str, g: &GraphName) -> Result<i64, StoreError> {
    Ok(quads(tx, s, Some(p), g)?.iter().filter_map(|q| lexical(&q.object).parse::<i64>().ok()).sum())
}

/// Replaces the integer `before` of `s p` by `after`; zero is written as no value.
fn set_integer(tx: &mut Transaction<'_>, s: &NamedNode, p: &str, before: i64, after: i64, g: &GraphName) {
    if before != 0 {
        tx.remove(QuadRef::new(s, nn(p), &Literal::from(before), g));
    }
    if after != 0 {
        tx.insert(QuadRef::new(s, nn(p), &Literal::from(after), g));
    }
}

fn subjects_of(tx: &Transaction<'_>, p: &str, o: TermRef<'_>) -> Result<Vec<NamedNode>, StoreError> {
    let set: BTreeSet<NamedNode> = tx
        .quads_for_pattern(None, Some(nn(p)), Some(o), None)
        .filter_map(|q| match q {
            Ok(q) => match q.subject {
                oxigraph::model::NamedOrBlankNode::NamedNode(n) => Some(Ok(n)),
                _ => None,
            },
            Err(e) => Some(Err(e)),
        })
        .collect::<Result<_, _>>()?;
    Ok(set.into_iter().collect())
}

/// Outcomes measuring `e`.
fn measured_by(tx: &Transaction<'_>, e: &NamedNode) -> Result<Vec<NamedNode>, StoreError> {
    subjects_of(tx, coal::MEASURES, e.as_ref().into())
}

/// `r` and every node below it by `skos:broader`.
fn subtree(tx: &Transaction<'_>, r: &NamedNode) -> Result<BTreeSet<NamedNode>, StoreError> {
    let mut seen = BTreeSet::from([r.clone()]);
    let mut stack = vec![r.clone()];
    while let Some(x) = stack.pop() {
        for n in subjects_of(tx, skos::BROADER, x.as_ref().into())? {
            if seen.insert(n.clone()) {
                stack.push(n);
            }
        }
    }
    Ok(seen)
}

/// The recommendations among `r` and everything above it by `skos:broader` (as `?r skos:broader* ?x`).
fn ancestors<F: Facts + ?Sized>(facts: &F, r: &NamedNode) -> Result<Vec<NamedNode>, StoreError> {
    let mut seen = BTreeSet::from([r.clone()]);
    let mut stack = vec![r.clone()];
    let mut out = Vec::new();
    while let Some(x) = stack.pop() {
        if facts.has_type(Subject::Iri(&x), coal::RECOMMENDATION)? {
            out.push(x.clone());
        }
        for b in named_objects(facts, Subject::Iri(&x), skos::BROADER)? {
            if seen.insert(b.clone()) {
                stack.push(b);
            }
        }
    }
    Ok(out)
}

/// True when a change to `graph` can change a recommendation's case-study list or its order
/// ([`crate::GraphStore::case_studies_in_order`]): a case study's own graph (its type,
/// recommendations and start date), a link's (it adds a recommendation to a case study), or a
/// recommendation's (its changes re-account the entities implementing it).
pub(crate) fn shapes_case_study_lists(graph: &str) -> bool {
    matches!(coalition_mapping::graph_kind(graph), Some(Kind::CaseStudy | Kind::Link | Kind::Recommendation))
}

/// Adds to `out` the case studies whose outcome lists ([`crate::GraphStore::case_study_outcomes`]:
/// what `coal:measures` them, or an activity `coal:partOfCaseStudy` them) `change` can alter,
/// read before it is applied: what its facts, old or new, say is part of a case study, and what
/// they say is measured — itself, and the case studies it is part of. A change to an activity
/// names the case studies it leaves and joins; the outcomes measuring it stay put.
pub(crate) fn outcome_lists_touched(
    tx: &Transaction<'_>,
    change: &Change<'_>,
    out: &mut HashSet<String>,
) -> Result<(), StoreError> {
    let mut measured = BTreeSet::new();
    for q in change.old.iter().chain(change.new) {
        let Term::NamedNode(o) = &q.object else { continue };
        match q.predicate.as_str() {
            coal::PART_OF_CASE_STUDY => {
                out.insert(o.as_str().to_owned());
            }
            coal::MEASURES => {
                measured.insert(o);
            }
            _ => {}
        }
    }
    // The old and new facts mostly measure the same: each is looked up once.
    for m in measured {
        out.insert(m.as_str().to_owned());
        for cs in named_objects(tx, Subject::Iri(m), coal::PART_OF_CASE_STUDY)? {
            out.insert(cs.into_string());
        }
    }
    Ok(())
}

/// The greatest date still counted by a cell of `obs`.
fn latest_date(tx: &Transaction<'_>, obs: &NamedNode, cells: &GraphName) -> Result<Option<Term>, StoreError> {
    let mut best: Option<Term> = None;
    for q in quads(tx, obs, Some(coal::CELL), cells)? {
        let Term::NamedNode(cell) = &q.object else { continue };
        let is_date = quads(tx, cell, Some(coal::CELL_DIMENSION), cells)?
            .iter()
            .any(|q| lexical(&q.object) == Dimension::Date.name());
        if !is_date {
            continue;
        }
        for v in quads(tx, cell, Some(coal::CELL_VALUE), cells)? {
            if best.as_ref().is_none_or(|b| lexical(&v.object) > lexical(b)) {
                best = Some(v.object);
            }
        }
    }
    Ok(best)
}

/// The key under which [`snapshot`] and [`from_scratch`] list the members of a case-study list
/// (its cells' values, sorted, space-separated) beside its measures.
const MEMBERS: &str = "members";

/// Reads every observation of the projection graphs: IRI → measure → lexical value, and the
/// members of each case-study list under [`MEMBERS`].
pub fn snapshot(store: &crate::GraphStore) -> Result<BTreeMap<String, BTreeMap<String, String>>, StoreError> {
    let store = store.oxigraph();
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let graphs = [vocab::DASHBOARD_GRAPH, vocab::EVIDENCE_GRAPH, vocab::ROLLUP_GRAPH, vocab::CASE_STUDIES_GRAPH];
    let lists_graph = GraphNameRef::NamedNode(nn(vocab::CASE_STUDIES_GRAPH));
    let mut lists = HashSet::new();
    for q in graphs.iter().flat_map(|g| store.quads_for_pattern(None, None, None, Some(GraphNameRef::NamedNode(nn(g)))))
    {
        let q = q?;
        if q.graph_name.as_ref() == lists_graph {
            lists.insert(q.subject.clone());
        }
        if MEASURES.contains(&q.predicate.as_str()) || q.predicate.as_str() == coal::LATEST_OUTCOME_DATE {
            out.entry(node_key(&q.subject)).or_default().insert(q.predicate.as_str().to_owned(), lexical(&q.object));
        }
    }
    let cells = GraphNameRef::NamedNode(nn(vocab::PROJECTION_CELLS_GRAPH));
    for list in lists {
        let mut members = Vec::new();
        for q in store.quads_for_pattern(Some(list.as_ref()), Some(nn(coal::CELL)), None, Some(cells)) {
            let Term::NamedNode(cell) = q?.object else { continue };
            for v in store.quads_for_pattern(Some(cell.as_ref().into()), Some(nn(coal::CELL_VALUE)), None, Some(cells))
            {
                members.push(lexical(&v?.object));
            }
        }
        members.sort();
        out.entry(node_key(&list)).or_default().insert(MEMBERS.to_owned(), members.join(" "));
    }
    Ok(out)
}

/// A snapshot's key for an observation: its IRI (a blank node, which no observation is, as N-Triples).
fn node_key(node: &oxigraph::model::NamedOrBlankNode) -> String {
    match node {
        oxigraph::model::NamedOrBlankNode::NamedNode(n) => n.as_str().to_owned(),
        other => other.to_string(),
    }
}

/// The projections computed from scratch by SPARQL aggregates over the current facts, in the
/// shape of [`snapshot`]: what the incremental maintenance must always equal.
pub fn from_scratch(store: &crate::GraphStore) -> Result<BTreeMap<String, BTreeMap<String, String>>, StoreError> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut put = |obs: Observation, measure: &str, value: Option<String>| {
        if let Some(v) = value.filter(|v| v != "0") {
            out.entry(obs.iri().as_str().to_owned()).or_default().insert(measure.to_owned(), v);
        }
    };
    let rec = |row: &crate::Row| match row.get("x") {
        Some(Term::NamedNode(n)) => Some(Observation::Dashboard { recommendation: n.clone() }),
        _ => None,
    };
    for (query, measures) in FROM_SCRATCH_DASHBOARD {
        for row in store.select(&format!("{PREFIXES}{query}"))? {
            let Some(obs) = rec(&row) else { continue };
            for (var, measure) in *measures {
                put(obs.clone(), measure, crate::literal(&row, var));
            }
        }
    }
    for row in store.select(&format!("{PREFIXES}{FROM_SCRATCH_DIALOGUES}"))? {
        let (Some(group), country) = (crate::literal(&row, "g"), crate::literal(&row, "c")) else { continue };
        let obs = Observation::Evidence { group, country };
        put(obs.clone(), coal::DIALOGUE_COUNT, crate::literal(&row, "n"));
        put(obs, coal::PEOPLE_REACHED, crate::literal(&row, "reached"));
    }
    for row in store.select(&format!("{PREFIXES}{FROM_SCRATCH_STATISTICS}"))? {
        let (Some(group), country) = (crate::literal(&row, "g"), crate::literal(&row, "c")) else { continue };
        put(Observation::Evidence { group, country }, coal::STATISTIC_COUNT, crate::literal(&row, "n"));
    }
    for row in store.select(&format!("{PREFIXES}{FROM_SCRATCH_ROLLUP}"))? {
        let (Some(Term::NamedNode(partner)), Some(year)) =
            (row.get("p"), crate::literal(&row, "y").and_then(|y| y.parse().ok()))
        else {
            continue;
        };
        let recommendation = match row.get("r") {
            Some(Term::NamedNode(r)) => Some(r.clone()),
            _ => None,
        };
        let obs = Observation::Rollup { partner: partner.clone(), year, recommendation };
        put(obs.clone(), coal::ACTIVITY_COUNT, crate::literal(&row, "n"));
        put(obs, coal::PEOPLE_REACHED, crate::literal(&row, "reached"));
    }
    let mut lists: BTreeMap<NamedNode, Vec<String>> = BTreeMap::new();
    for row in store.select(&format!("{PREFIXES}{FROM_SCRATCH_CASE_STUDIES}"))? {
        if let (Some(Term::NamedNode(r)), Some(Term::NamedNode(e))) = (row.get("r"), row.get("e")) {
            lists.entry(r.clone()).or_default().push(e.as_str().to_owned());
        }
    }
    for (recommendation, mut members) in lists {
        members.sort();
        let obs = Observation::CaseStudies { recommendation };
        put(obs.clone(), coal::CASE_STUDY_COUNT, Some(members.len().to_string()));
        put(obs, MEMBERS, Some(members.join(" ")));
    }
    Ok(out)
}

const PREFIXES: &str = "PREFIX coal: <https://w3id.org/coalition/ns#>
PREFIX skos: <http://www.w3.org/2004/02/skos/core#>
PREFIX dcterms: <http://purl.org/dc/terms/>
";

type MeasureVars = &'static [(&'static str, &'static str)];

const FROM_SCRATCH_DASHBOARD: &[(&str, MeasureVars)] = &[
    (
        "SELECT ?x (COUNT(DISTINCT ?e) AS ?n) WHERE {
           ?x a coal:Recommendation . ?r skos:broader* ?x . ?e a coal:CaseStudy ; coal:implements ?r
         } GROUP BY ?x",
        &[("n", coal::CASE_STUDY_COUNT)],
    ),
    (
        "SELECT ?x (COUNT(?e) AS ?n) (SUM(?reach) AS ?reached) WHERE {
           { SELECT DISTINCT ?x ?e WHERE {
               ?x a coal:Recommendation . ?r skos:broader* ?x . ?e a coal:Activity ; coal:implements ?r } }
           OPTIONAL { ?e coal:reach ?r0 } BIND(COALESCE(?r0, 0) AS ?reach)
         } GROUP BY ?x",
        &[("n", coal::ACTIVITY_COUNT), ("reached", coal::PEOPLE_REACHED)],
    ),
    (
        "SELECT ?x (COUNT(DISTINCT ?p) AS ?n) WHERE {
           ?x a coal:Recommendation . ?r skos:broader* ?x .
           { ?e a coal:CaseStudy } UNION { ?e a coal:Activity }
           ?e coal:implements ?r ; coal:ledBy ?p
         } GROUP BY ?x",
        &[("n", coal::PARTNER_COUNT)],
    ),
    (
        "SELECT ?x (COUNT(DISTINCT ?c) AS ?n) WHERE {
           ?x a coal:Recommendation . ?r skos:broader* ?x .
           { ?e a coal:CaseStudy } UNION { ?e a coal:Activity }
           ?e coal:implements ?r ; coal:country ?c
         } GROUP BY ?x",
        &[("n", coal::COUNTRY_COUNT)],
    ),
    (
        "SELECT ?x (COUNT(DISTINCT ?o) AS ?n) (MAX(?d) AS ?latest) WHERE {
           ?x a coal:Recommendation . ?r skos:broader* ?x .
           ?m coal:implements ?r . ?o a coal:Outcome ; coal:measures ?m .
           OPTIONAL { ?o dcterms:date ?d }
         } GROUP BY ?x",
        &[("n", coal::OUTCOME_COUNT), ("latest", coal::LATEST_OUTCOME_DATE)],
    ),
];

const FROM_SCRATCH_DIALOGUES: &str = "SELECT ?g ?c (COUNT(?d) AS ?n) (SUM(?reach) AS ?reached) WHERE {
   { SELECT DISTINCT ?d ?g ?c WHERE { ?d a coal:Dialogue ; coal:audienceGroup ?g ; coal:country ?c } }
   OPTIONAL { ?d coal:reach ?r0 } BIND(COALESCE(?r0, 0) AS ?reach)
 } GROUP BY ?g ?c";

const FROM_SCRATCH_STATISTICS: &str = "SELECT ?g ?c (COUNT(DISTINCT ?s) AS ?n) WHERE {
   ?s a coal:EvidenceStatistic ; coal:group ?g . OPTIONAL { ?s coal:country ?c }
 } GROUP BY ?g ?c";

const FROM_SCRATCH_ROLLUP: &str = "SELECT ?p ?y ?r (COUNT(?e) AS ?n) (SUM(?reach) AS ?reached) WHERE {
   { SELECT DISTINCT ?e ?p ?y ?r WHERE {
       ?e a coal:Activity ; coal:ledBy ?p ; dcterms:date ?date .
       OPTIONAL { ?e coal:implements ?r }
       BIND(YEAR(?date) AS ?y) } }
   OPTIONAL { ?e coal:reach ?r0 } BIND(COALESCE(?r0, 0) AS ?reach)
 } GROUP BY ?p ?y ?r";

const FROM_SCRATCH_CASE_STUDIES: &str =
    "SELECT DISTINCT ?r ?e WHERE { ?e a coal:CaseStudy ; coal:implements ?r . FILTER(isIRI(?r)) }";

/// The measures of one observation; zero (or `None`) where the projection holds no value.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Measures {
    pub case_studies: i64,
    pub activities: i64,
    pub partners: i64,
    pub countries: i64,
    pub people_reached: i64,
    pub outcomes: i64,
    pub latest_outcome_date: Option<String>,
    pub dialogues: i64,
    pub statistics: i64,
}

impl Measures {
    fn set(&mut self, predicate: &str, value: &Term) {
        let n = || lexical(value).parse().unwrap_or(0);
        match predicate {
            coal::CASE_STUDY_COUNT => self.case_studies = n(),
            coal::ACTIVITY_COUNT => self.activities = n(),
            coal::PARTNER_COUNT => self.partners = n(),
            coal::COUNTRY_COUNT => self.countries = n(),
            coal::PEOPLE_REACHED => self.people_reached = n(),
            coal::OUTCOME_COUNT => self.outcomes = n(),
            coal::LATEST_OUTCOME_DATE => self.latest_outcome_date = Some(lexical(value)),
            coal::DIALOGUE_COUNT => self.dialogues = n(),
            coal::STATISTIC_COUNT => self.statistics = n(),
            _ => {}
        }
    }
}

/// One row of a partner's roll-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollupRow {
    pub year: i64,
    pub recommendation: Option<NamedNode>,
    pub measures: Measures,
}

impl crate::GraphStore {
    /// The measures of `obs`: one lookup of its IRI.
    pub fn observation(&self, obs: &Observation) -> Result<Measures, StoreError> {
        let mut out = Measures::default();
        let graph = obs.graph();
        let db = self.oxigraph();
        for q in db.quads_for_pattern(Some(obs.iri().as_ref().into()), None, None, Some(graph.as_ref())) {
            let q = q?;
            out.set(q.predicate.as_str(), &q.object);
        }
        Ok(out)
    }

    /// Lists the case studies of each recommendation ([`Observation::CaseStudies`]) in a store
    /// maintained before those lists existed: when it has no list, in one transaction, from its
    /// facts. Returns how many case studies it listed (0: nothing to do). Other projections are
    /// left as they are.
    pub fn add_missing_case_study_lists(&self) -> Result<usize, StoreError> {
        let db = self.oxigraph();
        let lists = GraphNameRef::NamedNode(nn(vocab::CASE_STUDIES_GRAPH));
        if db.quads_for_pattern(None, None, None, Some(lists)).next().is_some() {
            return Ok(0);
        }
        let mut tx = db.start_transaction()?;
        let case_studies = subjects_of(&tx, vocab::RDF_TYPE, nn(coal::CASE_STUDY).into())?;
        let mut maintenance = Maintenance::default();
        maintenance.account_cells(&tx, &case_studies, 1, |cell| {
            matches!(cell, Cell::Refcount(Observation::CaseStudies { .. }, Dimension::CaseStudy, _))
        })?;
        let members: HashSet<u32> = maintenance
            .deltas
            .keys()
            .filter_map(|cell| match cell {
                CellKey::Refcount(_, _, case_study) => Some(*case_study),
                CellKey::Counter(..) => None,
            })
            .collect();
        let listed = members.len();
        if listed > 0 {
            maintenance.write(&mut tx)?;
            tx.commit()?;
            // Readers may see something new: no entity graph, but the lists.
            self.cache.projections_rewritten();
        }
        Ok(listed)
    }

    /// The case studies implementing `recommendation` (itself, not its narrower ones) in the order
    /// pages of them are shown: by start date, those without one first, then by IRI. Read from
    /// the recommendation's list and kept until a commit may change it (`cache.rs`), so that a
    /// page of a long list costs the page, not the list.
    pub fn case_studies_in_order(&self, recommendation: &NamedNode) -> Result<Arc<[NamedNode]>, StoreError> {
        let start = match self.cache.list(recommendation.as_str()) {
            Ok(list) => return Ok(list),
            Err(start) => start,
        };
        let list = Observation::CaseStudies { recommendation: recommendation.clone() }.iri();
        let rows = self.select(&format!(
            "SELECT DISTINCT ?e WHERE {{ GRAPH <{}> {{ <{}> <{}> ?cell . ?cell <{}> ?e }} \
             OPTIONAL {{ ?e <{}> ?date }} }} ORDER BY ?date ?e",
            vocab::PROJECTION_CELLS_GRAPH,
            list.as_str(),
            coal::CELL,
            coal::CELL_VALUE,
            vocab::schema::START_DATE,
        ))?;
        let ordered: Arc<[NamedNode]> = rows
            .into_iter()
            .filter_map(|mut row| match row.remove("e") {
                Some(Term::NamedNode(n)) => Some(n),
                _ => None,
            })
            .collect();
        self.cache.fill_list(recommendation.as_str(), start, &ordered);
        Ok(ordered)
    }

    /// The outcomes of each of `case_studies` — those measuring it or one of its activities — by
    /// IRI. Kept per case study until a commit names it (`cache.rs`); the lists not kept are read
    /// together in one query, which Oxigraph evaluates from each case study outward (its
    /// activities, then what measures either), so the cost follows those case studies' outcomes.
    pub fn case_study_outcomes(
        &self,
        case_studies: &[NamedNode],
    ) -> Result<HashMap<NamedNode, Arc<[NamedNode]>>, StoreError> {
        let mut out = HashMap::with_capacity(case_studies.len());
        let mut missed = BTreeMap::new();
        let mut start = None;
        for cs in case_studies {
            match self.cache.outcomes(cs.as_str()) {
                Ok(list) => {
                    out.insert(cs.clone(), list);
                }
                Err(read) => {
                    // The earliest start of the misses: the read below begins after it.
                    start.get_or_insert(read);
                    missed.insert(cs.clone(), BTreeSet::new());
                }
            }
        }
        let Some(start) = start else { return Ok(out) };
        let values: String = missed.keys().map(|cs| format!("<{}> ", cs.as_str())).collect();
        let rows = self.select(&format!(
            "SELECT ?cs ?o WHERE {{ VALUES ?cs {{ {values}}} \
             {{ ?o <{measures}> ?cs }} UNION {{ ?a <{part_of}> ?cs . ?o <{measures}> ?a }} }}",
            measures = coal::MEASURES,
            part_of = coal::PART_OF_CASE_STUDY,
        ))?;
        for mut row in rows {
            let (Some(Term::NamedNode(cs)), Some(Term::NamedNode(o))) = (row.remove("cs"), row.remove("o")) else {
                continue;
            };
            if let (Some(set), Some((Kind::Outcome, _))) = (missed.get_mut(&cs), parse_entity_iri(o.as_str())) {
                set.insert(o);
            }
        }
        for (cs, set) in missed {
            let list: Arc<[NamedNode]> = set.into_iter().collect();
            self.cache.fill_outcomes(cs.as_str(), start, &list);
            out.insert(cs, list);
        }
        Ok(out)
    }

    /// A partner's activities by year and recommendation, ordered by year then recommendation:
    /// one index range over the partner's observations.
    pub fn rollup(&self, partner: &NamedNode) -> Result<Vec<RollupRow>, StoreError> {
        let db = self.oxigraph();
        let graph = GraphNameRef::NamedNode(nn(vocab::ROLLUP_GRAPH));
        let mut rows = Vec::new();
        for q in db.quads_for_pattern(None, Some(nn(coal::REF_PARTNER)), Some(partner.as_ref().into()), Some(graph)) {
            let obs = q?.subject;
            let mut row = RollupRow { year: 0, recommendation: None, measures: Measures::default() };
            for q in db.quads_for_pattern(Some(obs.as_ref()), None, None, Some(graph)) {
                let q = q?;
                match (q.predicate.as_str(), &q.object) {
                    (coal::REF_PERIOD, v) => row.year = lexical(v).parse().unwrap_or(0),
                    (coal::REF_RECOMMENDATION, Term::NamedNode(r)) => row.recommendation = Some(r.clone()),
                    (p, v) => row.measures.set(p, v),
                }
            }
            rows.push(row);
        }
        rows.sort_by(|a, b| (a.year, &a.recommendation).cmp(&(b.year, &b.recommendation)));
        Ok(rows)
    }
}
