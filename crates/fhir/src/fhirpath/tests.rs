//! Unit tests of the FHIRPath engine, one behaviour each, grouped by operator family. The official suite
//! (`tests/fhirpath_suite.rs`) covers breadth; these pin down the cases search indexing and patch rely on.

use super::*;
use serde_json::json;

fn patient() -> Value {
    json!({
        "resourceType": "Patient",
        "id": "p1",
        "active": true,
        "name": [
            {"use": "official", "family": "Chalmers", "given": ["Peter", "James"]},
            {"use": "usual", "given": [null, "Jim"], "_given": [{"extension": [{"url": "u", "valueString": "x"}]}, null]}
        ],
        "birthDate": "1974-12-25",
        "_birthDate": {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime", "valueDateTime": "1974-12-25T14:35:45-05:00"}]},
        "deceasedBoolean": false,
        "managingOrganization": {"reference": "Organization/1"},
        "generalPractitioner": [{"reference": "#pr1"}],
        "contained": [{"resourceType": "Practitioner", "id": "pr1", "name": [{"family": "Who"}]}]
    })
}

fn observation() -> Value {
    // Parsed from text so that `185.50` keeps its trailing zero (`json!` would go through f64).
    serde_json::from_str(
        r#"{"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
            "subject": {"reference": "Patient/example"},
            "valueQuantity": {"value": 185.50, "unit": "lbs", "system": "http://unitsofmeasure.org", "code": "[lb_av]"}}"#,
    )
    .unwrap()
}

/// The results' `toString()` forms; errors as `ERR <kind>`.
fn run(expr: &str, resource: &Value) -> Vec<String> {
    let e = parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
    match evaluate(&e, resource, &Context::new()) {
        Ok(items) => items.iter().map(|i| i.to_string()).collect(),
        Err(e) => vec![format!("ERR {:?}", e.kind)],
    }
}

fn one(expr: &str) -> String {
    let r = run(expr, &json!({}));
    assert_eq!(r.len(), 1, "{expr} gave {r:?}");
    r.into_iter().next().unwrap()
}

fn empty(expr: &str) -> bool {
    run(expr, &json!({})).is_empty()
}

// --- parser ---

#[test]
fn precedence_follows_the_grammar() {
    assert_eq!(one("1 + 2 * 3 + 4"), "11");
    assert_eq!(one("(1 | 1 is Integer).count()"), "2"); // `is` binds tighter than `|`
    assert_eq!(one("true and '0215' in ('0215' | '0216')"), "true");
    assert_eq!(one("-(2 + 3)"), "-5");
    assert_eq!(run("-1.convertsToInteger()", &json!({})), ["ERR Execution"]); // -(true)
}

#[test]
fn parse_errors_report_a_position() {
    assert_eq!(parse("2 + 2 /").unwrap_err().position, 7);
    assert!(parse("2 + /* open").is_err());
    assert!(parse("name.given(").is_err());
    assert!(parse("name.noSuchFunction()").unwrap_err().message.contains("noSuchFunction"));
    assert!(parse("substring()").unwrap_err().message.contains("arguments"));
    assert!(parse("@T14:00Z").is_err()); // a Time has no zone
}

#[test]
fn literals() {
    assert_eq!(one("'a\\tb\\u0041'"), "a\tbA");
    assert_eq!(one("1.50"), "1.50");
    assert_eq!(one("@2015-02-04T14:34:28.123+10:00"), "2015-02-04T14:34:28.123+10:00");
    assert_eq!(one("@T14:34"), "14:34");
    assert_eq!(one("4 'mg'"), "4 'mg'");
    assert_eq!(one("4 days"), "4 days");
    assert_eq!(one("@2015T.is(DateTime)"), "true");
    assert_eq!(one("%`vs-administrative-gender`"), "http://hl7.org/fhir/ValueSet/administrative-gender");
    assert!(empty("{}"));
}

#[test]
fn expressions_are_shareable() {
    fn assert_send_sync<T: Send + Sync + Clone + std::fmt::Debug>() {}
    assert_send_sync::<Expression>();
}

// --- navigation and types ---

#[test]
fn navigation_borrows_the_resource_and_types_nodes() {
    let p = patient();
    let e = parse("Patient.name.given").unwrap();
    let items = evaluate(&e, &p, &Context::new()).unwrap();
    assert_eq!(items.len(), 4); // Peter, James, the extension-only given, Jim
    let Item::Node(first) = &items[0] else { panic!() };
    assert!(std::ptr::eq(first.value(), &p["name"][0]["given"][0]));
    assert_eq!(first.type_name(), "string");
    let Item::Node(ext_only) = &items[2] else { panic!() };
    assert!(ext_only.value().is_null());
    assert!(ext_only.extension_object().is_some());
}

