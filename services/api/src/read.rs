//! The read model behind GraphQL: loads an entity from its named graph, finds entities by
//! filters and reverse links, and reads provenance. Every value interpolated into SPARQL is either
//! a validated id or an escaped literal.

use crate::errors::ApiError;
use coalition_events::Kind;
use coalition_mapping::vocab::{self, coal, dcterms, prov};
use coalition_mapping::{entity_iri, graph_iri, parse_entity_iri};
use coalition_store::projection::Observation;
use coalition_store::{literal, GraphStore, Row};
use oxigraph::model::{NamedOrBlankNode, Quad, Term};
use std::collections::BTreeMap;
use std::sync::Arc;

/// An entity as stored: its IRI and every (predicate → objects) of its node, plus nested nodes
/// (dialogue quotes) by IRI. The facts are shared, not copied, by clones: a page's entities pass
/// through the batch loader to every resolver that asked for them.
#[derive(Debug, Clone, Default)]
pub struct Entity {
    pub kind: Option<Kind>,
    pub id: String,
    pub iri: String,
    pub props: Arc<Props>,
    pub nested: Arc<BTreeMap<String, Props>>,
}

/// Predicate → objects.
pub type Props = BTreeMap<String, Vec<Term>>;

fn lexical(t: &Term) -> String {
    match t {
        Term::Literal(l) => l.value().to_owned(),
        Term::NamedNode(n) => n.as_str().to_owned(),
        Term::BlankNode(b) => b.as_str().to_owned(),
    }
}

pub fn props_str(props: &Props, p: &str) -> Option<String> {
    props.get(p).and_then(|v| v.first()).map(lexical)
}

impl Entity {
    pub fn str(&self, p: &str) -> Option<String> {
        props_str(&self.props, p)
    }

    pub fn req(&self, p: &str) -> String {
        self.str(p).unwrap_or_default()
    }

    pub fn strs(&self, p: &str) -> Vec<String> {
        let mut v: Vec<String> = self.props.get(p).map(|v| v.iter().map(lexical).collect()).unwrap_or_default();
        v.sort();
        v
    }

    pub fn int(&self, p: &str) -> Option<i64> {
        self.str(p).and_then(|v| v.parse().ok())
    }

    pub fn float(&self, p: &str) -> Option<f64> {
        self.str(p).and_then(|v| v.parse().ok())
    }

    /// Ids of referenced entities under `p`.
    pub fn refs(&self, p: &str) -> Vec<String> {
        self.strs(p).iter().filter_map(|iri| parse_entity_iri(iri).map(|(_, id)| id)).collect()
    }

    pub fn language(&self, p: &str) -> Option<String> {
        match self.props.get(p)?.first()? {
            Term::Literal(l) => l.language().map(str::to_owned),
            _ => None,
        }
    }
}

/// Validates an id before it goes into a query.
pub fn check_id(field: &str, id: &str) -> Result<(), ApiError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !id.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_input(field, format!("\"{id}\" is not an id (lowercase letters, digits and dashes)")))
    }
}

/// A SPARQL string literal with every special character escaped.
pub fn sparql_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Loads the entity of `kind` with `id`, or `None` if the graph holds no such entity. The entity is
/// decoded once per version of its graph and kept beside it by the store
/// ([`GraphStore::entity_view`]); what is returned shares its facts.
pub fn load(store: &GraphStore, kind: Kind, id: &str) -> Result<Option<Entity>, ApiError> {
    Ok(store.entity_view(kind, id, |quads| decode(kind, id, quads))?.as_ref().clone())
}

