//! Pure mapping: a validated event and its log position become RDF quads (the entity's named graph
//! plus PROV-O provenance) and search documents. See `ontologies/MAPPING.md` for the table.
//!
//! Guarantees: the same event at the same position always maps to the same quads and documents;
//! [`map_event`] checks its output against the SHACL shapes of `ontologies/shapes` and returns an
//! error naming each violation. Never does I/O, never async.

pub mod shacl;
pub mod vocab;

use coalition_events::{
    Action, Activity, CaseStudy, Dialogue, EntityId, Event, EvidenceStatistic, Kind, Link, MeasuredKind, Outcome,
    Partner, Payload, Person, Programme, Recommendation, SourceDocument,
};
use oxigraph::model::{GraphName, Literal, NamedNode, NamedOrBlankNode, Quad, Term};
use serde::{Deserialize, Serialize};
use vocab::{coal, dcterms, org, prov, qb, schema, skos, xsd};

/// Where an event sits in the log.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LogPosition {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// A text-bearing document for the search index, keyed by the IRI of the node it describes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchDoc {
    /// IRI of the node (an entity, or a quote inside a dialogue).
    pub iri: String,
    /// IRI of the entity the document belongs to (for a quote, its dialogue).
    pub entity_iri: String,
    pub kind: String,
    pub entity_id: String,
    pub title: String,
    pub body: String,
    pub language: String,
    pub country: Option<String>,
    pub groups: Vec<String>,
    pub partners: Vec<String>,
    pub recommendations: Vec<String>,
    pub year: Option<i64>,
}

/// Total order of the events about one entity: (version, event time, event id). The greatest
/// key's facts are the entity's current facts, whatever order the events arrive in.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct OrderKey {
    pub version: i64,
    pub time: chrono::DateTime<chrono::Utc>,
    pub event_id: String,
}

/// The result of mapping one event.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    pub kind: Kind,
    pub action: Action,
    pub event_id: String,
    pub order: OrderKey,
    /// The entity's IRI.
    pub entity: NamedNode,
    /// The named graph that holds the entity's current facts; replaced on every new event.
    pub graph: NamedNode,
    /// Facts, all in `graph`.
    pub facts: Vec<Quad>,
    /// Provenance of the event itself, in the provenance graph; kept whatever the event's effect.
    pub provenance: Vec<Quad>,
    /// How the entity graph was generated (by this event), in the provenance graph; written only
    /// when this event becomes the entity's current state.
    pub generation: Vec<Quad>,
    /// Documents for the search index.
    pub docs: Vec<SearchDoc>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MappingError {
    #[error("event {event_id} does not conform to the SHACL shapes: {}", violations.join("; "))]
    Shacl { event_id: String, violations: Vec<String> },
    #[error("event {event_id}: {message}")]
    Invalid { event_id: String, message: String },
}

impl MappingError {
    pub fn code(&self) -> &'static str {
        match self {
            MappingError::Shacl { .. } => "shacl_violation",
            MappingError::Invalid { .. } => "mapping_failed",
        }
    }
}

/// IRI of an entity of `kind` with `id`.
pub fn entity_iri(kind: Kind, id: &str) -> NamedNode {
    NamedNode::new_unchecked(format!("{}{}/{}", vocab::ID, kind.slug(), id))
}

/// IRI of the named graph holding an entity's facts.
pub fn graph_iri(kind: Kind, id: &str) -> NamedNode {
    NamedNode::new_unchecked(format!("{}{}/{}", vocab::GRAPH, kind.slug(), id))
}

/// IRI of an event.
pub fn event_iri(event_id: &str) -> NamedNode {
    NamedNode::new_unchecked(format!("{}{}", vocab::EVENT, encode_segment(event_id)))
}

/// Splits an entity IRI into its kind and id.
pub fn parse_entity_iri(iri: &str) -> Option<(Kind, String)> {
    let rest = iri.strip_prefix(vocab::ID)?;
    let (slug, id) = rest.split_once('/')?;
    Some((Kind::from_slug(slug)?, id.to_owned()))
}

