//! The compiler's output in both dialects for a query of every shape: well-formed placeholders for
//! PostgreSQL, and no SQLite-only syntax in it. [`statements`] is shared with the SQLite backend's
//! tests, which run each SQLite statement against a migrated database.
//!
//! To check the PostgreSQL statements against a server, `print_postgres` writes each as a
//! `PREPARE` (parsed and type-checked against the tables) and an `EXECUTE` with its parameters:
//!
//! ```text
//! cargo test -p fhirside-store print_postgres -- --ignored --nocapture | grep -E '^(PREPARE|EXECUTE)'
//! ```
//!
//! and run them in a schema created with the backend's tables.

use super::{
    compile_count, compile_everything, compile_include, compile_probe, compile_search, compile_snapshot, numbered,
    Compiled, Dialect, Form, Param,
};
use crate::query::{
    Clause, Cursor, DateRange, EverythingQuery, IncludeQuery, KeyValue, NumberRange, Prefix, QuantityValue,
    ReferenceValue, SearchQuery, SnapshotQuery, SortBy, SortKey, StringMatch, TokenSystem, TokenValue, UriMatch, Value,
    ValueKind,
};

const PREFIXES: [Prefix; 9] =
    [Prefix::Eq, Prefix::Ne, Prefix::Gt, Prefix::Lt, Prefix::Ge, Prefix::Le, Prefix::Sa, Prefix::Eb, Prefix::Ap];

fn matching(param: &str, values: Vec<Value>) -> Clause {
    Clause::Match { param: param.into(), values }
}

fn token(system: TokenSystem, code: Option<&str>) -> Value {
    Value::Token(TokenValue { system, code: code.map(Into::into) })
}

fn code(code: &str) -> Clause {
    matching("code", vec![token(TokenSystem::Any, Some(code))])
}

fn string(value: &str, matching: StringMatch) -> Value {
    Value::String { value: value.into(), matching }
}

fn number(prefix: Prefix) -> NumberRange {
    NumberRange { prefix, value: 100.0, low: 99.5, high: 100.5 }
}

fn quantity(prefix: Prefix, canonical: bool) -> Value {
    Value::Quantity(QuantityValue {
        number: number(prefix),
        system: Some("http://unitsofmeasure.org".into()),
        code: Some("mg".into()),
        canonical: canonical.then(|| ("g".into(), NumberRange { prefix, value: 0.1, low: 0.0995, high: 0.1005 })),
    })
}

fn dates() -> Vec<DateRange> {
    PREFIXES.iter().map(|&prefix| DateRange { prefix, low: 1_000_000, high: 2_000_000 }).collect()
}

fn search(types: &[&str], clauses: Vec<Clause>) -> SearchQuery {
    SearchQuery { types: types.iter().map(|t| (*t).into()).collect(), clauses, count: 10, ..SearchQuery::default() }
}

