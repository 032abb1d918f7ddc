//! Search index values of a resource, computed from the SearchParameters' FHIRPath expressions.
//!
//! This is the one code path that turns a resource into the values search matches on, whichever
//! storage backend keeps them. An [`Indexer`] holds every parameter's expression (the branch that
//! applies to each resource type) parsed once; extraction evaluates them and converts the selected
//! elements by the parameter's type (`values.rs`): a `CodeableConcept` yields one token per coding,
//! a `HumanName` one string per part, a `Range` one quantity interval, and so on. Composite
//! parameters evaluate their components on each element their own expression selects, so that the
//! components stay paired. Compartment membership follows from the CompartmentDefinitions and the
//! reference values; full-text words from the narrative and every string (`text.rs`).
//!
//! `_id` and `_lastUpdated` are not extracted: stores keep them as columns of the resource itself.
//! Some rows carry a modifier in their parameter name, so that the modifier is a plain lookup:
//! `code:text` (strings: the text and display of codes), `identifier:of-type` (tokens whose system
//! is the identifier type's `system|code`) and `subject:identifier` (tokens: the identifier of a
//! reference).

mod text;
mod values;

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::Value;

use crate::fhirpath::{self, Context, Expression};
use crate::search_param::{SearchParamDef, SearchParamType};

pub use text::normalize;
pub use values::parse_reference;

/// Bump when extraction changes what it produces for the same resource: stores built with another
/// version are reindexed at startup.
pub const EXTRACTION_VERSION: u32 = 6;

/// Index values of one resource.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ResourceIndex {
    pub tokens: Vec<TokenValue>,
    pub dates: Vec<DateValue>,
    pub references: Vec<ReferenceValue>,
    pub strings: Vec<StringValue>,
    pub numbers: Vec<NumberValue>,
    pub quantities: Vec<QuantityValue>,
    pub uris: Vec<UriValue>,
    pub compartments: Vec<CompartmentValue>,
    /// One per element a composite parameter selected, with rows named `{code}${component}`.
    pub composites: Vec<ResourceIndex>,
    pub text: Option<TextValue>,
}

/// `system|code` of a token parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenValue {
    pub param: String,
    pub system: Option<String>,
    pub code: String,
}

/// The interval `[low, high)` (microseconds since the epoch, UTC) that a date parameter's value
/// covers at its precision: `1974-12-25` is that whole day; a Period from its start to the end of its
/// end; an open end is `i64::MIN` or `i64::MAX`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateValue {
    pub param: String,
    pub low: i64,
    pub high: i64,
}

/// A reference parameter's target: a local `Type/id`, or an absolute or canonical URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferenceValue {
    pub param: String,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    /// The reference as written when it is not a relative `Type/id` (absolute URL, canonical).
    pub url: Option<String>,
}

/// A string value, normalised by [`normalize`] and as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StringValue {
    pub param: String,
    pub normalized: String,
    pub exact: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NumberValue {
    pub param: String,
    pub value: f64,
}

/// A Quantity (`low == high`) or Range, with the same in canonical UCUM units when convertible.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantityValue {
    pub param: String,
    pub system: Option<String>,
    /// The code, or the unit when there is no code.
    pub code: Option<String>,
    pub low: f64,
    pub high: f64,
    /// Canonical unit, low and high.
    pub canonical: Option<(String, f64, f64)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UriValue {
    pub param: String,
    pub uri: String,
}

/// Membership of a compartment, e.g. (`Patient`, `123`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompartmentValue {
    pub compartment: &'static str,
    pub id: String,
}

/// Words for `_text` (the narrative) and `_content` (every string).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TextValue {
    pub narrative: String,
    pub content: String,
}

/// A parameter ready to evaluate on one resource type.
struct Compiled {
    code: String,
    kind: SearchParamType,
    expression: Expression,
    /// For composites: each component's type and expression (relative to the selected element).
    components: Vec<(SearchParamType, Expression)>,
}

/// Per resource type: its indexed parameters, and for each compartment the parameters that place a
/// resource in it.
struct Plan {
    params: Vec<Compiled>,
    compartments: Vec<(&'static str, Vec<&'static str>)>,
}

