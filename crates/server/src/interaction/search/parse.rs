//! Search parameters to store clauses: names (with modifiers and chains) and values.
//!
//! `name=value` becomes one [`Clause`]; repeated names AND, comma-separated values OR. A name is
//! `code`, `code:modifier`, a chain `code[:Type].code…`, or a reverse chain
//! `_has:Type:reference:name`. The parameters in force come from the current [`Indexer`] (the R4
//! definitions and any custom SearchParameters).

use fhir::index::Indexer;
use fhir::{SearchParamDef, SearchParamType};
use fhirside_store::{Clause, StringMatch, TokenSystem, TokenValue, UriMatch, Value, ValueKind};

use crate::error::FhirError;

use super::values::{self, split_escaped};

fn bad(diagnostics: String) -> FhirError {
    FhirError::BadRequest { code: "invalid", diagnostics, expression: None }
}

fn unsupported(diagnostics: String) -> FhirError {
    FhirError::BadRequest { code: "not-supported", diagnostics, expression: None }
}

/// The store's index kind for a parameter type (composite and special have none of their own).
pub(super) fn value_kind(kind: SearchParamType) -> Option<ValueKind> {
    Some(match kind {
        SearchParamType::Token => ValueKind::Token,
        SearchParamType::Date => ValueKind::Date,
        SearchParamType::Reference => ValueKind::Reference,
        SearchParamType::String => ValueKind::String,
        SearchParamType::Number => ValueKind::Number,
        SearchParamType::Quantity => ValueKind::Quantity,
        SearchParamType::Uri => ValueKind::Uri,
        SearchParamType::Composite | SearchParamType::Special => return None,
    })
}

/// The clause for `name=value` on `types` (one type, or several for a system-level search, where
/// the parameter must mean the same on each); `None` when the parameter is unknown there.
pub(super) fn clause(
    indexer: &Indexer,
    types: &[String],
    name: &str,
    value: &str,
) -> Result<Option<Clause>, FhirError> {
    if let Some(rest) = name.strip_prefix("_has:") {
        return has(indexer, types, rest, value);
    }
    if let Some((head, rest)) = name.split_once('.') {
        return chain(indexer, types, head, rest, value);
    }
    let (code, modifier) = name.split_once(':').map_or((name, None), |(c, m)| (c, Some(m)));
    match code {
        "_id" => {
            let ids: Vec<String> = split_escaped(value, ',');
            return Ok(Some(match modifier {
                None => Clause::Id(ids),
                Some("not") => Clause::Not(Box::new(Clause::Id(ids))),
                Some(m) => return Err(unsupported(format!("The modifier ':{m}' is not supported on _id."))),
            }));
        }
        "_lastUpdated" => {
            let ranges = value.split(',').map(|v| values::date(name, v)).collect::<Result<_, _>>()?;
            return Ok(Some(Clause::LastUpdated(ranges)));
        }
        "_text" | "_content" => {
            let alternatives = split_escaped(value, ',')
                .into_iter()
                .map(|v| Clause::Text { narrative: code == "_text", words: words(&v) })
                .filter(|c| !matches!(c, Clause::Text { words, .. } if words.is_empty()))
                .collect::<Vec<_>>();
            return match alternatives.len() {
                0 => Err(bad(format!("{code} needs at least one word."))),
                1 => Ok(alternatives.into_iter().next()),
                _ => Ok(Some(Clause::Any(alternatives))),
            };
        }
        _ => {}
    }
    let Some(definition) = common_definition(indexer, types, code) else { return Ok(None) };
    param(&definition, modifier, name, value).map(Some)
}

/// The definition of `code` on every type of `types`, when they agree on its type.
fn common_definition(indexer: &Indexer, types: &[String], code: &str) -> Option<SearchParamDef> {
    let mut found: Option<&SearchParamDef> = None;
    for t in types {
        if !indexer.is_indexed(t, code) {
            return None;
        }
        let definition = indexer.search_param(t, code)?;
        match found {
            Some(first) if first.kind != definition.kind => return None,
            Some(_) => {}
            None => found = Some(definition),
        }
    }
    found.cloned()
}

/// Words of a `_text`/`_content` value, lower case: letters and digits, as the index tokenises.
fn words(value: &str) -> Vec<String> {
    value.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect()
}

