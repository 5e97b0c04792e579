//! The GraphQL schema: queries over the graph and the index, and mutations that validate input and
//! produce events to Kafka (never writing the store).

mod inputs;
mod loader;
mod projections;
mod types;

use crate::auth::Principal;
use crate::errors::{ApiError, ErrorKind};
use crate::read::{self, check_id, ListFilter};
use crate::response_cache::Reads;
use crate::AppState;
use async_graphql::dataloader::DataLoader;
use async_graphql::{Context, EmptySubscription, InputObject, Object, Result, Schema, SimpleObject, ID};
use coalition_events::Kind;
use coalition_search::{Counting, SearchFilter, COUNT_EXACT_UP_TO};
pub use inputs::*;
pub use projections::*;
use std::time::Duration;
pub use types::*;

pub type CoalitionSchema = Schema<QueryRoot, MutationRoot, EmptySubscription>;

/// Per-schema context.
#[derive(Clone)]
pub struct AppCtx {
    pub state: AppState,
}

/// Runs blocking store or index work off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(ApiError::internal)?
}

/// A batch loader collecting keys for `delay` (see [`loader`]).
fn batched<T: Send + Sync + 'static>(l: T, delay: Duration) -> DataLoader<T> {
    DataLoader::new(l, tokio::spawn).delay(delay)
}

pub fn build_schema(state: AppState) -> CoalitionSchema {
    let limits = state.config.clone();
    let batches = loader::Batches { store: state.store.clone(), metrics: state.metrics.clone() };
    let delay = state.config.graphql_batch_delay;
    let mut builder = Schema::build(QueryRoot, MutationRoot, EmptySubscription)
        .data(AppCtx { state })
        .data(batched(loader::EntityLoader(batches.clone()), delay))
        .data(batched(loader::ReferrerLoader(batches.clone()), delay))
        .data(batched(loader::CaseStudyOutcomesLoader(batches.clone()), delay))
        .data(batched(loader::ObservationLoader(batches), delay))
        .limit_depth(limits.max_depth)
        .limit_complexity(limits.max_complexity);
    if !limits.introspection {
        builder = builder.disable_introspection();
    }
    builder.finish()
}

/// The schema's SDL, as committed at `schema/graphql/schema.graphql`.
pub fn sdl() -> String {
    Schema::build(QueryRoot, MutationRoot, EmptySubscription).finish().sdl()
}

/// Filters a policy team applies to lists.
#[derive(InputObject, Default, Clone)]
pub struct Filter {
    /// ISO 3166-1 alpha-2 country code, e.g. "GB".
    pub country: Option<String>,
    /// Audience group (dialogues, activities) or evidence group, e.g. "lgbtq".
    pub group: Option<String>,
    /// Partner id: leading, organising, affiliated or submitting.
    pub partner: Option<ID>,
    /// Recommendation id: implemented, informed, supported or (for outcomes) implemented by what they measure.
    pub recommendation: Option<ID>,
    /// Inclusive start date.
    pub from: Option<chrono::NaiveDate>,
    /// Inclusive end date.
    pub to: Option<chrono::NaiveDate>,
}

impl From<Option<Filter>> for ListFilter {
    fn from(f: Option<Filter>) -> Self {
        let f = f.unwrap_or_default();
        ListFilter {
            country: f.country,
            group: f.group,
            partner: f.partner.map(|p| p.0),
            recommendation: f.recommendation.map(|r| r.0),
            from: f.from,
            to: f.to,
        }
    }
}

macro_rules! page_type {
    ($name:ident, $item:ident) => {
        /// A page of results.
        #[derive(SimpleObject)]
        pub struct $name {
            pub items: Vec<$item>,
            /// Number of items matching, over all pages.
            pub total_count: usize,
            pub offset: usize,
            pub has_next_page: bool,
        }
    };
}
page_type!(RecommendationPage, Recommendation);
page_type!(CaseStudyPage, CaseStudy);
page_type!(ActivityPage, Activity);
page_type!(OutcomePage, Outcome);
page_type!(DialoguePage, Dialogue);
page_type!(PartnerPage, Partner);
page_type!(PersonPage, Person);
page_type!(ProgrammePage, Programme);
page_type!(EvidencePage, EvidenceStatistic);
page_type!(SourcePage, SourceDocument);

struct Paged {
    items: Vec<read::Entity>,
    total: usize,
    offset: usize,
}

