//! GraphQL over the evidence projections: each answer is a few index lookups of maintained Data
//! Cube observations, however much data the coalition holds.

use super::loader::{loaded, ObservationLoader};
use super::types::{Dialogue, EvidenceStatistic, Recommendation};
use super::{blocking, AppCtx};
use crate::read::{self, check_id, sparql_string};
use async_graphql::{Context, Object, Result, SimpleObject, ID};
use coalition_events::Kind;
use coalition_mapping::entity_iri;
use coalition_mapping::vocab::coal;
use coalition_store::projection::{Measures, Observation};

/// Counts over a recommendation and every recommendation below it, maintained as events arrive.
#[derive(SimpleObject)]
pub struct RecommendationDashboard {
    /// Case studies implementing it.
    pub case_studies: i64,
    /// Activities implementing it.
    pub activities: i64,
    /// Distinct partners leading those case studies and activities.
    pub partners: i64,
    /// Distinct countries of those case studies and activities.
    pub countries: i64,
    /// People reached by those activities.
    pub people_reached: i64,
    /// Outcomes measuring those case studies and activities.
    pub outcomes: i64,
    /// Date of the most recent of those outcomes.
    pub latest_outcome_date: Option<String>,
}

impl From<Measures> for RecommendationDashboard {
    fn from(m: Measures) -> Self {
        RecommendationDashboard {
            case_studies: m.case_studies,
            activities: m.activities,
            partners: m.partners,
            countries: m.countries,
            people_reached: m.people_reached,
            outcomes: m.outcomes,
            latest_outcome_date: m.latest_outcome_date,
        }
    }
}

/// Through the batched [`ObservationLoader`]: the dashboards of a page are one blocking call.
pub(crate) async fn dashboard(ctx: &Context<'_>, recommendation_iri: &str) -> Result<RecommendationDashboard> {
    let obs = Observation::Dashboard { recommendation: oxigraph::model::NamedNode::new(recommendation_iri)? };
    Ok(loaded::<ObservationLoader, _>(ctx, obs).await?.unwrap_or_default().into())
}

/// Evidence heard from one audience group in one country.
pub struct EvidenceSummary {
    pub group: String,
    pub country: String,
    /// The group × country observation.
    pub local: Measures,
    /// Statistics about the group given for no particular country.
    pub general: Measures,
}

#[Object]
impl EvidenceSummary {
    async fn group(&self) -> &str {
        &self.group
    }
    async fn country(&self) -> &str {
        &self.country
    }
    /// Dialogues with the group in the country.
    async fn dialogue_count(&self) -> i64 {
        self.local.dialogues
    }
    /// People those dialogues reached.
    async fn people_reached(&self) -> i64 {
        self.local.people_reached
    }
    /// Statistics about the group: for the country, plus those given for no country.
    async fn statistic_count(&self) -> i64 {
        self.local.statistics + self.general.statistics
    }
    /// The dialogues, first page.
    async fn dialogues(&self, ctx: &Context<'_>, #[graphql(default = 10)] first: i32) -> Result<Vec<Dialogue>> {
        let pattern = format!(
            "?e <{}> {} ; <{}> {} .",
            coal::AUDIENCE_GROUP,
            sparql_string(&self.group),
            coal::COUNTRY,
            sparql_string(&self.country)
        );
        Ok(items(ctx, Kind::Dialogue, pattern, first).await?.into_iter().map(Dialogue).collect())
    }
    /// The statistics, first page.
    async fn statistics(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
    ) -> Result<Vec<EvidenceStatistic>> {
        let pattern = format!(
            "?e <{}> {} . OPTIONAL {{ ?e <{}> ?c }} FILTER(!BOUND(?c) || ?c = {})",
            coal::GROUP,
            sparql_string(&self.group),
            coal::COUNTRY,
            sparql_string(&self.country)
        );
        Ok(items(ctx, Kind::Evidence, pattern, first).await?.into_iter().map(EvidenceStatistic).collect())
    }
}

/// Up to `first` entities of `kind` matching `pattern` (binding `?e`), in the store's order.
async fn items(ctx: &Context<'_>, kind: Kind, pattern: String, first: i32) -> Result<Vec<read::Entity>> {
    let state = &ctx.data::<AppCtx>()?.state;
    let first = first.clamp(0, state.config.max_page_size as i32);
    let store = state.store.clone();
    let class = read::class_of(kind);
    Ok(blocking(move || {
        let rows = store.select(&format!("SELECT ?e WHERE {{ ?e a <{class}> . {pattern} }} LIMIT {first}"))?;
        read::load_many(&store, kind, &read::ids_of(&rows, "e"))
    })
    .await?)
}

pub(crate) async fn evidence_summary(ctx: &Context<'_>, group: String, country: String) -> Result<EvidenceSummary> {
    let store = ctx.data::<AppCtx>()?.state.store.clone();
    let (local, general) = (
        Observation::Evidence { group: group.clone(), country: Some(country.clone()) },
        Observation::Evidence { group: group.clone(), country: None },
    );
    let (local, general) = blocking(move || Ok((store.observation(&local)?, store.observation(&general)?))).await?;
    Ok(EvidenceSummary { group, country, local, general })
}

/// A partner's activities in one year for one recommendation (none: activities implementing none).
pub struct RollupRow(pub coalition_store::projection::RollupRow);

#[Object]
impl RollupRow {
    async fn year(&self) -> i64 {
        self.0.year
    }
    async fn recommendation_id(&self) -> Option<ID> {
        let iri = self.0.recommendation.as_ref()?;
        coalition_mapping::parse_entity_iri(iri.as_str()).map(|(_, id)| ID(id))
    }
    async fn recommendation(&self, ctx: &Context<'_>) -> Result<Option<Recommendation>> {
        let Some(iri) = &self.0.recommendation else { return Ok(None) };
        let Some((Kind::Recommendation, id)) = coalition_mapping::parse_entity_iri(iri.as_str()) else {
            return Ok(None);
        };
        Ok(super::types::load_one(ctx, Kind::Recommendation, Some(id)).await?.map(Recommendation))
    }
    async fn activities(&self) -> i64 {
        self.0.measures.activities
    }
    async fn people_reached(&self) -> i64 {
        self.0.measures.people_reached
    }
}

pub(crate) async fn partner_rollup(ctx: &Context<'_>, partner_id: ID) -> Result<Vec<RollupRow>> {
    check_id("partnerId", &partner_id)?;
    let store = ctx.data::<AppCtx>()?.state.store.clone();
    let partner = entity_iri(Kind::Partner, &partner_id);
    Ok(blocking(move || Ok(store.rollup(&partner)?)).await?.into_iter().map(RollupRow).collect())
}
