//! The two patch formats of FHIR R4: JSON Patch and FHIRPath Patch.

pub(crate) mod fhirpath_patch;
pub(crate) mod json_patch;

/// Decodes standard base64 (as in `Binary.data`), ignoring whitespace; `None` if malformed.
pub(crate) fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut buffer = 0u32;
    let mut bits = 0;
    let mut padding = 0;
    for byte in text.bytes().filter(|b| !b.is_ascii_whitespace()) {
        let value = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => {
                padding += 1;
                continue;
            }
            _ => return None,
        };
        if padding > 0 {
            return None; // data after padding
        }
        buffer = (buffer << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    (padding <= 2).then_some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64() {
        assert_eq!(super::decode_base64("W3sib3AiOiJ0ZXN0In1d").unwrap(), br#"[{"op":"test"}]"#);
        assert_eq!(super::decode_base64("YQ==").unwrap(), b"a");
        assert_eq!(super::decode_base64("YW\nJj").unwrap(), b"abc");
        assert!(super::decode_base64("YQ=x").is_none());
        assert!(super::decode_base64("Y!").is_none());
    }
}