async fn page(ctx: &Context<'_>, kind: Kind, filter: Option<Filter>, first: i32, offset: i32) -> Result<Paged> {
    let state = &ctx.data::<AppCtx>()?.state;
    let max = state.config.max_page_size;
    if first < 0 || first as usize > max {
        return Err(ApiError::bad_input("first", format!("must be between 0 and {max}")).into());
    }
    if offset < 0 {
        return Err(ApiError::bad_input("offset", "must not be negative").into());
    }
    let (first, offset) = (first as usize, offset as usize);
    let filter = ListFilter::from(filter);
    let store = state.store.clone();
    let (total, items) = blocking(move || {
        let p = read::list(&store, kind, &filter, first, offset)?;
        Ok((p.total, read::load_many(&store, kind, &p.ids)?))
    })
    .await?;
    Ok(Paged { items, total, offset })
}

macro_rules! to_page {
    ($paged:expr, $page:ident, $item:ident) => {{
        let p = $paged;
        let has_next_page = p.offset + p.items.len() < p.total;
        $page { total_count: p.total, offset: p.offset, has_next_page, items: p.items.into_iter().map($item).collect() }
    }};
}

async fn get(ctx: &Context<'_>, kind: Kind, id: &ID) -> Result<Option<read::Entity>> {
    check_id("id", &id.0)?;
    let store = ctx.data::<AppCtx>()?.state.store.clone();
    let id = id.0.clone();
    Ok(blocking(move || read::load(&store, kind, &id)).await?)
}

/// Filters for `search`, applied inside the index query.
#[derive(InputObject, Default, Clone)]
pub struct SearchFilterInput {
    /// Kinds of document: recommendation, case-study, activity, outcome, dialogue, quote, partner, person, programme, evidence, source.
    pub kinds: Option<Vec<String>>,
    pub country: Option<String>,
    pub group: Option<String>,
    pub partner: Option<ID>,
    pub recommendation: Option<ID>,
    pub year: Option<i64>,
    /// Typo tolerance: each term also matches words one edit away.
    pub fuzzy: Option<bool>,
}

/// One search hit, with the entity it belongs to.
#[derive(SimpleObject)]
pub struct SearchHit {
    /// IRI of the matching node (an entity, or a quote inside a dialogue).
    pub iri: String,
    pub kind: String,
    pub entity_id: ID,
    pub title: String,
    pub score: f32,
    /// HTML snippet, matches in `<b>`.
    pub snippet: String,
    pub language: String,
    /// The entity the hit belongs to (for a quote, its dialogue).
    pub entity: Option<Node>,
}

#[derive(SimpleObject)]
pub struct SearchPage {
    /// Matching documents: exact when `totalCountExact`, else a lower bound (see `search`).
    pub total_count: usize,
    /// Whether `totalCount` counts every match.
    pub total_count_exact: bool,
    pub hits: Vec<SearchHit>,
    /// Counts over every match (not only this page) by kind, country, group, partner,
    /// recommendation and year.
    pub facets: Vec<Facet>,
}

/// Counts of matching documents per value of one field.
#[derive(SimpleObject)]
pub struct Facet {
    pub field: String,
    pub values: Vec<FacetValue>,
}

#[derive(SimpleObject)]
pub struct FacetValue {
    pub value: String,
    pub count: u64,
}

/// Per partition, the next offset each sink will apply.
#[derive(SimpleObject)]
pub struct PartitionOffset {
    pub topic: String,
    pub partition: i32,
    pub next_offset: i64,
}

/// How far the graph and the index have applied the log.
#[derive(SimpleObject)]
pub struct Freshness {
    pub graph: Vec<PartitionOffset>,
    pub index: Vec<PartitionOffset>,
    /// True once the materializer caught up with the log as it stood at start.
    pub caught_up: bool,
    /// When the last batch was committed (RFC 3339).
    pub committed_at: Option<String>,
    /// For the last committed batch, milliseconds from its oldest record's broker timestamp to
    /// graph and index both having committed it.
    pub lag_ms: i64,
    /// Events on the broker not yet applied (broker-reported high watermarks minus applied
    /// offsets, refreshed every few seconds; an estimate where the broker misreports them).
    pub lag_events: i64,
}

fn offsets_list(o: &coalition_mapping::Offsets) -> Vec<PartitionOffset> {
    o.0.iter()
        .map(|(tp, next)| PartitionOffset { topic: tp.topic.clone(), partition: tp.partition, next_offset: *next })
        .collect()
}

pub struct QueryRoot;

#[Object]
impl QueryRoot {
    /// Recommendations, ordered by number. `filter.recommendation` selects one and its narrower ones.
    async fn recommendations(
        &self,
        ctx: &Context<'_>,
        filter: Option<Filter>,
        #[graphql(default = 50)] first: i32,
        #[graphql(default = 0)] offset: i32,
    ) -> Result<RecommendationPage> {
        Ok(to_page!(page(ctx, Kind::Recommendation, filter, first, offset).await?, RecommendationPage, Recommendation))
    }