/// The kind of entity whose facts a named graph ([`graph_iri`]) holds.
pub fn graph_kind(graph: &str) -> Option<Kind> {
    let (slug, _) = graph.strip_prefix(vocab::GRAPH)?.split_once('/')?;
    Kind::from_slug(slug)
}

/// Percent-encodes everything but unreserved characters, so any string can be one IRI path segment.
pub fn encode_segment(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-._~".contains(c) {
                c.to_string()
            } else {
                let mut buf = [0u8; 4];
                c.encode_utf8(&mut buf).bytes().map(|b| format!("%{b:02X}")).collect()
            }
        })
        .collect()
}

fn iri(s: &str) -> NamedNode {
    NamedNode::new_unchecked(s)
}

/// Accumulates triples about nodes into one named graph.
struct GraphBuilder {
    graph: GraphName,
    quads: Vec<Quad>,
}

impl GraphBuilder {
    fn new(graph: &NamedNode) -> Self {
        GraphBuilder { graph: graph.clone().into(), quads: Vec::new() }
    }

    fn add(&mut self, s: &NamedNode, p: &str, o: impl Into<Term>) {
        self.quads.push(Quad::new(NamedOrBlankNode::from(s.clone()), iri(p), o.into(), self.graph.clone()));
    }

    fn string(&mut self, s: &NamedNode, p: &str, value: &str) {
        self.add(s, p, Literal::new_simple_literal(value));
    }

    fn opt_string(&mut self, s: &NamedNode, p: &str, value: Option<&String>) {
        if let Some(v) = value {
            self.string(s, p, v);
        }
    }

    fn text(&mut self, s: &NamedNode, p: &str, value: &str, language: &str) {
        let literal = Literal::new_language_tagged_literal(value, language)
            .unwrap_or_else(|_| Literal::new_language_tagged_literal_unchecked(value, "en"));
        self.add(s, p, literal);
    }

    fn typed(&mut self, s: &NamedNode, p: &str, lexical: String, datatype: &str) {
        self.add(s, p, Literal::new_typed_literal(lexical, iri(datatype)));
    }

    fn integer(&mut self, s: &NamedNode, p: &str, value: Option<i64>) {
        if let Some(v) = value {
            self.typed(s, p, v.to_string(), xsd::INTEGER);
        }
    }

    fn decimal(&mut self, s: &NamedNode, p: &str, value: Option<f64>) {
        if let Some(v) = value {
            self.typed(s, p, decimal_lexical(v), xsd::DECIMAL);
        }
    }

    fn date(&mut self, s: &NamedNode, p: &str, value: Option<chrono::NaiveDate>) {
        if let Some(v) = value {
            self.typed(s, p, v.format("%Y-%m-%d").to_string(), xsd::DATE);
        }
    }

    fn class(&mut self, s: &NamedNode, class: &str) {
        self.add(s, vocab::RDF_TYPE, iri(class));
    }

    fn refs(&mut self, s: &NamedNode, p: &str, kind: Kind, ids: &[EntityId]) {
        for id in ids {
            self.add(s, p, entity_iri(kind, &id.0));
        }
    }
}

/// Canonical xsd:decimal lexical form (no exponent, at least one fractional digit).
pub fn decimal_lexical(v: f64) -> String {
    let s = format!("{v}");
    if s.contains('.') {
        s
    } else {
        format!("{s}.0")
    }
}

/// Maps a validated event at `position` to quads and search documents, and checks them against
/// the SHACL shapes.
pub fn map_event(event: &Event, position: &LogPosition) -> Result<Mapped, MappingError> {
    let mapped = map_event_unchecked(event, position);
    let violations = shacl::shapes().validate(mapped.facts.iter().chain(&mapped.provenance).chain(&mapped.generation));
    if !violations.is_empty() {
        return Err(MappingError::Shacl {
            event_id: event.id.0.clone(),
            violations: violations.iter().map(ToString::to_string).collect(),
        });
    }
    Ok(mapped)
}

