//! Turning a resource's search index values into the store's index rows.
//!
//! The values come from `fhir::index` (the SearchParameters' FHIRPath expressions); this module only
//! converts them to the store's types, so that the extraction stays one code path for every backend.

use fhirside_store::{CompartmentEntry, DateEntry, IndexEntries, ReferenceEntry, TokenEntry};
use serde_json::{Map, Value};

/// Index entries of `resource` (of type `resource_type`).
pub(crate) fn extract(resource_type: &str, resource: &mut Map<String, Value>) -> IndexEntries {
    // The extractor works on a `Value`; move the map in and back out rather than copying it.
    let value = Value::Object(std::mem::take(resource));
    let index = fhir::index::extract(resource_type, &value);
    if let Value::Object(map) = value {
        *resource = map;
    }
    IndexEntries {
        tokens: index
            .tokens
            .into_iter()
            .map(|t| TokenEntry { param: t.param.to_owned(), system: t.system, code: t.code })
            .collect(),
        dates: index
            .dates
            .into_iter()
            .map(|d| DateEntry { param: d.param.to_owned(), low: d.low, high: d.high })
            .collect(),
        references: index
            .references
            .into_iter()
            .map(|r| ReferenceEntry {
                param: r.param.to_owned(),
                target_type: r.target_type,
                target_id: r.target_id,
                url: r.url,
            })
            .collect(),
        compartments: index
            .compartments
            .into_iter()
            .map(|c| CompartmentEntry { compartment: c.compartment.to_owned(), id: c.id })
            .collect(),
    }
}