#[test]
fn primitives_carry_their_extensions() {
    let p = patient();
    assert_eq!(run("Patient.name.given.select($this.hasValue())", &p), ["true", "true", "false", "true"]);
    assert_eq!(
        run("birthDate.extension('http://hl7.org/fhir/StructureDefinition/patient-birthTime').exists()", &p),
        ["true"]
    );
    assert_eq!(run("name[1].given.extension.url", &p), ["u"]);
}

#[test]
fn choice_elements_are_reached_by_base_name() {
    let o = observation();
    assert_eq!(run("Observation.value.unit", &o), ["lbs"]);
    assert_eq!(run("Observation.value.is(Quantity)", &o), ["true"]);
    assert_eq!(run("(Observation.value as Quantity).value", &o), ["185.50"]);
    assert_eq!(run("Observation.value.as(Quantity).code", &o), ["[lb_av]"]);
    assert!(run("Observation.value.ofType(CodeableConcept)", &o).is_empty());
    assert_eq!(run("Patient.deceased", &patient()), ["false"]);
    // Lenient mode reads the JSON name too; strict mode rejects it.
    assert_eq!(run("Observation.valueQuantity.unit", &o), ["lbs"]);
    let strict = evaluate(&parse("Observation.valueQuantity").unwrap(), &o, &Context::new().strict(true));
    assert_eq!(strict.unwrap_err().kind, EvalErrorKind::Semantic);
}

#[test]
fn type_qualifiers_filter_the_context() {
    let p = patient();
    assert_eq!(run("Patient.id", &p), ["p1"]);
    assert_eq!(run("Resource.id", &p), ["p1"]);
    assert!(run("Observation.status | Encounter.status", &p).is_empty());
    let strict = evaluate(&parse("Encounter.status").unwrap(), &p, &Context::new().strict(true));
    assert!(strict.is_err());
}

#[test]
fn is_as_and_of_type() {
    let p = patient();
    assert_eq!(run("Patient.active.is(boolean)", &p), ["true"]);
    assert_eq!(run("Patient.active.is(Boolean)", &p), ["false"]); // FHIR boolean is not System.Boolean
    assert_eq!(run("Patient.name.first().family is string", &p), ["true"]);
    assert_eq!(run("1.is(Integer)", &p), ["true"]);
    assert_eq!(run("Patient.contained.ofType(Practitioner).id", &p), ["pr1"]);
    assert_eq!(run("Patient.is(DomainResource)", &p), ["true"]);
    assert!(parse("Patient.active.as(string1)").unwrap_err().message.contains("unknown type"));
}

#[test]
fn resolve_finds_contained_resources_and_types_references() {
    let p = patient();
    assert_eq!(run("Patient.generalPractitioner.resolve().name.family", &p), ["Who"]);
    assert_eq!(run("Patient.managingOrganization.resolve() is Organization", &p), ["true"]);
    assert_eq!(run("Patient.managingOrganization.where(resolve() is Patient).exists()", &p), ["false"]);
    let target = json!({"resourceType": "Organization", "id": "1", "name": "Acme"});
    let resolver = |r: &str| (r == "Organization/1").then_some(&target);
    let ctx = Context::new().with_resolver(&resolver);
    let e = parse("managingOrganization.resolve().name").unwrap();
    assert_eq!(evaluate(&e, &p, &ctx).unwrap()[0].to_string(), "Acme");
}

#[test]
fn bundle_entries_are_typed_by_resource_type() {
    let bundle = json!({"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": "urn:uuid:1", "resource": patient()},
        {"resource": observation()}
    ]});
    assert_eq!(run("Bundle.entry.resource.where(resourceType='Patient').id", &bundle), ["p1"]);
    assert_eq!(run("Bundle.entry.resource.ofType(Observation).value.unit", &bundle), ["lbs"]);
    assert_eq!(run("Bundle.entry.resource.ofType(Observation).subject.resolve() is Patient", &bundle), ["true"]);
}

// --- collections ---

#[test]
fn filtering_and_projection() {
    let p = patient();
    assert_eq!(run("name.where(use = 'usual').given", &p), ["", "Jim"]);
    assert_eq!(run("name.select(given.first())", &p), ["Peter", ""]);
    assert_eq!(run("name.exists(family = 'Chalmers')", &p), ["true"]);
    assert_eq!(run("name.all(given.exists())", &p), ["true"]);
    assert_eq!(run("(1 | 2 | 3).where($this > 1 and $index < 2)", &p), ["2"]);
    assert_eq!(run("(1|2|3).aggregate($total + $this, 10)", &p), ["16"]);
    assert_eq!(run("name.given.count()", &p), ["4"]);
}

