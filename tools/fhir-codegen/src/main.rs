//! # fhir-codegen — vendors the FHIR R4 definitions the `fhir` crate needs
//!
//! The `fhir` crate embeds a compact extract of the HL7 R4 (4.0.1) definitions so that a user's build needs
//! no network and no `../shared`. This tool produces that extract, `crates/fhir/data/r4.json`, from the HL7
//! package files (`hl7.fhir.r4.examples@4.0.1`, CC0-1.0) kept in the shared folder beside the repository.
//!
//! ## Regenerating
//!
//! From the repository root:
//!
//! ```text
//! cargo run -p fhir-codegen -- ../shared/fhir-r4
//! ```
//!
//! The argument is the folder holding `resources.json.gz`, `types.json.gz`, `searchParams.json.gz`,
//! `valueset-expansions.json.gz` and `valuesets.json.gz` (it defaults to `../shared/fhir-r4`). The output is
//! written to `crates/fhir/data/` next to this tool's workspace, whatever the current directory. The output is
//! deterministic: running the tool twice gives byte-identical files, so a diff shows only real changes.
//!
//! ## What the extract keeps
//!
//! - `primitives`: for each primitive type, its JSON representation (`boolean`, `number` or `string`) and the
//!   spec's regex for the value (informative; the runtime checks formats with hand-written code).
//! - `types`: every StructureDefinition of kind primitive-type, complex-type and resource that is a
//!   specialization (constraint profiles such as SimpleQuantity and logical models are skipped: elements refer
//!   to their base type), with its snapshot elements reduced to path (relative to the type), min, max, isSummary (as `summary`), type
//!   codes (with target type names for Reference/canonical), contentReference and, for `code` elements with a
//!   required binding, the ValueSet url when its expansion is vendored. FHIRPath `System.*` type codes are
//!   replaced by the FHIR type named in the `structuredefinition-fhir-type` extension, except that a
//!   resource's own `id` is typed `id` (the spec's rule; the snapshot only says `System.String`).
//! - `valueSets`: the codes of every ValueSet used by such a required binding whose expansion is available,
//!   complete and at most [`MAX_VALUESET_CODES`] codes long.
//! - `searchParams`: all SearchParameters, sorted by url.
//! - `compartments`: the five CompartmentDefinitions as compartment → resource type → param codes.

mod terminology;
mod ucum;

use flate2::read::GzDecoder;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Larger required ValueSets (such as the 346 currency codes) are not worth the bytes: the validator then
/// accepts any well-formed code for that element.
const MAX_VALUESET_CODES: usize = 400;