    async fn recommendation(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Recommendation>> {
        Ok(get(ctx, Kind::Recommendation, &id).await?.map(Recommendation))
    }

    /// The numbered recommendations in order; select `dashboard` on each for its counts.
    async fn recommendation_dashboard(&self, ctx: &Context<'_>) -> Result<Vec<Recommendation>> {
        let store = ctx.data::<AppCtx>()?.state.store.clone();
        let ids = blocking(move || {
            let rows = store.select(&format!(
                "SELECT ?e WHERE {{ ?e a <{}> ; <{}> ?n }} ORDER BY ?n",
                coalition_mapping::vocab::coal::RECOMMENDATION,
                coalition_mapping::vocab::coal::RECOMMENDATION_NUMBER
            ))?;
            Ok(read::ids_of(&rows, "e"))
        })
        .await?;
        Ok(types::load_refs(ctx, Kind::Recommendation, ids).await?.into_iter().map(Recommendation).collect())
    }

    /// Evidence for one audience group in one country: counts from the maintained projection,
    /// with the first dialogues and statistics.
    async fn evidence_summary(&self, ctx: &Context<'_>, group: String, country: String) -> Result<EvidenceSummary> {
        projections::evidence_summary(ctx, group, country).await
    }

    /// Where the last (or running) rebuild of the stores stands. Admin only.
    async fn rebuild_status(&self, ctx: &Context<'_>) -> Result<crate::operations::RebuildStatus> {
        principal(ctx).authorize_admin()?;
        Ok(operations(ctx)?.rebuild_status())
    }

    /// A partner's activities rolled up by year and recommendation, from the maintained projection.
    async fn partner_rollup(&self, ctx: &Context<'_>, partner_id: ID) -> Result<Vec<RollupRow>> {
        projections::partner_rollup(ctx, partner_id).await
    }

    async fn case_studies(
        &self,
        ctx: &Context<'_>,
        filter: Option<Filter>,
        #[graphql(default = 50)] first: i32,
        #[graphql(default = 0)] offset: i32,
    ) -> Result<CaseStudyPage> {
        Ok(to_page!(page(ctx, Kind::CaseStudy, filter, first, offset).await?, CaseStudyPage, CaseStudy))
    }

    async fn case_study(&self, ctx: &Context<'_>, id: ID) -> Result<Option<CaseStudy>> {
        Ok(get(ctx, Kind::CaseStudy, &id).await?.map(CaseStudy))
    }

    async fn activities(
        &self,
        ctx: &Context<'_>,
        filter: Option<Filter>,
        #[graphql(default = 50)] first: i32,
        #[graphql(default = 0)] offset: i32,
    ) -> Result<ActivityPage> {
        Ok(to_page!(page(ctx, Kind::Activity, filter, first, offset).await?, ActivityPage, Activity))
    }

    async fn activity(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Activity>> {
        Ok(get(ctx, Kind::Activity, &id).await?.map(Activity))
    }

    async fn outcomes(
        &self,
        ctx: &Context<'_>,
        filter: Option<Filter>,
        #[graphql(default = 50)] first: i32,
        #[graphql(default = 0)] offset: i32,
    ) -> Result<OutcomePage> {
        Ok(to_page!(page(ctx, Kind::Outcome, filter, first, offset).await?, OutcomePage, Outcome))
    }

    async fn outcome(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Outcome>> {
        Ok(get(ctx, Kind::Outcome, &id).await?.map(Outcome))
    }

    async fn dialogues(
        &self,
        ctx: &Context<'_>,
        filter: Option<Filter>,
        #[graphql(default = 50)] first: i32,
        #[graphql(default = 0)] offset: i32,
    ) -> Result<DialoguePage> {
        Ok(to_page!(page(ctx, Kind::Dialogue, filter, first, offset).await?, DialoguePage, Dialogue))
    }

    async fn dialogue(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Dialogue>> {
        Ok(get(ctx, Kind::Dialogue, &id).await?.map(Dialogue))
    }

    async fn partners(
        &self,
        ctx: &Context<'_>,
        filter: Option<Filter>,
        #[graphql(default = 50)] first: i32,
        #[graphql(default = 0)] offset: i32,
    ) -> Result<PartnerPage> {
        Ok(to_page!(page(ctx, Kind::Partner, filter, first, offset).await?, PartnerPage, Partner))
    }

    async fn partner(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Partner>> {
        Ok(get(ctx, Kind::Partner, &id).await?.map(Partner))
    }

    async fn people(
        &self,
        ctx: &Context<'_>,
        filter: Option<Filter>,
        #[graphql(default = 50)] first: i32,
        #[graphql(default = 0)] offset: i32,
    ) -> Result<PersonPage> {
        Ok(to_page!(page(ctx, Kind::Person, filter, first, offset).await?, PersonPage, Person))
    }

    async fn programmes(
        &self,
        ctx: &Context<'_>,
        filter: Option<Filter>,
        #[graphql(default = 50)] first: i32,
        #[graphql(default = 0)] offset: i32,
    ) -> Result<ProgrammePage> {
        Ok(to_page!(page(ctx, Kind::Programme, filter, first, offset).await?, ProgrammePage, Programme))
    }

    /// Evidence statistics (polling figures). `filter.group` matches the statistic's group.
    async fn evidence(
        &self,
        ctx: &Context<'_>,
        filter: Option<Filter>,
        #[graphql(default = 50)] first: i32,
        #[graphql(default = 0)] offset: i32,
    ) -> Result<EvidencePage> {
        Ok(to_page!(page(ctx, Kind::Evidence, filter, first, offset).await?, EvidencePage, EvidenceStatistic))
    }

    async fn sources(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 50)] first: i32,
        #[graphql(default = 0)] offset: i32,
    ) -> Result<SourcePage> {
        Ok(to_page!(page(ctx, Kind::Source, None, first, offset).await?, SourcePage, SourceDocument))
    }

    /// Any entity by `kind/id` (e.g. `activity/pfp-allyship-session-2024`) or by IRI.
    ///
    /// With `asOf` (a log position, `topic@partition:offset[,…]`, e.g. a consistency token): the
    /// entity as it was then, answered from provenance. The store keeps current facts and every
    /// event's provenance, so an entity that changed after the position gives
    /// `HISTORY_UNAVAILABLE` naming the event that was current then; one created later or
    /// retracted by then gives `null`. Partitions not named in the position count as unread.
    async fn node(&self, ctx: &Context<'_>, id: ID, as_of: Option<String>) -> Result<Option<Node>> {
        let (kind, entity_id) = if let Some(parsed) = coalition_mapping::parse_entity_iri(&id.0) {
            parsed
        } else {
            let (slug, rest) = id.0.split_once('/').ok_or_else(|| {
                ApiError::bad_input("id", "expected kind/id, e.g. activity/my-activity, or an entity IRI")
            })?;
            let kind =
                Kind::from_slug(slug).ok_or_else(|| ApiError::bad_input("id", format!("unknown kind \"{slug}\"")))?;
            (kind, rest.to_owned())
        };
        if let Some(position) = as_of {
            check_id("id", &entity_id)?;
            let position = read::Position::parse(&position)?;
            let store = ctx.data::<AppCtx>()?.state.store.clone();
            let (k, e) = (kind, entity_id.clone());
            match blocking(move || read::as_of(&store, k, &e, &position)).await? {
                read::AsOf::Absent => return Ok(None),
                read::AsOf::Current => {}
                read::AsOf::Superseded(then) => {
                    return Err(ApiError::new(
                        ErrorKind::HistoryUnavailable,
                        format!(
                            "{}/{entity_id} has changed since that position; its facts then (from event {} at {}/{}/{}) are not kept — only current facts and every event's provenance are",
                            kind.slug(),
                            then.event_id,
                            then.topic,
                            then.partition,
                            then.offset
                        ),
                    )
                    .into())
                }
            }
        }
        Ok(get(ctx, kind, &ID(entity_id)).await?.and_then(Node::from_entity))
    }

    /// Full-text search (BM25, titles boosted) with filters applied inside the index query.
    /// `totalCount` is exact up to 10,000 matches, and past that says "at least 10,000"
    /// (`totalCountExact` false), unless `exactCount` asks for every match to be counted or the
    /// request selects `facets` (which count every match anyway).
    async fn search(
        &self,
        ctx: &Context<'_>,
        query: String,
        filter: Option<SearchFilterInput>,
        #[graphql(default = 20)] first: i32,
        #[graphql(default = 0)] offset: i32,
        #[graphql(default = false)] exact_count: bool,
    ) -> Result<SearchPage> {
        let state = ctx.data::<AppCtx>()?.state.clone();
        let max = state.config.max_page_size;
        if first < 0 || first as usize > max || offset < 0 {
            return Err(ApiError::bad_input(
                "first",
                format!("first must be between 0 and {max}, offset not negative"),
            )
            .into());
        }
        let f = filter.unwrap_or_default();
        let filter = SearchFilter {
            kinds: f.kinds.unwrap_or_default(),
            country: f.country,
            group: f.group,
            partner: f.partner.map(|p| p.0),
            recommendation: f.recommendation.map(|r| r.0),
            year: f.year,
            fuzzy: f.fuzzy.unwrap_or(false),
        };
        // Counting every match (and its facets) reads every match: done only when asked for.
        let counting = if ctx.look_ahead().field("facets").exists() {
            Counting::EveryWithFacets
        } else if exact_count {
            Counting::Every
        } else {
            Counting::UpTo(COUNT_EXACT_UP_TO)
        };
        let (results, entities) = blocking(move || {
            let results = state.index.search_counting(&query, &filter, first as usize, offset as usize, counting)?;
            let mut entities = Vec::new();
            for hit in &results.hits {
                let entity = match coalition_mapping::parse_entity_iri(&hit.entity_iri) {
                    Some((kind, id)) => read::load(&state.store, kind, &id)?,
                    None => None,
                };
                entities.push(entity);
            }
            Ok((results, entities))
        })
        .await?;
        let hits = results
            .hits
            .into_iter()
            .zip(entities)
            .map(|(h, e)| SearchHit {
                iri: h.iri,
                kind: h.kind,
                entity_id: ID(h.entity_id),
                title: h.title,
                score: h.score,
                snippet: h.snippet,
                language: h.language,
                entity: e.and_then(Node::from_entity),
            })
            .collect();
        let facets = results
            .facets
            .into_iter()
            .map(|(field, values)| Facet {
                field,
                values: values.into_iter().map(|(value, count)| FacetValue { value, count }).collect(),
            })
            .collect();
        Ok(SearchPage { total_count: results.total, total_count_exact: results.total_exact, hits, facets })
    }

    /// How far the graph and the index have applied the log.
    async fn freshness(&self, ctx: &Context<'_>) -> Result<Freshness> {
        let w = ctx.data::<AppCtx>()?.state.watermark.borrow().clone();
        Ok(Freshness {
            graph: offsets_list(&w.graph),
            index: offsets_list(&w.index),
            caught_up: w.caught_up,
            committed_at: w.committed_at.map(|t| t.to_rfc3339()),
            lag_ms: w.last_batch_lag_ms,
            lag_events: w.lag_events,
        })
    }
}

pub struct MutationRoot;

/// The request's principal (anonymous when the schema runs without one, e.g. in unit tests).
fn operations(ctx: &Context<'_>) -> Result<std::sync::Arc<dyn crate::operations::Operations>, ApiError> {
    ctx.data::<AppCtx>()
        .ok()
        .and_then(|c| c.state.operations.clone())
        .ok_or_else(|| ApiError::new(ErrorKind::Unavailable, "this server runs no operations"))
}

fn principal(ctx: &Context<'_>) -> Principal {
    ctx.data_opt::<Principal>().cloned().unwrap_or_default()
}

// Each mutation authorises its caller before it looks at the input, so a caller without the right
// role or partner learns nothing from field errors.
#[Object]
impl MutationRoot {
    /// A partner submits an activity it led. Needs a partner token for `partnerId` (or admin).
    /// Rebuilds the graph and the index from the log into fresh stores beside the live ones and
    /// swaps them in once caught up; reads are served throughout. Admin only; returns at once —
    /// follow `rebuildStatus`.
    async fn rebuild(&self, ctx: &Context<'_>) -> Result<crate::operations::RebuildStatus> {
        principal(ctx).authorize_admin()?;
        Ok(operations(ctx)?.start_rebuild()?)
    }

    async fn submit_activity(&self, ctx: &Context<'_>, partner_id: ID, input: ActivityInput) -> Result<Receipt> {
        let principal = principal(ctx);
        principal.authorize_submit(&partner_id)?;
        let payload = input.into_payload(&partner_id);
        submit(ctx, &principal, partner_id, payload).await
    }

    /// A partner submits a dialogue (listening event) with what participants said. Needs a partner
    /// token for `partnerId` (or admin).
    async fn submit_dialogue(&self, ctx: &Context<'_>, partner_id: ID, input: DialogueInput) -> Result<Receipt> {
        let principal = principal(ctx);
        principal.authorize_submit(&partner_id)?;
        let payload = input.into_payload(&partner_id);
        submit(ctx, &principal, partner_id, payload).await
    }

    /// A partner submits a measured outcome of a case study or activity. Needs a partner token for
    /// `partnerId` (or admin).
    async fn submit_outcome(&self, ctx: &Context<'_>, partner_id: ID, input: OutcomeInput) -> Result<Receipt> {
        let principal = principal(ctx);
        principal.authorize_submit(&partner_id)?;
        let payload = input.into_payload(&partner_id);
        submit(ctx, &principal, partner_id, payload).await
    }

    /// A partner submits a case study it leads. Needs a partner token for `partnerId` (or admin).
    async fn submit_case_study(&self, ctx: &Context<'_>, partner_id: ID, input: CaseStudyInput) -> Result<Receipt> {
        let principal = principal(ctx);
        principal.authorize_submit(&partner_id)?;
        let payload = input.into_payload(&partner_id);
        submit(ctx, &principal, partner_id, payload).await
    }

    /// A partner retracts one of its own entities: its facts leave the graph and the index; the
    /// retraction stays in provenance. Needs a partner token for `partnerId`, which must be the
    /// entity's submitting partner (or admin). To update an entity, submit it again with its id.
    async fn retract(
        &self,
        ctx: &Context<'_>,
        partner_id: ID,
        kind: RetractableKind,
        id: ID,
        reason: Option<String>,
    ) -> Result<Receipt> {
        let principal = principal(ctx);
        principal.authorize_submit(&partner_id)?;
        check_id("id", &id.0)?;
        let kind = Kind::from(kind);
        let exists = {
            let store = ctx.data::<AppCtx>()?.state.store.clone();
            let entity = id.0.clone();
            blocking(move || Ok(read::load(&store, kind, &entity)?.is_some())).await?
        };
        if !exists {
            return Err(
                ApiError::new(ErrorKind::NotFound, format!("no {} \"{}\" to retract", kind.slug(), id.0)).into()
            );
        }
        let payload = Ok(coalition_events::Payload::Retraction(coalition_events::Retraction {
            kind,
            id: coalition_events::EntityId(id.0),
            reason,
        }));
        submit(ctx, &principal, partner_id, payload).await
    }

    /// A policy team links a case study or activity to a recommendation it implements. Needs a
    /// policy token (or admin).
    async fn link_to_recommendation(&self, ctx: &Context<'_>, partner_id: ID, input: LinkInput) -> Result<Receipt> {
        let principal = principal(ctx);
        principal.authorize_link()?;
        let payload = input.into_payload(&partner_id);
        submit(ctx, &principal, partner_id, payload).await
    }
}

/// Which role each mutation needs, checked on the whole operation before any argument is coerced
/// (the resolvers check again, with the `partnerId` they are given).
type Gate = fn(&Principal) -> Result<(), ApiError>;

/// Add a row for each new mutation.
fn mutation_gate(field: &str) -> Option<Gate> {
    match field {
        "submitActivity" | "submitDialogue" | "submitOutcome" | "submitCaseStudy" | "retract" => {
            Some(Principal::authorize_submitter)
        }
        "linkToRecommendation" => Some(Principal::authorize_link),
        "rebuild" => Some(Principal::authorize_admin),
        "__typename" => None,
        // A mutation without its own row: never for anonymous callers or readers; its resolver
        // must check the rest.
        _ => Some(Principal::authorize_writer),
    }
}

/// Query fields whose answer does not follow from the stored data alone (the materializer's
/// progress, a rebuild's): a query selecting one is never answered from the response cache.
const LIVE_FIELDS: [&str; 2] = ["freshness", "rebuildStatus"];

/// Query fields whose answer reads the search index; every other field reads the graph store
/// alone, so a query selecting none of these is kept across the index's commits.
const INDEX_FIELDS: [&str; 1] = ["search"];

/// The argument of query fields that read the data as of a log position (`node`).
const AS_OF: &str = "asOf";

/// A query whose answer may be kept: what it reads, and whether it asks as of a log position (an
/// answer of an earlier state is never one such a query accepts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Keepable {
    pub reads: Reads,
    pub as_of: bool,
}

/// Authorises a GraphQL request as a whole, before validation: anonymous reads when reads are
/// closed, and mutations by a caller whose role cannot run them, are refused here. A request that
/// does not parse is left to the schema, which reports the syntax error. When the request is a
/// query whose answer follows from the stored data and its own text alone, so may be kept in the
/// response cache ([`crate::response_cache`]), returns what that answer reads and whether it asks
/// as of a log position.
pub(crate) fn authorize_request(
    principal: &Principal,
    public_reads: bool,
    request: &mut async_graphql::Request,
) -> Result<Option<Keepable>, ApiError> {
    use async_graphql::parser::types::{DocumentOperations, OperationType};
    // Before anything parses it: the parser recurses once per level of nesting.
    crate::nesting::check(&request.query, crate::nesting::Language::GraphQl, crate::nesting::MAX_NESTING)?;
    let operation_name = request.operation_name.clone();
    let Ok(doc) = request.parsed_query() else {
        principal.authorize_read(public_reads)?;
        return Ok(None);
    };
    let operation = match (&doc.operations, operation_name.as_deref()) {
        (DocumentOperations::Single(op), _) => Some(op),
        (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name),
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => ops.values().next(),
        (DocumentOperations::Multiple(_), None) => None,
    };
    let Some(operation) = operation else {
        principal.authorize_read(public_reads)?;
        return Ok(None);
    };
    let mut fields = Vec::new();
    let complete = root_fields(&operation.node.selection_set.node, doc, 0, &mut fields);
    let mut names = fields.iter().map(|f| f.name.node.as_str());
    if operation.node.ty != OperationType::Mutation {
        principal.authorize_read(public_reads)?;
        let keepable =
            operation.node.ty == OperationType::Query && complete && !names.clone().any(|f| LIVE_FIELDS.contains(&f));
        let reads = if names.any(|f| INDEX_FIELDS.contains(&f)) { Reads::GraphAndIndex } else { Reads::Graph };
        let as_of = fields.iter().any(|f| f.arguments.iter().any(|(name, _)| name.node == AS_OF));
        return Ok(keepable.then_some(Keepable { reads, as_of }));
    }
    if matches!(principal, Principal::Anonymous) && names.clone().any(|f| f != "__typename") {
        return Err(ApiError::new(
            ErrorKind::Unauthenticated,
            "mutations need a bearer token (Authorization: Bearer <token>)",
        ));
    }
    for field in names {
        if let Some(gate) = mutation_gate(field) {
            gate(principal)?;
        }
    }
    Ok(None)
}

/// The fields an operation selects at its root, through fragments nested at most eight deep;
/// returns whether every selection was reached (false: some lie deeper).
fn root_fields<'a>(
    set: &'a async_graphql::parser::types::SelectionSet,
    doc: &'a async_graphql::parser::types::ExecutableDocument,
    depth: usize,
    out: &mut Vec<&'a async_graphql::parser::types::Field>,
) -> bool {
    use async_graphql::parser::types::Selection;
    if depth > 8 {
        return false;
    }
    let mut complete = true;
    for item in &set.items {
        complete &= match &item.node {
            Selection::Field(f) => {
                out.push(&f.node);
                true
            }
            Selection::InlineFragment(f) => root_fields(&f.node.selection_set.node, doc, depth + 1, out),
            Selection::FragmentSpread(s) => match doc.fragments.get(&s.node.fragment_name.node) {
                Some(def) => root_fields(&def.node.selection_set.node, doc, depth + 1, out),
                None => true,
            },
        };
    }
    complete
}

/// A GraphQL response that refuses the whole request, with the error's HTTP status.
pub fn refusal(e: ApiError) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (_, status) = e.kind.codes();
    let unauthenticated = e.kind == ErrorKind::Unauthenticated;
    let mut error = async_graphql::Error::from(e).into_server_error(async_graphql::Pos::default());
    error.locations.clear();
    let mut response =
        async_graphql_axum::GraphQLResponse::from(async_graphql::Response::from_errors(vec![error])).into_response();
    *response.status_mut() = status;
    if unauthenticated {
        response.headers_mut().insert(
            axum::http::header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer realm=\"coalition\""),
        );
    }
    response
}

