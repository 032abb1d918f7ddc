//! FHIRPath (N1, as profiled by FHIR R4) over `serde_json::Value` resources.
//!
//! What it is for: search indexing (every SearchParameter's `expression` is FHIRPath, evaluated on every
//! write), FHIRPath Patch (whose paths select the elements to change), and invariants. Hence the shape:
//!
//! - [`parse`] once, [`evaluate`] many times. An [`Expression`] is immutable, `Send + Sync`, and resolves
//!   function names when parsed.
//! - Evaluation borrows: a selected element is an [`Item::Node`] pointing into the caller's JSON, typed from
//!   the embedded R4 definitions (so `Observation.value` on `valueQuantity` is a `Quantity`, and
//!   `ofType()`/`is`/`as` work), with the primitive's `_name` sibling attached. Plain navigation allocates
//!   only the result vectors.
//! - [`locate`] turns selected nodes back into JSON paths, for FHIRPath Patch. Nodes do not carry their path
//!   (that would cost an allocation per node on the hot search path); `locate` finds them in the resource by
//!   address instead, which is linear in the resource's size and only paid by patch.
//!
//! What it is not: a terminology engine. `memberOf()`, `subsumes()` and `subsumedBy()` return empty
//! (unknown), as there is no terminology server behind this crate. `trace()` passes its input through and
//! logs nothing. Type checking happens at run time, not when parsing: in strict mode
//! ([`Context::strict`]) a name the definitions do not know is an error, otherwise it selects nothing.

mod ast;
mod decimal;
mod eval;
mod functions;
mod item;
mod lexer;
mod model;
mod ops;
mod parser;
mod quantity;
mod regex;
mod temporal;

#[cfg(test)]
mod tests;

pub use decimal::Decimal;
pub use item::{Item, Node};
pub use quantity::Quantity;
pub use temporal::{Precision, Temporal};

use serde_json::Value;
use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// A parsed FHIRPath expression.
#[derive(Clone, Debug)]
pub struct Expression {
    root: ast::Expr,
    source: Arc<str>,
}

impl Expression {
    /// The text the expression was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }
}

impl fmt::Display for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Why an expression did not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// Byte offset in the expression.
    pub position: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FHIRPath syntax error at {}: {}", self.position, self.message)
    }
}

impl std::error::Error for ParseError {}

/// The spec's two kinds of run-time failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvalErrorKind {
    /// The expression does not fit the model: an unknown element (strict mode), a string function on a
    /// non-string, a non-Boolean `iif()` criterion.
    Semantic,
    /// The data does not fit the expression: several items where one is required, incompatible operands.
    Execution,
}

/// Why an evaluation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvalError {
    pub kind: EvalErrorKind,
    pub message: String,
}

impl EvalError {
    pub(crate) fn semantic(message: impl Into<String>) -> EvalError {
        EvalError { kind: EvalErrorKind::Semantic, message: message.into() }
    }

    pub(crate) fn execution(message: impl Into<String>) -> EvalError {
        EvalError { kind: EvalErrorKind::Execution, message: message.into() }
    }
}

impl fmt::Display for EvalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FHIRPath {:?} error: {}", self.kind, self.message)
    }
}

impl std::error::Error for EvalError {}

/// Looks up a literal reference (`Patient/1`, a `fullUrl`) for `resolve()`.
pub type Resolver<'a> = dyn Fn(&str) -> Option<&'a Value> + 'a;

/// The environment of an evaluation: `%resource`, `%rootResource`, `%context`, user variables, the
/// `resolve()` callback and strictness. `Context::default()` suits evaluating an expression on a whole
/// resource; `%ucum`, `%sct`, `%loinc`, `%vs-name` and `%ext-name` are always defined.
#[derive(Default)]
pub struct Context<'a> {
    resource: Option<&'a Value>,
    root_resource: Option<&'a Value>,
    context: Option<Vec<Item<'a>>>,
    variables: HashMap<String, Vec<Item<'a>>>,
    resolver: Option<&'a Resolver<'a>>,
    strict: bool,
}

