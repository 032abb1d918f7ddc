//! Dialect-neutral descriptions of what to index and what to look up.
//!
//! The server turns FHIR search parameters into a [`SearchQuery`]; each backend compiles it to SQL.
//! Index entries are likewise computed outside the store ([`IndexEntries`]) so that the store never
//! needs to understand FHIRPath or the resource's structure.

use crate::model::StoredVersion;

/// A conjunction of clauses over current, non-deleted resources of some types.
#[derive(Debug, Clone, Default)]
pub struct SearchQuery {
    /// The resource types searched; every type when empty (system-level search).
    pub types: Vec<String>,
    pub clauses: Vec<Clause>,
    /// Sort keys, most significant first; the row id breaks ties, so the order is total.
    pub sort: Vec<SortKey>,
    /// Page size.
    pub count: u32,
    /// Continue from this position (decoded by [`Cursor::decode`]).
    pub cursor: Option<Cursor>,
    /// Also count every match (`_total=accurate`), regardless of paging.
    pub total: bool,
}

/// One search criterion. The values inside a clause are OR-ed; clauses are AND-ed.
#[derive(Debug, Clone)]
pub enum Clause {
    /// `_id`
    Id(Vec<String>),
    /// `_lastUpdated`
    LastUpdated(Vec<DateRange>),
    /// Rows of the parameter `param` matching any of `values` (all values of one [`Value`] kind).
    Match { param: String, values: Vec<Value> },
    /// A composite parameter: any of `values`, each a list of component matches that must hold on
    /// the same element (component `i` is stored as `{param}${i}`).
    Composite { param: String, values: Vec<Vec<Value>> },
    /// `:missing`: whether the resource has no (`true`) or some (`false`) value of `param`.
    Missing { param: String, kind: ValueKind, missing: bool },
    /// The negation of a clause (`:not`, `:not-in`).
    Not(Box<Clause>),
    /// Chaining (`subject:Patient.name=x`): the reference parameter `param` points at a resource of
    /// one of `target_types` that matches every clause of `clauses`.
    Chain { param: String, target_types: Vec<String>, clauses: Vec<Clause> },
    /// Reverse chaining (`_has:Observation:patient:code=x`): some resource of `source_type` whose
    /// reference parameter `param` points at this resource matches every clause of `clauses`.
    Has { source_type: String, param: String, clauses: Vec<Clause> },
    /// Membership of a compartment (`GET /Patient/1/Observation`).
    Compartment { compartment: String, id: String },
    /// Membership of the compartment of any of `ids` (of any one at all, when `None`): what a
    /// patient- or group-level `$export` selects.
    Compartments { compartment: String, ids: Option<Vec<String>> },
    /// `_text` (`narrative`) or `_content`: every word of `words` (lower case) occurs.
    Text { narrative: bool, words: Vec<String> },
    /// Any of several clauses.
    Any(Vec<Clause>),
    /// All of several clauses (what one alternative of an [`Clause::Any`] needs when it is more
    /// than one condition, such as a SMART scope's compartment and its category).
    All(Vec<Clause>),
    /// The resource is of one of these types (to restrict one type of a multi-type search).
    Types(Vec<String>),
}

/// One value a [`Clause::Match`] compares rows with.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Token(TokenValue),
    Date(DateRange),
    Reference(ReferenceValue),
    String { value: String, matching: StringMatch },
    Number(NumberRange),
    Quantity(QuantityValue),
    Uri { value: String, matching: UriMatch },
}

/// Which index a parameter's values live in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    Token,
    Date,
    Reference,
    String,
    Number,
    Quantity,
    Uri,
}

impl Value {
    pub fn kind(&self) -> ValueKind {
        match self {
            Value::Token(_) => ValueKind::Token,
            Value::Date(_) => ValueKind::Date,
            Value::Reference(_) => ValueKind::Reference,
            Value::String { .. } => ValueKind::String,
            Value::Number(_) => ValueKind::Number,
            Value::Quantity(_) => ValueKind::Quantity,
            Value::Uri { .. } => ValueKind::Uri,
        }
    }
}

/// How a string search value matches a normalised stored value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StringMatch {
    /// The default: the stored value starts with the (normalised) search value.
    StartsWith,
    /// `:exact`: the value as written equals the search value.
    Exact,
    /// `:contains`: the stored value contains the (normalised) search value.
    Contains,
    /// The stored normalised value equals the search value: what an encrypted installation's
    /// blind prefix index answers for the default match (the server puts one row per prefix).
    Equals,
}

/// How a uri search value matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UriMatch {
    Exact,
    /// `:below`: the stored uri starts with the search value.
    Below,
    /// `:above`: the search value starts with the stored uri.
    Above,
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
    pub prefix: Prefix,
    pub low: i64,
    pub high: i64,
}

