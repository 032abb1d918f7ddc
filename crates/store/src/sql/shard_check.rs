//! A structural check of the SQL the compiler writes for PostgreSQL, for what Citus needs of it:
//! every join and every correlation between two distributed tables equates their shard keys (so
//! that Citus pushes it down to each shard), and a subquery that links rows by anything else — the
//! `(type, id) IN (SELECT …)` of a reference to another resource — is uncorrelated, which Citus
//! plans by running it first and handing its result to every shard.
//!
//! The statements are parsed, not searched with patterns: a small tokenizer, parentheses into a
//! tree, and each SELECT into its sources (`FROM`/`JOIN` items with their aliases), its conditions
//! and its subqueries, with aliases resolved through the enclosing scopes. It knows the shapes the
//! compiler writes (`FROM table alias [JOIN table alias ON …]`, CTEs, derived tables, `IN`,
//! `EXISTS`, scalar subqueries, `UNION`), which is all it has to read.

use std::collections::{HashMap, HashSet};

/// Whether `name` is a table distributed on Citus (`postgres/citus.rs`).
fn distributed(name: &str) -> bool {
    crate::postgres::citus::TABLES.iter().any(|table| table.table == name)
}

const KEYWORDS: &[&str] = &[
    "select", "from", "where", "join", "cross", "left", "inner", "on", "as", "union", "all", "order", "group", "limit",
    "with", "in", "exists", "not", "and", "or", "distinct", "by", "is", "null", "case", "when", "then", "else", "end",
    "cast", "asc", "desc", "nulls", "first", "last", "true", "false",
];

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// A word: a keyword (lower-cased) or an unqualified name.
    Word(String),
    /// `alias.column`.
    Col(String, String),
    Op(String),
    /// A literal or a placeholder.
    Value,
    Open,
    Close,
    Comma,
}

fn tokenize(sql: &str) -> Vec<Tok> {
    let chars: Vec<char> = sql.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    let word = |i: &mut usize| {
        let start = *i;
        while *i < chars.len() && (chars[*i].is_ascii_alphanumeric() || chars[*i] == '_') {
            *i += 1;
        }
        chars[start..*i].iter().collect::<String>()
    };
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' {
            i += 1;
            while i < chars.len() {
                if chars[i] == '\'' && chars.get(i + 1) == Some(&'\'') {
                    i += 2;
                } else if chars[i] == '\'' {
                    break;
                } else {
                    i += 1;
                }
            }
            i += 1;
            tokens.push(Tok::Value);
        } else if c == '$' || c.is_ascii_digit() {
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            tokens.push(Tok::Value);
        } else if c.is_ascii_alphabetic() || c == '_' {
            let first = word(&mut i);
            if chars.get(i) == Some(&'.') && chars.get(i + 1).is_some_and(|c| c.is_ascii_alphabetic() || *c == '_') {
                i += 1;
                let column = word(&mut i);
                tokens.push(Tok::Col(first, column));
            } else if KEYWORDS.contains(&first.to_ascii_lowercase().as_str()) {
                tokens.push(Tok::Word(first.to_ascii_lowercase()));
            } else {
                tokens.push(Tok::Word(first));
            }
        } else if c == '(' {
            tokens.push(Tok::Open);
            i += 1;
        } else if c == ')' {
            tokens.push(Tok::Close);
            i += 1;
        } else if c == ',' {
            tokens.push(Tok::Comma);
            i += 1;
        } else {
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            let op =
                if ["<=", ">=", "<>", "!=", "||", "@@", "::"].contains(&two.as_str()) { two } else { c.to_string() };
            i += op.chars().count();
            tokens.push(Tok::Op(op));
        }
    }
    tokens
}

#[derive(Debug, Clone)]
enum Node {
    Tok(Tok),
    Group(Vec<Node>),
}

fn tree(tokens: &[Tok]) -> Vec<Node> {
    fn level(tokens: &[Tok], at: &mut usize) -> Vec<Node> {
        let mut nodes = Vec::new();
        while *at < tokens.len() {
            let token = &tokens[*at];
            *at += 1;
            match token {
                Tok::Open => nodes.push(Node::Group(level(tokens, at))),
                Tok::Close => return nodes,
                other => nodes.push(Node::Tok(other.clone())),
            }
        }
        nodes
    }
    level(tokens, &mut 0)
}

fn is_word(node: &Node, word: &str) -> bool {
    matches!(node, Node::Tok(Tok::Word(w)) if w == word)
}