/// The search parameters in force — the R4 ones and any custom SearchParameter resources — and
/// their compiled expressions.
pub struct Indexer {
    plans: HashMap<String, Plan>,
    /// Custom parameters by (resource type, code); they take precedence over R4 ones of that code.
    custom: HashMap<(String, String), SearchParamDef>,
    fingerprint: String,
}

impl Indexer {
    /// The R4 parameters alone.
    pub fn builtin() -> &'static Indexer {
        static BUILTIN: OnceLock<Indexer> = OnceLock::new();
        BUILTIN.get_or_init(|| Indexer::new(Vec::new()))
    }

    /// The R4 parameters and `custom` ones (each on every type in its `base`).
    pub fn new(custom: Vec<SearchParamDef>) -> Indexer {
        let definitions = crate::definitions();
        let mut by_key = HashMap::new();
        for param in custom {
            for base in &param.base {
                by_key.insert((base.clone(), param.code.clone()), param.clone());
            }
        }
        let mut fingerprint = format!("extraction-{EXTRACTION_VERSION}");
        let mut keys: Vec<_> = by_key.keys().collect();
        keys.sort();
        for key in keys {
            let param = &by_key[key];
            fingerprint.push_str(&format!(
                ";{}.{}={}:{}",
                key.0,
                key.1,
                param.kind.as_str(),
                param.expression.as_deref().unwrap_or("")
            ));
        }
        let compartment_types: Vec<&'static str> = definitions.compartment_types().collect();
        let plans = definitions
            .resource_types()
            .iter()
            .map(|resource_type| {
                let mut params: Vec<&SearchParamDef> = definitions
                    .search_params(resource_type)
                    .into_iter()
                    .filter(|p| !by_key.contains_key(&(resource_type.clone(), p.code.clone())))
                    .collect();
                params.extend(by_key.iter().filter(|((t, _), _)| t == resource_type).map(|(_, p)| p));
                let params = params.into_iter().filter_map(|p| compile(p, resource_type)).collect();
                let compartments = compartment_types
                    .iter()
                    .filter_map(|c| {
                        let codes = definitions.compartment_params(c, resource_type)?;
                        let codes: Vec<&'static str> =
                            codes.iter().map(String::as_str).filter(|code| *code != "{def}").collect();
                        (!codes.is_empty()).then_some((*c, codes))
                    })
                    .collect();
                (resource_type.clone(), Plan { params, compartments })
            })
            .collect();
        Indexer { plans, custom: by_key, fingerprint }
    }

    /// Identifies the parameters and the extraction code: equal fingerprints index alike.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The parameter `code` of `resource_type`: a custom one, else the R4 one.
    pub fn search_param(&self, resource_type: &str, code: &str) -> Option<&SearchParamDef> {
        self.custom
            .get(&(resource_type.to_owned(), code.to_owned()))
            .or_else(|| crate::definitions().search_param(resource_type, code))
    }

    /// Every parameter of `resource_type`, custom ones included.
    pub fn search_params(&self, resource_type: &str) -> Vec<&SearchParamDef> {
        let mut params: Vec<&SearchParamDef> = crate::definitions()
            .search_params(resource_type)
            .into_iter()
            .filter(|p| !self.custom.contains_key(&(resource_type.to_owned(), p.code.clone())))
            .collect();
        params.extend(self.custom.iter().filter(|((t, _), _)| t == resource_type).map(|(_, p)| p));
        params.sort_by(|a, b| a.code.cmp(&b.code));
        params
    }

    /// Whether `code` is a parameter of `resource_type` whose values [`Indexer::extract`] indexes.
    pub fn is_indexed(&self, resource_type: &str, code: &str) -> bool {
        self.plans.get(resource_type).is_some_and(|plan| plan.params.iter().any(|p| p.code == code))
    }

    /// The index values of `resource` (of type `resource_type`).
    pub fn extract(&self, resource_type: &str, resource: &Value) -> ResourceIndex {
        let mut index = ResourceIndex::default();
        let Some(plan) = self.plans.get(resource_type) else {
            return index;
        };
        let context = Context::new().with_resource(resource).with_root_resource(resource);
        for param in &plan.params {
            // An expression that fails on unusual data indexes nothing rather than failing the write:
            // the resource was already validated, and search simply will not find it by that value.
            let Ok(items) = fhirpath::evaluate(&param.expression, resource, &context) else { continue };
            if param.kind == SearchParamType::Composite || param.code == "near" {
                'element: for item in items {
                    let mut group = ResourceIndex::default();
                    for (i, (kind, expression)) in param.components.iter().enumerate() {
                        let name = format!("{}${i}", param.code);
                        let Ok(parts) = fhirpath::evaluate_on(expression, item.clone(), resource, &context) else {
                            continue 'element;
                        };
                        let before = group.value_count();
                        for part in &parts {
                            values::add(&mut group, &name, *kind, part);
                        }
                        // A composite matches only elements with every component: an Observation
                        // with a valueQuantity has no `code-value-concept` to index.
                        if group.value_count() == before {
                            continue 'element;
                        }
                    }
                    index.composites.push(group);
                }
                continue;
            }
            for item in &items {
                values::add(&mut index, &param.code, param.kind, item);
            }
        }
        for (compartment, codes) in &plan.compartments {
            for reference in &index.references {
                if codes.contains(&reference.param.as_str()) && reference.target_type.as_deref() == Some(compartment) {
                    let id = reference.target_id.clone().unwrap_or_default();
                    let value = CompartmentValue { compartment, id };
                    if !index.compartments.contains(&value) {
                        index.compartments.push(value);
                    }
                }
            }
        }
        index.text = Some(text::words(resource));
        index.dedup();
        index
    }
}

