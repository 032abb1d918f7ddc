//! Vendors the UCUM units table: `ucum-essence.xml` (Regenstrief Institute) → `crates/fhir/data/ucum.json`.
//!
//! The `fhir` crate canonicalises quantities for search (`fhir::ucum`); it needs the prefixes, the base units
//! and, for every other unit, its definition as a UCUM expression times a factor. Names, print symbols and
//! classes are dropped: only what a conversion needs is kept. The extract has one entry per line with sorted
//! keys, so regenerating gives byte-identical output and a diff shows only real changes.
//!
//! Kept per defined unit: `unit` (the defining expression, e.g. `kg.m/s2`), `value` (its factor, written as the
//! table writes it, e.g. `980665e-5`, so no digits are lost), `metric` (whether prefixes may apply) and, when
//! set, `arbitrary` (units such as `[iU]` that cannot be converted) and `special` (the name of the conversion
//! function of a non-ratio unit such as `Cel`, `[degF]` or `[pH]`; `unit` and `value` are then the function's
//! argument, e.g. `degF` of `5 K/9`). Which special functions are supported is the runtime's business.

use quick_xml::events::{BytesStart, Event};
use serde_json::{json, Number, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// Reads `<ucum_dir>/ucum-essence.xml`, writes `<out_dir>/ucum.json` and adds the UCUM section to
/// `<out_dir>/LICENSE.md` (which the caller has just written for `r4.json`).
pub fn generate(ucum_dir: &Path, out_dir: &Path) -> Result<(), String> {
    let path = ucum_dir.join("ucum-essence.xml");
    let xml = std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let table = parse(&xml).map_err(|e| format!("{}: {e}", path.display()))?;
    let text = render(&table);
    let out = out_dir.join("ucum.json");
    std::fs::write(&out, &text).map_err(|e| format!("writing {}: {e}", out.display()))?;
    add_license_section(&out_dir.join("LICENSE.md"), &table.version)?;
    println!(
        "wrote {} ({} bytes): {} prefixes, {} base units, {} units",
        out.display(),
        text.len(),
        table.prefixes.len(),
        table.base_units.len(),
        table.units.len()
    );
    Ok(())
}

struct Table {
    version: String,
    revision_date: String,
    /// Prefix code → factor (as a JSON number).
    prefixes: BTreeMap<String, Number>,
    /// Base unit code → dimension letter (`m` → `L`).
    base_units: BTreeMap<String, String>,
    /// Unit code → reduced definition (see the module doc).
    units: BTreeMap<String, BTreeMap<&'static str, Value>>,
}

/// What has been read of the `<prefix>`, `<base-unit>` or `<unit>` element being parsed.
#[derive(Default)]
struct Entry {
    kind: String,
    attrs: BTreeMap<String, String>,
    /// Attributes of the `<value>` child.
    value: BTreeMap<String, String>,
    /// Attributes of the `<function>` child of `<value>` (special units only).
    function: BTreeMap<String, String>,
}

fn parse(xml: &str) -> Result<Table, String> {
    let mut table = Table {
        version: String::new(),
        revision_date: String::new(),
        prefixes: BTreeMap::new(),
        base_units: BTreeMap::new(),
        units: BTreeMap::new(),
    };
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut entry: Option<Entry> = None;
    loop {
        let event = reader.read_event().map_err(|e| format!("XML error at byte {}: {e}", reader.buffer_position()))?;
        match &event {
            Event::Start(e) | Event::Empty(e) => {
                let name = e.local_name().as_ref().to_string();
                let attrs = attributes(e)?;
                match name.as_str() {
                    "root" => {
                        table.version = attrs.get("version").cloned().unwrap_or_default();
                        table.revision_date = attrs.get("revision-date").cloned().unwrap_or_default();
                    }
                    "prefix" | "base-unit" | "unit" => {
                        entry = Some(Entry { kind: name, attrs, ..Entry::default() });
                        if matches!(event, Event::Empty(_)) {
                            return Err("empty unit or prefix element".into());
                        }
                    }
                    "value" => {
                        if let Some(entry) = entry.as_mut() {
                            entry.value = attrs;
                        }
                    }
                    "function" => {
                        if let Some(entry) = entry.as_mut() {
                            entry.function = attrs;
                        }
                    }
                    _ => {}
                }
            }
            Event::End(e) => {
                let name = e.local_name();
                if matches!(name.as_ref(), "prefix" | "base-unit" | "unit") {
                    let done = entry.take().ok_or("unbalanced elements")?;
                    add_entry(&mut table, done)?;
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if table.prefixes.is_empty() || table.base_units.is_empty() || table.units.is_empty() {
        return Err("no prefixes, base units or units: not a UCUM essence file".into());
    }
    Ok(table)
}

fn attributes(e: &BytesStart<'_>) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for a in e.attributes() {
        let a = a.map_err(|e| format!("bad attribute: {e}"))?;
        let value = a.normalized_value(quick_xml::XmlVersion::default()).map_err(|e| format!("bad attribute: {e}"))?;
        out.insert(a.key.as_ref().to_string(), value.into_owned());
    }
    Ok(out)
}

fn add_entry(table: &mut Table, entry: Entry) -> Result<(), String> {
    let code = entry.attrs.get("Code").cloned().ok_or_else(|| format!("a {} without a Code", entry.kind))?;
    let attr = |map: &BTreeMap<String, String>, key: &str| {
        map.get(key).cloned().ok_or_else(|| format!("{code}: no {key} attribute"))
    };
    match entry.kind.as_str() {
        "prefix" => {
            table.prefixes.insert(code.clone(), number(&code, &attr(&entry.value, "value")?)?);
        }
        "base-unit" => {
            table.base_units.insert(code.clone(), attr(&entry.attrs, "dim")?);
        }
        _ => {
            let flag = |key: &str| entry.attrs.get(key).is_some_and(|v| v == "yes");
            let mut def = BTreeMap::new();
            def.insert("metric", json!(flag("isMetric")));
            if flag("isArbitrary") {
                def.insert("arbitrary", json!(true));
            }
            if flag("isSpecial") {
                // The `<value>`'s own Unit (e.g. `degf(5 K/9)`) is not a UCUM expression: the function's
                // name, value and Unit attributes say the same thing in parts.
                def.insert("special", json!(attr(&entry.function, "name")?));
                def.insert("unit", json!(attr(&entry.function, "Unit")?));
                def.insert("value", Value::Number(number(&code, &attr(&entry.function, "value")?)?));
            } else {
                def.insert("unit", json!(attr(&entry.value, "Unit")?));
                def.insert("value", Value::Number(number(&code, &attr(&entry.value, "value")?)?));
            }
            if table.units.insert(code.clone(), def).is_some() {
                return Err(format!("unit {code} defined twice"));
            }
        }
    }
    Ok(())
}

/// The factor with every digit the table gives (π has 64): with serde_json's `arbitrary_precision` the number
/// keeps its text, up to the normalisation of a positive exponent (`1e3` is written `1e+3`).
fn number(code: &str, text: &str) -> Result<Number, String> {
    let parsed: Number = text.parse().map_err(|_| format!("{code}: value {text:?} is not a number"))?;
    if parsed.as_f64().is_none_or(|f| !f.is_finite() || f == 0.0) {
        return Err(format!("{code}: value {text:?} is not a usable factor"));
    }
    Ok(parsed)
}

fn render(table: &Table) -> String {
    let mut s = String::from("{");
    let _ = writeln!(s, "\"version\":{},\"revisionDate\":{},", json!(table.version), json!(table.revision_date));
    s.push_str("\"prefixes\":{\n");
    lines(&mut s, table.prefixes.iter().map(|(k, v)| format!("{}:{v}", json!(k))));
    s.push_str("},\n\"baseUnits\":{\n");
    lines(&mut s, table.base_units.iter().map(|(k, v)| format!("{}:{}", json!(k), json!(v))));
    s.push_str("},\n\"units\":{\n");
    lines(
        &mut s,
        table.units.iter().map(|(code, def)| {
            // The map is built in sorted key order, so the output is sorted whether or not serde_json keeps
            // insertion order (it does in this workspace: `preserve_order`).
            let fields: Vec<String> = def.iter().map(|(k, v)| format!("{}:{v}", json!(k))).collect();
            format!("{}:{{{}}}", json!(code), fields.join(","))
        }),
    );
    s.push_str("}}\n");
    s
}

fn lines(s: &mut String, items: impl Iterator<Item = String>) {
    let items: Vec<String> = items.collect();
    s.push_str(&items.join(",\n"));
    s.push('\n');
}

const LICENSE_HEADING: &str = "# Source and licence of `ucum.json`";

/// Appends the UCUM section to LICENSE.md, replacing it if already there, so running the tool twice does not
/// repeat it.
fn add_license_section(path: &Path, version: &str) -> Result<(), String> {
    let current = std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let mut text = match current.find(LICENSE_HEADING) {
        Some(start) => {
            let rest = &current[start + LICENSE_HEADING.len()..];
            let end = rest.find("\n# ").map(|i| start + LICENSE_HEADING.len() + i + 1);
            let mut kept = current[..start].to_string();
            if let Some(end) = end {
                kept.push_str(&current[end..]);
            }
            kept
        }
        None => current,
    };
    if !text.is_empty() && !text.ends_with("\n\n") {
        text.push('\n');
    }
    text.push_str(&license_section(version));
    std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))
}

fn license_section(version: &str) -> String {
    format!(
        "{LICENSE_HEADING}\n\n\
`ucum.json` is generated by `tools/fhir-codegen` (`src/ucum.rs`) from `ucum-essence.xml`, version {version}, the\n\
machine-readable table of the Unified Code for Units of Measure (UCUM). It keeps the prefixes, base units and\n\
unit definitions of that table, without names or print symbols.\n\n\
The UCUM codes, UCUM table and UCUM Specification are copyright © Regenstrief Institute, Inc. and The UCUM\n\
Organization, Indianapolis, IN. All rights reserved. They may be used, copied and distributed without fee\n\
under the UCUM Copyright Notice and License, <https://ucum.org/license>, which asks for this notice:\n\n\
> This product includes all or a portion of the UCUM table, UCUM codes, and UCUM definitions or is derived from\n\
> it, subject to a license from Regenstrief Institute, Inc. and The UCUM Organization. Your use of the UCUM\n\
> table, UCUM codes, UCUM definitions also is subject to this license, a copy of which is available at\n\
> <https://ucum.org/license>. The current complete UCUM table and UCUM Specification are available for\n\
> download at <https://ucum.org>.\n\n\
`ucum-essence.xml` itself carries no licence text in its header.\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vendored extract is exactly what this tool makes from the shared UCUM table.
    #[test]
    fn vendored_ucum_is_up_to_date() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let out = std::env::temp_dir().join(format!("fhir-codegen-ucum-{}", std::process::id()));
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("LICENSE.md"), "# Source and licence of `r4.json`\n\ntext\n").unwrap();
        generate(&root.join("../shared/ucum"), &out).unwrap();
        // Twice: the licence section is replaced, not repeated.
        generate(&root.join("../shared/ucum"), &out).unwrap();
        let generated = std::fs::read(out.join("ucum.json")).unwrap();
        let license = std::fs::read_to_string(out.join("LICENSE.md")).unwrap();
        let vendored = std::fs::read(root.join("crates/fhir/data/ucum.json")).unwrap();
        let _ = std::fs::remove_dir_all(&out);
        assert!(generated == vendored, "crates/fhir/data/ucum.json is stale: run `cargo run -p fhir-codegen`");
        assert_eq!(license.matches(LICENSE_HEADING).count(), 1);
        assert!(license.starts_with("# Source and licence of `r4.json`\n\ntext\n\n# Source and licence of `ucum"));
    }

    #[test]
    fn reads_prefixes_base_units_and_special_units() {
        let xml = r#"<root xmlns="http://unitsofmeasure.org/ucum-essence" version="9" revision-date="d">
            <prefix Code="k" CODE="K"><name>kilo</name><value value="1e3">1000</value></prefix>
            <base-unit Code="K" CODE="K" dim="C"><name>kelvin</name></base-unit>
            <unit Code="Cel" CODE="CEL" isMetric="yes" isSpecial="yes" class="si">
              <value Unit="cel(1 K)" UNIT="CEL(1 K)"><function name="Cel" value="1" Unit="K"/></value>
            </unit>
            <unit Code="[iU]" CODE="[IU]" isMetric="yes" isArbitrary="yes"><value Unit="1" value="1">1</value></unit>
        </root>"#;
        let text = render(&parse(xml).unwrap());
        assert_eq!(
            text,
            "{\"version\":\"9\",\"revisionDate\":\"d\",\n\"prefixes\":{\n\"k\":1e+3\n},\n\"baseUnits\":{\n\
             \"K\":\"C\"\n},\n\"units\":{\n\
             \"Cel\":{\"metric\":true,\"special\":\"Cel\",\"unit\":\"K\",\"value\":1},\n\
             \"[iU]\":{\"arbitrary\":true,\"metric\":true,\"unit\":\"1\",\"value\":1}\n}}\n"
        );
    }
}
