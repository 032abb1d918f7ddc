//! `_include` and `_revinclude`, with `:iterate` and `*`.
//!
//! Each parameter is `SourceType:reference[:TargetType]` or `*`. `_include` follows the matches'
//! references out; `_revinclude` finds resources whose references point at the matches. The
//! `:iterate` forms apply again to what was included, until nothing new turns up (or a depth
//! limit: a cycle of references must not spin forever). Each resource appears once, and never a
//! resource that is already a match.

use std::collections::{BTreeMap, HashSet};

use fhir::index::Indexer;
use fhir::SearchParamType;
use fhirside_store::{Cost, IncludeQuery, StoredVersion};

use crate::error::FhirError;
use crate::params::Params;
use crate::AppState;

/// Most resources one `_include` or `_revinclude` adds to a page (Azure's default).
const INCLUDE_LIMIT: u32 = 1000;

/// How many rounds `:iterate` runs.
const MAX_ITERATIONS: usize = 4;

/// One parsed `_include`/`_revinclude` value.
struct Include {
    reverse: bool,
    iterate: bool,
    source_type: Option<String>,
    param: Option<String>,
    target_type: Option<String>,
}

fn parse(indexer: &Indexer, params: &Params) -> Result<Vec<Include>, FhirError> {
    let mut includes = Vec::new();
    for (name, value) in params.iter() {
        let (reverse, iterate) = match name {
            "_include" => (false, false),
            "_revinclude" => (true, false),
            "_include:iterate" | "_include:recurse" => (false, true),
            "_revinclude:iterate" | "_revinclude:recurse" => (true, true),
            _ => continue,
        };
        let invalid = || FhirError::bad_request(format!("{name}={value} is not Type:parameter[:targetType] or *."));
        if value == "*" {
            includes.push(Include { reverse, iterate, source_type: None, param: None, target_type: None });
            continue;
        }
        let mut parts = value.split(':');
        let (source_type, param, target_type) = (parts.next().unwrap_or(""), parts.next(), parts.next());
        if !fhir::definitions().is_resource_type(source_type) || parts.next().is_some() {
            return Err(invalid());
        }
        let param = match param {
            Some("*") => None,
            Some(code)
                if indexer.is_indexed(source_type, code)
                    && indexer
                        .search_param(source_type, code)
                        .is_some_and(|p| p.kind == SearchParamType::Reference) =>
            {
                Some(code.to_owned())
            }
            _ => return Err(invalid()),
        };
        if target_type.is_some_and(|t| !fhir::definitions().is_resource_type(t)) {
            return Err(invalid());
        }
        includes.push(Include {
            reverse,
            iterate,
            source_type: Some(source_type.to_owned()),
            param,
            target_type: target_type.map(str::to_owned),
        });
    }
    Ok(includes)
}

/// The resources the include parameters add to a page of `matches`: those `visible` keeps (a SMART
/// caller's reach), which are also the only ones `:iterate` goes on from.
pub(super) async fn resolve(
    state: &AppState,
    indexer: &Indexer,
    params: &Params,
    matches: &[StoredVersion],
    visible: &(dyn Fn(&StoredVersion) -> bool + Sync),
) -> Result<(Vec<StoredVersion>, Cost), FhirError> {
    let includes = parse(indexer, params)?;
    let mut cost = Cost::default();
    if includes.is_empty() || matches.is_empty() {
        return Ok((Vec::new(), cost));
    }
    let mut seen: HashSet<(String, String)> = matches.iter().map(|v| (v.resource_type.clone(), v.id.clone())).collect();
    let mut added: Vec<StoredVersion> = Vec::new();
    // The first round starts from the matches; each `:iterate` round from what the last one added.
    let mut frontier: Vec<StoredVersion> = matches.to_vec();
    for round in 0..=MAX_ITERATIONS {
        let mut found = Vec::new();
        for include in includes.iter().filter(|i| round == 0 || i.iterate) {
            for (matched_type, matched_ids) in by_type(&frontier) {
                let source_type = match (&include.source_type, include.reverse) {
                    (Some(t), _) => t.clone(),
                    // `*` follows every reference of the matches (or into them from any type).
                    (None, false) => matched_type.clone(),
                    (None, true) => String::new(),
                };
                if !include.reverse && source_type != matched_type {
                    continue;
                }
                let query = IncludeQuery {
                    reverse: include.reverse,
                    source_type,
                    param: include.param.clone(),
                    target_type: include.target_type.clone(),
                    matched_type,
                    matched_ids,
                    limit: INCLUDE_LIMIT,
                };
                let outcome = state.store.include(&query).await?;
                cost.add(outcome.cost);
                for version in outcome.value {
                    if visible(&version) && seen.insert((version.resource_type.clone(), version.id.clone())) {
                        found.push(version);
                    }
                }
            }
        }
        if found.is_empty() {
            break;
        }
        added.extend(found.iter().cloned());
        frontier = found;
    }
    Ok((added, cost))
}

fn by_type(versions: &[StoredVersion]) -> BTreeMap<String, Vec<String>> {
    let mut grouped: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for v in versions {
        grouped.entry(v.resource_type.clone()).or_default().push(v.id.clone());
    }
    grouped
}
