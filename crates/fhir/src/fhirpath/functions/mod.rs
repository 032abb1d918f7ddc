//! The function library: one dispatch on [`Func`], with collection, filtering and FHIR functions here and
//! string, conversion and math functions in the submodules.
//!
//! Lambdas (`where`, `select`, `all`, `exists`, `repeat`, `aggregate`, `sort`, `iif`) get their argument as an
//! expression and evaluate it once per item with `$this`/`$index` set; every other function gets its
//! arguments evaluated once, in the caller's frame.

mod convert;
mod text;

use super::ast::{Expr, Func};
use super::eval::{singleton, to_boolean, union, Collection, Eval, Frame};
use super::item::{Item, Node, NodeKind, NULL};
use super::{model, ops, temporal, EvalError};
use crate::definitions::definitions;
use serde_json::Value;
use std::cmp::Ordering;

pub(crate) fn call<'a>(
    ev: &Eval<'_, 'a>,
    func: Func,
    input: &[Item<'a>],
    args: &[Expr],
    f: &Frame<'_, 'a>,
) -> Result<Collection<'a>, EvalError> {
    let arg = |i: usize| ev.eval(&args[i], f);
    let boolean = |b: bool| Ok(vec![Item::Boolean(b)]);
    match func {
        Func::Empty => boolean(input.is_empty()),
        Func::Exists => match args.first() {
            None => boolean(!input.is_empty()),
            Some(criteria) => boolean(!filter(ev, input, criteria)?.is_empty()),
        },
        Func::Where => filter(ev, input, &args[0]),
        Func::All => {
            for (i, item) in input.iter().enumerate() {
                let frame = Frame { this: std::slice::from_ref(item), index: Some(i), total: None };
                if to_boolean(&ev.eval(&args[0], &frame)?)? != Some(true) {
                    return boolean(false);
                }
            }
            boolean(true)
        }
        Func::AllTrue | Func::AnyTrue | Func::AllFalse | Func::AnyFalse => {
            let mut values = Vec::with_capacity(input.len());
            for item in input {
                match item.system() {
                    Some(super::item::SystemValue::Boolean(b)) => values.push(b),
                    _ => return Err(EvalError::execution(format!("{func:?} needs Booleans, found {item}"))),
                }
            }
            boolean(match func {
                Func::AllTrue => values.iter().all(|b| *b),
                Func::AnyTrue => values.iter().any(|b| *b),
                Func::AllFalse => values.iter().all(|b| !*b),
                _ => values.iter().any(|b| !*b),
            })
        }
        Func::SubsetOf | Func::SupersetOf => {
            let other = arg(0)?;
            let (small, big) = if func == Func::SubsetOf { (input, &other[..]) } else { (&other[..], input) };
            boolean(small.iter().all(|x| contains(big, x)))
        }
        Func::Count => Ok(vec![Item::Integer(input.len() as i64)]),
        Func::Distinct => Ok(union(input.to_vec(), Vec::new())),
        Func::IsDistinct => boolean(union(input.to_vec(), Vec::new()).len() == input.len()),
        Func::Select => {
            let mut out = Vec::new();
            for (i, item) in input.iter().enumerate() {
                let frame = Frame { this: std::slice::from_ref(item), index: Some(i), total: None };
                out.extend(ev.eval(&args[0], &frame)?);
            }
            Ok(out)
        }
        Func::Repeat => {
            let mut out: Collection<'a> = Vec::new();
            let mut queue: Collection<'a> = input.to_vec();
            while !queue.is_empty() {
                let mut next = Vec::new();
                for item in &queue {
                    let frame = Frame { this: std::slice::from_ref(item), index: None, total: None };
                    for found in ev.eval(&args[0], &frame)? {
                        if !out.iter().any(|o| same(o, &found)) {
                            out.push(found.clone());
                            next.push(found);
                        }
                    }
                }
                queue = next;
            }
            Ok(out)
        }
        Func::OfType => ev.of_type(input, type_arg(args)?),
        Func::As => ev.cast(input, type_arg(args)?),
        Func::Is => match singleton(input)? {
            None => Ok(Vec::new()),
            Some(item) => boolean(ev.type_matches(item, type_arg(args)?, true)?),
        },
        Func::Single => Ok(singleton(input)?.cloned().into_iter().collect()),
        Func::First => Ok(input.first().cloned().into_iter().collect()),
        Func::Last => Ok(input.last().cloned().into_iter().collect()),
        Func::Tail => Ok(input.iter().skip(1).cloned().collect()),
        Func::Skip | Func::Take => {
            let n = ev.single_integer(&arg(0)?)?.unwrap_or(0).max(0) as usize;
            Ok(if func == Func::Skip {
                input.iter().skip(n).cloned().collect()
            } else {
                input.iter().take(n).cloned().collect()
            })
        }
        Func::Intersect => {
            let other = arg(0)?;
            let kept = input.iter().filter(|x| contains(&other, x)).cloned().collect();
            Ok(union(kept, Vec::new()))
        }
        Func::Exclude => {
            let other = arg(0)?;
            Ok(input.iter().filter(|x| !contains(&other, x)).cloned().collect())
        }
        Func::Union => Ok(union(input.to_vec(), arg(0)?)),
        Func::Combine => {
            let mut out = input.to_vec();
            out.extend(arg(0)?);
            Ok(out)
        }
        Func::Iif => {
            if input.len() > 1 {
                return Err(EvalError::execution("iif() on a collection of several items"));
            }
            let frame = Frame { this: input, index: f.index, total: f.total };
            let criterion = ev.eval(&args[0], &frame)?;
            let decision = match singleton(&criterion)? {
                None => false,
                Some(item) => match item.system() {
                    Some(super::item::SystemValue::Boolean(b)) => b,
                    _ => return Err(EvalError::semantic("iif() criterion is not a Boolean")),
                },
            };
            match (decision, args.get(2)) {
                (true, _) => ev.eval(&args[1], &frame),
                (false, Some(otherwise)) => ev.eval(otherwise, &frame),
                (false, None) => Ok(Vec::new()),
            }
        }
        Func::Not => Ok(to_boolean(input)?.map(|b| Item::Boolean(!b)).into_iter().collect()),
        Func::Children | Func::Descendants => {
            let mut out = Vec::new();
            for item in input {
                if let Item::Node(node) = item {
                    model::children(node, &mut out);
                }
            }
            if func == Func::Descendants {
                let mut at = 0;
                while at < out.len() {
                    if let Item::Node(node) = out[at] {
                        model::children(&node, &mut out);
                    }
                    at += 1;
                }
            }
            Ok(out)
        }
        Func::Trace => Ok(input.to_vec()), // no log sink in a library; the input passes through
        Func::Now => Ok(vec![Item::DateTime(now(ev))]),
        Func::Today => {
            let mut t = now(ev);
            t.precision = temporal::Precision::Day;
            t.offset_minutes = None;
            t.hour = 0;
            t.minute = 0;
            t.second = 0;
            t.millisecond = 0;
            Ok(vec![Item::Date(t)])
        }
        Func::TimeOfDay => {
            let t = now(ev);
            Ok(vec![Item::Time(temporal::Temporal { year: 0, month: 0, day: 0, offset_minutes: None, ..t })])
        }
        Func::Aggregate => {
            let mut total = match args.get(1) {
                Some(init) => ev.eval(init, f)?,
                None => Vec::new(),
            };
            for (i, item) in input.iter().enumerate() {
                let frame = Frame { this: std::slice::from_ref(item), index: Some(i), total: Some(&total) };
                total = ev.eval(&args[0], &frame)?;
            }
            Ok(total)
        }
        Func::Extension => {
            let url = arg(0)?;
            let Some(url) = singleton(&url)?.and_then(|u| u.as_str().map(str::to_string)) else {
                return Ok(Vec::new());
            };
            let extensions = ev.member(input, "extension")?;
            Ok(extensions
                .into_iter()
                .filter(|e| matches!(e, Item::Node(n) if n.value.get("url").and_then(Value::as_str) == Some(&url)))
                .collect())
        }
        Func::HasValue => boolean(match input {
            [Item::Node(node)] => node.is_primitive() && !node.value.is_null(),
            [item] => !matches!(item, Item::Type { .. }),
            _ => false,
        }),
        Func::GetValue => Ok(match input {
            [item @ Item::Node(node)] if node.is_primitive() && !node.value.is_null() => vec![item.to_system_item()],
            _ => Vec::new(),
        }),
        Func::Resolve => Ok(input.iter().filter_map(|item| resolve(ev, item)).collect()),
        // Terminology needs a terminology server, which this crate does not have: the answer is unknown.
        Func::MemberOf | Func::Subsumes | Func::SubsumedBy => Ok(Vec::new()),
        Func::ConformsTo => {
            let url = arg(0)?;
            let Some(url) = singleton(&url)?.and_then(|u| u.as_str().map(str::to_string)) else {
                return Ok(Vec::new());
            };
            let Some(type_name) = url.strip_prefix("http://hl7.org/fhir/StructureDefinition/") else {
                return Err(EvalError::execution(format!("unknown profile {url}")));
            };
            match singleton(input)? {
                Some(Item::Node(node)) if definitions().type_def(type_name).is_some() => {
                    boolean(model::node_is(node, type_name, true))
                }
                Some(_) => Ok(Vec::new()),
                None => Ok(Vec::new()),
            }
        }
        Func::HtmlChecks => boolean(true),
        Func::Type => Ok(input
            .iter()
            .map(|item| match item {
                Item::Node(node) if node.kind != NodeKind::Untyped => {
                    Item::Type { namespace: "FHIR", name: node.type_name().into() }
                }
                other => Item::Type { namespace: "System", name: super::eval::system_type_name(other).into() },
            })
            .collect()),
        Func::Sort => sort(ev, input, args),
        _ => {
            if let Some(out) = text::call(ev, func, input, args, f)? {
                return Ok(out);
            }
            convert::call(ev, func, input, args, f)
        }
    }
}