fn main() {
    let source = std::env::args().nth(1).map(PathBuf::from).unwrap_or_else(|| repo_root().join("../shared/fhir-r4"));
    let out_dir = repo_root().join("crates/fhir/data");
    if let Err(message) = run(&source, &out_dir) {
        eprintln!("fhir-codegen: {message}");
        std::process::exit(1);
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn run(source: &Path, out_dir: &Path) -> Result<(), String> {
    let resources = read_bundle(&source.join("resources.json.gz"))?;
    let types = read_bundle(&source.join("types.json.gz"))?;
    let search = read_bundle(&source.join("searchParams.json.gz"))?;
    let expansions = read_bundle(&source.join("valueset-expansions.json.gz"))?;
    // valuesets.json.gz holds the ValueSet definitions; expansions are what the runtime needs, but reading the
    // file checks that the source folder is the complete package the README describes.
    read_bundle(&source.join("valuesets.json.gz"))?;

    let expansion_codes = expansion_codes(&expansions);
    let mut primitives = BTreeMap::new();
    let mut type_defs = BTreeMap::new();
    let mut used_value_sets = BTreeSet::new();
    for sd in types.iter().chain(resources.iter()).filter(|r| r["resourceType"] == "StructureDefinition") {
        let kind = str_of(sd, "kind");
        if !matches!(kind, "primitive-type" | "complex-type" | "resource") || sd["derivation"] == "constraint" {
            continue;
        }
        let name = str_of(sd, "name").to_string();
        if kind == "primitive-type" {
            primitives.insert(name.clone(), primitive_facts(sd)?);
        }
        let elements = reduce_elements(sd, &expansion_codes, &mut used_value_sets)?;
        let mut def = Map::new();
        def.insert("name".into(), json!(name));
        def.insert("kind".into(), json!(kind));
        def.insert("abstract".into(), json!(sd["abstract"].as_bool().unwrap_or(false)));
        if let Some(base) = sd["baseDefinition"].as_str() {
            def.insert("base".into(), json!(last_segment(base)));
        }
        def.insert("elements".into(), Value::Array(elements));
        type_defs.insert(name, Value::Object(def));
    }

    let value_sets: BTreeMap<&String, &Vec<String>> =
        used_value_sets.iter().map(|url| (url, &expansion_codes[url])).collect();
    let mut search_params: Vec<Value> =
        search.iter().filter(|r| r["resourceType"] == "SearchParameter").map(reduce_search_param).collect();
    search_params.sort_by(|a, b| str_of(a, "url").cmp(str_of(b, "url")));
    let compartments = compartments(&resources);

    let text = render(&primitives, &type_defs, &value_sets, &search_params, &compartments);
    std::fs::create_dir_all(out_dir).map_err(|e| format!("creating {}: {e}", out_dir.display()))?;
    let out = out_dir.join("r4.json");
    std::fs::write(&out, &text).map_err(|e| format!("writing {}: {e}", out.display()))?;
    std::fs::write(out_dir.join("LICENSE.md"), LICENSE).map_err(|e| format!("writing LICENSE.md: {e}"))?;
    println!(
        "wrote {} ({} bytes): {} types, {} value sets, {} search parameters, {} compartments",
        out.display(),
        text.len(),
        type_defs.len(),
        value_sets.len(),
        search_params.len(),
        compartments.len()
    );
    ucum::generate(&source.parent().unwrap_or(source).join("ucum"), out_dir)?;
    terminology::generate(source, out_dir)?;
    Ok(())
}

const LICENSE: &str = "# Source and licence of `r4.json`\n\n\
`r4.json` is generated by `tools/fhir-codegen` from the FHIR R4 (4.0.1) definitions published by HL7 in the\n\
package `hl7.fhir.r4.examples@4.0.1` (files `resources.json`, `types.json`, `search-parameters.json`,\n\
`valueset-expansions.json`, `valuesets.json`).\n\n\
Those definitions are released by HL7 under the Creative Commons CC0 1.0 Universal public domain dedication\n\
(licence `CC0-1.0`, <https://creativecommons.org/publicdomain/zero/1.0/>). FHIR® is the registered trademark of\n\
HL7 and is used with the permission of HL7.\n";

fn read_bundle(path: &Path) -> Result<Vec<Value>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("opening {}: {e}", path.display()))?;
    let bundle: Value =
        serde_json::from_reader(GzDecoder::new(file)).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let entries = bundle["entry"].as_array().ok_or_else(|| format!("{} is not a Bundle", path.display()))?;
    Ok(entries.iter().map(|e| e["resource"].clone()).collect())
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("")
}

fn last_segment(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

/// Codes of every complete, flat expansion, keyed by ValueSet url.
fn expansion_codes(expansions: &[Value]) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for vs in expansions {
        let Some(contains) = vs["expansion"]["contains"].as_array() else { continue };
        let complete = vs["expansion"]["total"].as_u64().is_none_or(|t| t as usize == contains.len());
        let flat = contains.iter().all(|c| c.get("contains").is_none() && c["code"].is_string());
        if !complete || !flat || contains.is_empty() {
            continue;
        }
        let codes: BTreeSet<String> = contains.iter().map(|c| str_of(c, "code").to_string()).collect();
        out.insert(str_of(vs, "url").to_string(), codes.into_iter().collect());
    }
    out
}