fn is_query(nodes: &[Node]) -> bool {
    nodes.first().is_some_and(|n| is_word(n, "select") || is_word(n, "with"))
}

/// A column reference resolved to the source it reads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Resolved {
    scope: usize,
    alias: String,
    distributed: bool,
    column: String,
}

impl Resolved {
    fn source(&self) -> (usize, String) {
        (self.scope, self.alias.clone())
    }
}

struct Scope {
    id: usize,
    /// alias → distributed table?
    sources: HashMap<String, bool>,
}

#[derive(Default)]
struct Checker {
    scopes: usize,
    /// Every column read, resolved, in the order read.
    reads: Vec<Resolved>,
    /// Every `a.x = b.y` between two sources.
    equalities: Vec<(Resolved, Resolved)>,
    /// Subqueries: the first scope id they own, and the outer sources they read.
    subqueries: Vec<(usize, Vec<Resolved>)>,
    /// SELECT blocks and their distributed sources.
    blocks: Vec<Vec<(usize, String)>>,
    problems: Vec<String>,
}

/// What a query gives its caller: the sources of its first SELECT list's items (for `IN`), and
/// whether that SELECT aggregates without grouping by a shard key.
struct Items {
    columns: Vec<Option<Resolved>>,
    ungrouped_aggregate: bool,
}

impl Checker {
    fn resolve(&self, chain: &[Scope], alias: &str, column: &str) -> Option<Resolved> {
        chain.iter().rev().find_map(|scope| {
            scope.sources.get(alias).map(|&distributed| Resolved {
                scope: scope.id,
                alias: alias.to_owned(),
                distributed,
                column: column.to_owned(),
            })
        })
    }

    /// A query (`WITH …`, `SELECT … UNION SELECT …`) in `chain`; `ctes` are the names usable as
    /// tables in it.
    fn query(&mut self, nodes: &[Node], chain: &mut Vec<Scope>, ctes: &mut HashSet<String>) -> Items {
        let mut at = 0;
        if nodes.first().is_some_and(|n| is_word(n, "with")) {
            at = 1;
            while at < nodes.len() && !is_word(&nodes[at], "select") {
                match &nodes[at] {
                    Node::Tok(Tok::Word(name)) if name != "as" => {
                        // `name [(columns)] AS (query)`
                        let mut body = at + 1;
                        while body < nodes.len() && !matches!(&nodes[body], Node::Group(g) if is_query(g)) {
                            body += 1;
                        }
                        if let Some(Node::Group(query)) = nodes.get(body) {
                            self.subquery(query, chain, ctes);
                        }
                        ctes.insert(name.clone());
                        at = body + 1;
                    }
                    _ => at += 1,
                }
            }
        }
        let mut items = None;
        for block in nodes[at..].split(|n| is_word(n, "union")) {
            let block: Vec<Node> = block.iter().filter(|n| !is_word(n, "all")).cloned().collect();
            let block_items = self.select(&block, chain, ctes);
            items.get_or_insert(block_items);
        }
        items.unwrap_or(Items { columns: Vec::new(), ungrouped_aggregate: false })
    }

    /// A subquery: a query whose scopes are its own, recording which outer sources it reads.
    fn subquery(&mut self, nodes: &[Node], chain: &mut Vec<Scope>, ctes: &mut HashSet<String>) -> (usize, Items) {
        let start = self.scopes;
        let before = self.reads.len();
        let mut inner_ctes = ctes.clone();
        let items = self.query(nodes, chain, &mut inner_ctes);
        let outer: Vec<Resolved> = self.reads[before..].iter().filter(|r| r.scope < start).cloned().collect();
        if items.ungrouped_aggregate && outer.iter().any(|o| o.distributed) {
            // Citus pushes an aggregate in a correlated subquery down only grouped by the
            // distribution column.
            self.problems.push("a correlated subquery aggregates without GROUP BY shard_key".to_owned());
        }
        self.subqueries.push((start, outer));
        (start, items)
    }

