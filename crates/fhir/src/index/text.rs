//! String normalisation for string search, and the words full-text search (`_text`, `_content`)
//! matches.

use serde_json::Value;

use super::TextValue;

/// The form string search compares: lower case, accents removed (`Müller` → `muller`), runs of
/// whitespace as one space, trimmed. Matching is then a byte comparison, which an index serves.
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut space = false;
    for c in text.trim().chars() {
        if c.is_whitespace() {
            space = true;
            continue;
        }
        if space {
            out.push(' ');
            space = false;
        }
        match fold(c) {
            Some(folded) => out.push_str(folded),
            None => out.extend(c.to_lowercase()),
        }
    }
    out
}

/// The base letters of accented Latin letters (Latin-1 Supplement and Latin Extended-A), lower
/// case; `None` for anything else.
fn fold(c: char) -> Option<&'static str> {
    Some(match c {
        'À'..='Å' | 'à'..='å' | 'Ā'..='ą' => "a",
        'Æ' | 'æ' => "ae",
        'Ç' | 'ç' | 'Ć'..='č' => "c",
        'Ď'..='đ' => "d",
        'È'..='Ë' | 'è'..='ë' | 'Ē'..='ě' => "e",
        'Ĝ'..='ģ' => "g",
        'Ĥ'..='ħ' => "h",
        'Ì'..='Ï' | 'ì'..='ï' | 'Ĩ'..='ı' => "i",
        'Ĳ' | 'ĳ' => "ij",
        'Ĵ' | 'ĵ' => "j",
        'Ķ' | 'ķ' | 'ĸ' => "k",
        'Ĺ'..='ł' => "l",
        'Ñ' | 'ñ' | 'Ń'..='ŋ' => "n",
        'Ò'..='Ö' | 'Ø' | 'ò'..='ö' | 'ø' | 'Ō'..='ő' => "o",
        'Œ' | 'œ' => "oe",
        'Ŕ'..='ř' => "r",
        'Ś'..='š' => "s",
        'ß' => "ss",
        'Ţ'..='ŧ' => "t",
        'Ù'..='Ü' | 'ù'..='ü' | 'Ũ'..='ų' => "u",
        'Ŵ' | 'ŵ' => "w",
        'Ý' | 'ý' | 'ÿ' | 'Ŷ'..='Ÿ' => "y",
        'Ź'..='ž' => "z",
        'Ð' | 'ð' => "d",
        'Þ' | 'þ' => "th",
        _ => return None,
    })
}

/// The words of the narrative and of the resource's text values, for the full-text index: each
/// distinct word once, lower case, separated by spaces.
///
/// A word is a run of letters and digits, as the search side ([`crate`]'s callers) splits a
/// `_text`/`_content` value: splitting here the same way makes both indexes (SQLite's `unicode61`
/// tokenizer, PostgreSQL's `simple` parser, which would keep `173.9` or an e-mail address as one
/// token) hold exactly the words a query can name. The index records which words a resource
/// contains, not where or how often, so repeats are dropped here rather than written again and
/// again (a claim repeats its codes' displays on every item).
///
/// `_content` is the resource's text: strings, codes and their displays, identifiers' values,
/// names, addresses and the narrative. Left out, as structure that their own parameters search
/// and that no one looks for by words: `resourceType`, ids, references, code systems, extension
/// URLs, `meta` (server-managed, and stamped only after indexing), and date and time values
/// (`2014-01-17T10:48:38+01:00` would only add the words `2014`, `01`, `17t10`, `48`, `38`).
pub(super) fn words(resource: &Value) -> TextValue {
    let mut narrative = Words::default();
    if let Some(div) = resource.get("text").and_then(|t| t.get("div")).and_then(Value::as_str) {
        narrative.add_xhtml(div);
    }
    let mut content = Words::default();
    content.add_value(resource);
    TextValue { narrative: narrative.finish(), content: content.finish() }
}

/// Distinct words, lower case, separated by spaces, in the order first found.
#[derive(Default)]
struct Words {
    out: String,
    /// An open-addressing set of the words in `out`, by byte range; `(0, 0)` is a free slot (a
    /// word is never empty). Sorting the words to drop repeats cost twice what finding them did.
    slots: Vec<(u32, u32)>,
    count: usize,
    /// A non-ASCII word, lower case.
    scratch: String,
}

