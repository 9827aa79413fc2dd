//! [`History`] backed by the store. Rules run on a blocking thread, so the query is
//! driven to completion on the runtime from there.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::rules::api::History;
use crate::store::{CountQuery, Store};

pub struct StoreHistory {
    store: Store,
    runtime: tokio::runtime::Handle,
}

impl StoreHistory {
    /// Must be created inside the runtime.
    pub fn new(store: Store) -> Self {
        Self {
            store,
            runtime: tokio::runtime::Handle::current(),
        }
    }
}

impl History for StoreHistory {
    fn count(
        &self,
        lead_id: i64,
        name: Option<&str>,
        filter: Option<&Map<String, Value>>,
        since: Option<DateTime<Utc>>,
        until: DateTime<Utc>,
        upto_seq: i64,
    ) -> Result<i64, String> {
        let q = CountQuery {
            lead_id,
            name,
            since,
            until,
            upto_seq,
        };
        let matches = filter.map(|f| {
            let f = f.clone();
            move |props: &str| {
                serde_json::from_str::<Map<String, Value>>(props)
                    .is_ok_and(|p| f.iter().all(|(k, v)| p.get(k) == Some(v)))
            }
        });
        let matcher: Option<&(dyn Fn(&str) -> bool + Send + Sync)> = matches
            .as_ref()
            .map(|m| m as &(dyn Fn(&str) -> bool + Send + Sync));
        self.runtime
            .block_on(self.store.count_events(&q, matcher))
            .map_err(|e| e.to_string())
    }
}