/// The entity `quads` (its graph) describe, if they give it a type.
fn decode(kind: Kind, id: &str, quads: &[Quad]) -> Option<Entity> {
    let iri = entity_iri(kind, id);
    let (mut props, mut nested) = (Props::new(), BTreeMap::<String, Props>::new());
    for q in quads {
        let subject = match &q.subject {
            NamedOrBlankNode::NamedNode(n) => n.as_str(),
            NamedOrBlankNode::BlankNode(b) => b.as_str(),
        };
        let target = if subject == iri.as_str() { &mut props } else { nested.entry(subject.to_owned()).or_default() };
        target.entry(q.predicate.as_str().to_owned()).or_default().push(q.object.clone());
    }
    if !props.contains_key(vocab::RDF_TYPE) {
        return None;
    }
    Some(Entity {
        kind: Some(kind),
        id: id.to_owned(),
        iri: iri.into_string(),
        props: Arc::new(props),
        nested: Arc::new(nested),
    })
}

/// Loads many entities of one kind, skipping ids that do not exist.
pub fn load_many(store: &GraphStore, kind: Kind, ids: &[String]) -> Result<Vec<Entity>, ApiError> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(e) = load(store, kind, id)? {
            out.push(e);
        }
    }
    Ok(out)
}

/// The body of a SPARQL `VALUES` block over `iris`: only entity IRIs go into the query text,
/// anything else is left out.
pub fn entity_iri_values<'a>(iris: impl IntoIterator<Item = &'a str>) -> String {
    iris.into_iter().filter(|iri| parse_entity_iri(iri).is_some()).map(|iri| format!("<{iri}> ")).collect()
}

pub fn ids_of(rows: &[Row], var: &str) -> Vec<String> {
    rows.iter().filter_map(|r| literal(r, var)).filter_map(|iri| parse_entity_iri(&iri).map(|(_, id)| id)).collect()
}

pub fn class_of(kind: Kind) -> &'static str {
    match kind {
        Kind::Partner => coal::PARTNER,
        Kind::Person => vocab::schema::PERSON,
        Kind::Programme => coal::PROGRAMME,
        Kind::Dialogue => coal::DIALOGUE,
        Kind::Recommendation => coal::RECOMMENDATION,
        Kind::CaseStudy => coal::CASE_STUDY,
        Kind::Activity => coal::ACTIVITY,
        Kind::Outcome => coal::OUTCOME,
        Kind::Evidence => coal::EVIDENCE_STATISTIC,
        Kind::Source => coal::SOURCE_DOCUMENT,
        Kind::Link => coal::LINK,
    }
}

/// Filters a policy team applies to lists.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub country: Option<String>,
    pub group: Option<String>,
    pub partner: Option<String>,
    pub recommendation: Option<String>,
    pub from: Option<chrono::NaiveDate>,
    pub to: Option<chrono::NaiveDate>,
}

/// A page of ids and the total matching.
#[derive(Debug, Clone)]
pub struct IdPage {
    pub ids: Vec<String>,
    pub total: usize,
}

