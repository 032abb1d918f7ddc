//! Search over the loaded Synthea-120 data, held against totals computed without the server.
//!
//! `tools/search-expectations/expect.py` (Python 3, standard library only) reads the raw bundles and
//! evaluates every query with a predicate of its own, so each expected total comes from the data and
//! not from the code under test. For each query this module checks:
//! - the total, with `_summary=count` (and `Prefer: handling=strict`, so that an unsupported
//!   parameter is named rather than ignored) and as `Bundle.total` with `_total=accurate`;
//! - below 2,000 matches, every page (`_count=200`, following `next`): each match once, of the
//!   searched type, as many as the total, and for `_sort` queries in order;
//! - that `POST [type]/_search` (or `POST /_search`) with the parameters as a form body answers
//!   the `GET`'s first page;
//! - for `_include`/`_revinclude`, the number of distinct included resources on one page.
//!
//! Then how an unknown parameter is reported (lenient) and refused (`Prefer: handling=strict`).
//! Problems are collected and reported together, so one run shows all of them.
//!
//! The script writes queries unencoded (this module encodes each name and value). Ids change on
//! load, so a query names a resource by a placeholder, resolved here by a search that must find
//! exactly one resource: `{Type?search}` stands for `Type/<id>`, `{id:Type?search}` for `<id>`.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::harness::Client;

/// Queries expected to match fewer resources than this are paged through completely.
const PAGE_THROUGH_BELOW: u64 = 2000;
const PAGE_SIZE: &str = "200";
/// The page compared between `GET` and `POST`.
const FIRST_PAGE_SIZE: &str = "50";

struct Expectation {
    query: String,
    what: String,
    total: u64,
    included: Option<u64>,
    sort_keys: Vec<SortKey>,
}

/// One `_sort` parameter: the element it sorts by, as the script names it.
struct SortKey {
    path: String,
    date: bool,
    descending: bool,
}

pub(crate) fn check_searches(client: &mut Client, dataset_dir: &Path) {
    let expectations = expectations(dataset_dir);
    let mut placeholders = HashMap::new();
    let mut failures = Vec::new();
    for expectation in &expectations {
        let problems = match resolve_placeholders(client, &expectation.query, &mut placeholders) {
            Ok(query) => check(client, expectation, &Search::parse(&query)),
            Err(problem) => vec![problem],
        };
        if !problems.is_empty() {
            failures.push(format!("[{}] {}\n    {}", expectation.what, expectation.query, problems.join("\n    ")));
        }
    }
    let unknown = check_unknown_parameter(client, &expectations);
    if !unknown.is_empty() {
        failures.push(format!("[unknown parameter]\n    {}", unknown.join("\n    ")));
    }
    assert!(
        failures.is_empty(),
        "{} of {} checks failed (one per query, one for unknown parameters):\n{}",
        failures.len(),
        expectations.len() + 1,
        failures.join("\n")
    );
}

/// Runs the script and reads its queries.
fn expectations(dataset_dir: &Path) -> Vec<Expectation> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools/search-expectations/expect.py");
    let output =
        Command::new("python3").arg(&script).arg(dataset_dir).output().expect("python3 runs (Debian package python3)");
    assert!(output.status.success(), "{}: {}", script.display(), String::from_utf8_lossy(&output.stderr));
    let document: Value = serde_json::from_slice(&output.stdout).expect("the script prints JSON");
    let queries = document["queries"].as_array().expect("a list of queries");
    assert!(queries.len() > 50, "only {} queries", queries.len());
    queries
        .iter()
        .map(|q| Expectation {
            query: q["query"].as_str().unwrap().to_owned(),
            what: q["what"].as_str().unwrap().to_owned(),
            total: q["total"].as_u64().unwrap(),
            included: q["included"].as_u64(),
            sort_keys: q["sort_keys"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|k| SortKey {
                    path: k["path"].as_str().unwrap().to_owned(),
                    date: k["kind"] == "date",
                    descending: k["descending"] == true,
                })
                .collect(),
        })
        .collect()
}

/// A query split into its path (`Observation`, `Patient/1/Observation`, or empty at system level)
/// and its parameters, unencoded.
struct Search {
    path: String,
    params: Vec<(String, String)>,
}