/// A clause on one parameter with an optional modifier.
fn param(definition: &SearchParamDef, modifier: Option<&str>, name: &str, value: &str) -> Result<Clause, FhirError> {
    let code = definition.code.clone();
    let kind = definition.kind;
    let alternatives = split_escaped(value, ',');
    let each = |f: &dyn Fn(&str) -> Result<Value, FhirError>| -> Result<Vec<Value>, FhirError> {
        alternatives.iter().map(|v| f(v)).collect()
    };
    let matching = |param: String, values: Vec<Value>| Clause::Match { param, values };
    Ok(match (kind, modifier) {
        (_, Some("missing")) => {
            let missing = match value {
                "true" => true,
                "false" => false,
                _ => return Err(bad(format!("{name} must be true or false, not '{value}'."))),
            };
            match (kind, value_kind(kind)) {
                (_, Some(kind)) => Clause::Missing { param: code, kind, missing },
                (SearchParamType::Composite | SearchParamType::Special, _) => {
                    let first = definition.component.first().and_then(|c| component_kind(&c.definition));
                    let kind = if code == "near" { Some(ValueKind::Number) } else { first.and_then(value_kind) };
                    let kind = kind.ok_or_else(|| unsupported(format!("{name} is not supported.")))?;
                    Clause::Missing { param: format!("{code}$0"), kind, missing }
                }
                _ => return Err(unsupported(format!("{name} is not supported."))),
            }
        }
        (SearchParamType::Composite, None) => composite(definition, name, &alternatives)?,
        (SearchParamType::Special, None) if code == "near" => {
            let values = alternatives.iter().map(|v| values::near(name, v)).collect::<Result<_, _>>()?;
            Clause::Composite { param: code, values }
        }
        (SearchParamType::String, None | Some("exact") | Some("contains")) => {
            let how = match modifier {
                Some("exact") => StringMatch::Exact,
                Some("contains") => StringMatch::Contains,
                _ => StringMatch::StartsWith,
            };
            matching(code, alternatives.iter().map(|v| values::string(v, how)).collect())
        }
        (SearchParamType::Token, None) => matching(code, each(&|v| Ok(Value::Token(values::token(v))))?),
        (SearchParamType::Token, Some("not")) => {
            Clause::Not(Box::new(matching(code, each(&|v| Ok(Value::Token(values::token(v))))?)))
        }
        (SearchParamType::Token, Some("text")) => matching(
            format!("{code}:text"),
            alternatives.iter().map(|v| values::string(v, StringMatch::StartsWith)).collect(),
        ),
        (SearchParamType::Token, Some("of-type")) => {
            let values = each(&|v| {
                let parts = split_escaped(v, '|');
                match parts.as_slice() {
                    [system, type_code, value] if !type_code.is_empty() && !value.is_empty() => {
                        Ok(Value::Token(TokenValue {
                            system: TokenSystem::Is(format!("{system}|{type_code}")),
                            code: Some(value.clone()),
                        }))
                    }
                    _ => Err(bad(format!("{name} takes system|code|value, not '{v}'."))),
                }
            })?;
            matching(format!("{code}:of-type"), values)
        }
        (SearchParamType::Token, Some(m @ ("in" | "not-in"))) => {
            let mut values = Vec::new();
            for url in &alternatives {
                let codes = fhir::terminology::expand(url).ok_or_else(|| {
                    unsupported(format!("The ValueSet '{url}' is not known to this server or cannot be expanded."))
                })?;
                // A `code` element carries no system: it matches by code alone.
                for c in codes {
                    values.push(Value::Token(TokenValue {
                        system: TokenSystem::Is(c.system.clone()),
                        code: Some(c.code.clone()),
                    }));
                    values.push(Value::Token(TokenValue { system: TokenSystem::None, code: Some(c.code.clone()) }));
                }
            }
            let clause = matching(code, values);
            if m == "in" {
                clause
            } else {
                Clause::Not(Box::new(clause))
            }
        }
        (SearchParamType::Token, Some(m @ ("above" | "below"))) => {
            let mut values = Vec::new();
            for v in &alternatives {
                let token = values::token(v);
                let (TokenSystem::Is(system), Some(c)) = (&token.system, &token.code) else {
                    return Err(bad(format!("{name} takes system|code, not '{v}'.")));
                };
                let related = if m == "below" {
                    fhir::terminology::descendants_or_self(system, c)
                } else {
                    fhir::terminology::ancestors_or_self(system, c)
                };
                let related = related.ok_or_else(|| {
                    unsupported(format!("The code system '{system}' has no hierarchy known to this server."))
                })?;
                values.extend(related.into_iter().map(|code| {
                    Value::Token(TokenValue { system: TokenSystem::Is(system.clone()), code: Some(code.to_owned()) })
                }));
            }
            matching(code, values)
        }
        (SearchParamType::Uri, Some(m @ ("above" | "below"))) => {
            let how = if m == "below" { UriMatch::Below } else { UriMatch::Above };
            matching(code, alternatives.iter().map(|v| values::uri(v, how)).collect())
        }
        (SearchParamType::Reference, Some("identifier")) => {
            matching(format!("{code}:identifier"), each(&|v| Ok(Value::Token(values::token(v))))?)
        }
        (SearchParamType::Reference, Some(target)) if fhir::definitions().is_resource_type(target) => {
            if !definition.target.is_empty() && !definition.target.iter().any(|t| t == target) {
                return Err(bad(format!("{code} cannot refer to a {target}.")));
            }
            let values = each(&|v| values::reference(name, v, Some(target), &definition.target).map(Value::Reference))?;
            matching(code, values)
        }
        (_, None) => {
            matching(code, each(&|v| values::parse(name, kind, &definition.target, v, StringMatch::StartsWith))?)
        }
        (_, Some(m)) => {
            return Err(unsupported(format!(
                "The modifier ':{m}' is not supported on the {} parameter '{code}'.",
                kind.as_str()
            )))
        }
    })
}

