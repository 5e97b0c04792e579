//! Batched entity loading for GraphQL: sibling resolvers asking for entities in the same tick
//! (the partners of fifty case studies on one page, say) are served by one blocking call
//! instead of one each. No cache: every request reads the store as it is now.

use super::blocking;
use crate::errors::ApiError;
use crate::read::{self, Entity};
use async_graphql::dataloader::Loader;
use coalition_events::Kind;
use coalition_store::GraphStore;
use std::collections::HashMap;
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
