//! `_summary` and `_elements`: which top-level elements of each match a searchset carries.
//!
//! `resourceType`, `id` and `meta` always stay (the entry must still say what it is); a subsetted
//! resource is tagged `SUBSETTED` by the bundle writer.

use crate::error::FhirError;

/// `_summary` (<https://hl7.org/fhir/R4/search.html#summary>).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Summary {
    /// Elements marked `isSummary` in the definitions.
    True,
    /// `text`, and the mandatory elements.
    Text,
    /// Everything but `text`.
    Data,
    /// The total alone.
    Count,
}

impl Summary {
    pub(super) fn parse(value: Option<&str>) -> Result<Option<Summary>, FhirError> {
        Ok(match value {
            None | Some("false") => None,
            Some("true") => Some(Summary::True),
            Some("text") => Some(Summary::Text),
            Some("data") => Some(Summary::Data),
            Some("count") => Some(Summary::Count),
            Some(other) => {
                return Err(FhirError::bad_request(format!(
                    "_summary must be true, text, data, count or false, not '{other}'."
                )))
            }
        })
    }
}

/// What to keep of each match.
pub(super) enum Subset {
    Summary(Summary),
    /// `_elements`: these top-level element names (choice elements by their full JSON names).
    Elements(Vec<String>),
}

impl Subset {
    /// The subset `_summary` and `_elements` ask for, or `None` for whole resources. `_elements`
    /// is checked against the definitions of the searched types.
    pub(super) fn new(
        types: &[String],
        summary: Option<Summary>,
        elements: Option<&str>,
    ) -> Result<Option<Subset>, FhirError> {
        if let Some(summary) = summary.filter(|s| *s != Summary::Count) {
            return Ok(Some(Subset::Summary(summary)));
        }
        let Some(list) = elements else { return Ok(None) };
        let mut names = Vec::new();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            // An element of any searched type will do (all types in a system-level search).
            let known: Vec<String> = if types.is_empty() {
                vec![name.to_owned()]
            } else {
                types.iter().filter_map(|t| element_names(t, name)).flatten().collect()
            };
            if known.is_empty() {
                return Err(FhirError::bad_request(format!(
                    "_elements names '{name}', which is not a top-level element of {}.",
                    types.join(", ")
                )));
            }
            names.extend(known);
        }
        Ok(Some(Subset::Elements(names)))
    }

    /// Whether `element` (a top-level JSON property, without a leading `_`) of a `resource_type`
    /// stays.
    pub(super) fn keeps(&self, resource_type: &str, element: &str) -> bool {
        if matches!(element, "resourceType" | "id" | "meta") {
            return true;
        }
        match self {
            Subset::Elements(names) => names.iter().any(|n| n == element),
            Subset::Summary(Summary::Data) => element != "text",
            Subset::Summary(Summary::Count) => false,
            Subset::Summary(summary) => {
                if *summary == Summary::Text && element == "text" {
                    return true;
                }
                let definition = fhir::definitions().type_def(resource_type);
                definition.and_then(|d| d.elements.iter().find(|e| matches_element(&e.path, element))).is_some_and(
                    |e| match summary {
                        Summary::True => e.summary,
                        _ => e.min > 0,
                    },
                )
            }
        }
    }
}

/// The JSON names `name` stands for on `resource_type`: itself, or for a choice element's base name
/// (`value` for `value[x]`) every typed name; `None` when it is not a top-level element.
fn element_names(resource_type: &str, name: &str) -> Option<Vec<String>> {
    let definition = fhir::definitions().type_def(resource_type)?;
    let element =
        definition.elements.iter().find(|e| matches_element(&e.path, name) || e.path == format!("{name}[x]"))?;
    Some(match element.path.strip_suffix("[x]") {
        Some(base) if base == name => element
            .types
            .iter()
            .map(|t| {
                let mut code = t.code.clone();
                if let Some(first) = code.get_mut(..1) {
                    first.make_ascii_uppercase();
                }
                format!("{base}{code}")
            })
            .collect(),
        _ => vec![name.to_owned()],
    })
}

/// Whether the top-level JSON property `name` is the element at `path` (`valueQuantity` is
/// `value[x]`).
fn matches_element(path: &str, name: &str) -> bool {
    if path.contains('.') {
        return false;
    }
    match path.strip_suffix("[x]") {
        Some(base) => name.strip_prefix(base).is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_uppercase())),
        None => path == name,
    }
}