impl Search {
    fn parse(query: &str) -> Search {
        let (path, params) = query.split_once('?').unwrap_or((query, ""));
        let params = params
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (name, value) = p.split_once('=').unwrap_or((p, ""));
                (name.to_owned(), value.to_owned())
            })
            .collect();
        Search { path: path.to_owned(), params }
    }

    /// The parameters, then `extra`, as `application/x-www-form-urlencoded`.
    fn form(&self, extra: &[(&str, &str)]) -> String {
        let params = self.params.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        params
            .chain(extra.iter().copied())
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect::<Vec<_>>()
            .join("&")
    }

    fn get_path(&self, extra: &[(&str, &str)]) -> String {
        format!("/{}?{}", self.path, self.form(extra))
    }

    fn post_path(&self) -> String {
        match self.path.as_str() {
            "" => "/_search".to_owned(),
            path => format!("/{path}/_search"),
        }
    }

    /// The resource types a match may have: the searched type, or those `_type` lists.
    fn types(&self) -> Vec<String> {
        match self.path.rsplit('/').next().filter(|t| !t.is_empty()) {
            Some(resource_type) => vec![resource_type.to_owned()],
            None => self
                .params
                .iter()
                .filter(|(k, _)| k == "_type")
                .flat_map(|(_, v)| v.split(','))
                .map(str::to_owned)
                .collect(),
        }
    }
}