fn primitive_facts(sd: &Value) -> Result<Value, String> {
    let name = str_of(sd, "name");
    let json_kind = match name {
        "boolean" => "boolean",
        "integer" | "decimal" | "unsignedInt" | "positiveInt" => "number",
        _ => "string",
    };
    let value_path = format!("{name}.value");
    let elements = sd["snapshot"]["element"].as_array().ok_or_else(|| format!("{name}: no snapshot"))?;
    let value = elements.iter().find(|e| e["path"] == value_path.as_str());
    let regex = value
        .and_then(|v| v["type"][0]["extension"].as_array())
        .and_then(|exts| exts.iter().find(|x| str_of(x, "url").ends_with("/regex")))
        .and_then(|x| x["valueString"].as_str());
    let mut facts = Map::new();
    facts.insert("json".into(), json!(json_kind));
    if let Some(regex) = regex {
        facts.insert("regex".into(), json!(regex));
    }
    Ok(Value::Object(facts))
}

fn reduce_elements(
    sd: &Value,
    expansions: &BTreeMap<String, Vec<String>>,
    used_value_sets: &mut BTreeSet<String>,
) -> Result<Vec<Value>, String> {
    let name = str_of(sd, "name");
    let is_resource = sd["kind"] == "resource";
    let is_primitive = sd["kind"] == "primitive-type";
    let elements = sd["snapshot"]["element"].as_array().ok_or_else(|| format!("{name}: no snapshot"))?;
    let prefix = format!("{name}.");
    let mut out = Vec::new();
    for element in elements {
        let full_path = str_of(element, "path");
        let Some(path) = full_path.strip_prefix(&prefix) else { continue }; // the root element
        if is_primitive && path == "value" {
            continue; // represented by the JSON primitive itself; see `primitives`
        }
        let mut reduced = Map::new();
        reduced.insert("path".into(), json!(path));
        let min = element["min"].as_u64().unwrap_or(0);
        if min != 0 {
            reduced.insert("min".into(), json!(min));
        }
        reduced.insert("max".into(), json!(str_of(element, "max")));
        if element["isSummary"] == true {
            reduced.insert("summary".into(), json!(true));
        }
        let types: Vec<Value> = element["type"]
            .as_array()
            .map(|ts| ts.iter().map(|t| reduce_type(t, is_resource && path == "id")).collect())
            .unwrap_or_default();
        if !types.is_empty() {
            reduced.insert("type".into(), Value::Array(types));
        }
        if let Some(reference) = element["contentReference"].as_str() {
            let target = reference.trim_start_matches('#').strip_prefix(&prefix).unwrap_or(reference);
            reduced.insert("contentReference".into(), json!(target));
        }
        let binding = &element["binding"];
        let is_code = element["type"].as_array().is_some_and(|ts| ts.len() == 1 && ts[0]["code"] == "code");
        if is_code && binding["strength"] == "required" {
            let url = str_of(binding, "valueSet").split('|').next().unwrap_or("");
            if expansions.get(url).is_some_and(|codes| codes.len() <= MAX_VALUESET_CODES) {
                used_value_sets.insert(url.to_string());
                reduced.insert("valueSet".into(), json!(url));
            }
        }
        out.push(Value::Object(reduced));
    }
    Ok(out)
}

fn reduce_type(t: &Value, is_resource_id: bool) -> Value {
    let code = str_of(t, "code");
    let code = if is_resource_id {
        "id"
    } else if code.starts_with("http://hl7.org/fhirpath/System.") {
        t["extension"]
            .as_array()
            .and_then(|exts| exts.iter().find(|x| str_of(x, "url").ends_with("/structuredefinition-fhir-type")))
            .and_then(|x| x["valueUrl"].as_str())
            .unwrap_or("string")
    } else {
        code
    };
    let mut reduced = Map::new();
    reduced.insert("code".into(), json!(code));
    if let Some(targets) = t["targetProfile"].as_array() {
        let names: Vec<&str> = targets.iter().filter_map(Value::as_str).map(last_segment).collect();
        reduced.insert("targetProfile".into(), json!(names));
    }
    Value::Object(reduced)
}