/// Search clauses of every kind, each with a name.
fn clauses() -> Vec<(&'static str, Clause)> {
    vec![
        (
            "token",
            matching(
                "code",
                vec![
                    token(TokenSystem::Is("http://loinc.org".into()), Some("8480-6")),
                    token(TokenSystem::None, Some("x")),
                    token(TokenSystem::Any, Some("y")),
                    token(TokenSystem::Is("http://loinc.org".into()), None),
                    token(TokenSystem::Any, None),
                ],
            ),
        ),
        ("string starts-with", matching("name", vec![string("pet", StringMatch::StartsWith)])),
        ("string contains", matching("name", vec![string("ete", StringMatch::Contains)])),
        ("string exact", matching("name", vec![string("Peter", StringMatch::Exact)])),
        ("dates", matching("date", dates().into_iter().map(Value::Date).collect())),
        ("_lastUpdated", Clause::LastUpdated(dates())),
        ("numbers", matching("probability", PREFIXES.iter().map(|&p| Value::Number(number(p))).collect())),
        (
            "quantities",
            matching(
                "value-quantity",
                PREFIXES.iter().flat_map(|&p| [quantity(p, true), quantity(p, false)]).collect(),
            ),
        ),
        (
            "quantity without unit",
            matching(
                "value-quantity",
                vec![Value::Quantity(QuantityValue {
                    number: number(Prefix::Gt),
                    system: None,
                    code: None,
                    canonical: None,
                })],
            ),
        ),
        (
            "uris",
            matching(
                "url",
                [UriMatch::Exact, UriMatch::Below, UriMatch::Above]
                    .into_iter()
                    .map(|matching| Value::Uri { value: "http://example.org/fhir".into(), matching })
                    .collect(),
            ),
        ),
        (
            "references",
            matching(
                "subject",
                vec![
                    Value::Reference(ReferenceValue::Local { target_type: Some("Patient".into()), id: "p1".into() }),
                    Value::Reference(ReferenceValue::Local { target_type: None, id: "p2".into() }),
                    Value::Reference(ReferenceValue::Url("http://example.org/Patient/3".into())),
                ],
            ),
        ),
        (
            "composite",
            Clause::Composite {
                param: "code-value-quantity".into(),
                values: vec![
                    vec![token(TokenSystem::Any, Some("8480-6")), quantity(Prefix::Gt, true)],
                    vec![token(TokenSystem::Any, Some("8462-4")), quantity(Prefix::Lt, false)],
                ],
            },
        ),
        (
            "composite of one value",
            Clause::Composite {
                param: "code-value-quantity".into(),
                values: vec![vec![token(TokenSystem::Any, Some("8480-6")), quantity(Prefix::Eq, true)]],
            },
        ),
        (
            "chain",
            Clause::Chain {
                param: "subject".into(),
                target_types: vec!["Patient".into()],
                clauses: vec![Clause::Chain {
                    param: "organization".into(),
                    target_types: vec!["Organization".into(), "Group".into()],
                    clauses: vec![matching("name", vec![string("acme", StringMatch::StartsWith)])],
                }],
            },
        ),
        (
            "_has",
            Clause::Has { source_type: "Observation".into(), param: "patient".into(), clauses: vec![code("1234")] },
        ),
        ("missing", Clause::Missing { param: "birthdate".into(), kind: ValueKind::Date, missing: true }),
        ("present", Clause::Missing { param: "name".into(), kind: ValueKind::String, missing: false }),
        ("not", Clause::Not(Box::new(code("final")))),
        ("_text", Clause::Text { narrative: true, words: vec!["heart".into(), "\"attack\"".into()] }),
        ("_content", Clause::Text { narrative: false, words: vec!["aspirin".into()] }),
        ("_id", Clause::Id(vec!["a".into(), "b".into()])),
        ("no _id", Clause::Id(Vec::new())),
        ("compartment", Clause::Compartment { compartment: "Patient".into(), id: "p1".into() }),
        ("any", Clause::Any(vec![code("a"), Clause::Not(Box::new(code("b")))])),
        ("any of nothing", Clause::Any(Vec::new())),
        ("all", Clause::All(vec![code("a"), Clause::Compartment { compartment: "Patient".into(), id: "p1".into() }])),
        ("all of nothing", Clause::All(Vec::new())),
        ("types", Clause::Types(vec!["Observation".into(), "Patient".into()])),
        (
            "compartments",
            Clause::Compartments { compartment: "Patient".into(), ids: Some(vec!["p1".into(), "p2".into()]) },
        ),
        ("any compartment", Clause::Compartments { compartment: "Patient".into(), ids: None }),
    ]
}

fn sort_keys() -> Vec<SortKey> {
    let param = |param: &str, kind| SortBy::Param { param: param.into(), kind };
    vec![
        SortKey { by: param("code", ValueKind::Token), descending: false },
        SortKey { by: param("date", ValueKind::Date), descending: true },
        SortKey { by: param("date", ValueKind::Date), descending: false },
        SortKey { by: param("subject", ValueKind::Reference), descending: false },
        SortKey { by: param("name", ValueKind::String), descending: true },
        SortKey { by: param("probability", ValueKind::Number), descending: false },
        SortKey { by: param("value-quantity", ValueKind::Quantity), descending: true },
        SortKey { by: param("value-quantity", ValueKind::Quantity), descending: false },
        SortKey { by: param("url", ValueKind::Uri), descending: false },
        SortKey { by: SortBy::Id, descending: false },
        SortKey { by: SortBy::LastUpdated, descending: true },
    ]
}

/// A value of the type each of [`sort_keys`] has, or missing.
fn cursor_keys() -> Vec<KeyValue> {
    vec![
        KeyValue::Text("8480-6".into()),
        KeyValue::Integer(1_000_000),
        KeyValue::Null,
        KeyValue::Text("Patient/p1".into()),
        KeyValue::Null,
        KeyValue::Real(0.5),
        KeyValue::Real(120.0),
        KeyValue::Null,
        KeyValue::Text("http://example.org".into()),
        KeyValue::Text("a".into()),
        KeyValue::Integer(1_700_000_000_000_000),
    ]
}