/// Lists entities of `kind` matching `filter`, ordered by date (where the kind has one) then id.
pub fn list(
    store: &GraphStore,
    kind: Kind,
    filter: &ListFilter,
    limit: usize,
    offset: usize,
) -> Result<IdPage, ApiError> {
    if let (
        Kind::CaseStudy,
        ListFilter { recommendation: Some(r), country: None, group: None, partner: None, from: None, to: None },
    ) = (kind, filter)
    {
        // The hot path's page (H3): from the recommendation's list as the store keeps it, in page
        // order, so that the page costs the page, not the list.
        check_id("filter.recommendation", r)?;
        let list = store.case_studies_in_order(&entity_iri(Kind::Recommendation, r))?;
        let ids =
            list.iter().skip(offset).take(limit).filter_map(|iri| parse_entity_iri(iri.as_str())).map(|(_, id)| id);
        return Ok(IdPage { ids: ids.collect(), total: list.len() });
    }
    let class = class_of(kind);
    // Which entities are listed: those of the class, unless a filter reads them from a list that
    // holds that class only.
    let mut class_pattern = Some(format!("?e a <{class}> ."));
    let mut patterns = Vec::new();
    if let Some(c) = &filter.country {
        if c.len() != 2 || !c.chars().all(|ch| ch.is_ascii_uppercase()) {
            return Err(ApiError::bad_input(
                "filter.country",
                format!("\"{c}\" is not an ISO 3166 alpha-2 code like GB"),
            ));
        }
        patterns.push(format!("?e <{}> \"{c}\" .", coal::COUNTRY));
    }
    if let Some(g) = &filter.group {
        let p = if kind == Kind::Evidence { coal::GROUP } else { coal::AUDIENCE_GROUP };
        patterns.push(format!("?e <{p}> {} .", sparql_string(g)));
    }
    if let Some(p) = &filter.partner {
        check_id("filter.partner", p)?;
        let partner = entity_iri(Kind::Partner, p).into_string();
        patterns.push(match kind {
            Kind::Activity | Kind::CaseStudy => relation(kind, coal::LED_BY, &partner),
            Kind::Dialogue | Kind::Programme => relation(kind, coal::PARTNER_PROP, &partner),
            Kind::Person => relation(kind, vocab::org::MEMBER_OF, &partner),
            // No partner among the facts: the partner of the event behind the current state.
            _ => format!(
                "GRAPH <{}> {{ ?ev <{}> ?e ; <{}> <{partner}> . ?g <{}> ?ev }}",
                vocab::PROVENANCE_GRAPH,
                coal::DESCRIBES,
                prov::WAS_ASSOCIATED_WITH,
                prov::WAS_GENERATED_BY,
            ),
        });
    }
    if let Some(r) = &filter.recommendation {
        check_id("filter.recommendation", r)?;
        let rec = entity_iri(Kind::Recommendation, r).into_string();
        let pred = match kind {
            Kind::Dialogue => coal::INFORMS,
            Kind::Evidence => coal::SUPPORTS,
            Kind::Outcome => "",
            _ => coal::IMPLEMENTS,
        };
        if kind == Kind::Outcome {
            patterns.push(format!("?e <{}> ?m . ?m <{}> <{rec}> .", coal::MEASURES, coal::IMPLEMENTS));
        } else if kind == Kind::Recommendation {
            patterns.push(format!("FILTER(?e = <{rec}> || EXISTS {{ ?e <{}> <{rec}> }})", vocab::skos::BROADER));
        } else if kind == Kind::CaseStudy {
            // The recommendation's maintained list of case studies (one projection cell each):
            // costs its case studies, not every case study in the store. Only case studies are
            // listed, so the list replaces the class pattern (which would join every case study).
            let list = Observation::CaseStudies { recommendation: entity_iri(Kind::Recommendation, r) }.iri();
            class_pattern = None;
            patterns.push(format!(
                "GRAPH <{}> {{ <{}> <{}> ?cell . ?cell <{}> ?e }}",
                vocab::PROJECTION_CELLS_GRAPH,
                list.as_str(),
                coal::CELL,
                coal::CELL_VALUE
            ));
        } else {
            patterns.push(relation(kind, pred, &rec));
        }
    }
    let date_pred = match kind {
        Kind::Dialogue | Kind::Activity | Kind::Outcome => Some(dcterms::DATE),
        Kind::CaseStudy | Kind::Programme => Some(vocab::schema::START_DATE),
        _ => None,
    };
    let mut order = "?e".to_owned();
    if let Some(dp) = date_pred {
        patterns.push(format!("OPTIONAL {{ ?e <{dp}> ?date }}"));
        if let Some(from) = filter.from {
            patterns.push(format!("FILTER(BOUND(?date) && ?date >= \"{from}\"^^<{}>)", vocab::xsd::DATE));
        }
        if let Some(to) = filter.to {
            patterns.push(format!("FILTER(BOUND(?date) && ?date <= \"{to}\"^^<{}>)", vocab::xsd::DATE));
        }
        order = "?date ?e".to_owned();
    } else if kind == Kind::Recommendation {
        patterns.push(format!("OPTIONAL {{ ?e <{}> ?n }}", coal::RECOMMENDATION_NUMBER));
        order = "(!BOUND(?n)) ?n ?e".to_owned();
    }
    patterns.splice(0..0, class_pattern);
    let body = patterns.join("\n");
    let (rows, total) =
        store.select_page(&format!("SELECT DISTINCT ?e WHERE {{ {body} }} ORDER BY {order}"), offset, limit)?;
    Ok(IdPage { ids: ids_of(&rows, "e"), total })
}

