//! Batched entity loading for GraphQL: sibling resolvers asking for entities in the same tick
//! (the partners of fifty case studies on one page, say) are served by one blocking call
//! instead of one each. No cache: every request reads the store as it is now.

use super::blocking;
use crate::errors::ApiError;
use crate::read::{self, Entity};
use async_graphql::dataloader::Loader;
use coalition_events::Kind;
use coalition_mapping::vocab::coal;
use coalition_store::GraphStore;
use oxigraph::model::NamedNode;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// Key: (kind, id).
pub struct EntityLoader {
    pub store: GraphStore,
}

impl Loader<(Kind, String)> for EntityLoader {
    type Value = Entity;
    type Error = Arc<String>;

    async fn load(&self, keys: &[(Kind, String)]) -> Result<HashMap<(Kind, String), Entity>, Self::Error> {
        let store = self.store.clone();
        let keys = keys.to_vec();
        blocking(move || {
            let mut out = HashMap::with_capacity(keys.len());
            for (kind, id) in keys {
                if let Some(e) = read::load(&store, kind, &id)? {
                    out.insert((kind, id), e);
                }
            }
            Ok(out)
        })
        .await
        .map_err(|e: ApiError| Arc::new(e.message))
    }
}

/// Key: (kind of the referring entities, predicate, target IRI) — "the activities that implement
/// this recommendation". All targets asked together are answered by one SPARQL query per
/// (kind, predicate) with a `VALUES` block.
pub struct ReferrerLoader {
    pub store: GraphStore,
}

impl Loader<(Kind, String, String)> for ReferrerLoader {
    type Value = Vec<String>;
    type Error = Arc<String>;

    async fn load(
        &self,
        keys: &[(Kind, String, String)],
    ) -> Result<HashMap<(Kind, String, String), Vec<String>>, Self::Error> {
        let store = self.store.clone();
        let keys = keys.to_vec();
        blocking(move || {
            let mut groups: HashMap<(Kind, String), Vec<String>> = HashMap::new();
            for (kind, predicate, target) in &keys {
                groups.entry((*kind, predicate.clone())).or_default().push(target.clone());
            }
            let mut out: HashMap<(Kind, String, String), Vec<String>> =
                keys.iter().map(|k| (k.clone(), Vec::new())).collect();
            for ((kind, predicate), targets) in groups {
                let values: String = targets
                    .iter()
                    .filter(|t| coalition_mapping::parse_entity_iri(t).is_some())
                    .map(|t| format!("<{t}> "))
                    .collect();
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
        })
        .await
        .map_err(|e: ApiError| Arc::new(e.message))
    }
}

/// Key: a case study's IRI — "the outcomes measuring this case study or any of its activities",
/// as outcome ids in id order. Every case study on a page is answered by one SPARQL query with a
/// `VALUES` block, which Oxigraph evaluates from each case study outward (its activities, then
/// what measures either), so the cost follows the page's own outcomes. One query rather than an
/// index lookup per case study and activity: a lookup decodes every term of every quad it finds
/// (one RocksDB read each), the query only the two it returns.
pub struct CaseStudyOutcomesLoader {
    pub store: GraphStore,
}

impl Loader<String> for CaseStudyOutcomesLoader {
    type Value = Vec<String>;
    type Error = Arc<String>;

    async fn load(&self, keys: &[String]) -> Result<HashMap<String, Vec<String>>, Self::Error> {
        let store = self.store.clone();
        let keys = keys.to_vec();
        blocking(move || {
            let mut ids: HashMap<String, BTreeSet<String>> = HashMap::with_capacity(keys.len());
            let mut values = String::new();
            for key in keys {
                NamedNode::new(key.as_str()).map_err(ApiError::internal)?;
                values.push_str(&format!("<{key}> "));
                ids.insert(key, BTreeSet::new());
            }
            let rows = store.select(&format!(
                "SELECT ?cs ?o WHERE {{ VALUES ?cs {{ {values}}} \
                   {{ ?o <{measures}> ?cs }} UNION {{ ?a <{part_of}> ?cs . ?o <{measures}> ?a }} }}",
                measures = coal::MEASURES,
                part_of = coal::PART_OF_CASE_STUDY,
            ))?;
            for row in rows {
                let (Some(cs), Some(o)) = (coalition_store::literal(&row, "cs"), coalition_store::literal(&row, "o"))
                else {
                    continue;
                };
                if let (Some(set), Some((Kind::Outcome, id))) =
                    (ids.get_mut(&cs), coalition_mapping::parse_entity_iri(&o))
                {
                    set.insert(id);
                }
            }
            Ok(ids.into_iter().map(|(k, set)| (k, set.into_iter().collect())).collect())
        })
        .await
        .map_err(|e: ApiError| Arc::new(e.message))
    }
}