/// Percent-encodes everything but the unreserved characters of RFC 3986.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(byte as char),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// Replaces each `{Type?search}` with `Type/<id>` and each `{id:Type?search}` with `<id>`.
fn resolve_placeholders(
    client: &mut Client,
    query: &str,
    cache: &mut HashMap<String, String>,
) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = query;
    while let Some(start) = rest.find('{') {
        let end = start + rest[start..].find('}').ok_or_else(|| format!("unclosed placeholder in {query}"))?;
        let inner = &rest[start + 1..end];
        let (bare, search) = inner.strip_prefix("id:").map_or((false, inner), |s| (true, s));
        let reference = match cache.get(search) {
            Some(reference) => reference.clone(),
            None => {
                let reference = find_one(client, search)?;
                cache.insert(search.to_owned(), reference.clone());
                reference
            }
        };
        out.push_str(&rest[..start]);
        out.push_str(if bare { reference.split_once('/').unwrap().1 } else { &reference });
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `Type/id` of the one resource a search finds.
fn find_one(client: &mut Client, search: &str) -> Result<String, String> {
    let bundle = get_json(client, &Search::parse(search).get_path(&[("_count", "2")]))?;
    match matches(&bundle).as_slice() {
        [one] => Ok(one.clone()),
        found => Err(format!("placeholder {{{search}}} names {} resources, not one", found.len())),
    }
}

fn get_json(client: &mut Client, path: &str) -> Result<Value, String> {
    let response = client.request("GET", path, &[], None);
    json_of(response, || format!("GET {path}"))
}

fn json_of(response: crate::harness::Response, request: impl Fn() -> String) -> Result<Value, String> {
    if response.status != 200 {
        return Err(format!("{}: status {}: {}", request(), response.status, error_summary(&response.body)));
    }
    serde_json::from_slice(&response.body).map_err(|e| format!("{}: not JSON ({e})", request()))
}

/// The diagnostics of an OperationOutcome, or the start of any other body.
fn error_summary(body: &[u8]) -> String {
    match serde_json::from_slice::<Value>(body) {
        Ok(outcome) if outcome["resourceType"] == "OperationOutcome" => {
            let issues = outcome["issue"].as_array().into_iter().flatten();
            issues.map(|i| i["diagnostics"].as_str().unwrap_or("(no diagnostics)")).collect::<Vec<_>>().join("; ")
        }
        _ => String::from_utf8_lossy(body).chars().take(300).collect(),
    }
}

/// `Type/id` of the entries with `search.mode` `mode`, in order.
fn entries_with_mode(bundle: &Value, mode: &str) -> Vec<String> {
    let entries = bundle["entry"].as_array().into_iter().flatten().filter(|e| e["search"]["mode"] == mode);
    entries
        .map(|e| {
            format!(
                "{}/{}",
                e["resource"]["resourceType"].as_str().unwrap_or("?"),
                e["resource"]["id"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

fn matches(bundle: &Value) -> Vec<String> {
    entries_with_mode(bundle, "match")
}

/// The path (and query) of the `next` link, without scheme and host.
fn next_path(bundle: &Value) -> Option<String> {
    let url = bundle["link"].as_array()?.iter().find(|l| l["relation"] == "next")?["url"].as_str()?;
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    Some(rest.find('/').map_or_else(|| "/".to_owned(), |i| rest[i..].to_owned()))
}

/// Every check of one query; the problems found.
fn check(client: &mut Client, expectation: &Expectation, search: &Search) -> Vec<String> {
    let mut problems = Vec::new();
    let expected = expectation.total;
    // Strict handling, so that a parameter the server does not support is named rather than ignored.
    let count_path = search.get_path(&[("_summary", "count")]);
    let response = client.request("GET", &count_path, &[("prefer", "handling=strict")], None);
    match json_of(response, || format!("GET {count_path} (strict)")) {
        Ok(bundle) if bundle["total"].as_u64() == Some(expected) => {}
        Ok(bundle) => problems.push(format!("_summary=count: expected {expected}, got {}", bundle["total"])),
        // A refused query fails every other check the same way.
        Err(problem) => return vec![problem],
    }
    if expected < PAGE_THROUGH_BELOW || !expectation.sort_keys.is_empty() {
        problems.extend(check_pages(client, expectation, search).err());
    }
    // `POST` at type and system level; compartment searches are checked with `GET` only.
    if !search.path.contains('/') {
        problems.extend(check_post(client, search).err());
    }
    if let Some(included) = expectation.included {
        match get_json(client, &search.get_path(&[("_count", "1000")])) {
            Ok(bundle) => {
                let distinct: HashSet<String> = entries_with_mode(&bundle, "include").into_iter().collect();
                if distinct.len() as u64 != included {
                    problems.push(format!("included: expected {included} distinct, got {}", distinct.len()));
                }
            }
            Err(problem) => problems.push(problem),
        }
    }
    problems
}

/// Pages through all matches: each once, of the searched type, as many as expected, in order.
fn check_pages(client: &mut Client, expectation: &Expectation, search: &Search) -> Result<(), String> {
    let expected = expectation.total;
    let types = search.types();
    let mut path = search.get_path(&[("_count", PAGE_SIZE), ("_total", "accurate")]);
    let mut seen = HashSet::new();
    let mut resources = Vec::new();
    let mut problems = Vec::new();
    for page_number in 0.. {
        if page_number > expected / 200 + 5 {
            return Err(format!("more pages than {expected} matches need"));
        }
        let bundle = get_json(client, &path)?;
        if page_number == 0 && bundle["total"].as_u64() != Some(expected) {
            problems.push(format!("_total=accurate: expected {expected}, got {}", bundle["total"]));
        }
        for entry in bundle["entry"].as_array().into_iter().flatten().filter(|e| e["search"]["mode"] == "match") {
            let resource = &entry["resource"];
            let resource_type = resource["resourceType"].as_str().unwrap_or("?");
            let key = format!("{resource_type}/{}", resource["id"].as_str().unwrap_or("?"));
            if !types.iter().any(|t| t == resource_type) {
                problems.push(format!("{key} is not of the searched type {types:?}"));
            }
            if !seen.insert(key.clone()) {
                problems.push(format!("{key} is returned twice"));
            }
            resources.push(resource.clone());
        }
        match next_path(&bundle) {
            Some(next) => path = next,
            None => break,
        }
    }
    if resources.len() as u64 != expected {
        problems.push(format!("paging: expected {expected} matches, got {}", resources.len()));
    }
    problems.extend(out_of_order(&resources, &expectation.sort_keys));
    problems.truncate(5);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// `POST …/_search` with a form body answers the same first page as `GET`.
fn check_post(client: &mut Client, search: &Search) -> Result<(), String> {
    let page = [("_count", FIRST_PAGE_SIZE)];
    let got = matches(&get_json(client, &search.get_path(&page))?);
    let body = search.form(&page);
    let response = client.request(
        "POST",
        &search.post_path(),
        &[("content-type", "application/x-www-form-urlencoded")],
        Some(body.as_bytes()),
    );
    let posted = matches(&json_of(response, || format!("POST {} {body}", search.post_path()))?);
    if posted != got {
        return Err(format!("POST _search: first page {posted:?} differs from GET {got:?}"));
    }
    Ok(())
}

/// The first pair of resources (if any) that the sort keys put the wrong way round. Missing values
/// sort last; strings compare lower-cased; a key with several values sorts by its least value
/// ascending and its greatest descending.
fn out_of_order(resources: &[Value], keys: &[SortKey]) -> Option<String> {
    if keys.is_empty() {
        return None;
    }
    let sort_values: Vec<Vec<Option<SortValue>>> =
        resources.iter().map(|r| keys.iter().map(|k| sort_value(r, k)).collect()).collect();
    for (i, pair) in sort_values.windows(2).enumerate() {
        for (key, (a, b)) in keys.iter().zip(pair[0].iter().zip(&pair[1])) {
            let order = match (a, b) {
                (None, None) => Ordering::Equal,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some(a), Some(b)) if key.descending => b.cmp(a),
                (Some(a), Some(b)) => a.cmp(b),
            };
            match order {
                Ordering::Less => break,
                Ordering::Equal => continue,
                Ordering::Greater => {
                    return Some(format!(
                        "not sorted: match {i} ({a:?}) comes before match {} ({b:?}) by {}",
                        i + 1,
                        key.path
                    ))
                }
            }
        }
    }
    None
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum SortValue {
    /// Microseconds since the epoch (UTC) of the start of a date or dateTime.
    Date(i64),
    Text(String),
}

fn sort_value(resource: &Value, key: &SortKey) -> Option<SortValue> {
    let mut values = vec![resource];
    for name in key.path.split('.') {
        values = values
            .into_iter()
            .flat_map(|v| match &v[name] {
                Value::Array(items) => items.iter().collect(),
                Value::Null => vec![],
                other => vec![other],
            })
            .collect();
    }
    let values = values.into_iter().filter_map(Value::as_str).map(|s| {
        if key.date {
            date_start(s).map_or_else(|| SortValue::Text(s.to_owned()), SortValue::Date)
        } else {
            SortValue::Text(s.to_lowercase())
        }
    });
    if key.descending {
        values.max()
    } else {
        values.min()
    }
}

/// The start of a FHIR date or dateTime (`2010-09-16T12:21:06.190+02:00`) in microseconds since
/// the epoch, UTC; a value without a zone is taken as UTC.
fn date_start(text: &str) -> Option<i64> {
    let (date, time) = text.split_once('T').unwrap_or((text, ""));
    let mut parts = date.split('-');
    let year: i64 = parts.next()?.parse().ok()?;
    let month: i64 = parts.next().map_or(Some(1), |m| m.parse().ok())?;
    let day: i64 = parts.next().map_or(Some(1), |d| d.parse().ok())?;
    let mut micros = days_from_civil(year, month, day) * 86_400_000_000;
    if !time.is_empty() {
        let (clock, offset_minutes) = match time.find(['Z', '+', '-']) {
            None => (time, 0),
            Some(i) if &time[i..] == "Z" => (&time[..i], 0),
            Some(i) => {
                let sign = if time[i..].starts_with('-') { -1 } else { 1 };
                let (hours, minutes) = time[i + 1..].split_once(':')?;
                (&time[..i], sign * (hours.parse::<i64>().ok()? * 60 + minutes.parse::<i64>().ok()?))
            }
        };
        let mut fields = clock.split(':');
        let hours: i64 = fields.next()?.parse().ok()?;
        let minutes: i64 = fields.next()?.parse().ok()?;
        let second_field = fields.next().unwrap_or("0");
        let (seconds, fraction) = second_field.split_once('.').unwrap_or((second_field, ""));
        let seconds: i64 = seconds.parse().ok()?;
        let fraction: i64 = if fraction.is_empty() { 0 } else { format!("{fraction:0<6}")[..6].parse().ok()? };
        micros += ((hours * 60 + minutes - offset_minutes) * 60 + seconds) * 1_000_000 + fraction;
    }
    Some(micros)
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// An unknown parameter is ignored and reported in an OperationOutcome entry by default, and
/// refused with `Prefer: handling=strict`.
fn check_unknown_parameter(client: &mut Client, expectations: &[Expectation]) -> Vec<String> {
    let mut problems = Vec::new();
    let base = "Patient?gender=female";
    let expected = expectations.iter().find(|e| e.query == base).map(|e| e.total);
    let path = Search::parse(&format!("{base}&unknown-parameter=1")).get_path(&[("_count", "1000")]);
    match get_json(client, &path) {
        Ok(bundle) => {
            let outcome = bundle["entry"].as_array().into_iter().flatten().find(|e| {
                e["search"]["mode"] == "outcome"
                    && e["resource"]["resourceType"] == "OperationOutcome"
                    && e["resource"]["issue"].as_array().into_iter().flatten().any(|i| i["severity"] == "warning")
            });
            if outcome.is_none() {
                problems.push(format!("GET {path}: no OperationOutcome entry with a warning"));
            }
            let found = matches(&bundle).len() as u64;
            if expected.is_some_and(|expected| expected != found) {
                problems.push(format!("GET {path}: expected {expected:?} matches (as without it), got {found}"));
            }
        }
        Err(problem) => problems.push(problem),
    }
    let strict = client.request("GET", &path, &[("prefer", "handling=strict")], None);
    if strict.status != 400 {
        problems.push(format!("GET {path} with Prefer: handling=strict: expected status 400, got {}", strict.status));
    }
    problems
}

#[test]
fn dates_start_in_utc() {
    assert_eq!(date_start("1970-01-01"), Some(0));
    assert_eq!(date_start("1970-01-02T01:00:00+01:00"), Some(86_400_000_000));
    assert_eq!(date_start("1970-01-01T00:00:01.5Z"), Some(1_500_000));
    assert_eq!(date_start("2010-09-16T12:21:06+02:00"), date_start("2010-09-16T10:21:06Z"));
    assert!(date_start("2000-03-01") > date_start("2000-02-29T23:59:59-00:00"));
    assert_eq!(encode("a|b c/é"), "a%7Cb%20c%2F%C3%A9");
}