impl Words {
    /// The strings of a JSON value, but for what [`words`] leaves out.
    fn add_value(&mut self, value: &Value) {
        match value {
            Value::String(s) if s.starts_with("<div") => self.add_xhtml(s),
            Value::String(s) if !is_date_or_time(s) => self.add_text(s),
            Value::Array(items) => items.iter().for_each(|v| self.add_value(v)),
            Value::Object(map) => {
                for (key, v) in map {
                    match key.as_str() {
                        "resourceType" | "id" | "reference" | "system" | "meta" | "data" => {}
                        // An extension's `url` says what it is, not what it holds.
                        "extension" | "modifierExtension" => self.add_extensions(v),
                        _ => self.add_value(v),
                    }
                }
            }
            _ => {}
        }
    }

    fn add_extensions(&mut self, extensions: &Value) {
        let Value::Array(items) = extensions else { return self.add_value(extensions) };
        for item in items {
            match item {
                Value::Object(map) => map.iter().for_each(|(key, v)| match key.as_str() {
                    "url" | "id" => {}
                    "extension" | "modifierExtension" => self.add_extensions(v),
                    _ => self.add_value(v),
                }),
                other => self.add_value(other),
            }
        }
    }

    /// The words of plain text.
    fn add_text(&mut self, text: &str) {
        if !text.is_ascii() {
            for word in text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
                let mut lower = std::mem::take(&mut self.scratch);
                lower.clear();
                lower.extend(word.chars().flat_map(char::to_lowercase));
                self.add_word(&lower);
                self.scratch = lower;
            }
            return;
        }
        // Most text is ASCII: words found byte by byte, compared and copied in lower case.
        let bytes = text.as_bytes();
        let mut at = 0;
        while at < bytes.len() {
            let start = at + bytes[at..].iter().take_while(|b| !b.is_ascii_alphanumeric()).count();
            let end = start + bytes[start..].iter().take_while(|b| b.is_ascii_alphanumeric()).count();
            if end > start {
                self.add_word(&text[start..end]);
            }
            at = end;
        }
    }

    /// Adds `word` unless it is there already, ASCII letters compared without case.
    fn add_word(&mut self, word: &str) {
        if self.slots.len() < 2 * (self.count + 1) {
            self.grow();
        }
        let mask = self.slots.len() - 1;
        let mut slot = hash(word) as usize & mask;
        loop {
            let (start, end) = self.slots[slot];
            if end == 0 {
                if !self.out.is_empty() {
                    self.out.push(' ');
                }
                let start = self.out.len();
                self.out.push_str(word);
                self.out[start..].make_ascii_lowercase();
                self.slots[slot] = (start as u32, self.out.len() as u32);
                self.count += 1;
                return;
            }
            if self.out[start as usize..end as usize].eq_ignore_ascii_case(word) {
                return;
            }
            slot = (slot + 1) & mask;
        }
    }

    fn grow(&mut self) {
        let size = (self.slots.len() * 2).max(64);
        let old = std::mem::replace(&mut self.slots, vec![(0, 0); size]);
        for (start, end) in old.into_iter().filter(|(_, end)| *end != 0) {
            let mut slot = hash(&self.out[start as usize..end as usize]) as usize & (size - 1);
            while self.slots[slot].1 != 0 {
                slot = (slot + 1) & (size - 1);
            }
            self.slots[slot] = (start, end);
        }
    }

    /// The words of an XHTML fragment: tags separate words and are dropped; character references
    /// (`&#233;`, `&#xE9;`) are the characters they stand for; named entities (`&amp;`, `&nbsp;`,
    /// the punctuation XHTML escapes) separate words.
    fn add_xhtml(&mut self, xhtml: &str) {
        let mut text = String::with_capacity(xhtml.len());
        let mut rest = xhtml;
        while let Some(at) = rest.find(['<', '&']) {
            text.push_str(&rest[..at]);
            text.push(' ');
            rest = &rest[at..];
            let (end, replacement) = if rest.starts_with('<') {
                (rest.find('>').map_or(rest.len(), |i| i + 1), None)
            } else {
                match rest.find(';').filter(|&i| i <= 10) {
                    Some(i) => (i + 1, character_reference(&rest[1..i])),
                    None => (1, None),
                }
            };
            if let Some(c) = replacement {
                text.pop();
                text.push(c);
            }
            rest = &rest[end..];
        }
        text.push_str(rest);
        self.add_text(&text);
    }

    fn finish(self) -> String {
        self.out
    }
}

/// FNV-1a of the word in lower case (ASCII letters folded).
fn hash(word: &str) -> u64 {
    word.bytes()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b.to_ascii_lowercase())).wrapping_mul(0x100_0000_01b3))
}

