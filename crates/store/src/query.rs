//! Dialect-neutral descriptions of what to index and what to look up.
//!
//! The server turns FHIR search parameters into a [`SearchQuery`]; each backend compiles it to SQL.
//! Index entries are likewise computed outside the store ([`IndexEntries`]) so that the store never
//! needs to understand FHIRPath or the resource's structure.

use crate::model::StoredVersion;

/// Search index rows for one resource version.
#[derive(Debug, Default, Clone)]
pub struct IndexEntries {
    pub tokens: Vec<TokenEntry>,
    pub dates: Vec<DateEntry>,
    pub references: Vec<ReferenceEntry>,
    pub compartments: Vec<CompartmentEntry>,
}

impl IndexEntries {
    pub fn len(&self) -> usize {
        self.tokens.len() + self.dates.len() + self.references.len() + self.compartments.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A date parameter's value: the interval `[low, high)` in microseconds (UTC) it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateEntry {
    pub param: String,
    pub low: i64,
    pub high: i64,
}

/// A reference parameter's value: a local `Type/id` and/or an absolute or canonical URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferenceEntry {
    pub param: String,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub url: Option<String>,
}

/// Membership of a compartment, e.g. (`Patient`, `123`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompartmentEntry {
    pub compartment: String,
    pub id: String,
}

/// A token value (`system|code`) of one search parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenEntry {
    pub param: String,
    pub system: Option<String>,
    pub code: String,
}

/// A conjunction of clauses over current, non-deleted resources of one type.
#[derive(Debug, Clone, Default)]
pub struct SearchQuery {
    pub clauses: Vec<Clause>,
    /// Page size.
    pub count: u32,
    /// Continue after this position (an opaque token decoded by [`Page::decode_cursor`]).
    pub cursor: Option<i64>,
    /// Also count every match (`_total=accurate`), regardless of paging.
    pub total: bool,
}

/// One search criterion; the values inside a clause are OR-ed.
#[derive(Debug, Clone)]
pub enum Clause {
    /// `_id`
    Id(Vec<String>),
    /// `_lastUpdated`
    LastUpdated(Vec<DateRange>),
    /// A token parameter such as `identifier`.
    Token { param: String, values: Vec<TokenValue> },
    /// A date parameter such as `birthdate`: each value's range compared with the stored ranges.
    Date { param: String, values: Vec<DateRange> },
    /// A reference parameter such as `subject`: local targets (`Patient/1`, or an id of any type)
    /// or absolute URLs.
    Reference { param: String, values: Vec<ReferenceValue> },
    /// Membership of a compartment (`GET /Patient/1/Observation`).
    Compartment { compartment: String, id: String },
}

/// A reference search value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReferenceValue {
    /// `Type/id`, or a bare `id` (`target_type` `None`) that matches any type.
    Local { target_type: Option<String>, id: String },
    /// An absolute URL, matched as written.
    Url(String),
}

/// A token search value: `code`, `system|code`, `|code` or `system|`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenValue {
    pub system: TokenSystem,
    pub code: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSystem {
    /// `code`: any system.
    Any,
    /// `|code`: no system.
    None,
    /// `system|…`
    Is(String),
}

/// A date comparison: `prefix` applied to the range `[low, high)` (microseconds, UTC) that a
/// search value of some precision denotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateRange {
    pub prefix: DatePrefix,
    pub low: i64,
    pub high: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatePrefix {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    Sa,
    Eb,
}

/// `_include` / `_revinclude` for one page of matches.
#[derive(Debug, Clone)]
pub struct IncludeQuery {
    /// `_include` follows references out of the matches; `_revinclude` finds resources pointing in.
    pub reverse: bool,
    /// The type whose reference parameter is followed (`Observation` in `Observation:subject`).
    pub source_type: String,
    /// The reference parameter; `None` for `*` (every reference parameter).
    pub param: Option<String>,
    /// Only targets of this type (`Observation:subject:Patient`).
    pub target_type: Option<String>,
    /// The matches' type and ids.
    pub matched_type: String,
    pub matched_ids: Vec<String>,
    /// Most resources to return.
    pub limit: u32,
}

/// `$everything` on a compartment: its focal resource, its members, and what they refer to.
#[derive(Debug, Clone, Default)]
pub struct EverythingQuery {
    /// `_type`: only these resource types.
    pub types: Option<Vec<String>>,
    /// `_since`: only versions updated at or after this instant.
    pub since: Option<i64>,
    pub count: u32,
    pub cursor: Option<i64>,
}

/// Which versions a history request covers.
#[derive(Debug, Clone)]
pub enum HistoryScope {
    System,
    Type(String),
    Instance(String, String),
}

#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    /// `_since`: versions created at or after this instant.
    pub since: Option<i64>,
    /// `_at`: versions that were current at some point in `[low, high)`.
    pub at: Option<(i64, i64)>,
    pub count: u32,
    pub cursor: Option<(i64, i64)>,
}

/// One page of versions, and the position to continue from if there are more.
#[derive(Debug, Default)]
pub struct Page {
    pub versions: Vec<StoredVersion>,
    /// Opaque continuation token for the next page, if any.
    pub next: Option<String>,
    /// The number of matches, when the query asked for it.
    pub total: Option<u64>,
}

impl Page {
    /// Decodes a search continuation token made by this store.
    pub fn decode_cursor(token: &str) -> Option<i64> {
        let hex = token.strip_prefix('s')?;
        i64::from_str_radix(hex, 16).ok()
    }

    pub(crate) fn encode_cursor(rid: i64) -> String {
        format!("s{rid:x}")
    }

    /// Decodes a history continuation token made by this store.
    pub fn decode_history_cursor(token: &str) -> Option<(i64, i64)> {
        let rest = token.strip_prefix('h')?;
        let (t, r) = rest.split_once('.')?;
        Some((i64::from_str_radix(t, 16).ok()?, i64::from_str_radix(r, 16).ok()?))
    }

    pub(crate) fn encode_history_cursor(last_updated: i64, rid: i64) -> String {
        format!("h{last_updated:x}.{rid:x}")
    }
}
