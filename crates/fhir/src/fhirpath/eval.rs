//! The evaluator: expressions over collections of [`Item`]s.
//!
//! Every expression yields a collection (`Vec<Item>`). A [`Frame`] carries what `$this`, `$index` and
//! `$total` mean at that point: the resource at the top, one item inside `where(...)`/`select(...)`.
//! Function arguments that are not lambdas are evaluated in the caller's frame, so in
//! `name.given.combine($this.name.family)` `$this` is still the resource. Functions live in
//! [`super::functions`]; this file holds navigation, variables, operators and type tests.

use super::ast::{BinOp, Expr, TypeSpec};
use super::item::{Item, Node};
use super::model;
use super::ops::{self, Arith};
use super::temporal::Temporal;
use super::{Context, EvalError};
use serde_json::Value;
use std::cell::Cell;
use std::cmp::Ordering;

pub(crate) struct Eval<'c, 'a> {
    pub ctx: &'c Context<'a>,
    /// The resource the expression was evaluated on.
    pub resource: &'a Value,
    /// `now()` is fixed for one evaluation.
    pub now: Cell<Option<Temporal>>,
}

#[derive(Clone, Copy)]
pub(crate) struct Frame<'f, 'a> {
    pub this: &'f [Item<'a>],
    pub index: Option<usize>,
    pub total: Option<&'f [Item<'a>]>,
}

pub(crate) type Collection<'a> = Vec<Item<'a>>;

/// The System type names FHIRPath knows without a model.
const SYSTEM_TYPES: [&str; 8] = ["Boolean", "String", "Integer", "Decimal", "Date", "DateTime", "Time", "Quantity"];

/// Whether a type specifier names a known type: a System type, or a FHIR type in the R4 definitions.
/// `System.Patient` is accepted (and matches nothing), as the spec's tests expect.
pub(crate) fn check_type(spec: &TypeSpec) -> Result<(), String> {
    let name = &*spec.name;
    let known = match spec.namespace.as_deref() {
        Some("FHIR") => model::is_fhir_type(name),
        Some("System") | None => SYSTEM_TYPES.contains(&name) || model::is_fhir_type(name),
        Some(other) => return Err(format!("unknown type namespace {other}")),
    };
    if known {
        Ok(())
    } else {
        Err(format!("unknown type {name}"))
    }
}