/// A number comparison: `prefix` with the search value `value` and the range `[low, high)` its
/// precision denotes (`100` is `[99.5, 100.5)`); `ap` uses `[low, high)` widened by 10 %.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NumberRange {
    pub prefix: Prefix,
    pub value: f64,
    pub low: f64,
    pub high: f64,
}

/// A quantity search value: the number, and the unit it must have (`system|code`, or `||code`
/// matched against code or unit). When the unit is UCUM and convertible, `canonical` is the same
/// comparison in canonical units, and stored quantities are compared in those.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantityValue {
    pub number: NumberRange,
    pub system: Option<String>,
    pub code: Option<String>,
    pub canonical: Option<(String, NumberRange)>,
}

/// Search prefixes (<https://hl7.org/fhir/R4/search.html#prefix>).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    Sa,
    Eb,
    Ap,
}

/// One `_sort` key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    pub by: SortBy,
    pub descending: bool,
}

/// What a sort key orders by: a resource column or a parameter's indexed values (the smallest for
/// an ascending sort, the largest for a descending one; resources without a value come last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SortBy {
    Id,
    LastUpdated,
    Param { param: String, kind: ValueKind },
}

/// A position in a sorted result: the sort key values and row id of a resource, and whether the
/// page wanted lies after it (`next`) or before it (`previous`).
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    pub keys: Vec<KeyValue>,
    pub rid: i64,
    pub backward: bool,
}

/// A sort key value of one resource.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyValue {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
}

impl Cursor {
    /// An opaque token: `n` (next) or `p` (previous), the row id, then each key, hex-encoded so the
    /// token is URL-safe whatever the keys hold.
    pub fn encode(&self) -> String {
        let mut plain = format!("{}{:x}", if self.backward { 'p' } else { 'n' }, self.rid);
        for key in &self.keys {
            plain.push('~');
            match key {
                KeyValue::Null => plain.push('z'),
                KeyValue::Integer(i) => plain.push_str(&format!("i{i}")),
                KeyValue::Real(f) => plain.push_str(&format!("r{:x}", f.to_bits())),
                KeyValue::Text(t) => {
                    plain.push('t');
                    for byte in t.bytes() {
                        plain.push_str(&format!("{byte:02x}"));
                    }
                }
            }
        }
        plain
    }

    pub fn decode(token: &str) -> Option<Cursor> {
        let mut parts = token.split('~');
        let head = parts.next()?;
        let backward = match head.as_bytes().first()? {
            b'n' => false,
            b'p' => true,
            _ => return None,
        };
        let rid = i64::from_str_radix(&head[1..], 16).ok()?;
        let keys = parts
            .map(|part| {
                let (tag, rest) = part.split_at_checked(1)?;
                Some(match tag {
                    "z" if rest.is_empty() => KeyValue::Null,
                    "i" => KeyValue::Integer(rest.parse().ok()?),
                    "r" => KeyValue::Real(f64::from_bits(u64::from_str_radix(rest, 16).ok()?)),
                    "t" => {
                        let bytes = (0..rest.len())
                            .step_by(2)
                            .map(|i| u8::from_str_radix(rest.get(i..i + 2)?, 16).ok())
                            .collect::<Option<Vec<u8>>>()?;
                        KeyValue::Text(String::from_utf8(bytes).ok()?)
                    }
                    _ => return None,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Cursor { keys, rid, backward })
    }
}

/// One page of a bulk export's snapshot of one type: the versions that were current, and not
/// deleted, at `as_of`, in `(last_updated, rid)` order.
///
/// Every version is visited once in that order whatever is written meanwhile: a version that is
/// superseded during the export still was current at `as_of` (its `valid_to` is later), and
/// versions written after `as_of` fall outside the range. So paging through it needs no lock and
/// loses or repeats nothing.
#[derive(Debug, Clone)]
pub struct SnapshotQuery {
    pub resource_type: String,
    /// The export's `transactionTime`, in microseconds since the epoch.
    pub as_of: i64,
    /// `_since`: versions last updated at or after this instant.
    pub since: Option<i64>,
    /// Continue after this `(last_updated, rid)`.
    pub after: Option<(i64, i64)>,
    /// Conditions on the resource's current version (`_typeFilter`, compartment membership), all
    /// of which must hold; the index rows of a superseded version are gone, so a resource is judged
    /// by what it is now.
    pub filter: Vec<Clause>,
    /// Every version written by `as_of` (deletions aside), not only the current ones: an export
    /// that includes history.
    pub history: bool,
    /// Also the last version of each resource deleted by `as_of` (`includeAssociatedData=_deleted`):
    /// returned with its body and `deleted: true`. With `history`, every version that a deletion
    /// followed is so marked.
    pub deleted: bool,
    pub limit: u32,
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
    /// Opaque continuation token for the previous page, if any (search only).
    pub previous: Option<String>,
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
