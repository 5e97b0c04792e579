//! GraphQL object types: each wraps an [`Entity`] loaded from its named graph and resolves links
//! in both directions. Every entity exposes `provenance` (the event behind its current facts) and
//! `history` (every event that described it).

use super::loader::{loaded, CaseStudyOutcomesLoader, EntityLoader, ReferrerLoader};
use super::{blocking, AppCtx};
use crate::read::{self, Entity, ProvenanceRecord};
use async_graphql::dataloader::DataLoader;
use async_graphql::{Context, Object, Result, SimpleObject, Union, ID};
use chrono::NaiveDate;
use coalition_events::Kind;
use coalition_mapping::vocab::{coal, dcterms, org, schema, skos};
use std::collections::BTreeSet;

type Entities = DataLoader<EntityLoader>;

/// Loads referenced entities through the request-spanning batch loader, in the order given.
pub(crate) async fn load_refs(ctx: &Context<'_>, kind: Kind, ids: Vec<String>) -> Result<Vec<Entity>> {
    let loader = ctx.data::<Entities>()?;
    let keys: Vec<(Kind, String)> = ids.into_iter().map(|id| (kind, id)).collect();
    let found = loader.load_many(keys.clone()).await.map_err(|e| async_graphql::Error::new(e.as_str()))?;
    Ok(keys.iter().filter_map(|k| found.get(k).cloned()).collect())
}

pub(crate) async fn load_one(ctx: &Context<'_>, kind: Kind, id: Option<String>) -> Result<Option<Entity>> {
    let Some(id) = id else { return Ok(None) };
    loaded::<EntityLoader, _>(ctx, (kind, id)).await
}

/// Entities of `kind` whose `predicate` points at `target`, batched across sibling resolvers.
async fn referrers(ctx: &Context<'_>, kind: Kind, predicate: &'static str, target: &str) -> Result<Vec<Entity>> {
    let key = (kind, predicate.to_owned(), target.to_owned());
    let ids = loaded::<ReferrerLoader, _>(ctx, key).await?.unwrap_or_default();
    load_refs(ctx, kind, ids).await
}

async fn provenance_of(ctx: &Context<'_>, iri: &str) -> Result<Vec<Provenance>> {
    let store = ctx.data::<AppCtx>()?.state.store.clone();
    let iri = iri.to_owned();
    let records = blocking(move || read::provenance(&store, &iri)).await?;
    Ok(records.into_iter().map(Provenance).collect())
}

fn date(e: &Entity, p: &str) -> Option<NaiveDate> {
    e.str(p).and_then(|d| d.parse().ok())
}

fn wrap<T>(entities: Vec<Entity>, f: fn(Entity) -> T) -> Vec<T> {
    entities.into_iter().map(f).collect()
}

/// Where a fact came from: the event that produced it, who submitted it, and where it sits in the log.
pub struct Provenance(pub ProvenanceRecord);

#[Object]
impl Provenance {
    async fn event_id(&self) -> &str {
        &self.0.event_id
    }
    async fn event_type(&self) -> &str {
        &self.0.event_type
    }
    /// The partner organisation that submitted the event.
    async fn partner_id(&self) -> &str {
        &self.0.partner_id
    }
    async fn partner(&self, ctx: &Context<'_>) -> Result<Option<Partner>> {
        Ok(load_one(ctx, Kind::Partner, Some(self.0.partner_id.clone())).await?.map(Partner))
    }
    /// Event time (RFC 3339).
    async fn time(&self) -> &str {
        &self.0.time
    }
    /// CloudEvents `source` of the event.
    async fn source(&self) -> &str {
        &self.0.source
    }
    async fn topic(&self) -> &str {
        &self.0.topic
    }
    async fn partition(&self) -> i64 {
        self.0.partition
    }
    async fn offset(&self) -> i64 {
        self.0.offset
    }
}