impl ResourceIndex {
    fn value_count(&self) -> usize {
        self.tokens.len()
            + self.dates.len()
            + self.references.len()
            + self.strings.len()
            + self.numbers.len()
            + self.quantities.len()
            + self.uris.len()
    }

    fn dedup(&mut self) {
        fn unique<T: PartialEq>(values: &mut Vec<T>) {
            let mut kept: Vec<T> = Vec::with_capacity(values.len());
            for value in values.drain(..) {
                if !kept.contains(&value) {
                    kept.push(value);
                }
            }
            *values = kept;
        }
        unique(&mut self.tokens);
        unique(&mut self.dates);
        unique(&mut self.references);
        unique(&mut self.strings);
        unique(&mut self.numbers);
        unique(&mut self.quantities);
        unique(&mut self.uris);
    }
}

/// Compiles `param` for `resource_type`; `None` for parameters the store does not index (the
/// `_id`/`_lastUpdated` columns, the server-side specials) or whose expression does not parse.
fn compile(param: &SearchParamDef, resource_type: &str) -> Option<Compiled> {
    if matches!(param.code.as_str(), "_id" | "_lastUpdated") {
        return None;
    }
    if param.kind == SearchParamType::Special && param.code != "near" {
        return None;
    }
    let source = param.expression_for(resource_type)?;
    let expression = fhirpath::parse(&source).ok()?;
    let components = if param.code == "near" {
        // `near` on Location.position: latitude and longitude, paired like a composite's parts.
        vec![
            (SearchParamType::Number, fhirpath::parse("latitude").ok()?),
            (SearchParamType::Number, fhirpath::parse("longitude").ok()?),
        ]
    } else {
        param
            .component
            .iter()
            .map(|component| {
                let kind = component_kind(&component.definition)?;
                Some((kind, fhirpath::parse(&component.expression).ok()?))
            })
            .collect::<Option<Vec<_>>>()?
    };
    Some(Compiled { code: param.code.clone(), kind: param.kind, expression, components })
}

/// The type of the SearchParameter a composite component refers to by canonical url.
fn component_kind(url: &str) -> Option<SearchParamType> {
    crate::definitions().all_search_params().iter().find(|p| p.url == url).map(|p| p.kind)
}

/// Whether `code` is an R4 parameter of `resource_type` that the index holds.
pub fn is_indexed(resource_type: &str, code: &str) -> bool {
    Indexer::builtin().is_indexed(resource_type, code)
}

/// The index values of `resource` under the R4 parameters.
pub fn extract(resource_type: &str, resource: &Value) -> ResourceIndex {
    Indexer::builtin().extract(resource_type, resource)
}

#[cfg(test)]
mod tests;