/// [`map_event`] without the SHACL check, for an event whose mapping was checked before: the
/// mapping is a pure function of the event and its position, so it conforms again.
pub fn map_event_unchecked(event: &Event, position: &LogPosition) -> Mapped {
    let id = event.subject.0.as_str();
    let entity = entity_iri(event.kind, id);
    let graph = graph_iri(event.kind, id);
    let mut g = GraphBuilder::new(&graph);
    g.string(&entity, coal::ENTITY_ID, id);
    let docs = match &event.payload {
        Payload::Partner(p) => partner(&mut g, &entity, p),
        Payload::Person(p) => person(&mut g, &entity, p),
        Payload::Programme(p) => programme(&mut g, &entity, p),
        Payload::Dialogue(d) => dialogue(&mut g, &entity, d),
        Payload::Recommendation(r) => recommendation(&mut g, &entity, r),
        Payload::CaseStudy(c) => case_study(&mut g, &entity, c),
        Payload::Activity(a) => activity(&mut g, &entity, a),
        Payload::Outcome(o) => outcome(&mut g, &entity, o),
        Payload::Evidence(e) => evidence(&mut g, &entity, e),
        Payload::Source(s) => source(&mut g, &entity, s),
        Payload::Link(l) => link(&mut g, &entity, l),
        Payload::Retraction(_) => {
            g.quads.clear();
            Vec::new()
        }
    };
    let (provenance, generation) = provenance(event, position, &entity, &graph);
    Mapped {
        kind: event.kind,
        action: event.action(),
        event_id: event.id.0.clone(),
        order: OrderKey { version: event.version.unwrap_or(0), time: event.time, event_id: event.id.0.clone() },
        entity,
        graph,
        facts: g.quads,
        provenance,
        generation,
        docs,
    }
}

