//! The little text handling the storage protocols need: percent-encoding, hex, HMAC-SHA256, the
//! two date formats, and reading a few elements out of XML answers. Small enough by hand, so no
//! URL, XML or date crate is pulled in for it.

use ring::hmac;

/// Percent-encodes every byte but the unreserved ones (`A-Z a-z 0-9 - _ . ~`), and `/` when
/// `keep_slash`. One encoding for the URL sent and the string signed, as both Azure's Shared Key
/// and S3's Signature V4 sign the path (and S3 the query) in exactly this form.
pub(crate) fn percent_encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') || (keep_slash && byte == b'/') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Decodes `%XX` escapes; `None` when an escape is malformed or the result is not UTF-8.
pub(crate) fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The path of an absolute URL (from the first `/` after the authority, before the query).
pub(crate) fn url_path(url: &str) -> &str {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = after_scheme.find('/').map_or("", |at| &after_scheme[at..]);
    path.split('?').next().unwrap_or("")
}

/// `name=value&…` with both percent-encoded (strictly, `/` too), in the order given.
pub(crate) fn query_string(params: &[(&str, String)]) -> String {
    let pairs: Vec<String> = params
        .iter()
        .map(|(name, value)| format!("{}={}", percent_encode(name, false), percent_encode(value, false)))
        .collect();
    pairs.join("&")
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), message).as_ref().to_vec()
}

pub(crate) fn sha256_hex(data: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
}

/// `Tue, 01 Jan 2030 08:00:00 GMT` (RFC 7231), for `x-ms-date`.
pub(crate) fn http_date(at: time::OffsetDateTime) -> String {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    at.to_offset(time::UtcOffset::UTC).format(&format).unwrap_or_default()
}

/// `20300101T080000Z` (ISO 8601 basic), for `x-amz-date`.
pub(crate) fn amz_date(at: time::OffsetDateTime) -> String {
    let format = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    at.to_offset(time::UtcOffset::UTC).format(&format).unwrap_or_default()
}

/// `&`, `<`, `>`, `"` and `'` as entities, for text written into XML.
pub(crate) fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            _ => out.push(c),
        }
    }
    out
}

/// An element found by [`xml_elements`]: the attributes as written, and the text, unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Element {
    pub attributes: String,
    pub text: String,
}

/// Every element named `name` in `xml`, in document order, with its text content. Enough for the
/// flat answers of Blob and S3 (listings, error codes, upload ids), whose elements of interest
/// hold text only; not a general XML parser (no CDATA, no nesting of the same name).
pub(crate) fn xml_elements(xml: &str, name: &str) -> Vec<Element> {
    let open = format!("<{name}");
    let close = format!("</{name}>");
    let mut found = Vec::new();
    let mut rest = xml;
    while let Some(at) = rest.find(&open) {
        let after_name = &rest[at + open.len()..];
        // `<Name>` or `<Name attr…>`, not `<NameSuffix>`.
        if !after_name.starts_with(['>', '/', ' ', '\t', '\r', '\n']) {
            rest = after_name;
            continue;
        }
        let Some(tag_end) = after_name.find('>') else { break };
        let tag = &after_name[..tag_end];
        let body = &after_name[tag_end + 1..];
        if let Some(attributes) = tag.strip_suffix('/') {
            found.push(Element { attributes: attributes.trim().to_owned(), text: String::new() });
            rest = body;
            continue;
        }
        let Some(end) = body.find(&close) else { break };
        found.push(Element { attributes: tag.trim().to_owned(), text: xml_unescape(&body[..end]) });
        rest = &body[end + close.len()..];
    }
    found
}

/// The text of the first element named `name`.
pub(crate) fn xml_text(xml: &str, name: &str) -> Option<String> {
    xml_elements(xml, name).into_iter().next().map(|e| e.text)
}

fn xml_unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let entity_end = rest[at..].find(';').map(|end| at + end);
        let decoded = entity_end.and_then(|end| {
            let entity = &rest[at + 1..end];
            let c = match entity {
                "amp" => '&',
                "lt" => '<',
                "gt" => '>',
                "quot" => '"',
                "apos" => '\'',
                _ => {
                    let code = match entity.strip_prefix("#x").or_else(|| entity.strip_prefix("#X")) {
                        Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                        None => entity.strip_prefix('#')?.parse().ok()?,
                    };
                    char::from_u32(code)?
                }
            };
            Some((c, end))
        });
        match decoded {
            Some((c, end)) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding_round_trips() {
        assert_eq!(percent_encode("a b/ü~+=&", true), "a%20b/%C3%BC~%2B%3D%26");
        assert_eq!(percent_encode("a/b", false), "a%2Fb");
        assert_eq!(percent_decode("a%20b/%C3%BC~%2b").as_deref(), Some("a b/ü~+"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(
            query_string(&[("prefix", "a b/".into()), ("list-type", "2".into())]),
            "prefix=a%20b%2F&list-type=2"
        );
    }

    #[test]
    fn dates() {
        let at = time::macros::datetime!(2013-05-24 00:00:00 UTC);
        assert_eq!(http_date(at), "Fri, 24 May 2013 00:00:00 GMT");
        assert_eq!(amz_date(at), "20130524T000000Z");
    }

    #[test]
    fn reads_flat_xml() {
        let xml = r#"<?xml version="1.0"?><R><Blobs><Blob><Name>a &amp; b</Name><NameX>no</NameX></Blob>
            <Blob><Name Encoded="true">c%2Fd</Name></Blob></Blobs><NextMarker /><Code>X&#65;&#x42;</Code></R>"#;
        let names = xml_elements(xml, "Name");
        assert_eq!(names.len(), 2);
        assert_eq!(names[0].text, "a & b");
        assert_eq!((names[1].attributes.as_str(), names[1].text.as_str()), ("Encoded=\"true\"", "c%2Fd"));
        assert_eq!(xml_text(xml, "NextMarker").as_deref(), Some(""));
        assert_eq!(xml_text(xml, "Code").as_deref(), Some("XAB"));
        assert_eq!(xml_text(xml, "Missing"), None);
        assert_eq!(xml_unescape("a &bogus; &amp"), "a &bogus; &amp");
        assert_eq!(xml_escape("\"a\" & <b>"), "&quot;a&quot; &amp; &lt;b&gt;");
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // RFC 4231 test case 2.
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(hex(&mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
        assert_eq!(sha256_hex(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }
}
