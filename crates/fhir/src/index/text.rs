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

/// The narrative's text (tags and entities removed) and every string of the resource, each as
/// space-separated text for the full-text index to tokenise.
pub(super) fn words(resource: &Value) -> TextValue {
    let narrative = resource.get("text").and_then(|t| t.get("div")).and_then(Value::as_str).map(strip_xhtml);
    let mut content = String::new();
    strings(resource, &mut content);
    TextValue { narrative: narrative.unwrap_or_default(), content }
}

fn strings(value: &Value, out: &mut String) {
    match value {
        Value::String(s) => {
            let s = if s.starts_with("<div") { strip_xhtml(s) } else { s.clone() };
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(&s);
        }
        Value::Array(items) => items.iter().for_each(|v| strings(v, out)),
        Value::Object(map) => {
            for (key, v) in map {
                // Structure, not content: the type name and the long machine-made strings that
                // no one searches by words.
                if key != "resourceType" && key != "data" && key != "id" && key != "reference" && key != "system" {
                    strings(v, out);
                }
            }
        }
        _ => {}
    }
}

/// The text of an XHTML fragment: tags dropped, the common entities decoded.
fn strip_xhtml(xhtml: &str) -> String {
    let mut out = String::with_capacity(xhtml.len());
    let mut in_tag = false;
    for c in xhtml.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                out.push(' ');
            }
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&nbsp;", " ")
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
            "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\"><b>Peter</b> &amp; Paul</div>"},
            "name": [{"family": "Chalmers", "given": ["Peter", "James"]}]
        });
        let words = words(&resource);
        assert_eq!(words.narrative.split_whitespace().collect::<Vec<_>>(), ["Peter", "&", "Paul"]);
        assert!(words.content.contains("Chalmers") && words.content.contains("James"));
        assert!(!words.content.contains("Patient") && !words.content.contains("x1"));
    }
}