#[test]
fn subsetting_and_combining() {
    assert_eq!(one("(1 | 2 | 3).skip(1).first()"), "2");
    assert_eq!(one("(1 | 2 | 3).take(2).last()"), "2");
    assert_eq!(one("(1 | 2 | 3).tail().count()"), "2");
    assert_eq!(one("(1 | 2).combine(2).count()"), "3");
    assert_eq!(one("(1 | 2 | 3).intersect(2 | 4)"), "2");
    assert_eq!(one("(1 | 2 | 3).exclude(1 | 3)"), "2");
    assert_eq!(one("(1 | 2).subsetOf(1 | 2 | 3)"), "true");
    assert_eq!(one("(1 | 1.0 | 2).distinct().count()"), "2");
    assert_eq!(run("(1 | 2).single()", &json!({})), ["ERR Execution"]);
    assert_eq!(one("('b' | 'a').sort()[0]"), "a");
}

#[test]
fn children_and_descendants() {
    let p = patient();
    assert_eq!(run("name[0].children().count()", &p), ["4"]);
    assert!(run("descendants().where($this = 'Who').exists()", &p) == ["true"]);
}

// --- boolean logic ---

#[test]
fn three_valued_logic() {
    assert!(empty("true and {}"));
    assert_eq!(one("false and {}"), "false");
    assert_eq!(one("true or {}"), "true");
    assert!(empty("{} xor true"));
    assert_eq!(one("{} implies true"), "true");
    assert_eq!(one("false implies {}"), "true");
    assert_eq!(one("(true and 'x')"), "true"); // a single non-Boolean counts as true
    assert_eq!(run("(true | false) and true", &json!({})), ["ERR Execution"]);
    assert_eq!(one("iif({}, 1, 2)"), "2");
    assert_eq!(one("iif(true, 1, 1/0)"), "1");
}

// --- equality and comparison ---

#[test]
fn equality_and_equivalence() {
    assert_eq!(one("1.10 = 1.1"), "true");
    assert_eq!(one("1 = 1.0"), "true");
    assert_eq!(one("'a' ~ 'A'"), "true");
    assert_eq!(one("1.2 / 1.8 ~ 0.67"), "true");
    assert!(empty("@2012-04-15 = @2012-04-15T10:00:00")); // precision differs: unknown
    assert_eq!(one("@2012-04-15 ~ @2012-04-15T10:00:00"), "false");
    assert_eq!(one("@2012-04-15T15:00:00+02:00 = @2012-04-15T16:00:00+03:00"), "true");
    assert_eq!(one("@2012-04-15T15:30:31 = @2012-04-15T15:30:31.0"), "true");
    assert!(empty("{} = 1"));
    assert_eq!(one("(1 | 2) = (1 | 2)"), "true");
    assert_eq!(one("(1 | 2) ~ (2 | 1)"), "true");
    assert_eq!(run("Patient.birthDate = @1974-12-25", &patient()), ["true"]);
    assert_eq!(run("Observation.value = 185.5 '[lb_av]'", &observation()), ["true"]);
}

#[test]
fn ordering() {
    assert_eq!(one("1 < 1.5"), "true");
    assert_eq!(one("'a' < 'b'"), "true");
    assert_eq!(one("@T10:00 < @T11:00"), "true");
    assert!(empty("@2018-03 < @2018-03-01"));
    assert_eq!(one("@2017-11-05T01:30:00.0-04:00 > @2017-11-05T01:15:00.0-05:00"), "false");
    assert_eq!(run("1 < 'a'", &json!({})), ["ERR Execution"]);
    assert_eq!(run("Patient.birthDate < @2000-01-01", &patient()), ["true"]);
}

// --- arithmetic ---

#[test]
fn arithmetic_keeps_decimals_exact() {
    assert_eq!(one("0.1 + 0.2"), "0.3");
    assert_eq!(one("1.2 * 1.8"), "2.16");
    assert_eq!(one("1 / 2"), "0.5");
    assert_eq!(one("7 div 2"), "3");
    assert_eq!(one("7 mod 2"), "1");
    assert_eq!(one("2.2 mod 1.8"), "0.4");
    assert!(empty("1 / 0"));
    assert_eq!(one("'a' + 'b'"), "ab");
    assert_eq!(one("'a' & {}"), "a");
    assert_eq!(run("'a' - 'b'", &json!({})), ["ERR Execution"]);
}

#[test]
fn quantities_convert_units() {
    assert_eq!(one("4 'g' = 4000 'mg'"), "true");
    assert_eq!(one("7 days = 1 'wk'"), "true");
    assert!(empty("1 year = 1 'a'")); // calendar year vs. mean year
    assert_eq!(one("2.0 'cm' * 2.0 'm' = 0.040 'm2'"), "true");
    assert_eq!(one("1 'kg' + 500 'g'"), "1.5 'kg'");
    assert_eq!(one("1 'cm'.comparable(1 '[in_i]')"), "true");
}

