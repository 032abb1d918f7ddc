//! Search index rows for one resource version, as the server computed them.
//!
//! The store never evaluates FHIRPath: the server extracts these values (one code path for every
//! backend) and the store keeps them in one table per value kind. Every row names its search
//! parameter by code. Composite parameters keep each element's components as one group of rows
//! (`param` `code-value-quantity$0`, `code-value-quantity$1`, …) sharing a group number, so that a
//! composite search matches components of the same element, not of two different ones.

/// Search index rows for one resource version.
#[derive(Debug, Default, Clone)]
pub struct IndexEntries {
    pub tokens: Vec<TokenEntry>,
    pub dates: Vec<DateEntry>,
    pub references: Vec<ReferenceEntry>,
    pub strings: Vec<StringEntry>,
    pub numbers: Vec<NumberEntry>,
    pub quantities: Vec<QuantityEntry>,
    pub uris: Vec<UriEntry>,
    pub compartments: Vec<CompartmentEntry>,
    /// One entry per element a composite parameter selected: its components' rows, with params
    /// named `{code}${component index}`.
    pub composites: Vec<IndexEntries>,
    /// Words for `_text` (narrative) and `_content` (every string of the resource).
    pub text: Option<TextEntry>,
}

impl IndexEntries {
    pub fn len(&self) -> usize {
        self.tokens.len()
            + self.dates.len()
            + self.references.len()
            + self.strings.len()
            + self.numbers.len()
            + self.quantities.len()
            + self.uris.len()
            + self.compartments.len()
            + self.composites.iter().map(IndexEntries::len).sum::<usize>()
            + usize::from(self.text.is_some())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A token value (`system|code`) of one search parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenEntry {
    pub param: String,
    pub system: Option<String>,
    pub code: String,
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

/// A string parameter's value: as written (for `:exact`) and normalised — lower case, without
/// accents or punctuation runs — for the default starts-with and `:contains` matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StringEntry {
    pub param: String,
    pub normalized: String,
    pub exact: String,
}

/// A number parameter's value.
#[derive(Debug, Clone, PartialEq)]
pub struct NumberEntry {
    pub param: String,
    pub value: f64,
}

/// A quantity parameter's value as written (`low == high` for a Quantity, the bounds of a Range),
/// and the same converted to canonical UCUM units when it is a UCUM quantity.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantityEntry {
    pub param: String,
    pub system: Option<String>,
    /// `Quantity.code`, or its `unit` when it has no code.
    pub code: Option<String>,
    pub low: f64,
    pub high: f64,
    pub canonical: Option<CanonicalQuantity>,
}

/// A quantity in canonical UCUM base units.
#[derive(Debug, Clone, PartialEq)]
pub struct CanonicalQuantity {
    pub unit: String,
    pub low: f64,
    pub high: f64,
}

/// A uri parameter's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UriEntry {
    pub param: String,
    pub uri: String,
}

/// Membership of a compartment, e.g. (`Patient`, `123`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompartmentEntry {
    pub compartment: String,
    pub id: String,
}

/// Full-text words of a resource, space-separated and lower case.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TextEntry {
    pub narrative: String,
    pub content: String,
}