    fn select(&mut self, nodes: &[Node], chain: &mut Vec<Scope>, ctes: &mut HashSet<String>) -> Items {
        let from = nodes.iter().position(|n| is_word(n, "from"));
        let end_of_from = from.map(|f| {
            (f + 1..nodes.len())
                .find(|&i| ["where", "order", "group", "limit"].iter().any(|w| is_word(&nodes[i], w)))
                .unwrap_or(nodes.len())
        });
        let id = self.scopes;
        self.scopes += 1;
        let mut scope = Scope { id, sources: HashMap::new() };
        let mut conditions: Vec<&[Node]> = Vec::new();
        if let (Some(from), Some(end)) = (from, end_of_from) {
            let items = &nodes[from + 1..end];
            let mut i = 0;
            while i < items.len() {
                // A source: a table (or CTE) name, a function call, or a derived table.
                let (distributed, name) = match &items[i] {
                    Node::Tok(Tok::Word(name)) if matches!(items.get(i + 1), Some(Node::Group(_))) => {
                        i += 1; // a function call such as unnest(…)
                        (false, name.clone())
                    }
                    Node::Tok(Tok::Word(name)) => (distributed(name) && !ctes.contains(name), name.clone()),
                    Node::Group(query) if is_query(query) => {
                        self.subquery(query, chain, ctes);
                        (false, String::new())
                    }
                    other => panic!("unexpected source {other:?}"),
                };
                i += 1;
                if items.get(i).is_some_and(|n| is_word(n, "as")) {
                    i += 1;
                }
                let alias = match items.get(i) {
                    Some(Node::Tok(Tok::Word(alias))) if !KEYWORDS.contains(&alias.as_str()) => {
                        i += 1;
                        alias.clone()
                    }
                    _ => name,
                };
                scope.sources.insert(alias, distributed);
                // SQLite's `INDEXED BY index`.
                if matches!(items.get(i), Some(Node::Tok(Tok::Word(w))) if w.eq_ignore_ascii_case("indexed")) {
                    i += 3;
                }
                if items.get(i).is_some_and(|n| is_word(n, "on")) {
                    let start = i + 1;
                    i = start;
                    while i < items.len()
                        && !matches!(items[i], Node::Tok(Tok::Comma))
                        && !["join", "cross", "left", "inner"].iter().any(|w| is_word(&items[i], w))
                    {
                        i += 1;
                    }
                    conditions.push(&items[start..i]);
                }
                while i < items.len()
                    && (matches!(items[i], Node::Tok(Tok::Comma))
                        || ["join", "cross", "left", "inner"].iter().any(|w| is_word(&items[i], w)))
                {
                    i += 1;
                }
            }
        }
        self.blocks
            .push(scope.sources.iter().filter(|(_, &d)| d).map(|(alias, _)| (id, alias.clone())).collect::<Vec<_>>());
        chain.push(scope);
        let list =
            &nodes[usize::from(nodes.first().is_some_and(|n| is_word(n, "select")))..from.unwrap_or(nodes.len())];
        let list: Vec<Node> = list.iter().filter(|n| !is_word(n, "distinct")).cloned().collect();
        let aggregates = list.windows(2).any(|pair| {
            matches!(&pair[0], Node::Tok(Tok::Word(f)) if ["min", "max", "count", "sum", "avg"].contains(&f.as_str()))
                && matches!(pair[1], Node::Group(_))
        });
        let grouped = nodes.windows(3).any(|w| {
            is_word(&w[0], "group")
                && is_word(&w[1], "by")
                && matches!(&w[2], Node::Tok(Tok::Col(_, c)) if c == "shard_key")
        });
        let columns = list
            .split(|n| matches!(n, Node::Tok(Tok::Comma)))
            .map(|item| match item {
                [Node::Tok(Tok::Col(alias, column))] => self.resolve(chain, alias, column),
                // An unqualified column of a block with one source is that source's.
                [Node::Tok(Tok::Word(column))] if chain.last().is_some_and(|s| s.sources.len() == 1) => {
                    let scope = chain.last().unwrap();
                    let (alias, &distributed) = scope.sources.iter().next().unwrap();
                    Some(Resolved { scope: scope.id, alias: alias.clone(), distributed, column: column.clone() })
                }
                _ => None,
            })
            .collect();
        self.expression(&list, chain, ctes);
        for condition in conditions {
            self.expression(condition, chain, ctes);
        }
        if let Some(end) = end_of_from {
            self.expression(&nodes[end..], chain, ctes);
        }
        chain.pop();
        Items { columns, ungrouped_aggregate: aggregates && !grouped }
    }