/// Representative statements of every entry point, each with a name.
pub(crate) fn statements(dialect: Dialect) -> Vec<(String, Compiled)> {
    let mut out = Vec::new();
    for (name, clause) in clauses() {
        let query = search(&["Observation"], vec![clause.clone()]);
        out.push((name.to_owned(), compile_search(dialect, &query, 11, &[])));
        out.push((format!("{name}, probed"), compile_search(dialect, &query, 11, &[Some(Form::Probe)])));
        out.push((format!("{name}, collected"), compile_search(dialect, &query, 11, &[Some(Form::Collect)])));
        out.push((format!("{name}, counted"), compile_count(dialect, &query)));
        if dialect == Dialect::Sqlite {
            if let Some(probe) = compile_probe(&clause, 10_000) {
                out.push((format!("{name}, measured"), probe));
            }
        }
    }
    let every = clauses().into_iter().map(|(_, clause)| clause).collect::<Vec<_>>();
    out.push((
        "every clause, several types".into(),
        compile_search(dialect, &search(&["Observation", "Condition"], every), 11, &[]),
    ));
    out.push(("every type".into(), compile_search(dialect, &search(&[], vec![code("a")]), 11, &[])));
    for backward in [false, true] {
        let mut query = search(&["Observation"], vec![code("a")]);
        query.cursor = Some(Cursor { keys: Vec::new(), rid: 42, backward });
        out.push((format!("after a row, backward {backward}"), compile_search(dialect, &query, 11, &[])));
    }
    for (i, key) in sort_keys().into_iter().enumerate() {
        let query = SearchQuery { sort: vec![key], ..search(&["Observation"], vec![code("a")]) };
        out.push((format!("sorted by key {i}"), compile_search(dialect, &query, 11, &[])));
    }
    for backward in [false, true] {
        let query = SearchQuery {
            sort: sort_keys(),
            cursor: Some(Cursor { keys: cursor_keys(), rid: 42, backward }),
            ..search(&["Observation"], vec![code("a"), matching("name", vec![string("x", StringMatch::Contains)])])
        };
        out.push((format!("sorted, from a cursor, backward {backward}"), compile_search(dialect, &query, 11, &[])));
    }

    let include = |reverse, source_type: &str, param: Option<&str>, target_type: Option<&str>| IncludeQuery {
        reverse,
        source_type: source_type.into(),
        param: param.map(Into::into),
        target_type: target_type.map(Into::into),
        matched_type: if reverse { "Patient" } else { "Observation" }.into(),
        matched_ids: vec!["a".into(), "b".into(), "c".into()],
        limit: 1000,
    };
    out.push(("_include".into(), compile_include(dialect, &include(false, "Observation", Some("subject"), None))));
    out.push((
        "_include:iterate with a target type".into(),
        compile_include(dialect, &include(false, "Observation", Some("subject"), Some("Patient"))),
    ));
    out.push(("_include=*".into(), compile_include(dialect, &include(false, "Observation", None, None))));
    out.push(("_revinclude".into(), compile_include(dialect, &include(true, "Observation", Some("subject"), None))));
    out.push(("_revinclude=*".into(), compile_include(dialect, &include(true, "", None, Some("Patient")))));

    for id in [Some("p1"), None] {
        out.push((
            format!("$everything of {id:?}"),
            compile_everything(dialect, "Patient", id, &EverythingQuery::default(), 11),
        ));
        let query = EverythingQuery {
            types: Some(vec!["Observation".into(), "Patient".into()]),
            since: Some(1_000_000),
            count: 10,
            cursor: Some(42),
        };
        out.push((format!("$everything of {id:?}, filtered"), compile_everything(dialect, "Patient", id, &query, 11)));
        let query = EverythingQuery { types: Some(Vec::new()), ..EverythingQuery::default() };
        out.push((format!("$everything of {id:?}, no types"), compile_everything(dialect, "Patient", id, &query, 11)));
    }

    let snapshot = |since, after, filter| SnapshotQuery {
        resource_type: "Observation".into(),
        as_of: 1_700_000_000_000_000,
        since,
        after,
        filter,
        history: false,
        deleted: false,
        limit: 1000,
    };
    let with_history = SnapshotQuery { history: true, ..snapshot(None, None, Vec::new()) };
    let with_deleted = SnapshotQuery { deleted: true, ..snapshot(None, None, Vec::new()) };
    let with_both = SnapshotQuery { deleted: true, history: true, ..snapshot(None, None, Vec::new()) };
    out.push(("export snapshot with history".into(), compile_snapshot(dialect, &with_history)));
    out.push(("export snapshot with deleted".into(), compile_snapshot(dialect, &with_deleted)));
    out.push(("export snapshot with history and deleted".into(), compile_snapshot(dialect, &with_both)));
    out.push(("export snapshot".into(), compile_snapshot(dialect, &snapshot(None, None, Vec::new()))));
    let filter = vec![
        Clause::Compartments { compartment: "Patient".into(), ids: Some(vec!["p1".into()]) },
        Clause::Any(vec![code("a"), code("b")]),
    ];
    out.push((
        "export snapshot, since, after a row, filtered".into(),
        compile_snapshot(dialect, &snapshot(Some(1_600_000_000_000_000), Some((1_650_000_000_000_000, 42)), filter)),
    ));
    out
}