fn reduce_search_param(sp: &Value) -> Value {
    let mut out = Map::new();
    for key in ["code", "url", "type"] {
        out.insert(key.into(), json!(str_of(sp, key)));
    }
    for key in ["base", "target", "comparator", "modifier"] {
        if let Some(values) = sp[key].as_array() {
            out.insert(key.into(), Value::Array(values.clone()));
        }
    }
    for key in ["expression", "multipleOr", "multipleAnd"] {
        if let Some(v) = sp.get(key) {
            out.insert(key.into(), v.clone());
        }
    }
    if let Some(components) = sp["component"].as_array() {
        let reduced: Vec<Value> = components
            .iter()
            .map(|c| json!({"definition": str_of(c, "definition"), "expression": str_of(c, "expression")}))
            .collect();
        out.insert("component".into(), Value::Array(reduced));
    }
    Value::Object(out)
}

fn compartments(resources: &[Value]) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut out = BTreeMap::new();
    for cd in resources.iter().filter(|r| r["resourceType"] == "CompartmentDefinition") {
        let mut members = BTreeMap::new();
        for entry in cd["resource"].as_array().into_iter().flatten() {
            let params: Vec<String> =
                entry["param"].as_array().into_iter().flatten().filter_map(Value::as_str).map(String::from).collect();
            if !params.is_empty() {
                members.insert(str_of(entry, "code").to_string(), params);
            }
        }
        out.insert(str_of(cd, "code").to_string(), members);
    }
    out
}

/// Pretty enough to diff (one line per element, search parameter or compartment member list), compact
/// enough to embed.
fn render(
    primitives: &BTreeMap<String, Value>,
    types: &BTreeMap<String, Value>,
    value_sets: &BTreeMap<&String, &Vec<String>>,
    search_params: &[Value],
    compartments: &BTreeMap<String, BTreeMap<String, Vec<String>>>,
) -> String {
    let j = |v: &Value| v.to_string();
    let mut s = String::from("{\"fhirVersion\":\"4.0.1\",\n\"primitives\":{\n");
    join(&mut s, primitives.iter().map(|(k, v)| format!("{}:{}", json!(k), v)));
    s.push_str("},\n\"types\":[\n");
    join(
        &mut s,
        types.values().map(|t| {
            let mut head = t.as_object().cloned().unwrap_or_default();
            let elements = head.remove("elements").unwrap_or_default();
            let mut line = j(&Value::Object(head));
            line.pop(); // reopen the object to append the elements one per line
            line.push_str(",\"elements\":[\n");
            let items: Vec<String> = elements.as_array().into_iter().flatten().map(j).collect();
            line.push_str(&items.join(",\n"));
            line.push_str("]}");
            line
        }),
    );
    s.push_str("],\n\"valueSets\":{\n");
    join(&mut s, value_sets.iter().map(|(k, v)| format!("{}:{}", json!(k), json!(v))));
    s.push_str("},\n\"searchParams\":[\n");
    join(&mut s, search_params.iter().map(j));
    s.push_str("],\n\"compartments\":{\n");
    join(
        &mut s,
        compartments.iter().map(|(compartment, members)| {
            let lines: Vec<String> = members.iter().map(|(k, v)| format!("{}:{}", json!(k), json!(v))).collect();
            format!("{}:{{\n{}}}", json!(compartment), lines.join(",\n"))
        }),
    );
    s.push_str("}}\n");
    s
}

fn join(s: &mut String, items: impl Iterator<Item = String>) {
    for (i, item) in items.enumerate() {
        let sep = if i == 0 { "" } else { ",\n" };
        let _ = write!(s, "{sep}{item}");
    }
    s.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vendored extract is exactly what this tool makes from the shared HL7 package: nobody edited
    /// it by hand, and a change to the tool comes with the regenerated file.
    #[test]
    fn vendored_definitions_are_up_to_date() {
        let out = std::env::temp_dir().join(format!("fhir-codegen-{}", std::process::id()));
        run(&repo_root().join("../shared/fhir-r4"), &out).unwrap();
        let generated = std::fs::read(out.join("r4.json")).unwrap();
        let vendored = std::fs::read(repo_root().join("crates/fhir/data/r4.json")).unwrap();
        let _ = std::fs::remove_dir_all(&out);
        assert!(generated == vendored, "crates/fhir/data/r4.json is stale: run `cargo run -p fhir-codegen`");
    }
}
