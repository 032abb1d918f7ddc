//! A minimal pull scanner over a JSON text, enough to walk a Bundle without building it: objects and
//! arrays are visited through callbacks, strings and numbers are read, anything else is skipped.

use std::borrow::Cow;

/// A position in one JSON text; each method reads one value there and moves past it.
pub struct Json<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Json<'a> {
    /// Checks the whole text is UTF-8 once, so that strings can be sliced out of it afterwards.
    pub fn new(bytes: &'a [u8]) -> Result<Self, String> {
        let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
        Ok(Json { text, at: 0 })
    }

    fn error(&self, what: &str) -> String {
        error_at(self.at, what)
    }

    /// The next byte that is not JSON whitespace, not consumed.
    fn peek(&mut self) -> Option<u8> {
        let bytes = self.text.as_bytes();
        while let Some(&b) = bytes.get(self.at) {
            if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
                return Some(b);
            }
            self.at += 1;
        }
        None
    }

    fn eat(&mut self, byte: u8) -> Result<(), String> {
        if self.peek() == Some(byte) {
            self.at += 1;
            Ok(())
        } else {
            Err(self.error(&format!("expected {:?}", byte as char)))
        }
    }

    /// Checks nothing but whitespace follows the value just read.
    pub fn end(&mut self) -> Result<(), String> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(self.error("trailing characters")),
        }
    }

    /// Visits `{ "key": value, … }`; `member` must consume each value.
    pub fn object(&mut self, mut member: impl FnMut(&mut Self, &str) -> Result<(), String>) -> Result<(), String> {
        self.sequence(b'{', b'}', |p| {
            let key = p.string()?;
            p.eat(b':')?;
            member(p, &key)
        })
    }

    /// Visits `[ value, … ]`; `element` must consume each value.
    pub fn array(&mut self, element: impl FnMut(&mut Self) -> Result<(), String>) -> Result<(), String> {
        self.sequence(b'[', b']', element)
    }

    /// Reads an object and returns the string at `path` inside it (`["response", "status"]`),
    /// skipping everything else; `None` when there is none.
    pub fn string_at(&mut self, path: &[&str]) -> Result<Option<Cow<'a, str>>, String> {
        let Some((first, rest)) = path.split_first() else { return self.string().map(Some) };
        let mut found = None;
        self.object(|p, key| {
            if key == *first {
                // A repeated key does not hide what an earlier one held.
                if let Some(value) = p.string_at(rest)? {
                    found = Some(value);
                }
                Ok(())
            } else {
                p.skip()
            }
        })?;
        Ok(found)
    }

    /// `open`, then items separated by commas (`item` consumes each), then `close`.
    fn sequence(
        &mut self,
        open: u8,
        close: u8,
        mut item: impl FnMut(&mut Self) -> Result<(), String>,
    ) -> Result<(), String> {
        self.eat(open)?;
        if self.peek() == Some(close) {
            self.at += 1;
            return Ok(());
        }
        loop {
            item(self)?;
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b) if b == close => {
                    self.at += 1;
                    return Ok(());
                }
                _ => return Err(self.error(&format!("expected ',' or '{}'", close as char))),
            }
        }
    }

    /// A string with its escapes decoded; borrowed from the text when it has none (most keys and
    /// codes), so that reading it costs no allocation.
    pub fn string(&mut self) -> Result<Cow<'a, str>, String> {
        let (raw, escaped) = self.raw_string()?;
        if !escaped {
            return Ok(Cow::Borrowed(raw));
        }
        let start = self.at - raw.len() - 1;
        unescape(raw).map(Cow::Owned).map_err(|(offset, what)| error_at(start + offset, what))
    }

    /// A string's text between its quotes, escapes left in place, and whether it has any.
    fn raw_string(&mut self) -> Result<(&'a str, bool), String> {
        self.eat(b'"')?;
        let bytes = self.text.as_bytes();
        let start = self.at;
        let mut escaped = false;
        loop {
            match bytes.get(self.at) {
                None => return Err(self.error("unterminated string")),
                Some(b'"') => break,
                Some(b'\\') => {
                    escaped = true;
                    self.at += 2;
                }
                Some(_) => self.at += 1,
            }
        }
        // Both ends are next to an ASCII quote, so on character boundaries.
        let raw = &self.text[start..self.at];
        self.at += 1;
        Ok((raw, escaped))
    }

    /// A number's text, unparsed.
    pub fn number(&mut self) -> Result<&'a str, String> {
        self.peek();
        let bytes = self.text.as_bytes();
        let start = self.at;
        while bytes.get(self.at).is_some_and(|b| matches!(b, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')) {
            self.at += 1;
        }
        if start == self.at {
            return Err(self.error("expected a number"));
        }
        Ok(&self.text[start..self.at])
    }

    /// Steps over one value of any kind without decoding it.
    pub fn skip(&mut self) -> Result<(), String> {
        match self.peek() {
            Some(b'{') => self.object(|p, _| p.skip()),
            Some(b'[') => self.array(Self::skip),
            Some(b'"') => self.raw_string().map(drop),
            Some(b'-' | b'0'..=b'9') => self.number().map(drop),
            _ => {
                for literal in ["true", "false", "null"] {
                    if self.text[self.at..].starts_with(literal) {
                        self.at += literal.len();
                        return Ok(());
                    }
                }
                Err(self.error("expected a value"))
            }
        }
    }
}

fn error_at(at: usize, what: &str) -> String {
    format!("invalid JSON at byte {at}: {what}")
}

/// Decodes the escapes of a string's raw text; an error carries the offset of the bad escape.
fn unescape(raw: &str) -> Result<String, (usize, &'static str)> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(backslash) = rest.find('\\') {
        out.push_str(&rest[..backslash]);
        let offset = raw.len() - rest.len() + backslash;
        let escape = &rest[backslash + 1..];
        let (c, used) = match escape.as_bytes().first() {
            Some(b'"') => ('"', 1),
            Some(b'\\') => ('\\', 1),
            Some(b'/') => ('/', 1),
            Some(b'b') => ('\u{8}', 1),
            Some(b'f') => ('\u{c}', 1),
            Some(b'n') => ('\n', 1),
            Some(b'r') => ('\r', 1),
            Some(b't') => ('\t', 1),
            Some(b'u') => {
                let unit = hex4(&escape[1..]).ok_or((offset, "bad \\u escape"))?;
                // Outside the Basic Multilingual Plane a character is a UTF-16 surrogate pair, written
                // as two escapes; a surrogate without its other half becomes U+FFFD.
                let low = escape[5..].strip_prefix("\\u").and_then(hex4).filter(|low| (0xDC00..0xE000).contains(low));
                match low {
                    Some(low) if (0xD800..0xDC00).contains(&unit) => {
                        let c = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                        (char::from_u32(c).expect("a valid surrogate pair"), 11)
                    }
                    _ => (char::from_u32(unit).unwrap_or('\u{FFFD}'), 5),
                }
            }
            _ => return Err((offset, "unknown escape")),
        };
        out.push(c);
        rest = &escape[used..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The value of the four hex digits that start `text`.
fn hex4(text: &str) -> Option<u32> {
    let digits = text.get(..4).filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit()))?;
    u32::from_str_radix(digits, 16).ok()
}