/// The pattern "`?e` is related to `target` by `pred`". Case studies and programmes share their
/// relations (`coal:implements`, `coal:ledBy`, `coal:partner`) with activities or dialogues, about
/// a hundred times as many: joining on the relation would start from all of those, so for these
/// two kinds the relation is checked per entity of the kind instead (5x faster at 100k
/// conversations, and growing with the kind rather than with everything related).
fn relation(kind: Kind, pred: &str, target: &str) -> String {
    if matches!(kind, Kind::CaseStudy | Kind::Programme) {
        format!("FILTER EXISTS {{ ?e <{pred}> <{target}> }}")
    } else {
        format!("?e <{pred}> <{target}> .")
    }
}

/// One event in an entity's provenance.
#[derive(Debug, Clone)]
pub struct ProvenanceRecord {
    pub event_id: String,
    pub event_type: String,
    pub partner_id: String,
    pub time: String,
    pub source: String,
    pub topic: String,
    pub partition: i64,
    pub offset: i64,
    /// The entity version the event carried (0 when none).
    pub version: i64,
}

impl ProvenanceRecord {
    /// The order of events about one entity: (version, time, event id); the greatest decides.
    fn order_key(&self) -> (i64, &str, &str) {
        (self.version, self.time.as_str(), self.event_id.as_str())
    }

    fn is_retraction(&self) -> bool {
        self.event_type.ends_with(".retracted.v1")
    }
}

/// A log position: per partition, the last offset included.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Position(pub BTreeMap<(String, i64), i64>);

impl Position {
    /// Parses `topic@partition:offset[,…]` (the form of consistency tokens). Partitions not named
    /// are not part of the position: nothing on them is visible.
    pub fn parse(text: &str) -> Result<Position, ApiError> {
        let mut out = BTreeMap::new();
        for part in text.split(',').filter(|p| !p.trim().is_empty()) {
            let t = crate::consistency::ConsistencyToken::parse(part)?;
            let e = out.entry((t.topic, i64::from(t.partition))).or_insert(t.offset);
            *e = (*e).max(t.offset);
        }
        if out.is_empty() {
            return Err(ApiError::bad_input("asOf", "an empty position: give topic@partition:offset[,…]"));
        }
        Ok(Position(out))
    }

    pub fn includes(&self, topic: &str, partition: i64, offset: i64) -> bool {
        self.0.get(&(topic.to_owned(), partition)).is_some_and(|last| offset <= *last)
    }
}

/// An entity as of a log position.
#[derive(Debug, Clone)]
pub enum AsOf {
    /// The entity's current facts were already its facts at the position.
    Current,
    /// No event about the entity was in the log yet, or the last one was a retraction.
    Absent,
    /// The entity changed after the position; its facts then are not kept (only current facts and
    /// every event's provenance are). The record names the event that was current then.
    Superseded(ProvenanceRecord),
}

/// What the entity looked like at `position`, from the provenance the store keeps.
pub fn as_of(store: &GraphStore, kind: Kind, id: &str, position: &Position) -> Result<AsOf, ApiError> {
    let entity = entity_iri(kind, id);
    let history = provenance(store, entity.as_str())?;
    let Some(decider) = history
        .iter()
        .filter(|e| position.includes(&e.topic, e.partition, e.offset))
        .max_by(|a, b| a.order_key().cmp(&b.order_key()))
    else {
        return Ok(AsOf::Absent);
    };
    if decider.is_retraction() {
        return Ok(AsOf::Absent);
    }
    let current = store.generator(&graph_iri(kind, id))?;
    Ok(match current {
        Some(g) if g.event_id == decider.event_id => AsOf::Current,
        _ => AsOf::Superseded(decider.clone()),
    })
}