/// Gives every error async-graphql raises by itself — syntax, validation, coercion of arguments
/// and variables, depth and complexity limits — a code from the table, as resolver errors have,
/// so that clients can rely on `extensions.code` whatever went wrong.
pub fn code_errors(errors: &mut [async_graphql::ServerError]) {
    for error in errors {
        if error.extensions.as_ref().is_some_and(|x| x.get("code").is_some()) {
            continue;
        }
        let limit = ["Query is nested too deep", "Query is too complex", "recursion depth of the query"];
        let kind =
            if limit.iter().any(|m| error.message.contains(m)) { ErrorKind::TooLarge } else { ErrorKind::BadUserInput };
        let (code, status) = kind.codes();
        let extensions = error.extensions.get_or_insert_with(Default::default);
        extensions.set("code", code);
        extensions.set("status", status.as_u16());
    }
}

/// Reads a GraphQL request from an HTTP body of at most `limit` bytes. A body that is too large
/// or is not a GraphQL request is refused with a coded error, like every other refusal.
pub async fn read_request(
    headers: &axum::http::HeaderMap,
    body: axum::body::Body,
    limit: usize,
) -> Result<async_graphql::Request, ApiError> {
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        let e = e.into_inner();
        if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
            ApiError::new(ErrorKind::TooLarge, format!("request body is larger than the limit of {limit} bytes"))
        } else {
            ApiError::new(ErrorKind::BadUserInput, format!("cannot read the request body: {e}"))
        }
    })?;
    let content_type = headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    async_graphql::http::receive_body(content_type, bytes.as_ref(), async_graphql::http::MultipartOptions::default())
        .await
        .map_err(|e| ApiError::new(ErrorKind::BadUserInput, format!("invalid GraphQL request: {e}")))
}