/// The canonical lexical form of an event time: UTC, nanoseconds, so that two events' times
/// compare the same as strings and as instants.
pub fn time_lexical(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn provenance(event: &Event, position: &LogPosition, entity: &NamedNode, graph: &NamedNode) -> (Vec<Quad>, Vec<Quad>) {
    let ev = event_iri(&event.id.0);
    let partner = entity_iri(Kind::Partner, &event.partner.0);
    let time = time_lexical(&event.time);
    // Each fact once: the event carries who, when, where in the log and which version (a
    // `coal:Event` is a `prov:Activity` by the ontology); the entity graph only names the event
    // that generated it, and whether that event retracted it.
    let mut p = GraphBuilder::new(&iri(vocab::PROVENANCE_GRAPH));
    p.class(&ev, coal::EVENT);
    p.string(&ev, coal::EVENT_ID, &event.id.0);
    p.string(&ev, coal::EVENT_TYPE, &event.event_type());
    p.add(&ev, prov::WAS_ASSOCIATED_WITH, partner);
    p.typed(&ev, prov::STARTED_AT_TIME, time, xsd::DATE_TIME);
    p.string(&ev, coal::SOURCE_URI, &event.source);
    p.string(&ev, coal::TOPIC, &position.topic);
    p.integer(&ev, coal::PARTITION, Some(i64::from(position.partition)));
    p.integer(&ev, coal::OFFSET_PROP, Some(position.offset));
    p.integer(&ev, coal::ENTITY_VERSION, Some(event.version.unwrap_or(0)));
    p.add(&ev, coal::DESCRIBES, entity.clone());
    let mut g = GraphBuilder::new(&iri(vocab::PROVENANCE_GRAPH));
    g.class(graph, prov::ENTITY);
    g.add(graph, prov::WAS_GENERATED_BY, ev);
    if event.action() == Action::Retract {
        g.typed(graph, coal::RETRACTED, "true".to_owned(), xsd::BOOLEAN);
    }
    (p.quads, g.quads)
}

fn doc(entity: &NamedNode, kind: Kind, id: &EntityId, title: &str, body: String) -> SearchDoc {
    SearchDoc {
        iri: entity.as_str().to_owned(),
        entity_iri: entity.as_str().to_owned(),
        kind: kind.slug().to_owned(),
        entity_id: id.0.clone(),
        title: title.to_owned(),
        body,
        // Unknown: the index detects it from the text. Dialogues and quotes set theirs.
        language: String::new(),
        country: None,
        groups: Vec::new(),
        partners: Vec::new(),
        recommendations: Vec::new(),
        year: None,
    }
}

fn ids(v: &[EntityId]) -> Vec<String> {
    v.iter().map(|i| i.0.clone()).collect()
}

fn partner(g: &mut GraphBuilder, s: &NamedNode, p: &Partner) -> Vec<SearchDoc> {
    g.class(s, coal::PARTNER);
    g.class(s, org::ORGANIZATION);
    g.string(s, schema::NAME, &p.name);
    g.string(s, coal::ORGANISATION_TYPE, &p.organisation_type);
    g.opt_string(s, coal::COUNTRY, p.country.as_ref());
    if p.coalition_member {
        g.add(s, org::MEMBER_OF, iri(vocab::COALITION));
    }
    g.opt_string(s, dcterms::DESCRIPTION, p.description.as_ref());
    if let Some(url) = &p.website {
        g.typed(s, schema::URL, url.clone(), xsd::ANY_URI);
    }
    let mut d = doc(s, Kind::Partner, &p.id, &p.name, p.description.clone().unwrap_or_default());
    d.country = p.country.clone();
    d.partners = vec![p.id.0.clone()];
    vec![d]
}

fn person(g: &mut GraphBuilder, s: &NamedNode, p: &Person) -> Vec<SearchDoc> {
    g.class(s, schema::PERSON);
    g.string(s, schema::NAME, &p.name);
    for role in &p.roles {
        g.string(s, coal::ROLE, role);
    }
    g.refs(s, org::MEMBER_OF, Kind::Partner, &p.affiliations);
    g.opt_string(s, schema::JOB_TITLE, p.job_title.as_ref());
    let body = [p.roles.join(", "), p.job_title.clone().unwrap_or_default()].join(" ");
    let mut d = doc(s, Kind::Person, &p.id, &p.name, body.trim().to_owned());
    d.partners = ids(&p.affiliations);
    vec![d]
}

fn programme(g: &mut GraphBuilder, s: &NamedNode, p: &Programme) -> Vec<SearchDoc> {
    g.class(s, coal::PROGRAMME);
    g.string(s, schema::NAME, &p.name);
    g.opt_string(s, dcterms::DESCRIPTION, p.description.as_ref());
    g.opt_string(s, coal::PILLAR, p.pillar.as_ref());
    g.opt_string(s, coal::COUNTRY, p.country.as_ref());
    g.refs(s, coal::PARTNER_PROP, Kind::Partner, &p.partners);
    g.date(s, schema::START_DATE, p.start_date);
    let mut d = doc(s, Kind::Programme, &p.id, &p.name, p.description.clone().unwrap_or_default());
    d.country = p.country.clone();
    d.partners = ids(&p.partners);
    vec![d]
}

fn dialogue(g: &mut GraphBuilder, s: &NamedNode, d: &Dialogue) -> Vec<SearchDoc> {
    use chrono::Datelike;
    let language = d.language.clone().unwrap_or_else(|| "en".to_owned());
    g.class(s, coal::DIALOGUE);
    g.class(s, schema::EVENT);
    g.string(s, dcterms::TITLE, &d.title);
    g.date(s, dcterms::DATE, Some(d.date));
    g.string(s, coal::COUNTRY, &d.country);
    for group in &d.audience_groups {
        g.string(s, coal::AUDIENCE_GROUP, group);
    }
    g.integer(s, coal::REACH, d.reach);
    g.typed(s, coal::INTERNAL, d.internal.to_string(), xsd::BOOLEAN);
    if let Some(summary) = &d.summary {
        g.text(s, dcterms::DESCRIPTION, summary, &language);
    }
    g.string(s, dcterms::LANGUAGE, &language);
    g.refs(s, coal::PARTNER_PROP, Kind::Partner, &d.partners);
    g.refs(s, coal::INFORMS, Kind::Recommendation, &d.informs);
    if let Some(p) = &d.programme {
        g.add(s, coal::PART_OF_PROGRAMME, entity_iri(Kind::Programme, &p.0));
    }
    let context = |mut doc: SearchDoc| {
        doc.country = Some(d.country.clone());
        doc.groups = d.audience_groups.clone();
        doc.partners = ids(&d.partners);
        doc.recommendations = ids(&d.informs);
        doc.year = Some(i64::from(d.date.year()));
        doc
    };
    let mut summary_doc = doc(s, Kind::Dialogue, &d.id, &d.title, d.summary.clone().unwrap_or_default());
    summary_doc.language = language.clone();
    let mut docs = vec![context(summary_doc)];
    for (i, quote) in d.quotes.iter().enumerate() {
        let q = NamedNode::new_unchecked(format!("{}/quote/{}", s.as_str(), i + 1));
        let quote_language = quote.language.clone().unwrap_or_else(|| language.clone());
        g.add(s, coal::HAS_QUOTE, q.clone());
        g.class(&q, coal::QUOTE);
        g.text(&q, schema::TEXT, &quote.text, &quote_language);
        g.opt_string(&q, coal::SPEAKER, quote.speaker.as_ref());
        g.opt_string(&q, coal::SPEAKER_ROLE, quote.speaker_role.as_ref());
        let title = match &quote.speaker {
            Some(speaker) => format!("{speaker} — {}", d.title),
            None => d.title.clone(),
        };
        let mut quote_doc = doc(s, Kind::Dialogue, &d.id, &title, quote.text.clone());
        quote_doc.iri = q.as_str().to_owned();
        quote_doc.kind = "quote".to_owned();
        quote_doc.language = quote_language;
        docs.push(context(quote_doc));
    }
    docs
}

fn recommendation(g: &mut GraphBuilder, s: &NamedNode, r: &Recommendation) -> Vec<SearchDoc> {
    g.class(s, coal::RECOMMENDATION);
    g.class(s, skos::CONCEPT);
    g.add(s, skos::IN_SCHEME, iri(vocab::RECOMMENDATION_SCHEME));
    g.string(s, skos::PREF_LABEL, &r.title);
    g.string(s, skos::DEFINITION, &r.text);
    g.integer(s, coal::RECOMMENDATION_NUMBER, r.number);
    if let Some(b) = &r.broader {
        g.add(s, skos::BROADER, entity_iri(Kind::Recommendation, &b.0));
    }
    let mut d = doc(s, Kind::Recommendation, &r.id, &r.title, r.text.clone());
    d.recommendations = std::iter::once(r.id.0.clone()).chain(r.broader.iter().map(|b| b.0.clone())).collect();
    vec![d]
}

fn case_study(g: &mut GraphBuilder, s: &NamedNode, c: &CaseStudy) -> Vec<SearchDoc> {
    use chrono::Datelike;
    g.class(s, coal::CASE_STUDY);
    g.string(s, dcterms::TITLE, &c.title);
    g.string(s, coal::COUNTRY, &c.country);
    g.string(s, dcterms::DESCRIPTION, &c.narrative);
    g.refs(s, coal::LED_BY, Kind::Partner, &c.partners);
    g.refs(s, coal::IMPLEMENTS, Kind::Recommendation, &c.implements);
    g.date(s, schema::START_DATE, c.start_date);
    if let Some(src) = &c.source {
        g.add(s, dcterms::SOURCE, entity_iri(Kind::Source, &src.0));
    }
    let mut d = doc(s, Kind::CaseStudy, &c.id, &c.title, c.narrative.clone());
    d.country = Some(c.country.clone());
    d.partners = ids(&c.partners);
    d.recommendations = ids(&c.implements);
    d.year = c.start_date.map(|date| i64::from(date.year()));
    vec![d]
}

fn activity(g: &mut GraphBuilder, s: &NamedNode, a: &Activity) -> Vec<SearchDoc> {
    use chrono::Datelike;
    g.class(s, coal::ACTIVITY);
    g.class(s, prov::ACTIVITY);
    g.string(s, dcterms::TITLE, &a.title);
    g.opt_string(s, dcterms::DESCRIPTION, a.description.as_ref());
    g.string(s, coal::ACTIVITY_TYPE, &a.activity_type);
    g.date(s, dcterms::DATE, Some(a.date));
    g.opt_string(s, coal::COUNTRY, a.country.as_ref());
    g.integer(s, coal::REACH, a.reach);
    g.refs(s, coal::LED_BY, Kind::Partner, &a.led_by);
    if let Some(c) = &a.case_study {
        g.add(s, coal::PART_OF_CASE_STUDY, entity_iri(Kind::CaseStudy, &c.0));
    }
    if let Some(p) = &a.programme {
        g.add(s, coal::PART_OF_PROGRAMME, entity_iri(Kind::Programme, &p.0));
    }
    g.refs(s, coal::IMPLEMENTS, Kind::Recommendation, &a.implements);
    for group in &a.audience_groups {
        g.string(s, coal::AUDIENCE_GROUP, group);
    }
    let mut d = doc(s, Kind::Activity, &a.id, &a.title, a.description.clone().unwrap_or_default());
    d.country = a.country.clone();
    d.groups = a.audience_groups.clone();
    d.partners = ids(&a.led_by);
    d.recommendations = ids(&a.implements);
    d.year = Some(i64::from(a.date.year()));
    vec![d]
}

fn measured_iri(kind: MeasuredKind, id: &EntityId) -> NamedNode {
    match kind {
        MeasuredKind::CaseStudy => entity_iri(Kind::CaseStudy, &id.0),
        MeasuredKind::Activity => entity_iri(Kind::Activity, &id.0),
    }
}

fn outcome(g: &mut GraphBuilder, s: &NamedNode, o: &Outcome) -> Vec<SearchDoc> {
    use chrono::Datelike;
    g.class(s, coal::OUTCOME);
    g.class(s, qb::OBSERVATION);
    g.string(s, dcterms::DESCRIPTION, &o.description);
    g.string(s, coal::METRIC, &o.metric);
    g.decimal(s, coal::VALUE, Some(o.value));
    g.string(s, coal::UNIT, &o.unit);
    g.date(s, dcterms::DATE, Some(o.date));
    g.decimal(s, coal::BASELINE, o.baseline);
    g.decimal(s, coal::TARGET, o.target);
    g.add(s, coal::MEASURES, measured_iri(o.measures.kind, &o.measures.id));
    let mut d = doc(s, Kind::Outcome, &o.id, &o.metric, o.description.clone());
    d.year = Some(i64::from(o.date.year()));
    vec![d]
}

fn evidence(g: &mut GraphBuilder, s: &NamedNode, e: &EvidenceStatistic) -> Vec<SearchDoc> {
    g.class(s, coal::EVIDENCE_STATISTIC);
    g.class(s, qb::OBSERVATION);
    g.string(s, coal::MEASURE, &e.measure);
    g.opt_string(s, dcterms::DESCRIPTION, e.description.as_ref());
    g.string(s, coal::GROUP, &e.group);
    g.opt_string(s, coal::COUNTRY, e.country.as_ref());
    g.decimal(s, coal::PERCENTAGE, e.percentage);
    g.integer(s, coal::SAMPLE_SIZE, e.sample_size);
    g.integer(s, coal::YEAR, Some(e.year));
    g.refs(s, coal::SUPPORTS, Kind::Recommendation, &e.supports);
    if let Some(src) = &e.source {
        g.add(s, dcterms::SOURCE, entity_iri(Kind::Source, &src.0));
    }
    let mut d = doc(s, Kind::Evidence, &e.id, &e.measure, e.description.clone().unwrap_or_default());
    d.country = e.country.clone();
    d.groups = vec![e.group.clone()];
    d.recommendations = ids(&e.supports);
    d.year = Some(e.year);
    vec![d]
}

fn source(g: &mut GraphBuilder, s: &NamedNode, d: &SourceDocument) -> Vec<SearchDoc> {
    g.class(s, coal::SOURCE_DOCUMENT);
    g.string(s, dcterms::TITLE, &d.title);
    g.opt_string(s, dcterms::PUBLISHER, d.publisher.as_ref());
    g.integer(s, dcterms::ISSUED, d.year);
    if let Some(url) = &d.url {
        g.typed(s, schema::URL, url.clone(), xsd::ANY_URI);
    }
    let mut doc = doc(s, Kind::Source, &d.id, &d.title, d.publisher.clone().unwrap_or_default());
    doc.year = d.year;
    vec![doc]
}

fn link(g: &mut GraphBuilder, s: &NamedNode, l: &Link) -> Vec<SearchDoc> {
    let subject = measured_iri(l.subject.kind, &l.subject.id);
    let object = entity_iri(Kind::Recommendation, &l.recommendation.0);
    g.class(s, coal::LINK);
    g.add(s, coal::LINK_SUBJECT, subject.clone());
    g.string(s, coal::LINK_RELATION, &l.relation);
    g.add(s, coal::LINK_OBJECT, object.clone());
    g.add(&subject, coal::IMPLEMENTS, object);
    Vec::new()
}

#[cfg(test)]
mod tests;

/// One partition of one topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

/// Per partition, the next offset to consume: everything below it has been applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Offsets(pub std::collections::BTreeMap<TopicPartition, i64>);

impl Offsets {
    pub fn next(&self, topic: &str, partition: i32) -> Option<i64> {
        self.0.get(&TopicPartition { topic: topic.to_owned(), partition }).copied()
    }

    /// Records that everything up to and including `position` has been applied.
    pub fn advance(&mut self, position: &LogPosition) {
        let tp = TopicPartition { topic: position.topic.clone(), partition: position.partition };
        let next = self.0.entry(tp).or_insert(0);
        *next = (*next).max(position.offset + 1);
    }

    /// Merges `other` in, keeping the larger offset of each partition.
    pub fn merge(&mut self, other: &Offsets) {
        for (tp, next) in &other.0 {
            let entry = self.0.entry(tp.clone()).or_insert(*next);
            *entry = (*entry).max(*next);
        }
    }

    /// True when every partition of `other` is covered here.
    pub fn covers(&self, other: &Offsets) -> bool {
        other.0.iter().all(|(tp, next)| self.0.get(tp).is_some_and(|n| n >= next))
    }

    pub fn total(&self) -> i64 {
        self.0.values().sum()
    }
}

#[derive(Serialize, Deserialize)]
struct OffsetEntry {
    topic: String,
    partition: i32,
    next: i64,
}

impl Serialize for Offsets {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let entries: Vec<OffsetEntry> = self
            .0
            .iter()
            .map(|(tp, next)| OffsetEntry { topic: tp.topic.clone(), partition: tp.partition, next: *next })
            .collect();
        entries.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Offsets {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let entries = Vec::<OffsetEntry>::deserialize(d)?;
        Ok(Offsets(
            entries.into_iter().map(|e| (TopicPartition { topic: e.topic, partition: e.partition }, e.next)).collect(),
        ))
    }
}
