//! Batched loading for GraphQL: sibling resolvers asking for entities in the same tick (the
//! partners of fifty case studies on one page, say) are served by one blocking call instead of
//! one each. No cache here: every request reads the store as it is now (entity graphs may come
//! from the store's own cache, which is never older than the last commit).
//!
//! How long a loader collects keys is `--graphql-batch-delay-us` (500 µs by default, against
//! async-graphql's 1 ms). The resolvers of one level of a page all ask within one poll, so a lone
//! request gains nothing from waiting — each level of a page waits once, most of a dashboard's
//! 6 ms at 1 ms — while concurrent requests asking for the same level share one call and its
//! reads (16 clients on a case-study page: 162 requests/s with no delay, 314 with 500 µs).
//! `coalition_graphql_loader_batches_total` and `…_keys_total` show the batching achieved.

use super::blocking;
use crate::errors::ApiError;
use crate::read::{self, Entity};
use crate::ApiMetrics;
use async_graphql::dataloader::{DataLoader, Loader};
use async_graphql::Context;
use coalition_events::Kind;
use coalition_store::projection::{Measures, Observation};
use coalition_store::GraphStore;
use oxigraph::model::NamedNode;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

/// What the schema's loader `L` answers for `key` (`None`: no entry), batched with every other
/// resolver asking `L` in the same tick.
pub(crate) async fn loaded<L, K>(ctx: &Context<'_>, key: K) -> async_graphql::Result<Option<L::Value>>
where
    L: Loader<K, Error = Arc<String>>,
    K: Send + Sync + Hash + Eq + Clone + 'static,
{
    ctx.data::<DataLoader<L>>()?.load_one(key).await.map_err(|e| async_graphql::Error::new(e.as_str()))
}

/// What every loader holds: the store it reads and the metrics its batches count into.
#[derive(Clone)]
pub struct Batches {
    pub store: GraphStore,
    pub metrics: ApiMetrics,
}

impl Batches {
    /// Answers one batch of `loader`'s keys with `f`, in one blocking call.
    async fn run<K, V>(
        &self,
        loader: &'static str,
        keys: &[K],
        f: impl FnOnce(GraphStore, Vec<K>) -> Result<HashMap<K, V>, ApiError> + Send + 'static,
    ) -> Result<HashMap<K, V>, Arc<String>>
    where
        K: Clone + Send + 'static,
        V: Send + 'static,
    {
        self.metrics.graphql_loader_batches_total.with_label_values(&[loader]).inc();
        self.metrics.graphql_loader_keys_total.with_label_values(&[loader]).inc_by(keys.len() as u64);
        let (store, keys) = (self.store.clone(), keys.to_vec());
        blocking(move || f(store, keys)).await.map_err(|e| Arc::new(e.message))
    }
}

/// Key: (kind, id).
pub struct EntityLoader(pub Batches);

impl Loader<(Kind, String)> for EntityLoader {
    type Value = Entity;
    type Error = Arc<String>;

    async fn load(&self, keys: &[(Kind, String)]) -> Result<HashMap<(Kind, String), Entity>, Self::Error> {
        self.0
            .run("entity", keys, |store, keys| {
                let mut out = HashMap::with_capacity(keys.len());
                for (kind, id) in keys {
                    if let Some(e) = read::load(&store, kind, &id)? {
                        out.insert((kind, id), e);
                    }
                }
                Ok(out)
            })
            .await
    }
}

/// (kind of the referring entities, predicate, target IRI).
type ReferrerKey = (Kind, String, String);

/// Key: (kind of the referring entities, predicate, target IRI) — "the activities that implement
/// this recommendation". All targets asked together are answered by one SPARQL query per
/// (kind, predicate) with a `VALUES` block.
pub struct ReferrerLoader(pub Batches);

impl Loader<ReferrerKey> for ReferrerLoader {
    type Value = Vec<String>;
    type Error = Arc<String>;

    async fn load(&self, keys: &[ReferrerKey]) -> Result<HashMap<ReferrerKey, Vec<String>>, Self::Error> {
        self.0.run("referrers", keys, |store, keys| referrers(&store, &keys)).await
    }
}

/// The referrers of every target in `keys`: one SPARQL query per (kind, predicate).
fn referrers(store: &GraphStore, keys: &[ReferrerKey]) -> Result<HashMap<ReferrerKey, Vec<String>>, ApiError> {
    let mut groups: HashMap<(Kind, String), Vec<String>> = HashMap::new();
    for (kind, predicate, target) in keys {
        groups.entry((*kind, predicate.clone())).or_default().push(target.clone());
    }
    let mut out: HashMap<ReferrerKey, Vec<String>> = keys.iter().map(|k| (k.clone(), Vec::new())).collect();
    for ((kind, predicate), targets) in groups {
        let values = read::entity_iri_values(targets.iter().map(String::as_str));
        let rows = store.select(&format!(
            "SELECT DISTINCT ?t ?e WHERE {{ VALUES ?t {{ {values}}} ?e <{predicate}> ?t . ?e a <{}> }} ORDER BY ?e",
            read::class_of(kind)
        ))?;
        for row in rows {
            let (Some(t), Some(e)) = (coalition_store::literal(&row, "t"), coalition_store::literal(&row, "e")) else {
                continue;
            };
            if let (Some(list), Some((_, id))) =
                (out.get_mut(&(kind, predicate.clone(), t)), coalition_mapping::parse_entity_iri(&e))
            {
                list.push(id);
            }
        }
    }
    Ok(out)
}

/// Key: a case study's IRI — "the outcomes measuring this case study or any of its activities",
/// as outcome ids in id order. The store keeps each case study's list until a commit may change
/// it, and reads the lists it does not keep for a whole page in one query
/// ([`GraphStore::case_study_outcomes`]).
pub struct CaseStudyOutcomesLoader(pub Batches);

impl Loader<String> for CaseStudyOutcomesLoader {
    type Value = Vec<String>;
    type Error = Arc<String>;

    async fn load(&self, keys: &[String]) -> Result<HashMap<String, Vec<String>>, Self::Error> {
        self.0.run("case_study_outcomes", keys, |store, keys| case_study_outcomes(&store, keys)).await
    }
}

/// The outcome ids of every case study in `keys` (only entity IRIs are asked about).
fn case_study_outcomes(store: &GraphStore, keys: Vec<String>) -> Result<HashMap<String, Vec<String>>, ApiError> {
    let case_studies: Vec<NamedNode> = keys
        .into_iter()
        .filter(|iri| coalition_mapping::parse_entity_iri(iri).is_some())
        .filter_map(|iri| NamedNode::new(iri).ok())
        .collect();
    let lists = store.case_study_outcomes(&case_studies)?;
    Ok(lists
        .into_iter()
        .map(|(cs, list)| {
            let ids = list.iter().filter_map(|o| coalition_mapping::parse_entity_iri(o.as_str())).map(|(_, id)| id);
            (cs.into_string(), ids.collect())
        })
        .collect())
}

/// Key: an evidence observation — its measures (zero where the projection holds none). The
/// dashboards of every recommendation on a page (and of their narrower ones) are read in one
/// blocking call.
pub struct ObservationLoader(pub Batches);

impl Loader<Observation> for ObservationLoader {
    type Value = Measures;
    type Error = Arc<String>;

    async fn load(&self, keys: &[Observation]) -> Result<HashMap<Observation, Measures>, Self::Error> {
        self.0
            .run("observation", keys, |store, keys| {
                let mut out = HashMap::with_capacity(keys.len());
                for obs in keys {
                    let measures = store.observation(&obs)?;
                    out.insert(obs, measures);
                }
                Ok(out)
            })
            .await
    }
}
