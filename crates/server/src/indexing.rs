//! Turning a resource's search index values into the store's index rows.
//!
//! The values come from `fhir::index` (the SearchParameters' FHIRPath expressions, through the
//! parameters currently in force); this module only converts them to the store's types, so that
//! the extraction stays one code path for every backend.

use fhir::index::ResourceIndex;
use fhirside_store::{
    CanonicalQuantity, CompartmentEntry, DateEntry, IndexEntries, NumberEntry, QuantityEntry, ReferenceEntry,
    StringEntry, TextEntry, TokenEntry, UriEntry,
};
use serde_json::{Map, Value};

/// Index entries of `resource` (of type `resource_type`).
pub(crate) fn extract(resource_type: &str, resource: &mut Map<String, Value>) -> IndexEntries {
    // The extractor works on a `Value`; move the map in and back out rather than copying it.
    let value = Value::Object(std::mem::take(resource));
    let index = crate::search_params::current().extract(resource_type, &value);
    if let Value::Object(map) = value {
        *resource = map;
    }
    entries(index)
}

/// The store's rows for extracted index values.
pub(crate) fn entries(index: ResourceIndex) -> IndexEntries {
    IndexEntries {
        tokens: index
            .tokens
            .into_iter()
            .map(|t| TokenEntry { param: t.param, system: t.system, code: t.code })
            .collect(),
        dates: index.dates.into_iter().map(|d| DateEntry { param: d.param, low: d.low, high: d.high }).collect(),
        references: index
            .references
            .into_iter()
            .map(|r| ReferenceEntry { param: r.param, target_type: r.target_type, target_id: r.target_id, url: r.url })
            .collect(),
        strings: index
            .strings
            .into_iter()
            .map(|s| StringEntry { param: s.param, normalized: s.normalized, exact: s.exact })
            .collect(),
        numbers: index.numbers.into_iter().map(|n| NumberEntry { param: n.param, value: n.value }).collect(),
        quantities: index
            .quantities
            .into_iter()
            .map(|q| QuantityEntry {
                param: q.param,
                system: q.system,
                code: q.code,
                low: q.low,
                high: q.high,
                canonical: q.canonical.map(|(unit, low, high)| CanonicalQuantity { unit, low, high }),
            })
            .collect(),
        uris: index.uris.into_iter().map(|u| UriEntry { param: u.param, uri: u.uri }).collect(),
        compartments: index
            .compartments
            .into_iter()
            .map(|c| CompartmentEntry { compartment: c.compartment.to_owned(), id: c.id })
            .collect(),
        composites: index.composites.into_iter().map(entries).collect(),
        text: index.text.map(|t| TextEntry { narrative: t.narrative, content: t.content }),
    }
}
