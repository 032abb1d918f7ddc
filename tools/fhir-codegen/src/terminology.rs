//! Vendors the R4 terminology that the token search modifiers `:in`, `:not-in`, `:above` and `:below` need.
//!
//! Writes `crates/fhir/data/terminology.json` from the HL7 package files `valuesets.json.gz` (ValueSet and
//! CodeSystem definitions) and `valueset-expansions.json.gz` (ValueSets with precomputed expansions):
//!
//! - `valueSets`: ValueSet canonical url → code system url → sorted codes. The codes come from the published
//!   expansion when it is complete; otherwise they are computed from `compose`, which works when every include
//!   is an explicit `concept` list, a whole CodeSystem of the package with content `complete`, a `concept`
//!   `is-a` / `descendent-of` / `is-not-a` filter on such a CodeSystem, or an import of another set that can be
//!   expanded; `exclude` is honoured. Computed sets leave abstract and inactive codes out (published
//!   expansions are taken as they are: a few list abstract codes without flagging them). A set that cannot be
//!   expanded completely (SNOMED CT and LOINC are not in the package) is left out rather than expanded
//!   partially, since a partial set would make `:not-in` match resources that are in fact in the set. Sets of
//!   more than [`MAX_CODES`] codes would be left out too, to keep the embedded file small (none is, in R4).
//! - `hierarchies`: for every complete CodeSystem of the package whose concepts have parents (nested
//!   `concept`s or `subsumedBy` / `parent` properties): code → sorted parent codes, with every code of the
//!   system listed (roots with no parents) so that the runtime can tell an unknown code from a root.
//!
//! Codes are grouped by system rather than written as `[system, code]` pairs: the same content at a fraction
//! of the size. Everything is sorted, one value set or hierarchy per line, so that a re-run is byte-identical
//! and a diff shows real changes only.

use super::{read_bundle, str_of};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;

/// Larger sets are dropped: none of the R4 core sets that can be expanded completely comes close, and an
/// accidental huge set should not bloat every binary that embeds the file.
const MAX_CODES: usize = 5000;

/// `(system, code)`.
type Coding = (String, String);
type CodeSet = BTreeSet<Coding>;

/// Writes `terminology.json` into `out_dir` and makes sure `LICENSE.md` there describes it.
pub fn generate(source: &Path, out_dir: &Path) -> Result<(), String> {
    let definitions = read_bundle(&source.join("valuesets.json.gz"))?;
    let expansions = read_bundle(&source.join("valueset-expansions.json.gz"))?;
    let package = Package::new(&definitions, &expansions);
    let value_sets = package.expand_all();
    let hierarchies = package.hierarchies();

    let text = render(&value_sets, &hierarchies);
    let out = out_dir.join("terminology.json");
    std::fs::write(&out, &text).map_err(|e| format!("writing {}: {e}", out.display()))?;
    append_license(out_dir)?;
    println!(
        "wrote {} ({} bytes): {} value sets, {} code system hierarchies",
        out.display(),
        text.len(),
        value_sets.len(),
        hierarchies.len()
    );
    Ok(())
}

/// One concept of a CodeSystem, as far as expansion and subsumption care.
#[derive(Default)]
struct Concept {
    parents: BTreeSet<String>,
    /// Neither abstract (`notSelectable`) nor inactive: may appear in an expansion.
    selectable: bool,
}

/// A CodeSystem with content `complete`: its concepts and the parent → children index of its hierarchy.
#[derive(Default)]
struct CodeSystem {
    concepts: BTreeMap<String, Concept>,
    children: BTreeMap<String, BTreeSet<String>>,
}

impl CodeSystem {
    fn new(cs: &Value) -> Self {
        let mut system = CodeSystem::default();
        system.add_concepts(&cs["concept"], None);
        for (code, concept) in &system.concepts {
            for parent in &concept.parents {
                system.children.entry(parent.clone()).or_default().insert(code.clone());
            }
        }
        system
    }

