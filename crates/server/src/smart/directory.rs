//! The patients the built-in authority's sign-in offers for a standalone launch with
//! `launch/patient`: the store's Patient resources, searched by name.
//!
//! The authority runs its sign-in on a blocking thread and knows nothing of the store; this is the
//! bridge, and it waits for the store on the runtime it was made on.

use std::sync::Arc;

use fhirside_identity::authority::PatientDirectory;
use fhirside_store::ResourceStore;
use serde_json::Value;
use tokio::runtime::Handle;

use crate::interaction::search;
use crate::negotiate::Handling;
use crate::params::Params;

pub struct StorePatients {
    store: Arc<dyn ResourceStore>,
    runtime: Handle,
}

impl StorePatients {
    pub fn new(store: Arc<dyn ResourceStore>, runtime: Handle) -> StorePatients {
        StorePatients { store, runtime }
    }
}

impl PatientDirectory for StorePatients {
    fn patients(&self, filter: &str, limit: usize) -> Result<Vec<(String, String)>, String> {
        let filter = filter.trim();
        let query_text = if filter.is_empty() {
            String::new()
        } else {
            form_urlencoded::Serializer::new(String::new()).append_pair("name:contains", filter).finish()
        };
        let (mut query, _) = search::parse("Patient", &Params::parse(Some(&query_text)), Handling::Lenient)
            .map_err(|e| format!("{e:?}"))?;
        query.count = u32::try_from(limit).unwrap_or(u32::MAX);
        let page = self.runtime.block_on(self.store.search(&query)).map_err(|e| e.to_string())?;
        Ok(page
            .value
            .versions
            .iter()
            .filter(|v| !v.deleted)
            .map(|v| (v.id.clone(), display_name(&v.body).unwrap_or_else(|| format!("Patient/{}", v.id))))
            .collect())
    }

    fn exists(&self, id: &str) -> Result<bool, String> {
        if !fhir::is_valid_id(id) {
            return Ok(false);
        }
        let outcome = self.runtime.block_on(self.store.read("Patient", id)).map_err(|e| e.to_string())?;
        Ok(outcome.value.is_some_and(|v| !v.deleted))
    }
}

/// The patient's first name as people read it: its `text`, else given names then family.
fn display_name(body: &[u8]) -> Option<String> {
    let patient: Value = serde_json::from_slice(body).ok()?;
    let name = patient.get("name")?.as_array()?.first()?;
    if let Some(text) = name.get("text").and_then(Value::as_str) {
        return Some(text.to_owned());
    }
    let mut parts: Vec<&str> =
        name.get("given").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
    parts.extend(name.get("family").and_then(Value::as_str));
    (!parts.is_empty()).then(|| parts.join(" "))
}