/// The entity graphs whose current facts were already current at `position`: the dataset of a
/// SPARQL query asked as of it. Entities that changed after the position are left out.
pub fn graphs_as_of(store: &GraphStore, position: &Position) -> Result<Vec<oxigraph::model::NamedNode>, ApiError> {
    let rows = store.select(&format!(
        "SELECT ?g ?topic ?partition ?offset WHERE {{ GRAPH <{p}> {{
           ?g <{gen}> ?ev . ?ev <{topic}> ?topic ; <{part}> ?partition ; <{off}> ?offset .
           FILTER NOT EXISTS {{ ?g <{retracted}> true }} }} }}",
        p = vocab::PROVENANCE_GRAPH,
        gen = prov::WAS_GENERATED_BY,
        topic = coal::TOPIC,
        part = coal::PARTITION,
        off = coal::OFFSET_PROP,
        retracted = coal::RETRACTED,
    ))?;
    Ok(rows
        .iter()
        .filter(|r| {
            let (Some(t), Some(p), Some(o)) = (literal(r, "topic"), literal(r, "partition"), literal(r, "offset"))
            else {
                return false;
            };
            position.includes(&t, p.parse().unwrap_or(-1), o.parse().unwrap_or(i64::MAX))
        })
        .filter_map(|r| literal(r, "g").map(oxigraph::model::NamedNode::new_unchecked))
        .collect())
}

/// Every event that described the entity, oldest first.
pub fn provenance(store: &GraphStore, entity: &str) -> Result<Vec<ProvenanceRecord>, ApiError> {
    let rows = store.select(&format!(
        "SELECT ?id ?type ?partner ?time ?source ?topic ?partition ?offset ?version WHERE {{ GRAPH <{g}> {{
           ?ev <{describes}> <{entity}> ; <{eid}> ?id ; <{ety}> ?type ; <{assoc}> ?partner ;
               <{time}> ?time ; <{src}> ?source ; <{topic}> ?topic ; <{part}> ?partition ; <{off}> ?offset .
           OPTIONAL {{ ?ev <{ver}> ?version }} }} }}
         ORDER BY ?time ?id",
        ver = coal::ENTITY_VERSION,
        g = vocab::PROVENANCE_GRAPH,
        describes = coal::DESCRIBES,
        eid = coal::EVENT_ID,
        ety = coal::EVENT_TYPE,
        assoc = prov::WAS_ASSOCIATED_WITH,
        time = prov::STARTED_AT_TIME,
        src = coal::SOURCE_URI,
        topic = coal::TOPIC,
        part = coal::PARTITION,
        off = coal::OFFSET_PROP,
    ))?;
    Ok(rows
        .iter()
        .map(|r| ProvenanceRecord {
            event_id: literal(r, "id").unwrap_or_default(),
            event_type: literal(r, "type").unwrap_or_default(),
            partner_id: literal(r, "partner").and_then(|p| parse_entity_iri(&p).map(|(_, id)| id)).unwrap_or_default(),
            time: literal(r, "time").unwrap_or_default(),
            source: literal(r, "source").unwrap_or_default(),
            topic: literal(r, "topic").unwrap_or_default(),
            partition: literal(r, "partition").and_then(|v| v.parse().ok()).unwrap_or_default(),
            offset: literal(r, "offset").and_then(|v| v.parse().ok()).unwrap_or_default(),
            version: literal(r, "version").and_then(|v| v.parse().ok()).unwrap_or_default(),
        })
        .collect())
}
