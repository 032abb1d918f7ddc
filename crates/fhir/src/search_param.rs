//! SearchParameter definitions as the search and indexing code needs them.
//!
//! The registry itself (lookup by resource type and code, inheritance from `Resource` and `DomainResource`)
//! lives on [`crate::Definitions`]; this module is the value type plus the one piece of FHIRPath surgery the
//! indexer needs everywhere: picking the branch of a shared expression that applies to one resource type.

use serde::Deserialize;

/// One R4 SearchParameter, reduced to what search and indexing use.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchParamDef {
    /// The name used in the query string, e.g. `birthdate` or `_lastUpdated`.
    pub code: String,
    pub url: String,
    #[serde(rename = "type")]
    pub kind: SearchParamType,
    /// FHIRPath expression; `None` for the few parameters the spec leaves to the server (`_text`, `_content`,
    /// `_query`).
    #[serde(default)]
    pub expression: Option<String>,
    /// Resource types the parameter is defined on (may be `Resource` or `DomainResource`).
    pub base: Vec<String>,
    /// For reference parameters, the resource types that may be referenced.
    #[serde(default)]
    pub target: Vec<String>,
    #[serde(default)]
    pub multiple_or: Option<bool>,
    #[serde(default)]
    pub multiple_and: Option<bool>,
    /// Allowed prefixes (`eq`, `ne`, `gt`, ...) where the definition restricts them.
    #[serde(default)]
    pub comparator: Vec<String>,
    #[serde(default)]
    pub modifier: Vec<String>,
    /// For composite parameters, the parts in order.
    #[serde(default)]
    pub component: Vec<SearchParamComponent>,
}

/// One part of a composite search parameter.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SearchParamComponent {
    /// Canonical url of the SearchParameter that gives this part's type.
    pub definition: String,
    /// FHIRPath expression relative to the composite's own expression.
    pub expression: String,
}

/// `SearchParameter.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchParamType {
    Number,
    Date,
    String,
    Token,
    Reference,
    Composite,
    Quantity,
    Uri,
    Special,
}

impl SearchParamType {
    /// The FHIR code, e.g. `"token"`.
    pub fn as_str(self) -> &'static str {
        match self {
            SearchParamType::Number => "number",
            SearchParamType::Date => "date",
            SearchParamType::String => "string",
            SearchParamType::Token => "token",
            SearchParamType::Reference => "reference",
            SearchParamType::Composite => "composite",
            SearchParamType::Quantity => "quantity",
            SearchParamType::Uri => "uri",
            SearchParamType::Special => "special",
        }
    }
}

impl SearchParamDef {
    /// The part of [`Self::expression`] that applies to `resource_type`.
    ///
    /// Parameters shared by several resources carry one expression joined with `|`, e.g.
    /// `AllergyIntolerance.patient | CarePlan.subject.where(resolve() is Patient) | ...`. This returns the
    /// branches that start with `resource_type` (or with `Resource`/`DomainResource`, which apply to all),
    /// rejoined with ` | `; `None` when no branch applies or the parameter has no expression.
    pub fn expression_for(&self, resource_type: &str) -> Option<String> {
        let expression = self.expression.as_deref()?;
        let branches: Vec<&str> = split_union(expression)
            .into_iter()
            .filter(|branch| {
                let head = branch.trim_start_matches('(');
                let name = head.split(['.', ' ', ')']).next().unwrap_or("");
                name == resource_type || name == "Resource" || name == "DomainResource"
            })
            .collect();
        (!branches.is_empty()).then(|| branches.join(" | "))
    }
}

/// Splits a FHIRPath expression on the top-level union operator `|` (not inside parentheses or strings).
fn split_union(expression: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut in_string, mut start) = (0i32, false, 0);
    for (i, c) in expression.char_indices() {
        match c {
            '\'' => in_string = !in_string,
            '(' if !in_string => depth += 1,
            ')' if !in_string => depth -= 1,
            '|' if !in_string && depth == 0 => {
                parts.push(expression[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(expression[start..].trim());
    parts
}

#[cfg(test)]
mod tests {
    use crate::{definitions, SearchParamType};

    #[test]
    fn expression_for_picks_the_branch_of_one_resource_type() {
        let defs = definitions();
        let patient = defs.search_param("Observation", "patient").unwrap();
        assert_eq!(
            patient.expression_for("Observation").as_deref(),
            Some("Observation.subject.where(resolve() is Patient)")
        );
        let context = defs.search_param("ActivityDefinition", "context-quantity").unwrap();
        assert_eq!(
            context.expression_for("ActivityDefinition").as_deref(),
            Some("(ActivityDefinition.useContext.value as Quantity) | (ActivityDefinition.useContext.value as Range)")
        );
        assert_eq!(
            defs.search_param("Patient", "_id").unwrap().expression_for("Patient").as_deref(),
            Some("Resource.id")
        );
        assert_eq!(patient.expression_for("Patient"), None);
    }

    #[test]
    fn kinds_print_as_fhir_codes() {
        assert_eq!(SearchParamType::Reference.as_str(), "reference");
        assert_eq!(definitions().search_param("Patient", "birthdate").unwrap().kind, SearchParamType::Date);
    }
}