fn type_arg(args: &[Expr]) -> Result<&super::ast::TypeSpec, EvalError> {
    match args.first() {
        Some(Expr::Type(spec)) => Ok(spec),
        _ => Err(EvalError::semantic("expected a type name")),
    }
}

fn filter<'a>(ev: &Eval<'_, 'a>, input: &[Item<'a>], criteria: &Expr) -> Result<Collection<'a>, EvalError> {
    let mut out = Vec::new();
    for (i, item) in input.iter().enumerate() {
        let frame = Frame { this: std::slice::from_ref(item), index: Some(i), total: None };
        if to_boolean(&ev.eval(criteria, &frame)?)? == Some(true) {
            out.push(item.clone());
        }
    }
    Ok(out)
}

fn contains(haystack: &[Item<'_>], needle: &Item<'_>) -> bool {
    haystack.iter().any(|y| ops::equals(needle, y) == Some(true))
}

/// Identity for `repeat()`: the same JSON node, or equal System values.
fn same(a: &Item<'_>, b: &Item<'_>) -> bool {
    match (a, b) {
        (Item::Node(x), Item::Node(y)) => {
            std::ptr::eq(x.value, y.value)
                && x.extension.map(|e| e as *const Value) == y.extension.map(|e| e as *const Value)
        }
        _ => ops::equals(a, b) == Some(true),
    }
}

fn now(ev: &Eval<'_, '_>) -> temporal::Temporal {
    match ev.now.get() {
        Some(t) => t,
        None => {
            let t = temporal::now();
            ev.now.set(Some(t));
            t
        }
    }
}

/// `sort(keys...)`: a key written `-key` sorts descending; items without a key come first.
fn sort<'a>(ev: &Eval<'_, 'a>, input: &[Item<'a>], args: &[Expr]) -> Result<Collection<'a>, EvalError> {
    let mut keyed: Vec<(Vec<Option<Item<'a>>>, Item<'a>)> = Vec::with_capacity(input.len());
    for (i, item) in input.iter().enumerate() {
        let frame = Frame { this: std::slice::from_ref(item), index: Some(i), total: None };
        let mut keys = Vec::new();
        if args.is_empty() {
            keys.push(Some(item.clone()));
        }
        for arg in args {
            let expr = match arg {
                Expr::Negate(inner) => inner,
                other => other,
            };
            keys.push(singleton(&ev.eval(expr, &frame)?)?.cloned());
        }
        keyed.push((keys, item.clone()));
    }
    let mut failure = None;
    keyed.sort_by(|(a, _), (b, _)| {
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            let descending = matches!(args.get(i), Some(Expr::Negate(_)));
            let o = match (x, y) {
                // Items without a key come first whatever the direction.
                (None, None) => continue,
                (None, Some(_)) => return Ordering::Less,
                (Some(_), None) => return Ordering::Greater,
                (Some(x), Some(y)) => match ops::compare(x, y) {
                    Ok(o) => o.unwrap_or(Ordering::Equal),
                    Err(e) => {
                        failure.get_or_insert(e);
                        Ordering::Equal
                    }
                },
            };
            let o = if descending { o.reverse() } else { o };
            if o != Ordering::Equal {
                return o;
            }
        }
        Ordering::Equal
    });
    match failure {
        Some(e) => Err(e),
        None => Ok(keyed.into_iter().map(|(_, item)| item).collect()),
    }
}