    /// Adds `concepts` (a JSON array, possibly absent) and their nested concepts, below `parent`.
    fn add_concepts(&mut self, concepts: &Value, parent: Option<&str>) {
        for c in concepts.as_array().into_iter().flatten() {
            let Some(code) = c["code"].as_str() else { continue };
            let concept = self.concepts.entry(code.to_string()).or_default();
            concept.parents.extend(parent.map(String::from));
            concept.parents.extend(property_parents(c));
            concept.selectable = is_selectable(c);
            self.add_concepts(&c["concept"], Some(code));
        }
    }

    fn has_hierarchy(&self) -> bool {
        !self.children.is_empty()
    }

    fn selectable(&self) -> BTreeSet<&str> {
        self.concepts.iter().filter(|(_, c)| c.selectable).map(|(code, _)| code.as_str()).collect()
    }

    /// `code` and all codes it subsumes, transitively (the hierarchy may be a DAG, hence the set).
    fn descendants_or_self<'s>(&'s self, code: &'s str) -> BTreeSet<&'s str> {
        let mut seen = BTreeSet::new();
        let mut pending = vec![code];
        while let Some(next) = pending.pop() {
            if seen.insert(next) {
                pending.extend(self.children.get(next).into_iter().flatten().map(String::as_str));
            }
        }
        seen
    }

    /// The selectable codes matching a compose `filter`, or None for a filter this tool does not evaluate
    /// (so that the value set is skipped rather than expanded wrongly).
    fn filter(&self, filter: &Value) -> Option<BTreeSet<&str>> {
        if filter["property"] != "concept" {
            return None;
        }
        let (value, _) = self.concepts.get_key_value(filter["value"].as_str()?)?;
        let below = self.descendants_or_self(value);
        let selectable = self.selectable();
        let matched: BTreeSet<&str> = match str_of(filter, "op") {
            "is-a" => below,
            "descendent-of" => below.into_iter().filter(|code| code != value).collect(),
            "is-not-a" => selectable.iter().copied().filter(|code| !below.contains(code)).collect(),
            _ => return None,
        };
        Some(matched.into_iter().filter(|code| selectable.contains(code)).collect())
    }
}

/// Parents given as concept properties (`subsumedBy` is the R4 standard property; `parent` is common too).
fn property_parents(concept: &Value) -> Vec<String> {
    let properties = concept["property"].as_array().into_iter().flatten();
    properties
        .filter(|p| matches!(str_of(p, "code"), "subsumedBy" | "parent"))
        .filter_map(|p| p["valueCode"].as_str().map(String::from))
        .collect()
}

/// Whether a CodeSystem concept is neither abstract nor inactive, judged by the usual concept properties.
fn is_selectable(concept: &Value) -> bool {
    let mut properties = concept["property"].as_array().into_iter().flatten();
    !properties.any(|p| match str_of(p, "code") {
        "abstract" | "notSelectable" | "inactive" => p["valueBoolean"] == true,
        "status" => matches!(str_of(p, "valueCode"), "retired" | "inactive"),
        _ => false,
    })
}

/// The package's ValueSets and complete CodeSystems, indexed by canonical url.
struct Package<'a> {
    code_systems: BTreeMap<&'a str, CodeSystem>,
    definitions: BTreeMap<&'a str, &'a Value>,
    published: BTreeMap<&'a str, CodeSet>,
}

impl<'a> Package<'a> {
    fn new(definitions: &'a [Value], expansions: &'a [Value]) -> Self {
        let of_type =
            |resources: &'a [Value], t: &'static str| resources.iter().filter(move |r| r["resourceType"] == t);
        let code_systems = of_type(definitions, "CodeSystem")
            .filter(|cs| cs["content"] == "complete")
            .map(|cs| (str_of(cs, "url"), CodeSystem::new(cs)))
            .collect();
        let published = of_type(expansions, "ValueSet")
            .filter_map(|vs| Some((str_of(vs, "url"), published_codes(&vs["expansion"])?)))
            .collect();
        let definitions = of_type(definitions, "ValueSet").map(|vs| (str_of(vs, "url"), vs)).collect();
        Package { code_systems, definitions, published }
    }

