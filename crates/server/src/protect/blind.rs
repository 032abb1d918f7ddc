//! What an encrypted installation stores in place of the search index values that carry PHI, and
//! how a search value is turned into the same form. The two sides must agree byte for byte, so
//! both live here.
//!
//! - **Strings** (every string parameter: names, addresses, free-text values; not the `:text` of
//!   codes, see [`blinded_string`]): one row
//!   per prefix of the normalized value of [`MIN_PREFIX`] to [`MAX_PREFIX`] characters, each a
//!   blind index, the first row also carrying the blind index of the value as written (for
//!   `:exact`). The default *starts with* search is then one equality on the blinded prefix.
//! - **Identifying tokens** ([`identifying`]: identifiers, telecom, and references by
//!   identifier): the code becomes its blind index; the system stays as it is (a namespace such
//!   as a hospital's MRN system identifies no one) so that `system|value` still narrows by it.
//! - **Full text** is not indexed at all.
//!
//! Every blind index is keyed by the data key and the parameter's code, so equal values of two
//! parameters do not look equal. What remains visible is in ARCHITECTURE.md ("Encryption at rest").

use fhirside_keys::Keyring;

/// Shortest prefix indexed and searched: shorter ones would reveal too much (a first letter's
/// frequency gives it away) and match too much.
pub(crate) const MIN_PREFIX: usize = 3;
/// Longest prefix indexed: a search value longer than this compares its first this many
/// characters, so two values that share them both match. Each prefix is a row of the string
/// index: this bounds what a long value (an address line, a code's text) costs to write.
pub(crate) const MAX_PREFIX: usize = 20;

const PREFIX: &str = "string-prefix";
const EXACT: &str = "string-exact";
const TOKEN: &str = "token";

/// Whether a string parameter's values are blinded: all but the `:text` rows of coded values
/// (`code:text`, `category:text`…), the display text of codes that stay readable themselves
/// (codes have few values and need `:above`/`:below`/`:in`; their text adds nothing the code
/// does not say). On Synthea data they are nine tenths of the string rows, which blinding would
/// multiply by their length.
pub(crate) fn blinded_string(param: &str) -> bool {
    !param.ends_with(":text")
}

/// Whether a token parameter's values identify a person: `identifier`, `telecom`, `phone` and
/// `email` (on every resource type they name an Identifier or a ContactPoint), their modifier
/// rows such as `identifier:of-type`, and a reference's `:identifier` rows.
pub(crate) fn identifying(param: &str) -> bool {
    let base = param.split(':').next().unwrap_or(param);
    matches!(base, "identifier" | "telecom" | "phone" | "email") || param.ends_with(":identifier")
}

/// The stored form of an identifying token's code, under the active data key.
pub(crate) fn token(keyring: &Keyring, param: &str, code: &str) -> String {
    text(&keyring.blind_index(TOKEN, &keyed(param, code)))
}

/// The forms of a searched code under every data key (rows written before a rotation keep the
/// older key's).
pub(crate) fn token_all(keyring: &Keyring, param: &str, code: &str) -> Vec<String> {
    keyring.blind_indexes(TOKEN, &keyed(param, code)).iter().map(text).collect()
}

/// The stored prefixes of a normalized string value, shortest first; a value shorter than
/// [`MIN_PREFIX`] is stored whole, so that `:exact` and a search of the whole value find it.
pub(crate) fn prefixes(keyring: &Keyring, param: &str, normalized: &str) -> Vec<String> {
    let ends: Vec<usize> = normalized.char_indices().map(|(at, c)| at + c.len_utf8()).collect();
    let shortest = MIN_PREFIX.min(ends.len()).max(1);
    ends.iter()
        .enumerate()
        .filter(|(n, _)| (shortest..=MAX_PREFIX).contains(&(n + 1)))
        .map(|(_, &end)| text(&keyring.blind_index(PREFIX, &keyed(param, &normalized[..end]))))
        .collect()
}

/// The forms a *starts with* search for `normalized` compares with, under every data key; `None`
/// when it is shorter than [`MIN_PREFIX`] characters.
pub(crate) fn prefix_all(keyring: &Keyring, param: &str, normalized: &str) -> Option<Vec<String>> {
    let chars = normalized.chars().count();
    if chars < MIN_PREFIX {
        return None;
    }
    let end = normalized.char_indices().nth(MAX_PREFIX).map_or(normalized.len(), |(at, _)| at);
    let searched = keyed(param, &normalized[..end]);
    Some(keyring.blind_indexes(PREFIX, &searched).iter().map(text).collect())
}

/// The stored form of a string as written, for `:exact`.
pub(crate) fn exact(keyring: &Keyring, param: &str, exact: &str) -> String {
    text(&keyring.blind_index(EXACT, &keyed(param, exact)))
}

pub(crate) fn exact_all(keyring: &Keyring, param: &str, exact: &str) -> Vec<String> {
    keyring.blind_indexes(EXACT, &keyed(param, exact)).iter().map(text).collect()
}

/// `param` 0x00 `value`: the parameter is part of what is hashed.
fn keyed(param: &str, value: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(param.len() + 1 + value.len());
    bytes.extend_from_slice(param.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(value.as_bytes());
    bytes
}

/// The first 96 bits of an index, as 16 characters of URL-safe base64: a false match needs two
/// of some 2^48 values of one parameter to collide, and every row and index entry stays short
/// (the string index holds one row per prefix).
fn text(index: &[u8; 32]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&index[..12])
}