/// The numbers of the `$N` placeholders in the order they occur.
fn dollars(sql: &str) -> Vec<usize> {
    let mut found = Vec::new();
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        rest = &rest[at + 1..];
        let digits = rest.chars().take_while(char::is_ascii_digit).collect::<String>();
        found.push(digits.parse().unwrap_or_else(|_| panic!("a $ that is no placeholder in {sql}")));
    }
    found
}

/// The contents of the quoted strings and identifiers in `sql`.
fn quoted(sql: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let mut rest = sql;
    while let Some(at) = rest.find(['\'', '"']) {
        let quote = rest.as_bytes()[at] as char;
        let inner = &rest[at + 1..];
        let end = inner.find(quote).unwrap_or_else(|| panic!("an unclosed quote in {sql}"));
        found.push(&inner[..end]);
        rest = &inner[end + 1..];
    }
    found
}

#[test]
fn postgres_placeholders_are_numbered_in_bind_order() {
    for (name, compiled) in statements(Dialect::Postgres) {
        let sql = &compiled.sql;
        let numbers = dollars(sql);
        // Each parameter is used, none beyond the last; a new one is always the next number, so
        // that text order is bind order (a repeated `$N` refers back, as `?N` did).
        let mut largest = 0;
        for &n in &numbers {
            assert!(n >= 1 && n <= largest + 1, "{name}: ${n} after ${largest} in {sql}");
            largest = largest.max(n);
        }
        assert_eq!(largest, compiled.params.len(), "{name}: {sql}");
        assert!(!sql.contains('?'), "{name}: {sql}");
        assert!(!sql.contains("INDEXED BY"), "{name}: {sql}");
        assert!(!sql.contains("CROSS JOIN"), "{name}: {sql}");
        assert!(!sql.contains("MATCH"), "{name}: {sql}");
        assert!(!sql.contains("instr(") && !sql.contains("substr("), "{name}: {sql}");
    }
}

#[test]
fn literals_hold_no_placeholder() {
    // The `$N` renumbering would skip a `?` in quotes, but a literal that looks like one is a trap
    // for whoever reads or edits the SQL.
    for dialect in [Dialect::Sqlite, Dialect::Postgres] {
        for (name, compiled) in statements(dialect) {
            for literal in quoted(&compiled.sql) {
                assert!(!literal.contains(['?', '$']), "{name}: {literal} in {}", compiled.sql);
            }
        }
    }
}

#[test]
fn both_dialects_bind_the_same_parameters() {
    // Apart from full text (an FTS5 query against a list of words), the dialects differ only in
    // spelling: the same values, in the same order.
    let sqlite = statements(Dialect::Sqlite).into_iter().filter(|(name, _)| !name.ends_with("measured"));
    for ((name, lite), (_, postgres)) in sqlite.zip(statements(Dialect::Postgres)) {
        if name.starts_with("_text") || name.starts_with("_content") || name.starts_with("every clause") {
            continue;
        }
        assert_eq!(lite.params, postgres.params, "{name}");
    }
}

#[test]
fn placeholders_number_as_sqlite_does() {
    assert_eq!(
        numbered("a = ?1 AND b = ?2 AND c = ? AND d = ?1 AND e = ?"),
        ("a = $1 AND b = $2 AND c = $3 AND d = $1 AND e = $4".into(), 4)
    );
    assert_eq!(numbered("x = ? AND y IN (?, ?)"), ("x = $1 AND y IN ($2, $3)".into(), 3));
    assert_eq!(numbered("x = ?3 AND y = ?"), ("x = $3 AND y = $4".into(), 4));
    assert_eq!(numbered("'it''s ?' = \"?\" AND x = ?"), ("'it''s ?' = \"?\" AND x = $1".into(), 1));
    assert_eq!(numbered("SELECT 1"), ("SELECT 1".into(), 0));
}

#[test]
fn full_text_in_postgres_requires_every_word() {
    let query = search(&["Observation"], vec![Clause::Text { narrative: false, words: vec!["a".into(), "b".into()] }]);
    let compiled = compile_search(Dialect::Postgres, &query, 11, &[]);
    assert!(
        compiled.sql.contains(
            "(r.shard_key, r.rid) IN (SELECT a1.shard_key, a1.rid FROM text_index a1 \
             WHERE a1.content @@ plainto_tsquery('simple', $2))"
        ),
        "{}",
        compiled.sql
    );
    assert_eq!(compiled.params[1], Param::Text("a b".into()));
}
