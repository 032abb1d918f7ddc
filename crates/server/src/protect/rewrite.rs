//! Rewriting index rows and queries into their blinded forms ([`super::blind`]).

use fhirside_keys::Keyring;
use fhirside_store::{
    Clause, IndexEntries, SearchQuery, SortBy, StoreError, StringEntry, StringMatch, TokenValue, Value, ValueKind,
    WriteOp,
};

use super::blind;

/// The index rows an encrypted installation stores for `entries`.
pub(crate) fn entries(keyring: &Keyring, entries: &mut IndexEntries) {
    for token in &mut entries.tokens {
        if blind::identifying(&token.param) {
            token.code = blind::token(keyring, &token.param, &token.code);
        }
    }
    let strings = std::mem::take(&mut entries.strings);
    for string in strings {
        if !blind::blinded_string(&string.param) {
            entries.strings.push(string);
            continue;
        }
        let exact = blind::exact(keyring, &string.param, &string.exact);
        for (n, prefix) in blind::prefixes(keyring, &string.param, &string.normalized).into_iter().enumerate() {
            let exact = if n == 0 { exact.clone() } else { String::new() };
            entries.strings.push(StringEntry { param: string.param.clone(), normalized: prefix, exact });
        }
    }
    // Words of the narrative and of every string: no equality index could stand in for them
    // without giving away each word's frequency, so `_text` and `_content` are off.
    entries.text = None;
    for composite in &mut entries.composites {
        self::entries(keyring, composite);
    }
}

/// A write's index rows and criteria, rewritten.
pub(crate) fn write(keyring: &Keyring, op: &mut WriteOp) -> Result<(), StoreError> {
    match op {
        WriteOp::Create { index, if_none_exist, .. } => {
            entries(keyring, index);
            if let Some(query) = if_none_exist {
                self::query(keyring, query)?;
            }
        }
        WriteOp::Update { index, .. } => entries(keyring, index),
        WriteOp::ConditionalUpdate { query, index, .. } => {
            self::query(keyring, query)?;
            entries(keyring, index);
        }
        WriteOp::ConditionalDelete { query, .. } => self::query(keyring, query)?,
        WriteOp::Import(line) => entries(keyring, &mut line.index),
        WriteOp::Delete { .. } => {}
    }
    Ok(())
}

/// A search, rewritten to compare blinded forms; a search that they cannot answer is refused.
pub(crate) fn query(keyring: &Keyring, query: &mut SearchQuery) -> Result<(), StoreError> {
    for key in &query.sort {
        if let SortBy::Param { param, kind } = &key.by {
            if (*kind == ValueKind::String && blind::blinded_string(param))
                || (*kind == ValueKind::Token && blind::identifying(param))
            {
                return Err(refused(format!(
                    "_sort={param} is not available: on this installation the values of '{param}' are \
                     encrypted, which keeps no order."
                )));
            }
        }
    }
    for clause in &mut query.clauses {
        self::clause(keyring, clause)?;
    }
    Ok(())
}

pub(crate) fn clauses(keyring: &Keyring, clauses: &mut [Clause]) -> Result<(), StoreError> {
    clauses.iter_mut().try_for_each(|c| clause(keyring, c))
}

fn clause(keyring: &Keyring, clause: &mut Clause) -> Result<(), StoreError> {
    match clause {
        Clause::Match { param, values } => {
            let mut rewritten = Vec::with_capacity(values.len());
            for value in values.drain(..) {
                rewritten.extend(alternatives(keyring, param, value)?);
            }
            *values = rewritten;
        }
        Clause::Composite { param, values } => {
            let mut rewritten = Vec::with_capacity(values.len());
            for components in values.drain(..) {
                // Each component may have one form per data key: every combination is a match.
                let mut combinations: Vec<Vec<Value>> = vec![Vec::new()];
                for (i, component) in components.into_iter().enumerate() {
                    let forms = alternatives(keyring, &format!("{param}${i}"), component)?;
                    combinations = combinations
                        .into_iter()
                        .flat_map(|prefix| {
                            forms.iter().map(move |form| {
                                let mut next = prefix.clone();
                                next.push(form.clone());
                                next
                            })
                        })
                        .collect();
                }
                rewritten.extend(combinations);
            }
            *values = rewritten;
        }
        Clause::Text { narrative, .. } => {
            let name = if *narrative { "_text" } else { "_content" };
            return Err(refused(format!(
                "{name} is not available: this installation encrypts resources at rest and keeps no full-text index."
            )));
        }
        Clause::Not(inner) => self::clause(keyring, inner)?,
        Clause::Chain { clauses, .. } | Clause::Has { clauses, .. } | Clause::Any(clauses) | Clause::All(clauses) => {
            self::clauses(keyring, clauses)?
        }
        Clause::Id(_)
        | Clause::LastUpdated(_)
        | Clause::Missing { .. }
        | Clause::Compartment { .. }
        | Clause::Compartments { .. }
        | Clause::Types(_) => {}
    }
    Ok(())
}

/// The stored forms a search value of `param` compares with: one per data key for a blinded
/// value, the value itself otherwise.
fn alternatives(keyring: &Keyring, param: &str, value: Value) -> Result<Vec<Value>, StoreError> {
    Ok(match value {
        Value::Token(TokenValue { system, code: Some(code) }) if blind::identifying(param) => {
            blind::token_all(keyring, param, &code)
                .into_iter()
                .map(|code| Value::Token(TokenValue { system: system.clone(), code: Some(code) }))
                .collect()
        }
        Value::String { value, matching } if blind::blinded_string(param) => match matching {
            StringMatch::StartsWith | StringMatch::Equals => blind::prefix_all(keyring, param, &value)
                .ok_or_else(|| {
                    refused(format!(
                        "The search value '{value}' of '{param}' is too short: on this installation string \
                         searches need at least {} characters (or :exact with the whole value).",
                        blind::MIN_PREFIX
                    ))
                })?
                .into_iter()
                .map(|value| Value::String { value, matching: StringMatch::Equals })
                .collect(),
            StringMatch::Exact => blind::exact_all(keyring, param, &value)
                .into_iter()
                .map(|value| Value::String { value, matching: StringMatch::Exact })
                .collect(),
            StringMatch::Contains => {
                return Err(refused(format!(
                    "{param}:contains is not available: on this installation string values are encrypted, \
                     and only their prefixes can be compared."
                )))
            }
        },
        other => vec![other],
    })
}

fn refused(message: String) -> StoreError {
    StoreError::Invalid(message)
}