    /// Every ValueSet of the package that can be expanded completely, within [`MAX_CODES`].
    fn expand_all(&self) -> BTreeMap<String, CodeSet> {
        let urls: BTreeSet<&str> = self.definitions.keys().chain(self.published.keys()).copied().collect();
        let mut expander = Expander { package: self, in_progress: HashSet::new() };
        urls.into_iter()
            .filter_map(|url| Some((url.to_string(), expander.expand(url)?)))
            .filter(|(_, codes)| !codes.is_empty() && codes.len() <= MAX_CODES)
            .collect()
    }

    /// system → code → parents, for the complete CodeSystems that have a hierarchy.
    fn hierarchies(&self) -> BTreeMap<&'a str, BTreeMap<&str, &BTreeSet<String>>> {
        self.code_systems
            .iter()
            .filter(|(_, cs)| cs.has_hierarchy())
            .map(|(url, cs)| (*url, cs.concepts.iter().map(|(code, c)| (code.as_str(), &c.parents)).collect()))
            .collect()
    }
}

/// The codes of a published expansion, or None when it is not known to be complete: a `limitedExpansion`
/// parameter (the R4 package marks SNOMED-based expansions with it), an `unclosed` or `toocostly` extension,
/// paging, or a `total` that differs from what is listed.
fn published_codes(expansion: &Value) -> Option<CodeSet> {
    let mut parameters = expansion["parameter"].as_array().into_iter().flatten();
    let limited = parameters.any(|p| p["name"] == "limitedExpansion" && p["valueBoolean"] != false);
    let mut extensions = expansion["extension"].as_array().into_iter().flatten();
    let flagged = extensions.any(|x| {
        let url = str_of(x, "url");
        (url.ends_with("/valueset-unclosed") || url.ends_with("/valueset-toocostly")) && x["valueBoolean"] != false
    });
    let paged = expansion["offset"].as_u64().is_some_and(|offset| offset > 0);
    if limited || flagged || paged {
        return None;
    }
    let mut codes = CodeSet::new();
    let listed = flatten_contains(&expansion["contains"], &mut codes)?;
    let total_matches = expansion["total"].as_u64().is_none_or(|total| total as usize == listed);
    (total_matches && !codes.is_empty()).then_some(codes)
}

/// Collects the selectable codes of a (possibly nested) `contains` list into `codes`; returns how many
/// entries had a code, for comparison with `total`, or None when an entry with a code lacks its system.
fn flatten_contains(contains: &Value, codes: &mut CodeSet) -> Option<usize> {
    let mut listed = 0;
    for entry in contains.as_array().into_iter().flatten() {
        if let Some(code) = entry["code"].as_str() {
            listed += 1;
            let system = entry["system"].as_str()?;
            if entry["abstract"] != true && entry["inactive"] != true {
                codes.insert((system.to_string(), code.to_string()));
            }
        }
        listed += flatten_contains(&entry["contains"], codes)?;
    }
    Some(listed)
}

/// Expands value sets by url, following imports; `in_progress` breaks import cycles.
struct Expander<'p, 'a> {
    package: &'p Package<'a>,
    in_progress: HashSet<String>,
}

impl Expander<'_, '_> {
    fn expand(&mut self, url: &str) -> Option<CodeSet> {
        let url = url.split('|').next().unwrap_or(url);
        if let Some(codes) = self.package.published.get(url) {
            return Some(codes.clone());
        }
        let definition = *self.package.definitions.get(url)?;
        if !self.in_progress.insert(url.to_string()) {
            return None;
        }
        let codes = self.compose(&definition["compose"]);
        self.in_progress.remove(url);
        codes
    }

    /// The union of the includes minus the union of the excludes; None if any of them cannot be evaluated.
    fn compose(&mut self, compose: &Value) -> Option<CodeSet> {
        let mut codes = CodeSet::new();
        for include in compose["include"].as_array()? {
            codes.extend(self.component(include)?);
        }
        for exclude in compose["exclude"].as_array().into_iter().flatten() {
            for coding in self.component(exclude)? {
                codes.remove(&coding);
            }
        }
        Some(codes)
    }