    /// Conditions and values at one level: equalities, `IN` links and subqueries.
    fn expression(&mut self, nodes: &[Node], chain: &mut Vec<Scope>, ctes: &mut HashSet<String>) {
        for (i, node) in nodes.iter().enumerate() {
            let before = |n: usize| i.checked_sub(n).map(|j| &nodes[j]);
            match node {
                Node::Tok(Tok::Col(alias, column)) => {
                    if let Some(read) = self.resolve(chain, alias, column) {
                        self.reads.push(read);
                    }
                }
                Node::Tok(Tok::Op(op)) if op == "=" => {
                    if let (Some(Node::Tok(Tok::Col(a, x))), Some(Node::Tok(Tok::Col(b, y)))) =
                        (before(1), nodes.get(i + 1))
                    {
                        let resolved = (self.resolve(chain, a, x), self.resolve(chain, b, y));
                        if let (Some(a), Some(b)) = resolved {
                            if a.source() != b.source() {
                                self.equalities.push((a, b));
                            }
                        }
                    }
                }
                Node::Group(inner) if is_query(inner) => {
                    let (start, items) = self.subquery(inner, chain, ctes);
                    if let (Some(left), Some(word)) = (before(2), before(1)) {
                        if is_word(word, "in") {
                            self.link(left, &items.columns, start, chain);
                        }
                    }
                }
                Node::Group(inner) => self.expression(inner, chain, ctes),
                _ => {}
            }
        }
    }

    /// `left IN (subquery)`: the rows of two distributed tables are the same version's when paired
    /// by shard key and row id; paired by other columns (a reference's `Type/id`), only from an
    /// uncorrelated subquery.
    fn link(&mut self, left: &Node, items: &[Option<Resolved>], start: usize, chain: &[Scope]) {
        let left: Vec<Option<Resolved>> = match left {
            Node::Tok(Tok::Col(alias, column)) => vec![self.resolve(chain, alias, column)],
            Node::Group(tuple) => tuple
                .split(|n| matches!(n, Node::Tok(Tok::Comma)))
                .map(|item| match item {
                    [Node::Tok(Tok::Col(alias, column))] => self.resolve(chain, alias, column),
                    _ => None,
                })
                .collect(),
            _ => return,
        };
        let pairs: Vec<(&Resolved, &Resolved)> = left
            .iter()
            .zip(items)
            .filter_map(|(l, r)| Some((l.as_ref()?, r.as_ref()?)))
            .filter(|(l, r)| l.distributed && r.distributed)
            .collect();
        if pairs.is_empty() {
            return;
        }
        if pairs.iter().any(|(l, r)| l.column == "shard_key" && r.column == "shard_key") {
            return;
        }
        if pairs.iter().any(|(l, r)| l.column == "rid" || r.column == "rid") {
            self.problems.push(format!(
                "{}.{} IN (…{}.{}…) pairs rows of two distributed tables by row id without their shard keys",
                pairs[0].0.alias, pairs[0].0.column, pairs[0].1.alias, pairs[0].1.column
            ));
            return;
        }
        let correlated = self.subqueries.iter().any(|(s, outer)| *s == start && !outer.is_empty());
        if correlated {
            self.problems.push(format!(
                "{}.{} IN (…{}.{}…) links two distributed tables without their shard keys, from a correlated \
                 subquery",
                pairs[0].0.alias, pairs[0].0.column, pairs[0].1.alias, pairs[0].1.column
            ));
        }
    }

    /// The conclusions, once a statement is read.
    fn finish(mut self) -> Vec<String> {
        let keyed: HashSet<((usize, String), (usize, String))> = self
            .equalities
            .iter()
            .filter(|(a, b)| a.column == "shard_key" && b.column == "shard_key")
            .flat_map(|(a, b)| [(a.source(), b.source()), (b.source(), a.source())])
            .collect();
        for (a, b) in &self.equalities {
            if a.distributed && b.distributed && !keyed.contains(&(a.source(), b.source())) {
                self.problems.push(format!(
                    "{}.{} = {}.{} joins two distributed tables without equating their shard keys",
                    a.alias, a.column, b.alias, b.column
                ));
            }
        }
        for (start, outer) in &self.subqueries {
            for o in outer.iter().filter(|o| o.distributed) {
                let by_shard = keyed.iter().any(|((s, _), target)| *s >= *start && *target == o.source());
                if !by_shard {
                    self.problems.push(format!(
                        "a subquery reads {}.{} of an enclosing query without equating shard keys with it",
                        o.alias, o.column
                    ));
                }
            }
        }
        for block in &self.blocks {
            // The distributed sources of one FROM must all be joined, through shard keys.
            let Some(first) = block.first() else { continue };
            let mut reached = vec![first.clone()];
            let mut grew = true;
            while grew {
                grew = false;
                for source in block {
                    if !reached.contains(source) && reached.iter().any(|r| keyed.contains(&(r.clone(), source.clone())))
                    {
                        reached.push(source.clone());
                        grew = true;
                    }
                }
            }
            if reached.len() < block.len() {
                self.problems.push(format!("sources {block:?} of one FROM are not all joined by shard key"));
            }
        }
        self.problems
    }
}