#[test]
fn date_arithmetic() {
    assert_eq!(one("@1973-12-25 + 7 days"), "1974-01-01");
    assert_eq!(one("@2020-01-31 + 1 month"), "2020-02-29");
    assert_eq!(one("@1973-12-25T00:00:00.000+10:00 + 10 'ms'"), "1973-12-25T00:00:00.010+10:00");
    assert_eq!(run("@1973-12-25 + 1 'mo'", &json!({})), ["ERR Execution"]);
}

// --- functions ---

#[test]
fn string_functions() {
    assert_eq!(one("'abcdef'.substring(1, 3)"), "bcd");
    assert_eq!(one("'héllo'.indexOf('l')"), "2");
    assert_eq!(one("'abc'.replace('', '-')"), "-a-b-c-");
    assert_eq!(one("'a,b,,c'.split(',').count()"), "4");
    assert_eq!(one("('a' | 'b').join('+')"), "a+b");
    assert_eq!(one("'  x '.trim()"), "x");
    assert_eq!(one("'abc123'.replaceMatches('[0-9]+', '#')"), "abc#");
    assert_eq!(one("'2019-01-02'.replaceMatches('(\\\\d+)-(\\\\d+)-(\\\\d+)', '$3/$2/$1')"), "02/01/2019");
    assert_eq!(one("'Library/x'.matches('^Li(b|c)rary')"), "true");
    assert_eq!(one("'ab'.matchesFull('a')"), "false");
    assert_eq!(one("'test'.encode('base64')"), "dGVzdA==");
    assert_eq!(run("Patient.name.startsWith('x')", &patient()), ["ERR Execution"]); // two names
    assert!(empty("{}.upper()"));
}

#[test]
fn conversions() {
    assert_eq!(one("'1.50'.toDecimal()"), "1.50");
    assert!(empty("'1.1'.toInteger()"));
    assert_eq!(one("'yes'.toBoolean()"), "true");
    assert_eq!(one("'2015-02'.toDate()"), "2015-02");
    assert_eq!(one("'1 \\'mg\\''.toQuantity()"), "1 'mg'");
    assert_eq!(one("'1 wk'.convertsToQuantity()"), "false");
    assert_eq!(one("1.0.toString()"), "1.0");
    assert_eq!(one("now() > @2020-01-01T00:00:00Z"), "true");
    assert_eq!(one("today().toString().length()"), "10");
}

#[test]
fn math_and_precision() {
    assert_eq!(one("3.14159.round(3)"), "3.142");
    assert_eq!(one("(-2.1).floor()"), "-3");
    assert_eq!(one("81.sqrt()"), "9");
    assert_eq!(one("2.power(10)"), "1024");
    assert_eq!(one("1.587.lowBoundary(2)"), "1.58");
    assert_eq!(one("1.587.highBoundary()"), "1.58750000");
    assert_eq!(one("@2014.highBoundary(6)"), "2014-12");
    assert_eq!(one("1.58700.precision()"), "5");
}

#[test]
fn variables() {
    let p = patient();
    assert_eq!(run("%resource.id", &p), ["p1"]);
    assert_eq!(run("%ucum", &p), ["http://unitsofmeasure.org"]);
    assert_eq!(run("%nope", &p), ["ERR Semantic"]);
    let ctx = Context::new().with_variable("x", vec![Item::Integer(5)]);
    assert_eq!(evaluate(&parse("%x + 1").unwrap(), &p, &ctx).unwrap()[0].to_string(), "6");
}

// --- locate (FHIRPath Patch) ---

fn steps(path: &[Step]) -> String {
    path.iter()
        .map(|s| match s.index {
            Some(i) => format!("{}[{i}]", s.property),
            None => s.property.clone(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

#[test]
fn locate_returns_json_paths() {
    let p = patient();
    let paths = locate(&parse("Patient.name.given").unwrap(), &p, &Context::new()).unwrap();
    let paths: Vec<String> = paths.iter().map(|p| steps(p)).collect();
    assert_eq!(
        paths,
        ["name[0].given[0]", "name[0].given[1]", "_given", "name[1].given[1]"].map(|s| {
            if s == "_given" {
                "name[1]._given[0]".to_string()
            } else {
                s.to_string()
            }
        })
    );
    let root = locate(&parse("Patient").unwrap(), &p, &Context::new()).unwrap();
    assert_eq!(root, vec![Vec::<Step>::new()]);
    let choice = locate(&parse("Observation.value").unwrap(), &observation(), &Context::new()).unwrap();
    assert_eq!(steps(&choice[0]), "valueQuantity");
    assert!(locate(&parse("1 + 1").unwrap(), &p, &Context::new()).is_err());
}

#[test]
fn terminology_functions_answer_unknown() {
    let o = observation();
    assert!(run("code.memberOf('http://hl7.org/fhir/ValueSet/observation-codes')", &o).is_empty());
}