    /// One include or exclude: its system part and its imported value sets, intersected (the R4 rule).
    fn component(&mut self, component: &Value) -> Option<CodeSet> {
        let mut parts = Vec::new();
        if let Some(system) = component["system"].as_str() {
            parts.push(self.system_part(system, component)?);
        }
        for import in component["valueSet"].as_array().into_iter().flatten() {
            parts.push(self.expand(import.as_str()?)?);
        }
        let mut parts = parts.into_iter();
        let first = parts.next()?;
        Some(parts.fold(first, |acc, part| acc.intersection(&part).cloned().collect()))
    }

    /// The codes a component takes from `system`: its explicit concept list, else the codes of the (complete)
    /// CodeSystem that pass all its filters.
    fn system_part(&self, system: &str, component: &Value) -> Option<CodeSet> {
        let coding = |code: &str| (system.to_string(), code.to_string());
        if let Some(concepts) = component["concept"].as_array() {
            if component.get("filter").is_some() {
                return None; // not allowed by R4 (vsd-3): the intent is unclear
            }
            return concepts.iter().map(|c| c["code"].as_str().map(coding)).collect();
        }
        let code_system = self.package.code_systems.get(system)?;
        let mut codes = code_system.selectable();
        for filter in component["filter"].as_array().into_iter().flatten() {
            let matched = code_system.filter(filter)?;
            codes.retain(|code| matched.contains(code));
        }
        Some(codes.into_iter().map(coding).collect())
    }
}

/// Compact JSON, one value set or hierarchy per line.
fn render(
    value_sets: &BTreeMap<String, CodeSet>,
    hierarchies: &BTreeMap<&str, BTreeMap<&str, &BTreeSet<String>>>,
) -> String {
    let value_set_lines = value_sets.iter().map(|(url, codes)| {
        let mut by_system: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (system, code) in codes {
            by_system.entry(system).or_default().push(code);
        }
        format!("{}:{}", json!(url), json!(by_system))
    });
    let hierarchy_lines = hierarchies.iter().map(|(system, parents)| format!("{}:{}", json!(system), json!(parents)));
    format!(
        "{{\"valueSets\":{{\n{}\n}},\n\"hierarchies\":{{\n{}\n}}}}\n",
        value_set_lines.collect::<Vec<_>>().join(",\n"),
        hierarchy_lines.collect::<Vec<_>>().join(",\n")
    )
}

const LICENSE_HEADING: &str = "# Source and licence of `terminology.json`";

const LICENSE: &str =
    "`terminology.json` is generated by `tools/fhir-codegen` (module `terminology`) from the same HL7\n\
package `hl7.fhir.r4.examples@4.0.1` (files `valuesets.json`, `valueset-expansions.json`), released under\n\
CC0-1.0 as above. It holds the codes of the R4 ValueSets that can be expanded completely from that package and\n\
the concept hierarchies of its CodeSystems. Some code systems referenced by R4 ValueSets, such as SNOMED CT and\n\
LOINC, are not part of the package: ValueSets that draw on them by filter or as a whole are not expanded.\n";