/// `resolve()`: the resolver's answer if one is configured; a contained resource for `#id`; a Bundle entry by
/// `fullUrl`; otherwise a placeholder of the referenced type, so `resolve() is Patient` works without a fetch.
fn resolve<'a>(ev: &Eval<'_, 'a>, item: &Item<'a>) -> Option<Item<'a>> {
    let (reference, declared_type) = match item {
        Item::Node(node) if node.value.is_object() => {
            (node.value.get("reference").and_then(Value::as_str)?, node.value.get("type").and_then(Value::as_str))
        }
        other => (other.as_str()?, None),
    };
    let reference: &str = reference;
    if let Some(resolver) = ev.ctx.resolver {
        if let Some(found) = resolver(reference) {
            return Some(Item::Node(Node::resource(found)));
        }
    }
    let container = ev.ctx.resource.unwrap_or(ev.resource);
    if let Some(id) = reference.strip_prefix('#') {
        let contained = container.get("contained")?.as_array()?;
        return contained
            .iter()
            .find(|r| r.get("id").and_then(Value::as_str) == Some(id))
            .map(|r| Item::Node(Node::resource(r)));
    }
    let root = ev.ctx.root_resource.unwrap_or(container);
    if root.get("resourceType").and_then(Value::as_str) == Some("Bundle") {
        let entries = root.get("entry").and_then(Value::as_array);
        for entry in entries.into_iter().flatten() {
            let full_url = entry.get("fullUrl").and_then(Value::as_str);
            let resource = entry.get("resource");
            let matches = full_url == Some(reference)
                || resource.is_some_and(|r| {
                    let (t, id) = (r.get("resourceType").and_then(Value::as_str), r.get("id").and_then(Value::as_str));
                    matches!((t, id), (Some(t), Some(id)) if reference.len() == t.len() + 1 + id.len() && reference.starts_with(t) && reference.ends_with(id) && reference.as_bytes()[t.len()] == b'/')
                });
            if matches {
                if let Some(r) = resource {
                    return Some(Item::Node(Node::resource(r)));
                }
            }
        }
    }
    let type_name = declared_type.or_else(|| reference_type(reference))?;
    let &id = definitions().schema.by_type.get(type_name)?;
    Some(Item::Node(Node::new(&NULL, None, NodeKind::Complex(id))))
}

/// The resource type named in a literal reference: `Patient/1`, `http://x/fhir/Patient/1/_history/2`.
fn reference_type(reference: &str) -> Option<&str> {
    let reference = match reference.find("/_history/") {
        Some(i) => &reference[..i],
        None => reference,
    };
    let mut segments = reference.rsplit('/');
    let _id = segments.next()?;
    let t = segments.next()?;
    definitions().is_resource_type(t).then_some(t)
}