impl<'c, 'a> Eval<'c, 'a> {
    pub fn eval(&self, expr: &Expr, f: &Frame<'_, 'a>) -> Result<Collection<'a>, EvalError> {
        Ok(match expr {
            Expr::Empty => Vec::new(),
            Expr::Literal(item) => vec![item.clone()],
            Expr::This => f.this.to_vec(),
            Expr::Index => f.index.map(|i| vec![Item::Integer(i as i64)]).unwrap_or_default(),
            Expr::Total => f.total.map(<[Item<'a>]>::to_vec).unwrap_or_default(),
            Expr::Variable(name) => self.variable(name)?,
            Expr::Identifier(name) => {
                let mut out = Vec::new();
                let mut known = false;
                let mut nodes = false;
                for item in f.this {
                    if let Item::Node(node) = item {
                        if name.starts_with(|c: char| c.is_ascii_uppercase()) {
                            // A type name qualifying the context: `Patient.name` on a Patient.
                            if model::node_is(node, name, true) {
                                out.push(item.clone());
                            } else if self.ctx.strict {
                                return Err(EvalError::semantic(format!(
                                    "'{name}' does not apply to a {}",
                                    node.type_name()
                                )));
                            }
                        } else {
                            nodes = true;
                            known |= model::child(node, name, self.ctx.strict, &mut out)?;
                        }
                    }
                }
                if self.ctx.strict && nodes && !known {
                    return Err(unknown_element(name, f.this));
                }
                out
            }
            Expr::Member(target, name) => {
                if self.ctx.strict {
                    check_cast_member(target, name)?;
                }
                let input = self.eval(target, f)?;
                self.member(&input, name)?
            }
            Expr::Call { target, func, args } => match target {
                Some(t) => {
                    let input = self.eval(t, f)?;
                    super::functions::call(self, *func, &input, args, f)?
                }
                None => super::functions::call(self, *func, f.this, args, f)?,
            },
            Expr::Indexer(target, index) => {
                let mut input = self.eval(target, f)?;
                let index = self.eval(index, f)?;
                match self.single_integer(&index)? {
                    Some(i) if i >= 0 && (i as usize) < input.len() => vec![input.swap_remove(i as usize)],
                    _ => Vec::new(),
                }
            }
            Expr::Negate(operand) => {
                let v = self.eval(operand, f)?;
                match singleton(&v)?.map(Item::to_system_item) {
                    None => Vec::new(),
                    Some(Item::Integer(i)) => vec![Item::Integer(-i)],
                    Some(Item::Decimal(d)) => vec![Item::Decimal(d.neg())],
                    Some(Item::Quantity(mut q)) => {
                        q.value = q.value.neg();
                        vec![Item::Quantity(q)]
                    }
                    Some(other) => return Err(EvalError::execution(format!("cannot negate {other}"))),
                }
            }
            Expr::Binary(op, lhs, rhs) => self.binary(*op, lhs, rhs, f)?,
            Expr::Is(target, spec) => {
                let input = self.eval(target, f)?;
                match singleton(&input)? {
                    None => Vec::new(),
                    Some(item) => vec![Item::Boolean(self.type_matches(item, spec, true)?)],
                }
            }
            Expr::As(target, spec) => {
                let input = self.eval(target, f)?;
                self.cast(&input, spec)?
            }
            Expr::Type(spec) => return Err(EvalError::semantic(format!("unexpected type name {}", spec.name))),
        })
    }

    /// `name` of every item of `input`.
    pub fn member(&self, input: &[Item<'a>], name: &str) -> Result<Collection<'a>, EvalError> {
        let mut out = Vec::with_capacity(input.len());
        let (mut known, mut nodes) = (false, false);
        for item in input {
            match item {
                Item::Node(node) => {
                    nodes = true;
                    known |= model::child(node, name, self.ctx.strict, &mut out)?;
                }
                Item::Type { namespace, name: type_name } => match name {
                    "namespace" => out.push(Item::String((*namespace).into())),
                    "name" => out.push(Item::String(type_name.clone())),
                    _ => {}
                },
                _ => {}
            }
        }
        if self.ctx.strict && nodes && !known {
            return Err(unknown_element(name, input));
        }
        Ok(out)
    }

    fn variable(&self, name: &str) -> Result<Collection<'a>, EvalError> {
        let resource = |v: Option<&'a Value>| vec![Item::Node(Node::resource(v.unwrap_or(self.resource)))];
        Ok(match name {
            "resource" => resource(self.ctx.resource),
            "rootResource" => resource(self.ctx.root_resource.or(self.ctx.resource)),
            "context" => match &self.ctx.context {
                Some(items) => items.clone(),
                None => resource(None),
            },
            "ucum" => vec![Item::String("http://unitsofmeasure.org".into())],
            "sct" => vec![Item::String("http://snomed.info/sct".into())],
            "loinc" => vec![Item::String("http://loinc.org".into())],
            _ => {
                if let Some(items) = self.ctx.variables.get(name) {
                    items.clone()
                } else if let Some(vs) = name.strip_prefix("vs-") {
                    vec![Item::String(format!("http://hl7.org/fhir/ValueSet/{vs}").into())]
                } else if let Some(ext) = name.strip_prefix("ext-") {
                    vec![Item::String(format!("http://hl7.org/fhir/StructureDefinition/{ext}").into())]
                } else {
                    return Err(EvalError::semantic(format!("undefined variable %{name}")));
                }
            }
        })
    }

    /// The integer of a single-item collection (`None` if empty).
    pub fn single_integer(&self, c: &[Item<'a>]) -> Result<Option<i64>, EvalError> {
        match singleton(c)? {
            None => Ok(None),
            Some(item) => match item.to_system_item() {
                Item::Integer(i) => Ok(Some(i)),
                other => Err(EvalError::execution(format!("expected an integer, found {other}"))),
            },
        }
    }

    fn binary(&self, op: BinOp, lhs: &Expr, rhs: &Expr, f: &Frame<'_, 'a>) -> Result<Collection<'a>, EvalError> {
        let boolean = |b: Option<bool>| b.map(|b| vec![Item::Boolean(b)]).unwrap_or_default();
        match op {
            BinOp::And | BinOp::Or | BinOp::Implies | BinOp::Xor => {
                let a = to_boolean(&self.eval(lhs, f)?)?;
                // Short-circuit where the left side decides: `false and x`, `true or x`, `false implies x`.
                let decided = match (op, a) {
                    (BinOp::And, Some(false)) => Some(false),
                    (BinOp::Or, Some(true)) => Some(true),
                    (BinOp::Implies, Some(false)) => Some(true),
                    _ => None,
                };
                if decided.is_some() {
                    return Ok(boolean(decided));
                }
                let b = to_boolean(&self.eval(rhs, f)?)?;
                return Ok(boolean(match op {
                    BinOp::And => match (a, b) {
                        (_, Some(false)) => Some(false),
                        (Some(true), Some(true)) => Some(true),
                        _ => None,
                    },
                    BinOp::Or => match (a, b) {
                        (_, Some(true)) => Some(true),
                        (Some(false), Some(false)) => Some(false),
                        _ => None,
                    },
                    BinOp::Implies => match (a, b) {
                        (_, Some(true)) => Some(true),
                        (Some(true), Some(false)) => Some(false),
                        (None, Some(false)) | (Some(true), None) | (None, None) => None,
                        (Some(false), _) => Some(true),
                    },
                    _ => a.zip(b).map(|(a, b)| a != b),
                }));
            }
            _ => {}
        }
        let (a, b) = (self.eval(lhs, f)?, self.eval(rhs, f)?);
        Ok(match op {
            BinOp::Union => union(a, b),
            BinOp::Eq | BinOp::Ne => {
                if a.is_empty() || b.is_empty() {
                    return Ok(Vec::new());
                }
                let eq = if a.len() != b.len() {
                    Some(false)
                } else {
                    let mut all = Some(true);
                    for (x, y) in a.iter().zip(&b) {
                        match ops::equals(x, y) {
                            Some(true) => {}
                            Some(false) => {
                                all = Some(false);
                                break;
                            }
                            None => all = None,
                        }
                    }
                    all
                };
                boolean(eq.map(|e| if op == BinOp::Eq { e } else { !e }))
            }
            BinOp::Equiv | BinOp::NotEquiv => {
                let eq = equivalent_collections(&a, &b);
                boolean(Some(if op == BinOp::Equiv { eq } else { !eq }))
            }
            BinOp::Lt | BinOp::Gt | BinOp::Le | BinOp::Ge => {
                let (Some(x), Some(y)) = (singleton(&a)?, singleton(&b)?) else { return Ok(Vec::new()) };
                boolean(ops::compare(x, y)?.map(|o| match op {
                    BinOp::Lt => o == Ordering::Less,
                    BinOp::Gt => o == Ordering::Greater,
                    BinOp::Le => o != Ordering::Greater,
                    _ => o != Ordering::Less,
                }))
            }
            BinOp::In | BinOp::Contains => {
                let (needle, haystack) = if op == BinOp::In { (&a, &b) } else { (&b, &a) };
                match singleton(needle)? {
                    None => Vec::new(),
                    Some(x) => boolean(Some(haystack.iter().any(|y| ops::equals(x, y) == Some(true)))),
                }
            }
            BinOp::Concat => {
                let text = |c: &[Item<'a>]| -> Result<String, EvalError> {
                    Ok(singleton(c)?.map(|i| i.to_string()).unwrap_or_default())
                };
                vec![Item::String(format!("{}{}", text(&a)?, text(&b)?).into())]
            }
            _ => {
                let arith = match op {
                    BinOp::Add => Arith::Add,
                    BinOp::Sub => Arith::Sub,
                    BinOp::Mul => Arith::Mul,
                    BinOp::Div => Arith::Div,
                    BinOp::IntDiv => Arith::IntDiv,
                    _ => Arith::Mod,
                };
                let (Some(x), Some(y)) = (singleton(&a)?, singleton(&b)?) else { return Ok(Vec::new()) };
                ops::arithmetic(arith, x, y)?.into_iter().collect()
            }
        })
    }

    /// `is`: whether `item` is of type `spec` (or derives from it).
    pub fn type_matches(&self, item: &Item<'a>, spec: &TypeSpec, inheritance: bool) -> Result<bool, EvalError> {
        let name = &*spec.name;
        let namespace = spec.namespace.as_deref(); // names were checked by the parser (`check_type`)
        Ok(match item {
            Item::Node(node) if node.kind != super::item::NodeKind::Untyped => {
                namespace != Some("System") && model::node_is(node, name, inheritance)
            }
            Item::Node(node) => namespace != Some("FHIR") && node.type_name() == name,
            other => namespace != Some("FHIR") && system_type_name(other) == name,
        })
    }

    /// `as`: the items of type `spec`. A collection of several items is an error in strict mode (the spec
    /// says `as` takes one item); otherwise it filters like `ofType`, which R4 search parameters rely on
    /// (`(ActivityDefinition.useContext.value as CodeableConcept)`).
    pub fn cast(&self, input: &[Item<'a>], spec: &TypeSpec) -> Result<Collection<'a>, EvalError> {
        if input.len() > 1 && self.ctx.strict {
            return Err(EvalError::execution(format!("'as {}' on a collection of {} items", spec.name, input.len())));
        }
        self.of_type(input, spec)
    }

    pub fn of_type(&self, input: &[Item<'a>], spec: &TypeSpec) -> Result<Collection<'a>, EvalError> {
        let mut out = Vec::new();
        for item in input {
            if self.type_matches(item, spec, false)? {
                out.push(item.clone());
            }
        }
        Ok(out)
    }
}

/// Strict mode's one static check: after `as T` / `ofType(T)` the element must exist on `T`, even when the
/// cast selected nothing (`(Observation.value as Period).unit` is an error, not an empty result).
fn check_cast_member(target: &Expr, name: &str) -> Result<(), EvalError> {
    let spec = match target {
        Expr::As(_, spec) => spec,
        Expr::Call { func: super::ast::Func::As | super::ast::Func::OfType, args, .. } => match args.first() {
            Some(Expr::Type(spec)) => spec,
            _ => return Ok(()),
        },
        _ => return Ok(()),
    };
    if spec.namespace.as_deref() == Some("System") {
        return Ok(());
    }
    let schema = &crate::definitions::definitions().schema;
    let Some(&id) = schema.by_type.get(&*spec.name) else { return Ok(()) };
    let node = &schema.nodes[id as usize];
    if node.children.contains_key(name) || node.choice_bases.iter().any(|b| &**b == name) {
        Ok(())
    } else {
        Err(EvalError::semantic(format!("{} has no element '{name}'", spec.name)))
    }
}

/// Strict mode's error for a name that no item of the collection defines (a heterogeneous collection, such
/// as `descendants()`, may ask for a name only some of its types have).
fn unknown_element(name: &str, input: &[Item<'_>]) -> EvalError {
    let type_name = input.iter().find_map(|i| match i {
        Item::Node(n) => Some(n.type_name()),
        _ => None,
    });
    EvalError::semantic(format!("{} has no element '{name}'", type_name.unwrap_or("the input")))
}

/// The System type name of a non-node item.
pub(crate) fn system_type_name(item: &Item<'_>) -> &'static str {
    match item {
        Item::Boolean(_) => "Boolean",
        Item::Integer(_) => "Integer",
        Item::Decimal(_) => "Decimal",
        Item::String(_) => "String",
        Item::Date(_) => "Date",
        Item::DateTime(_) => "DateTime",
        Item::Time(_) => "Time",
        Item::Quantity(_) => "Quantity",
        Item::Type { .. } => "TypeInfo",
        Item::Node(n) => n.type_name(),
    }
}

/// The only item of a collection, `None` if empty, an error if there are several.
pub(crate) fn singleton<'x, 'a>(c: &'x [Item<'a>]) -> Result<Option<&'x Item<'a>>, EvalError> {
    match c {
        [] => Ok(None),
        [one] => Ok(Some(one)),
        _ => Err(EvalError::execution(format!("expected a single item, found {}", c.len()))),
    }
}

/// Singleton evaluation of collections as a Boolean: empty is unknown, one Boolean is itself, any other single
/// item is `true`, several items are an error.
pub(crate) fn to_boolean(c: &[Item<'_>]) -> Result<Option<bool>, EvalError> {
    Ok(match singleton(c)? {
        None => None,
        Some(item) => match item.system() {
            Some(super::item::SystemValue::Boolean(b)) => Some(b),
            _ => Some(true),
        },
    })
}

/// `|` and `union()`: both collections, duplicates (by `=`) removed, first occurrence kept.
pub(crate) fn union<'a>(a: Collection<'a>, b: Collection<'a>) -> Collection<'a> {
    let mut out: Collection<'a> = Vec::with_capacity(a.len() + b.len());
    for item in a.into_iter().chain(b) {
        if !out.iter().any(|o| ops::equals(o, &item) == Some(true)) {
            out.push(item);
        }
    }
    out
}

fn equivalent_collections(a: &[Item<'_>], b: &[Item<'_>]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    // Order does not matter for `~`: match each item of `a` with a distinct item of `b`.
    let mut used = vec![false; b.len()];
    a.iter().all(|x| {
        let found = b.iter().enumerate().find(|(i, y)| !used[*i] && ops::equivalent(x, y));
        match found {
            Some((i, _)) => {
                used[i] = true;
                true
            }
            None => false,
        }
    })
}