/// Puts the `terminology.json` section at the end of `LICENSE.md`, replacing an earlier copy of it: the main
/// step rewrites that file before this one runs, but a second run of this step alone must not add a copy.
fn append_license(out_dir: &Path) -> Result<(), String> {
    let path = out_dir.join("LICENSE.md");
    let mut text = std::fs::read_to_string(&path).unwrap_or_default();
    if let Some(start) = text.find(LICENSE_HEADING) {
        // The section runs up to the next top-level heading, or to the end of the file.
        let end = text[start..].find("\n# ").map_or(text.len(), |i| start + i + 1);
        text.replace_range(start..end, "");
    }
    let kept = text.trim_end();
    let separator = if kept.is_empty() { "" } else { "\n\n" };
    let text = format!("{kept}{separator}{LICENSE_HEADING}\n\n{LICENSE}");
    std::fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(system: &str, list: &[&str]) -> CodeSet {
        list.iter().map(|code| (system.to_string(), code.to_string())).collect()
    }

    /// A small package: a CodeSystem `urn:cs` with `a` > (`b` > `c`, `d` (abstract)) and `e` (inactive).
    fn sample() -> Vec<Value> {
        vec![json!({"resourceType": "CodeSystem", "url": "urn:cs", "content": "complete", "concept": [
            {"code": "a", "concept": [
                {"code": "b", "concept": [{"code": "c"}]},
                {"code": "d", "property": [{"code": "notSelectable", "valueBoolean": true}]}]},
            {"code": "e", "property": [{"code": "status", "valueCode": "retired"}]},
            {"code": "f", "property": [{"code": "subsumedBy", "valueCode": "e"}]}]})]
    }

    fn expand(definitions: &[Value], expansions: &[Value], url: &str) -> Option<CodeSet> {
        let package = Package::new(definitions, expansions);
        let mut expander = Expander { package: &package, in_progress: HashSet::new() };
        expander.expand(url)
    }

    fn value_set(url: &str, compose: Value) -> Value {
        json!({"resourceType": "ValueSet", "url": url, "compose": compose})
    }

    #[test]
    fn hierarchy_from_nesting_and_properties() {
        let cs = CodeSystem::new(&sample()[0]);
        assert_eq!(cs.descendants_or_self("a"), BTreeSet::from(["a", "b", "c", "d"]));
        assert_eq!(cs.descendants_or_self("e"), BTreeSet::from(["e", "f"]));
        assert_eq!(cs.selectable(), BTreeSet::from(["a", "b", "c", "f"]));
    }

    #[test]
    fn compose_filters_excludes_and_imports() {
        let mut defs = sample();
        let filter = |op: &str, value: &str| {
            json!({"include": [{"system": "urn:cs",
            "filter": [{"property": "concept", "op": op, "value": value}]}]})
        };
        defs.push(value_set("urn:isa", filter("is-a", "a")));
        defs.push(value_set("urn:desc", filter("descendent-of", "b")));
        defs.push(value_set("urn:not", filter("is-not-a", "b")));
        defs.push(value_set(
            "urn:all-but-c",
            json!({"include": [{"system": "urn:cs"}],
            "exclude": [{"system": "urn:cs", "concept": [{"code": "c"}]}]}),
        ));
        defs.push(value_set("urn:both", json!({"include": [{"valueSet": ["urn:isa", "urn:all-but-c|1.0"]}]})));
        let expand = |url| expand(&defs, &[], url);
        assert_eq!(expand("urn:isa"), Some(codes("urn:cs", &["a", "b", "c"])));
        assert_eq!(expand("urn:desc"), Some(codes("urn:cs", &["c"])));
        assert_eq!(expand("urn:not"), Some(codes("urn:cs", &["a", "f"])));
        assert_eq!(expand("urn:all-but-c"), Some(codes("urn:cs", &["a", "b", "f"])));
        assert_eq!(expand("urn:both"), Some(codes("urn:cs", &["a", "b"])));
    }

    #[test]
    fn incomplete_compose_is_not_expanded() {
        let mut defs = sample();
        defs.push(value_set("urn:external", json!({"include": [{"system": "http://snomed.info/sct"}]})));
        defs.push(value_set(
            "urn:other-filter",
            json!({"include": [{"system": "urn:cs",
            "filter": [{"property": "status", "op": "=", "value": "active"}]}]}),
        ));
        defs.push(value_set(
            "urn:unknown-code",
            json!({"include": [{"system": "urn:cs",
            "filter": [{"property": "concept", "op": "is-a", "value": "zz"}]}]}),
        ));
        defs.push(value_set(
            "urn:imports-external",
            json!({"include": [{"system": "urn:cs"},
            {"valueSet": ["urn:external"]}]}),
        ));
        defs.push(value_set("urn:cycle", json!({"include": [{"valueSet": ["urn:cycle"]}]})));
        for url in ["urn:external", "urn:other-filter", "urn:unknown-code", "urn:imports-external", "urn:cycle"] {
            assert_eq!(expand(&defs, &[], url), None, "{url}");
        }
    }

    #[test]
    fn published_expansion_only_when_complete() {
        let defs = [value_set("urn:vs", json!({"include": [{"system": "urn:x", "concept": [{"code": "1"}]}]}))];
        let contains = json!([{"system": "urn:x", "code": "2", "contains": [{"system": "urn:x", "code": "3"},
            {"system": "urn:x", "code": "4", "abstract": true}]}]);
        let published =
            |expansion: Value| [json!({"resourceType": "ValueSet", "url": "urn:vs", "expansion": expansion})];
        let complete = published(json!({"total": 3, "contains": contains}));
        assert_eq!(expand(&defs, &complete, "urn:vs"), Some(codes("urn:x", &["2", "3"])));
        // Any sign of a partial expansion falls back to the definition.
        let partial = [
            json!({"total": 10, "contains": contains}),
            json!({"parameter": [{"name": "limitedExpansion", "valueString": "-1"}], "contains": contains}),
            json!({"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/valueset-unclosed",
                "valueBoolean": true}], "contains": contains}),
        ];
        for expansion in partial {
            assert_eq!(expand(&defs, &published(expansion), "urn:vs"), Some(codes("urn:x", &["1"])));
        }
    }

    /// Computing from `compose` gives what HL7 published, wherever both are possible: a check of the compose
    /// evaluation against real data. The only allowed difference: published expansions list abstract codes
    /// (without flagging them) that the compose evaluation leaves out.
    #[test]
    fn compose_agrees_with_published_expansions() {
        let source = crate::repo_root().join("../shared/fhir-r4");
        let definitions = read_bundle(&source.join("valuesets.json.gz")).unwrap();
        let expansions = read_bundle(&source.join("valueset-expansions.json.gz")).unwrap();
        let package = Package::new(&definitions, &expansions);
        let compose_only = Package::new(&definitions, &[]);
        let mut expander = Expander { package: &compose_only, in_progress: HashSet::new() };
        let mut compared = 0;
        for (url, published) in &package.published {
            let Some(computed) = expander.expand(url) else { continue };
            compared += 1;
            assert!(computed.is_subset(published), "{url}: {:?}", computed.difference(published).next());
            for (system, code) in published.difference(&computed) {
                let concept = compose_only.code_systems.get(system.as_str()).and_then(|cs| cs.concepts.get(code));
                assert!(concept.is_some_and(|c| !c.selectable), "{url}: {system}|{code} missing");
            }
        }
        assert!(compared > 400, "only {compared} value sets compared");
    }

    /// The vendored file is exactly what this step makes from the shared HL7 package.
    #[test]
    fn vendored_terminology_is_up_to_date() {
        let out = std::env::temp_dir().join(format!("fhir-codegen-terminology-{}", std::process::id()));
        std::fs::create_dir_all(&out).unwrap();
        generate(&crate::repo_root().join("../shared/fhir-r4"), &out).unwrap();
        let generated = std::fs::read(out.join("terminology.json")).unwrap();
        let vendored = std::fs::read(crate::repo_root().join("crates/fhir/data/terminology.json")).unwrap();
        let _ = std::fs::remove_dir_all(&out);
        assert!(generated == vendored, "crates/fhir/data/terminology.json is stale: run `cargo run -p fhir-codegen`");
    }

    #[test]
    fn license_section_is_added_once_at_the_end() {
        let out = std::env::temp_dir().join(format!("fhir-codegen-terminology-license-{}", std::process::id()));
        std::fs::create_dir_all(&out).unwrap();
        let path = out.join("LICENSE.md");
        std::fs::write(&path, format!("# A\n\ntext\n\n{LICENSE_HEADING}\n\nold\n\n# B\n\nmore\n")).unwrap();
        append_license(&out).unwrap();
        append_license(&out).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_dir_all(&out);
        assert_eq!(text, format!("# A\n\ntext\n\n# B\n\nmore\n\n{LICENSE_HEADING}\n\n{LICENSE}"));
    }
}