/// Fields every entity type has.
macro_rules! entity_object {
    ($(#[$m:meta])* $ty:ident { $($body:tt)* }) => {
        $(#[$m])*
        #[derive(Clone)]
        pub struct $ty(pub Entity);

        #[Object]
        impl $ty {
            /// The entity id (unique within its kind).
            async fn id(&self) -> ID {
                ID(self.0.id.clone())
            }
            /// The entity's IRI in the graph.
            async fn iri(&self) -> &str {
                &self.0.iri
            }
            /// The event behind the current facts.
            async fn provenance(&self, ctx: &Context<'_>) -> Result<Option<Provenance>> {
                Ok(provenance_of(ctx, &self.0.iri).await?.pop())
            }
            /// Every event that described this entity, oldest first.
            async fn history(&self, ctx: &Context<'_>) -> Result<Vec<Provenance>> {
                provenance_of(ctx, &self.0.iri).await
            }
            $($body)*
        }
    };
}

entity_object!(
    /// A policy action recommended by the coalition; may be refined into narrower ones.
    Recommendation {
        async fn number(&self) -> Option<i64> {
            self.0.int(coal::RECOMMENDATION_NUMBER)
        }
        async fn title(&self) -> String {
            self.0.req(skos::PREF_LABEL)
        }
        async fn text(&self) -> String {
            self.0.req(skos::DEFINITION)
        }
        async fn broader(&self, ctx: &Context<'_>) -> Result<Option<Recommendation>> {
            Ok(load_one(ctx, Kind::Recommendation, self.0.refs(skos::BROADER).pop()).await?.map(Recommendation))
        }
        /// Counts over this recommendation and every one below it, from the maintained projection.
        async fn dashboard(&self, ctx: &Context<'_>) -> Result<super::projections::RecommendationDashboard> {
            super::projections::dashboard(ctx, &self.0.iri).await
        }
        async fn narrower(&self, ctx: &Context<'_>) -> Result<Vec<Recommendation>> {
            Ok(wrap(referrers(ctx, Kind::Recommendation, skos::BROADER, &self.0.iri).await?, Recommendation))
        }
        /// Case studies implementing this recommendation.
        async fn case_studies(&self, ctx: &Context<'_>) -> Result<Vec<CaseStudy>> {
            Ok(wrap(referrers(ctx, Kind::CaseStudy, coal::IMPLEMENTS, &self.0.iri).await?, CaseStudy))
        }
        /// Activities implementing this recommendation.
        async fn activities(&self, ctx: &Context<'_>) -> Result<Vec<Activity>> {
            Ok(wrap(referrers(ctx, Kind::Activity, coal::IMPLEMENTS, &self.0.iri).await?, Activity))
        }
        /// Dialogues that informed this recommendation.
        async fn dialogues(&self, ctx: &Context<'_>) -> Result<Vec<Dialogue>> {
            Ok(wrap(referrers(ctx, Kind::Dialogue, coal::INFORMS, &self.0.iri).await?, Dialogue))
        }
        /// Evidence supporting this recommendation.
        async fn evidence(&self, ctx: &Context<'_>) -> Result<Vec<EvidenceStatistic>> {
            Ok(wrap(referrers(ctx, Kind::Evidence, coal::SUPPORTS, &self.0.iri).await?, EvidenceStatistic))
        }
        /// Outcomes measuring the case studies and activities that implement this recommendation.
        async fn outcomes(&self, ctx: &Context<'_>) -> Result<Vec<Outcome>> {
            let store = ctx.data::<AppCtx>()?.state.store.clone();
            let iri = self.0.iri.clone();
            let entities = blocking(move || {
                let rows = store.select(&format!(
                    "SELECT DISTINCT ?e WHERE {{ ?e a <{}> ; <{}> ?m . ?m <{}> <{iri}> }} ORDER BY ?e",
                    coal::OUTCOME, coal::MEASURES, coal::IMPLEMENTS
                ))?;
                read::load_many(&store, Kind::Outcome, &read::ids_of(&rows, "e"))
            })
            .await?;
            Ok(wrap(entities, Outcome))
        }
        /// Distinct partners leading the case studies and activities that implement this recommendation.
        async fn partners(&self, ctx: &Context<'_>) -> Result<Vec<Partner>> {
            let store = ctx.data::<AppCtx>()?.state.store.clone();
            let iri = self.0.iri.clone();
            let entities = blocking(move || {
                let rows = store.select(&format!(
                    "SELECT DISTINCT ?p WHERE {{ ?x <{}> <{iri}> ; <{}> ?p }} ORDER BY ?p",
                    coal::IMPLEMENTS, coal::LED_BY
                ))?;
                read::load_many(&store, Kind::Partner, &read::ids_of(&rows, "p"))
            })
            .await?;
            Ok(wrap(entities, Partner))
        }
    }
);

entity_object!(
    /// A documented local action, led by partners, implementing recommendations.
    CaseStudy {
        async fn title(&self) -> String {
            self.0.req(dcterms::TITLE)
        }
        async fn country(&self) -> String {
            self.0.req(coal::COUNTRY)
        }
        async fn narrative(&self) -> String {
            self.0.req(dcterms::DESCRIPTION)
        }
        async fn start_date(&self) -> Option<NaiveDate> {
            date(&self.0, schema::START_DATE)
        }
        /// Partners leading the case study.
        async fn partners(&self, ctx: &Context<'_>) -> Result<Vec<Partner>> {
            Ok(wrap(load_refs(ctx, Kind::Partner, self.0.refs(coal::LED_BY)).await?, Partner))
        }
        /// Recommendations the case study implements (its own and those linked by policy teams).
        async fn recommendations(&self, ctx: &Context<'_>) -> Result<Vec<Recommendation>> {
            implemented(ctx, &self.0.iri).await
        }
        async fn activities(&self, ctx: &Context<'_>) -> Result<Vec<Activity>> {
            Ok(wrap(referrers(ctx, Kind::Activity, coal::PART_OF_CASE_STUDY, &self.0.iri).await?, Activity))
        }
        /// Outcomes measuring the case study itself or any of its activities.
        async fn outcomes(&self, ctx: &Context<'_>) -> Result<Vec<Outcome>> {
            let ids = loaded::<CaseStudyOutcomesLoader, _>(ctx, self.0.iri.clone()).await?.unwrap_or_default();
            Ok(wrap(load_refs(ctx, Kind::Outcome, ids).await?, Outcome))
        }
        async fn source(&self, ctx: &Context<'_>) -> Result<Option<SourceDocument>> {
            Ok(load_one(ctx, Kind::Source, self.0.refs(dcterms::SOURCE).pop()).await?.map(SourceDocument))
        }
    }
);

/// Recommendations implemented by `iri`, from its own graph or from link events.
async fn implemented(ctx: &Context<'_>, iri: &str) -> Result<Vec<Recommendation>> {
    let store = ctx.data::<AppCtx>()?.state.store.clone();
    let iri = iri.to_owned();
    let entities = blocking(move || {
        let rows =
            store.select(&format!("SELECT DISTINCT ?r WHERE {{ <{iri}> <{}> ?r }} ORDER BY ?r", coal::IMPLEMENTS))?;
        read::load_many(&store, Kind::Recommendation, &read::ids_of(&rows, "r"))
    })
    .await?;
    Ok(wrap(entities, Recommendation))
}

entity_object!(
    /// Something a partner did: training, learning session, app launch, petition, …
    Activity {
        async fn title(&self) -> String {
            self.0.req(dcterms::TITLE)
        }
        async fn description(&self) -> Option<String> {
            self.0.str(dcterms::DESCRIPTION)
        }
        async fn activity_type(&self) -> String {
            self.0.req(coal::ACTIVITY_TYPE)
        }
        async fn date(&self) -> Option<NaiveDate> {
            date(&self.0, dcterms::DATE)
        }
        async fn country(&self) -> Option<String> {
            self.0.str(coal::COUNTRY)
        }
        /// People reached.
        async fn reach(&self) -> Option<i64> {
            self.0.int(coal::REACH)
        }
        async fn audience_groups(&self) -> Vec<String> {
            self.0.strs(coal::AUDIENCE_GROUP)
        }
        async fn led_by(&self, ctx: &Context<'_>) -> Result<Vec<Partner>> {
            Ok(wrap(load_refs(ctx, Kind::Partner, self.0.refs(coal::LED_BY)).await?, Partner))
        }
        async fn case_study(&self, ctx: &Context<'_>) -> Result<Option<CaseStudy>> {
            Ok(load_one(ctx, Kind::CaseStudy, self.0.refs(coal::PART_OF_CASE_STUDY).pop()).await?.map(CaseStudy))
        }
        async fn programme(&self, ctx: &Context<'_>) -> Result<Option<Programme>> {
            Ok(load_one(ctx, Kind::Programme, self.0.refs(coal::PART_OF_PROGRAMME).pop()).await?.map(Programme))
        }
        async fn recommendations(&self, ctx: &Context<'_>) -> Result<Vec<Recommendation>> {
            implemented(ctx, &self.0.iri).await
        }
        async fn outcomes(&self, ctx: &Context<'_>) -> Result<Vec<Outcome>> {
            Ok(wrap(referrers(ctx, Kind::Outcome, coal::MEASURES, &self.0.iri).await?, Outcome))
        }
    }
);

entity_object!(
    /// A measured result of a case study or activity.
    Outcome {
        async fn description(&self) -> String {
            self.0.req(dcterms::DESCRIPTION)
        }
        async fn metric(&self) -> String {
            self.0.req(coal::METRIC)
        }
        async fn value(&self) -> Option<f64> {
            self.0.float(coal::VALUE)
        }
        async fn unit(&self) -> String {
            self.0.req(coal::UNIT)
        }
        async fn date(&self) -> Option<NaiveDate> {
            date(&self.0, dcterms::DATE)
        }
        async fn baseline(&self) -> Option<f64> {
            self.0.float(coal::BASELINE)
        }
        async fn target(&self) -> Option<f64> {
            self.0.float(coal::TARGET)
        }
        /// The case study this outcome measures, if it measures one.
        async fn case_study(&self, ctx: &Context<'_>) -> Result<Option<CaseStudy>> {
            let id = measured(&self.0, Kind::CaseStudy);
            Ok(load_one(ctx, Kind::CaseStudy, id).await?.map(CaseStudy))
        }
        /// The activity this outcome measures, if it measures one.
        async fn activity(&self, ctx: &Context<'_>) -> Result<Option<Activity>> {
            let id = measured(&self.0, Kind::Activity);
            Ok(load_one(ctx, Kind::Activity, id).await?.map(Activity))
        }
    }
);

fn measured(e: &Entity, kind: Kind) -> Option<String> {
    e.strs(coal::MEASURES)
        .iter()
        .filter_map(|iri| coalition_mapping::parse_entity_iri(iri))
        .find(|(k, _)| *k == kind)
        .map(|(_, id)| id)
}

/// What a dialogue participant said.
#[derive(SimpleObject, Clone)]
pub struct Quote {
    pub iri: String,
    pub text: String,
    pub speaker: Option<String>,
    pub speaker_role: Option<String>,
    pub language: Option<String>,
}

entity_object!(
    /// A listening event or conversation, with what participants said.
    Dialogue {
        async fn title(&self) -> String {
            self.0.req(dcterms::TITLE)
        }
        async fn date(&self) -> Option<NaiveDate> {
            date(&self.0, dcterms::DATE)
        }
        async fn country(&self) -> String {
            self.0.req(coal::COUNTRY)
        }
        async fn audience_groups(&self) -> Vec<String> {
            self.0.strs(coal::AUDIENCE_GROUP)
        }
        async fn reach(&self) -> Option<i64> {
            self.0.int(coal::REACH)
        }
        async fn internal(&self) -> bool {
            self.0.str(coal::INTERNAL).as_deref() == Some("true")
        }
        async fn summary(&self) -> Option<String> {
            self.0.str(dcterms::DESCRIPTION)
        }
        async fn language(&self) -> Option<String> {
            self.0.str(dcterms::LANGUAGE)
        }
        async fn quotes(&self) -> Vec<Quote> {
            let mut quotes: Vec<Quote> = self
                .0
                .strs(coal::HAS_QUOTE)
                .into_iter()
                .filter_map(|iri| {
                    let props = self.0.nested.get(&iri)?;
                    let text_term = props.get(schema::TEXT)?.first()?;
                    let (text, language) = match text_term {
                        oxigraph::model::Term::Literal(l) => (l.value().to_owned(), l.language().map(str::to_owned)),
                        other => (other.to_string(), None),
                    };
                    Some(Quote {
                        text,
                        language,
                        speaker: read::props_str(props, coal::SPEAKER),
                        speaker_role: read::props_str(props, coal::SPEAKER_ROLE),
                        iri,
                    })
                })
                .collect();
            quotes.sort_by_key(|q| {
                q.iri.rsplit('/').next().and_then(|n| n.parse::<u32>().ok()).unwrap_or(u32::MAX)
            });
            quotes
        }
        async fn partners(&self, ctx: &Context<'_>) -> Result<Vec<Partner>> {
            Ok(wrap(load_refs(ctx, Kind::Partner, self.0.refs(coal::PARTNER_PROP)).await?, Partner))
        }
        /// Recommendations this dialogue informs.
        async fn recommendations(&self, ctx: &Context<'_>) -> Result<Vec<Recommendation>> {
            Ok(wrap(load_refs(ctx, Kind::Recommendation, self.0.refs(coal::INFORMS)).await?, Recommendation))
        }
        async fn programme(&self, ctx: &Context<'_>) -> Result<Option<Programme>> {
            Ok(load_one(ctx, Kind::Programme, self.0.refs(coal::PART_OF_PROGRAMME).pop()).await?.map(Programme))
        }
    }
);

entity_object!(
    /// A coalition member or collaborator.
    Partner {
        async fn name(&self) -> String {
            self.0.req(schema::NAME)
        }
        async fn organisation_type(&self) -> String {
            self.0.req(coal::ORGANISATION_TYPE)
        }
        async fn country(&self) -> Option<String> {
            self.0.str(coal::COUNTRY)
        }
        /// True if the organisation is a member of the coalition.
        async fn coalition_member(&self) -> bool {
            self.0.str(org::MEMBER_OF).is_some()
        }
        async fn description(&self) -> Option<String> {
            self.0.str(dcterms::DESCRIPTION)
        }
        async fn website(&self) -> Option<String> {
            self.0.str(schema::URL)
        }
        async fn activities(&self, ctx: &Context<'_>) -> Result<Vec<Activity>> {
            Ok(wrap(referrers(ctx, Kind::Activity, coal::LED_BY, &self.0.iri).await?, Activity))
        }
        async fn case_studies(&self, ctx: &Context<'_>) -> Result<Vec<CaseStudy>> {
            Ok(wrap(referrers(ctx, Kind::CaseStudy, coal::LED_BY, &self.0.iri).await?, CaseStudy))
        }
        async fn dialogues(&self, ctx: &Context<'_>) -> Result<Vec<Dialogue>> {
            Ok(wrap(referrers(ctx, Kind::Dialogue, coal::PARTNER_PROP, &self.0.iri).await?, Dialogue))
        }
        async fn people(&self, ctx: &Context<'_>) -> Result<Vec<Person>> {
            Ok(wrap(referrers(ctx, Kind::Person, org::MEMBER_OF, &self.0.iri).await?, Person))
        }
    }
);

entity_object!(
    /// An Advisory Group member, scholar or speaker.
    Person {
        async fn name(&self) -> String {
            self.0.req(schema::NAME)
        }
        async fn roles(&self) -> Vec<String> {
            self.0.strs(coal::ROLE)
        }
        async fn job_title(&self) -> Option<String> {
            self.0.str(schema::JOB_TITLE)
        }
        async fn affiliations(&self, ctx: &Context<'_>) -> Result<Vec<Partner>> {
            Ok(wrap(load_refs(ctx, Kind::Partner, self.0.refs(org::MEMBER_OF)).await?, Partner))
        }
    }
);

entity_object!(
    /// A programme or pillar (Education, Dialogues, Influence, NextGen Scholarship, …).
    Programme {
        async fn name(&self) -> String {
            self.0.req(schema::NAME)
        }
        async fn description(&self) -> Option<String> {
            self.0.str(dcterms::DESCRIPTION)
        }
        async fn pillar(&self) -> Option<String> {
            self.0.str(coal::PILLAR)
        }
        async fn country(&self) -> Option<String> {
            self.0.str(coal::COUNTRY)
        }
        async fn start_date(&self) -> Option<NaiveDate> {
            date(&self.0, schema::START_DATE)
        }
        async fn partners(&self, ctx: &Context<'_>) -> Result<Vec<Partner>> {
            Ok(wrap(load_refs(ctx, Kind::Partner, self.0.refs(coal::PARTNER_PROP)).await?, Partner))
        }
        async fn activities(&self, ctx: &Context<'_>) -> Result<Vec<Activity>> {
            Ok(wrap(referrers(ctx, Kind::Activity, coal::PART_OF_PROGRAMME, &self.0.iri).await?, Activity))
        }
        async fn dialogues(&self, ctx: &Context<'_>) -> Result<Vec<Dialogue>> {
            Ok(wrap(referrers(ctx, Kind::Dialogue, coal::PART_OF_PROGRAMME, &self.0.iri).await?, Dialogue))
        }
    }
);

entity_object!(
    /// A survey statistic: group, country, measure, percentage, sample size.
    EvidenceStatistic {
        async fn measure(&self) -> String {
            self.0.req(coal::MEASURE)
        }
        async fn description(&self) -> Option<String> {
            self.0.str(dcterms::DESCRIPTION)
        }
        async fn group(&self) -> String {
            self.0.req(coal::GROUP)
        }
        async fn country(&self) -> Option<String> {
            self.0.str(coal::COUNTRY)
        }
        async fn percentage(&self) -> Option<f64> {
            self.0.float(coal::PERCENTAGE)
        }
        async fn sample_size(&self) -> Option<i64> {
            self.0.int(coal::SAMPLE_SIZE)
        }
        async fn year(&self) -> Option<i64> {
            self.0.int(coal::YEAR)
        }
        async fn recommendations(&self, ctx: &Context<'_>) -> Result<Vec<Recommendation>> {
            Ok(wrap(load_refs(ctx, Kind::Recommendation, self.0.refs(coal::SUPPORTS)).await?, Recommendation))
        }
        async fn source(&self, ctx: &Context<'_>) -> Result<Option<SourceDocument>> {
            Ok(load_one(ctx, Kind::Source, self.0.refs(dcterms::SOURCE).pop()).await?.map(SourceDocument))
        }
    }
);

entity_object!(
    /// A source document.
    SourceDocument {
        async fn title(&self) -> String {
            self.0.req(dcterms::TITLE)
        }
        async fn publisher(&self) -> Option<String> {
            self.0.str(dcterms::PUBLISHER)
        }
        async fn year(&self) -> Option<i64> {
            self.0.int(dcterms::ISSUED)
        }
        async fn url(&self) -> Option<String> {
            self.0.str(schema::URL)
        }
    }
);

/// Any entity, as returned by `node(id)` and search hits.
#[derive(Union, Clone)]
pub enum Node {
    Recommendation(Recommendation),
    CaseStudy(CaseStudy),
    Activity(Activity),
    Outcome(Outcome),
    Dialogue(Dialogue),
    Partner(Partner),
    Person(Person),
    Programme(Programme),
    EvidenceStatistic(EvidenceStatistic),
    SourceDocument(SourceDocument),
}

impl Node {
    pub fn from_entity(e: Entity) -> Option<Node> {
        Some(match e.kind? {
            Kind::Recommendation => Node::Recommendation(Recommendation(e)),
            Kind::CaseStudy => Node::CaseStudy(CaseStudy(e)),
            Kind::Activity => Node::Activity(Activity(e)),
            Kind::Outcome => Node::Outcome(Outcome(e)),
            Kind::Dialogue => Node::Dialogue(Dialogue(e)),
            Kind::Partner => Node::Partner(Partner(e)),
            Kind::Person => Node::Person(Person(e)),
            Kind::Programme => Node::Programme(Programme(e)),
            Kind::Evidence => Node::EvidenceStatistic(EvidenceStatistic(e)),
            Kind::Source => Node::SourceDocument(SourceDocument(e)),
            Kind::Link => return None,
        })
    }
}

/// Distinct values, sorted, for facets of a page.
pub fn distinct(values: impl IntoIterator<Item = String>) -> Vec<String> {
    values.into_iter().collect::<BTreeSet<_>>().into_iter().collect()
}