/// What a partner may retract.
#[derive(async_graphql::Enum, Copy, Clone, Eq, PartialEq)]
pub enum RetractableKind {
    Activity,
    Dialogue,
    Outcome,
    CaseStudy,
}

impl From<RetractableKind> for Kind {
    fn from(k: RetractableKind) -> Kind {
        match k {
            RetractableKind::Activity => Kind::Activity,
            RetractableKind::Dialogue => Kind::Dialogue,
            RetractableKind::Outcome => Kind::Outcome,
            RetractableKind::CaseStudy => Kind::CaseStudy,
        }
    }
}

/// Proof that the broker has the event.
#[derive(SimpleObject)]
pub struct Receipt {
    pub event_id: String,
    pub entity_id: ID,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// True if the event was already applied to the graph and index when the receipt was issued.
    pub applied: bool,
    /// Send this back in the `Coalition-Consistency` header to read your write: the request waits
    /// until graph and index have applied the event.
    pub consistency_token: String,
}

async fn submit(
    ctx: &Context<'_>,
    principal: &Principal,
    partner_id: ID,
    payload: Result<coalition_events::Payload, ApiError>,
) -> Result<Receipt> {
    let state = ctx.data::<AppCtx>()?.state.clone();
    let payload = payload?;
    check_id("partnerId", &partner_id.0)?;
    authorize_owner(&state, principal, payload.kind(), &payload.subject().0).await?;
    if let Err(e) = coalition_events::validate_payload(&payload) {
        return Err(schema_error(e).into());
    }
    let refs = inputs::references(&payload);
    let partner = partner_id.0.clone();
    let store = state.store.clone();
    blocking(move || {
        if read::load(&store, Kind::Partner, &partner)?.is_none() {
            return Err(ApiError::bad_input("partnerId", format!("no partner \"{partner}\" in the graph")));
        }
        for (field, kind, id) in refs {
            if read::load(&store, kind, &id)?.is_none() {
                return Err(ApiError::bad_input(&field, format!("no {} \"{id}\" in the graph", kind.slug())));
            }
        }
        Ok(())
    })
    .await?;
    let event = coalition_events::Event::new(
        coalition_events::PartnerId(partner_id.0.clone()),
        // Provenance names the authenticated token, never a client-supplied claim.
        principal.event_source(&partner_id.0),
        payload,
    );
    let receipt = state.producer.publish(&event).await.map_err(ApiError::from)?;
    let mut applied = false;
    if state.config.ack_after_apply {
        let mut w = state.watermark.clone();
        coalition_ingest::wait_applied(
            &mut w,
            &receipt.topic,
            receipt.partition,
            receipt.offset,
            state.config.apply_timeout,
        )
        .await
        .map_err(ApiError::from)?;
        applied = true;
    }
    let consistency_token = crate::consistency::ConsistencyToken {
        topic: receipt.topic.clone(),
        partition: receipt.partition,
        offset: receipt.offset,
    }
    .encode();
    Ok(Receipt {
        consistency_token,
        event_id: receipt.event_id,
        entity_id: ID(event.subject.0),
        topic: receipt.topic,
        partition: receipt.partition,
        offset: receipt.offset,
        applied,
    })
}