impl<'a> Context<'a> {
    pub fn new() -> Context<'a> {
        Context::default()
    }

    /// `%resource` (default: the resource passed to [`evaluate`]); also where `resolve()` looks for
    /// contained resources.
    pub fn with_resource(mut self, resource: &'a Value) -> Self {
        self.resource = Some(resource);
        self
    }

    /// `%rootResource` (default: `%resource`), e.g. the Bundle a resource sits in; `resolve()` searches its
    /// entries by `fullUrl`.
    pub fn with_root_resource(mut self, root: &'a Value) -> Self {
        self.root_resource = Some(root);
        self
    }

    /// `%context` (default: the resource passed to [`evaluate`]).
    pub fn with_context(mut self, items: Vec<Item<'a>>) -> Self {
        self.context = Some(items);
        self
    }

    /// Defines `%name`.
    pub fn with_variable(mut self, name: &str, items: Vec<Item<'a>>) -> Self {
        self.variables.insert(name.to_string(), items);
        self
    }

    /// The callback `resolve()` asks first; without it, `resolve()` finds contained resources and Bundle
    /// entries, and otherwise yields a placeholder of the referenced type (so `resolve() is Patient` works).
    pub fn with_resolver(mut self, resolver: &'a Resolver<'a>) -> Self {
        self.resolver = Some(resolver);
        self
    }

    /// Strict mode: element names the R4 definitions do not know (including `valueQuantity`-style names for
    /// choice elements) and type qualifiers that do not match (`Encounter.name` on a Patient) are errors, and
    /// `as` on several items is an error. Lenient (the default) selects nothing instead, which is what
    /// multi-resource search expressions (`Patient.name | Practitioner.name`) need.
    pub fn strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }
}

/// Parses an expression.
pub fn parse(expression: &str) -> Result<Expression, ParseError> {
    Ok(Expression { root: parser::parse(expression)?, source: expression.into() })
}

/// Evaluates `expr` with `resource` as `$this` (and, unless `ctx` says otherwise, as `%resource` and
/// `%context`).
pub fn evaluate<'a>(expr: &Expression, resource: &'a Value, ctx: &Context<'a>) -> Result<Vec<Item<'a>>, EvalError> {
    let root = [Item::Node(Node::resource(resource))];
    let ev = eval::Eval { ctx, resource, now: Cell::new(None) };
    let frame = eval::Frame { this: &root, index: None, total: None };
    ev.eval(&expr.root, &frame)
}

/// Evaluates `expr` with `this` (an element of `resource`) as `$this`: how a composite search
/// parameter's component expressions run on each element its own expression selected.
pub fn evaluate_on<'a>(
    expr: &Expression,
    this: Item<'a>,
    resource: &'a Value,
    ctx: &Context<'a>,
) -> Result<Vec<Item<'a>>, EvalError> {
    let root = [this];
    let ev = eval::Eval { ctx, resource, now: Cell::new(None) };
    let frame = eval::Frame { this: &root, index: None, total: None };
    ev.eval(&expr.root, &frame)
}

/// One step of a path from a resource's root to an element: a JSON property and, for arrays, the index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub property: String,
    pub index: Option<usize>,
}

/// Evaluates `expr` and returns, for each selected element, its path in `resource` — what FHIRPath Patch
/// needs to add, insert, delete, replace or move it. An empty path is the resource itself. A primitive that
/// has only extensions is reported at its `_name` property. Results that are not elements of `resource`
/// (literals, computed values, resources from a resolver) are an error.
pub fn locate<'a>(expr: &Expression, resource: &'a Value, ctx: &Context<'a>) -> Result<Vec<Vec<Step>>, EvalError> {
    let items = evaluate(expr, resource, ctx)?;
    let mut paths = Vec::with_capacity(items.len());
    for item in &items {
        let Item::Node(node) = item else {
            return Err(EvalError::execution(format!("{item} is not an element of the resource")));
        };
        let target: &Value = if node.value.is_null() { node.extension.unwrap_or(node.value) } else { node.value };
        let mut path = Vec::new();
        if !find_path(resource, target, &mut path) {
            return Err(EvalError::execution(format!("{} is not an element of the resource", node.type_name())));
        }
        paths.push(path);
    }
    Ok(paths)
}

fn find_path(at: &Value, target: &Value, path: &mut Vec<Step>) -> bool {
    if std::ptr::eq(at, target) {
        return true;
    }
    let Value::Object(obj) = at else { return false };
    for (key, value) in obj {
        match value {
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    path.push(Step { property: key.clone(), index: Some(i) });
                    if find_path(v, target, path) {
                        return true;
                    }
                    path.pop();
                }
            }
            v => {
                path.push(Step { property: key.clone(), index: None });
                if find_path(v, target, path) {
                    return true;
                }
                path.pop();
            }
        }
    }
    false
}