/// The character of a numeric character reference (`#233`, `#xE9`), without `&` and `;`.
fn character_reference(name: &str) -> Option<char> {
    let number = name.strip_prefix('#')?;
    let code = match number.strip_prefix(['x', 'X']) {
        Some(hex) => u32::from_str_radix(hex, 16).ok()?,
        None => number.parse().ok()?,
    };
    char::from_u32(code)
}

/// Whether `text` has the form of a FHIR `date`, `dateTime`, `instant` or `time` with at least a
/// month or a second (a bare four-digit year is as likely a code): `2014-01`, `2014-01-17`,
/// `2014-01-17T10:48:38.941+01:00`, `10:48:38`.
fn is_date_or_time(text: &str) -> bool {
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| b.get(range).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let is_time = |at: usize| {
        digits(at..at + 2) && b.get(at + 2) == Some(&b':') && digits(at + 3..at + 5) && {
            // Seconds with an optional fraction, then an optional zone.
            let mut i = at + 5;
            if b.get(i) == Some(&b':') {
                if !digits(i + 1..i + 3) {
                    return false;
                }
                i += 3;
                if b.get(i) == Some(&b'.') {
                    i += 1;
                    let fraction = b[i.min(b.len())..].iter().take_while(|c| c.is_ascii_digit()).count();
                    if fraction == 0 {
                        return false;
                    }
                    i += fraction;
                }
            }
            match b.get(i) {
                None => true,
                Some(b'Z') => i + 1 == b.len(),
                Some(b'+' | b'-') => {
                    i + 6 == b.len() && digits(i + 1..i + 3) && b[i + 3] == b':' && digits(i + 4..i + 6)
                }
                _ => false,
            }
        }
    };
    if b.len() == 8 && is_time(0) {
        return b[5] == b':';
    }
    if !(digits(0..4) && b.get(4) == Some(&b'-') && digits(5..7)) {
        return false;
    }
    match b.len() {
        7 => true,
        10 => b[7] == b'-' && digits(8..10),
        _ => b.get(7) == Some(&b'-') && digits(8..10) && b.get(10) == Some(&b'T') && is_time(11),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_folds_case_accents_and_spaces() {
        assert_eq!(normalize("  Müller-Lüdenscheidt "), "muller-ludenscheidt");
        assert_eq!(normalize("ÉLODIE  Ça\tva"), "elodie ca va");
        assert_eq!(normalize("Straße"), "strasse");
        assert_eq!(normalize("Ωmega"), "ωmega");
    }

    #[test]
    fn words_of_narrative_and_content() {
        let resource = serde_json::json!({
            "resourceType": "Patient", "id": "x1",
            "meta": {"versionId": "3", "lastUpdated": "2020-01-01T00:00:00Z", "profile": ["http://example.org/p"]},
            "text": {"status": "generated",
                     "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\"><b>Peter</b>&amp;Paul Caf&#233;&nbsp;Caf&#xE9; peter</div>"},
            "extension": [{"url": "http://example.org/ext/birthplace", "valueString": "Zoë's Town",
                           "extension": [{"url": "http://example.org/inner", "valueCode": "inner-code"}]}],
            "identifier": [{"system": "http://hospital.example/mrn", "value": "MRN-173.9"}],
            "name": [{"family": "Chalmers", "given": ["Peter", "James"], "period": {"start": "2014-01-17"}}],
            "birthDate": "1974-12-25",
            "managingOrganization": {"reference": "Organization/org-1", "display": "Peter's Clinic"}
        });
        let words = words(&resource);
        assert_eq!(words.narrative, "peter paul café");
        assert_eq!(
            words.content, "generated peter paul café zoë s town inner code mrn 173 9 chalmers james clinic",
            "distinct, lower case, in the order found; no ids, references, systems, extension URLs, meta or dates"
        );
    }

    #[test]
    fn dates_and_times_are_told_from_text() {
        for date in [
            "2014-01",
            "2014-01-17",
            "2014-01-17T10:48",
            "2014-01-17T10:48:38",
            "2014-01-17T10:48:38Z",
            "2014-01-17T10:48:38.941+01:00",
            "2014-01-17T10:48:38-05:00",
            "10:48:38",
        ] {
            assert!(is_date_or_time(date), "{date}");
        }
        for text in
            ["2014", "8302-2", "2014-1", "2014-01-17 clinic", "2014-01-17T", "2014-01-17T10:48:38.+01:00", "10:48", "a"]
        {
            assert!(!is_date_or_time(text), "{text}");
        }
    }
}