/// The type of the parameter a composite component refers to by canonical url.
fn component_kind(url: &str) -> Option<SearchParamType> {
    fhir::definitions().all_search_params().iter().find(|p| p.url == url).map(|p| p.kind)
}

/// `code-value-quantity=http://loinc.org|8480-6$gt140`: one value per component, `$`-separated.
fn composite(definition: &SearchParamDef, name: &str, alternatives: &[String]) -> Result<Clause, FhirError> {
    let kinds: Vec<SearchParamType> = definition
        .component
        .iter()
        .map(|c| component_kind(&c.definition))
        .collect::<Option<_>>()
        .ok_or_else(|| unsupported(format!("{name} is not supported.")))?;
    let mut values = Vec::new();
    for alternative in alternatives {
        let parts = split_escaped(alternative, '$');
        if parts.len() != kinds.len() {
            return Err(bad(format!("{name} takes {} values separated by '$', not '{alternative}'.", kinds.len())));
        }
        let components = parts
            .iter()
            .zip(&kinds)
            .map(|(part, kind)| values::parse(name, *kind, &[], part, StringMatch::StartsWith))
            .collect::<Result<Vec<_>, _>>()?;
        values.push(components);
    }
    Ok(Clause::Composite { param: definition.code.clone(), values })
}

/// A chained parameter: `head` is `reference[:Type]`, `rest` the parameter on the target.
fn chain(
    indexer: &Indexer,
    types: &[String],
    head: &str,
    rest: &str,
    value: &str,
) -> Result<Option<Clause>, FhirError> {
    let (code, typed) = head.split_once(':').map_or((head, None), |(c, t)| (c, Some(t)));
    let Some(definition) = common_definition(indexer, types, code) else { return Ok(None) };
    if definition.kind != SearchParamType::Reference {
        return Err(bad(format!("'{code}' is not a reference parameter, so it cannot be chained.")));
    }
    let candidates: Vec<String> = match typed {
        Some(t) if fhir::definitions().is_resource_type(t) => vec![t.to_owned()],
        Some(t) => return Err(bad(format!("'{t}' in the chain '{head}.{rest}' is not a resource type."))),
        None if definition.target.is_empty() => fhir::definitions().resource_types().to_vec(),
        None => definition.target.clone(),
    };
    let next = rest.split(['.', ':']).next().unwrap_or(rest);
    let targets: Vec<String> = candidates
        .into_iter()
        .filter(|t| next.starts_with('_') || indexer.is_indexed(t, next) || next == "_id")
        .collect();
    if targets.is_empty() {
        return Err(bad(format!("No target of '{head}' has a search parameter '{next}'.")));
    }
    // The chained parameter must mean the same on every target type searched.
    let Some(inner) = clause(indexer, &targets, rest, value)? else {
        return Err(bad(format!("The chained parameter '{rest}' is not supported on {}.", targets.join(", "))));
    };
    Ok(Some(Clause::Chain { param: code.to_owned(), target_types: targets, clauses: vec![inner] }))
}

/// `_has:Type:reference:name=value`: resources that some `Type` refers to through `reference`
/// and that matches `name=value` (itself possibly another `_has`).
fn has(indexer: &Indexer, types: &[String], rest: &str, value: &str) -> Result<Option<Clause>, FhirError> {
    let mut parts = rest.splitn(3, ':');
    let (Some(source), Some(reference), Some(inner_name)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad(format!("_has:{rest} is not _has:Type:reference:parameter.")));
    };
    if !fhir::definitions().is_resource_type(source) {
        return Err(bad(format!("'{source}' in _has:{rest} is not a resource type.")));
    }
    let definition = indexer.search_param(source, reference).filter(|d| d.kind == SearchParamType::Reference);
    let Some(definition) = definition else {
        return Err(bad(format!("'{reference}' is not a reference parameter of {source}.")));
    };
    if !definition.target.is_empty() && !types.iter().all(|t| definition.target.contains(t)) {
        return Err(bad(format!("{source}.{reference} does not refer to {}.", types.join(", "))));
    }
    let source_types = [source.to_owned()];
    let Some(inner) = clause(indexer, &source_types, inner_name, value)? else {
        return Err(bad(format!("'{inner_name}' is not a search parameter of {source}.")));
    };
    Ok(Some(Clause::Has { source_type: source.to_owned(), param: reference.to_owned(), clauses: vec![inner] }))
}