/// A partner changes only its own entities: an entity already in the graph belongs to the partner
/// whose event first described it. Links are the policy team's and are not owned; admins may
/// change anything. Runs before the input is validated.
pub(crate) async fn authorize_owner(
    state: &AppState,
    principal: &Principal,
    kind: Kind,
    id: &str,
) -> Result<(), ApiError> {
    let Principal::Token { role: crate::auth::Role::Partner, partner: Some(own), id: token } = principal else {
        return Ok(());
    };
    if kind == Kind::Link {
        return Ok(());
    }
    check_id("input.id", id)?;
    let store = state.store.clone();
    let entity = coalition_mapping::entity_iri(kind, id).as_str().to_owned();
    let history = blocking(move || read::provenance(&store, &entity)).await?;
    match history.first() {
        Some(first) if first.partner_id != own.0 => Err(ApiError::new(
            ErrorKind::Forbidden,
            format!(
                "{} \"{id}\" belongs to partner \"{}\": token {token} (partner \"{own}\") can change only its own partner's entities",
                kind.slug(),
                first.partner_id
            ),
        )),
        _ => Ok(()),
    }
}

/// Turns schema violations into field-level errors named after the GraphQL input.
fn schema_error(e: coalition_events::EventError) -> ApiError {
    let coalition_events::EventError::Schema { errors, .. } = &e else {
        return ApiError::new(ErrorKind::BadUserInput, e.to_string());
    };
    let fields: Vec<crate::errors::FieldError> = errors
        .iter()
        .map(|v| {
            let path = v.pointer.strip_prefix("/data").unwrap_or(&v.pointer);
            let field = format!("input{}", path.replace('/', "."));
            crate::errors::FieldError { field, message: v.message.clone() }
        })
        .collect();
    let summary = fields.iter().map(|f| format!("field \"{}\": {}", f.field, f.message)).collect::<Vec<_>>().join("; ");
    ApiError { kind: ErrorKind::BadUserInput, message: format!("invalid input: {summary}"), fields }
}