/// What in `sql` keeps Citus from running it shard by shard; empty when nothing does.
pub(crate) fn problems(sql: &str) -> Vec<String> {
    let mut checker = Checker::default();
    checker.query(&tree(&tokenize(sql)), &mut Vec::new(), &mut HashSet::new());
    checker.finish()
}

#[test]
fn every_join_of_distributed_tables_equates_shard_keys() {
    let statements = super::tests::statements(super::Dialect::Postgres);
    assert!(statements.len() > 100);
    for (name, compiled) in statements {
        let found = problems(&compiled.sql);
        assert!(found.is_empty(), "{name}: {found:?} in {}", compiled.sql);
    }
}

#[test]
fn the_check_finds_what_citus_cannot_push_down() {
    // A resource joined to its index rows by row id alone.
    let join = "SELECT r.rid FROM resource r JOIN token_index v ON v.rid = r.rid WHERE v.code = $1";
    assert_eq!(problems(join).len(), 2, "{:?}", problems(join));
    // The same with shard keys is fine.
    assert!(problems("SELECT r.rid FROM resource r JOIN token_index v ON v.shard_key = r.shard_key AND v.rid = r.rid")
        .is_empty());
    // A probe correlated by row id alone.
    let probe = "SELECT r.rid FROM resource r WHERE EXISTS (SELECT 1 FROM token_index v WHERE v.rid = r.rid)";
    assert!(!problems(probe).is_empty());
    // A scalar subquery (sort key) correlated by shard key and row id, its aggregate grouped by it.
    assert!(problems(
        "SELECT r.rid, (SELECT min(v.code) FROM token_index v WHERE v.shard_key = r.shard_key AND v.rid = r.rid \
         GROUP BY v.shard_key) FROM resource r"
    )
    .is_empty());
    // Not grouped, Citus would not push the aggregate down.
    assert_eq!(
        problems(
            "SELECT r.rid, (SELECT min(v.code) FROM token_index v WHERE v.shard_key = r.shard_key AND v.rid = r.rid) \
             FROM resource r"
        ),
        ["a correlated subquery aggregates without GROUP BY shard_key"]
    );
    // Collected by row id alone.
    let collect = "SELECT r.rid FROM resource r WHERE r.rid IN (SELECT v.rid FROM token_index v WHERE v.code = $1)";
    assert!(!problems(collect).is_empty());
    assert!(problems(
        "SELECT r.rid FROM resource r WHERE (r.shard_key, r.rid) IN \
         (SELECT v.shard_key, v.rid FROM token_index v WHERE v.code = $1)"
    )
    .is_empty());
    // Two resources joined by reference (`Type/id`): not co-located.
    let chain = "SELECT x.rid FROM reference_index x JOIN resource t ON t.type = x.target_type AND t.id = x.target_id";
    assert!(!problems(chain).is_empty());
    // The same as an uncorrelated IN is planned by Citus: fine.
    assert!(problems(
        "SELECT x.rid FROM reference_index x WHERE (x.target_type, x.target_id) IN (SELECT t.type, t.id FROM resource t)"
    )
    .is_empty());
    // But not when the subquery reads the enclosing row.
    let correlated = "SELECT r.rid FROM resource r WHERE (r.type, r.id) IN \
                      (SELECT x.target_type, x.target_id FROM reference_index x WHERE x.url = r.id)";
    assert!(!problems(correlated).is_empty());
}

#[test]
fn joins_by_row_id_alone_fail_the_check() {
    // SQLite's statements, which meet index rows by row id alone, are what the check must refuse:
    // every one that reads a resource and an index table (its counts of one index alone aside).
    let statements = super::tests::statements(super::Dialect::Sqlite);
    let joining: Vec<_> = statements
        .iter()
        .filter(|(_, compiled)| compiled.sql.contains("_index") && compiled.sql.contains("FROM resource"))
        .collect();
    assert!(joining.len() > 100);
    for (name, compiled) in joining {
        assert!(!problems(&compiled.sql).is_empty(), "{name}: {}", compiled.sql);
    }
}
