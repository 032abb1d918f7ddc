//! The walk over a JSON resource, node by node of the compiled [`Schema`].
//!
//! Locations are a chain of [`Loc`] frames on the call stack; they are rendered into a string only when an
//! issue is pushed, so a valid resource is validated without allocating.

use super::primitive::{self, json_kind};
use super::reference;
use super::schema::{Child, ChildKind, NodeId, Schema, MAX_CHOICE_GROUPS};
use super::{Issue, IssueType, Severity};
use crate::Definitions;
use serde_json::{Map, Value};
use std::fmt::Write as _;

pub(super) fn validate(defs: &Definitions, resource: &Value) -> Vec<Issue> {
    let mut walk = Walk { defs, schema: &defs.schema, issues: Vec::new() };
    let root_name =
        resource.get("resourceType").and_then(Value::as_str).filter(|t| defs.is_resource_type(t)).unwrap_or("");
    walk.resource(resource, &Loc::Root(root_name), Nesting::Root);
    walk.issues
}

/// Where an element is: rendered as `Patient.name[0].given[1]` on demand.
#[derive(Clone, Copy)]
enum Loc<'a> {
    Root(&'a str),
    Key(&'a Loc<'a>, &'a str),
    Index(&'a Loc<'a>, usize),
}

impl Loc<'_> {
    fn render(&self, out: &mut String) {
        match *self {
            Loc::Root(name) => out.push_str(name),
            Loc::Key(parent, key) => {
                parent.render(out);
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key.strip_prefix('_').unwrap_or(key));
            }
            Loc::Index(parent, i) => {
                parent.render(out);
                let _ = write!(out, "[{i}]");
            }
        }
    }

    fn to_path(self) -> String {
        let mut s = String::new();
        self.render(&mut s);
        s
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Nesting {
    Root,
    /// In `Bundle.entry.resource` and the like: a resource in its own right.
    Inline,
    /// In `contained`.
    Contained,
}

struct Walk<'d> {
    defs: &'d Definitions,
    schema: &'d Schema,
    issues: Vec<Issue>,
}

impl<'d> Walk<'d> {
    fn issue(&mut self, code: IssueType, loc: &Loc<'_>, diagnostics: impl Into<String>) {
        self.issues.push(Issue {
            severity: Severity::Error,
            code,
            expression: loc.to_path(),
            diagnostics: diagnostics.into(),
        });
    }

    fn resource(&mut self, value: &Value, loc: &Loc<'_>, nesting: Nesting) {
        let Some(obj) = value.as_object() else {
            let diagnostics = format!("a resource must be a JSON object, found {}", json_kind(value));
            let severity = if nesting == Nesting::Root { Severity::Fatal } else { Severity::Error };
            self.issues.push(Issue { severity, code: IssueType::Structure, expression: loc.to_path(), diagnostics });
            return;
        };
        let resource_type = match obj.get("resourceType") {
            None => return self.issue(IssueType::Required, &Loc::Key(loc, "resourceType"), "missing resourceType"),
            Some(Value::String(t)) => t.as_str(),
            Some(other) => {
                let message = format!("resourceType must be a string, found {}", json_kind(other));
                return self.issue(IssueType::Structure, &Loc::Key(loc, "resourceType"), message);
            }
        };
        if !self.defs.is_resource_type(resource_type) {
            let message = format!("unknown resource type '{resource_type}'");
            return self.issue(IssueType::NotSupported, &Loc::Key(loc, "resourceType"), message);
        }
        if nesting == Nesting::Contained {
            if !obj.contains_key("id") {
                self.issue(IssueType::Required, loc, "a contained resource must have an id");
            }
            if obj.contains_key("contained") {
                let message = "a contained resource must not contain resources (dom-2)";
                self.issue(IssueType::Invariant, &Loc::Key(loc, "contained"), message);
            }
        }
        let node = self.schema.by_type[resource_type];
        self.object(node, obj, loc);
    }

    fn object(&mut self, node_id: NodeId, obj: &Map<String, Value>, loc: &Loc<'_>) {
        let node = &self.schema.nodes[node_id as usize];
        let mut seen_required = 0u64;
        let mut chosen: [Option<&str>; MAX_CHOICE_GROUPS] = [None; MAX_CHOICE_GROUPS];
        for (key, value) in obj {
            if node.is_resource && key == "resourceType" {
                continue;
            }
            let (name, is_ext) = match key.strip_prefix('_') {
                Some(name) => (name, true),
                None => (key.as_str(), false),
            };
            let here = Loc::Key(loc, key);
            let Some(child) = node.children.get(name) else {
                self.unknown_element(node_id, key, &here);
                continue;
            };
            if let Some(group) = child.choice {
                match chosen[group as usize] {
                    None => chosen[group as usize] = Some(&child.name),
                    Some(first) if first != &*child.name => {
                        let base = &node.choice_bases[group as usize];
                        let message = format!("only one of {base}[x] may be present: found {first} and {name}");
                        self.issue(IssueType::Structure, &here, message);
                        continue;
                    }
                    Some(_) => {}
                }
            }
            if let Some(bit) = child.required_bit {
                seen_required |= 1 << bit;
            }
            if is_ext {
                match child.kind {
                    ChildKind::Primitive(_, ext_node) => self.primitive_extension(child, ext_node, obj, value, &here),
                    _ => self.unknown_element(node_id, key, &here),
                }
            } else {
                self.element(child, obj, value, &here);
            }
        }
        if seen_required & node.required_mask != node.required_mask {
            for (bit, name) in &node.required {
                if seen_required & (1 << bit) == 0 {
                    let message = format!("missing required element '{name}'");
                    self.issue(IssueType::Required, &Loc::Key(loc, name), message);
                }
            }
        }
        if node.is_reference {
            if let Some(Value::String(r)) = obj.get("reference") {
                if let Err(message) = reference::check(self.defs, r) {
                    self.issue(IssueType::Value, &Loc::Key(loc, "reference"), message);
                }
            }
        }
    }

    fn unknown_element(&mut self, node_id: NodeId, key: &str, here: &Loc<'_>) {
        let node = &self.schema.nodes[node_id as usize];
        let name = key.trim_start_matches('_');
        let base = node.choice_bases.iter().find(|base| {
            name.len() > base.len() && name.starts_with(&***base) && name.as_bytes()[base.len()].is_ascii_uppercase()
        });
        let message = match base {
            Some(base) => format!("'{name}' is not a valid type for {base}[x] in {}", node.name),
            None if node.choice_bases.iter().any(|b| **b == *name) => {
                format!("'{name}' needs a type suffix ({name}[x], e.g. {name}String) in {}", node.name)
            }
            None => format!("unknown element '{key}' in {}", node.name),
        };
        self.issue(IssueType::Structure, here, message);
    }

    /// A property holding the element's value(s): cardinality, then each value.
    fn element(&mut self, child: &'d Child, parent: &Map<String, Value>, value: &Value, here: &Loc<'_>) {
        if child.max == 0 {
            return self.issue(IssueType::Structure, here, format!("element '{}' is not allowed here", child.name));
        }
        match value {
            Value::Array(items) => {
                if child.max == 1 {
                    let message = format!("element '{}' has at most one value and must not be an array", child.name);
                    return self.issue(IssueType::Structure, here, message);
                }
                if items.is_empty() {
                    return self.issue(
                        IssueType::Structure,
                        here,
                        "arrays must not be empty (omit the element instead)",
                    );
                }
                if items.len() as u64 > child.max as u64 {
                    let message = format!("element '{}' has at most {} values", child.name, child.max);
                    self.issue(IssueType::Structure, here, message);
                }
                let partner = parent.get(&*child.ext_key).and_then(Value::as_array);
                for (i, item) in items.iter().enumerate() {
                    let at = Loc::Index(here, i);
                    if item.is_null() {
                        let aligned = matches!(child.kind, ChildKind::Primitive(..))
                            && partner.and_then(|p| p.get(i)).is_some_and(|e| !e.is_null());
                        if !aligned {
                            let message = format!(
                                "null is only allowed in a primitive array aligned with a non-null {} entry",
                                child.ext_key
                            );
                            self.issue(IssueType::Structure, &at, message);
                        }
                    } else {
                        self.value(child, item, &at);
                    }
                }
            }
            Value::Null => {
                self.issue(IssueType::Structure, here, "null is not allowed here (omit the element instead)")
            }
            single => {
                if child.max > 1 {
                    let message = format!("element '{}' repeats and must be an array", child.name);
                    return self.issue(IssueType::Structure, here, message);
                }
                self.value(child, single, here);
            }
        }
    }

    fn value(&mut self, child: &'d Child, value: &Value, here: &Loc<'_>) {
        match child.kind {
            ChildKind::Primitive(p, _) => {
                if let Err((code, message)) = primitive::check(p, value) {
                    return self.issue(code, here, message);
                }
                if let (Some(vs), Value::String(code)) = (child.value_set, value) {
                    let codes = &self.schema.value_sets[vs as usize];
                    if codes.binary_search_by(|c| (**c).cmp(code.as_str())).is_err() {
                        let shown: Vec<&str> = codes.iter().take(12).map(|c| &**c).collect();
                        let more = if codes.len() > shown.len() { ", ..." } else { "" };
                        let message = format!(
                            "'{code}' is not in the required value set: expected one of {}{more}",
                            shown.join(", ")
                        );
                        self.issue(IssueType::CodeInvalid, here, message);
                    }
                }
            }
            ChildKind::Complex(node) => match value {
                Value::Object(obj) if obj.is_empty() => {
                    self.issue(IssueType::Structure, here, "objects must not be empty (omit the element instead)")
                }
                Value::Object(obj) => self.object(node, obj, here),
                other => {
                    let type_name = &self.schema.nodes[node as usize].name;
                    let message = format!("expected an object ({type_name}), found {}", json_kind(other));
                    self.issue(IssueType::Structure, here, message);
                }
            },
            ChildKind::Resource => self.resource(value, here, Nesting::Inline),
            ChildKind::Contained => self.resource(value, here, Nesting::Contained),
        }
    }

    /// `_x`: the id/extensions of primitive `x`, an object, or for repeating primitives an array aligned with
    /// `x`'s array (null where a value has no extension).
    fn primitive_extension(
        &mut self,
        child: &'d Child,
        ext_node: NodeId,
        parent: &Map<String, Value>,
        value: &Value,
        here: &Loc<'_>,
    ) {
        match value {
            Value::Array(items) => {
                if child.max <= 1 {
                    let message =
                        format!("'{}' must not be an array: '{}' has at most one value", child.ext_key, child.name);
                    return self.issue(IssueType::Structure, here, message);
                }
                if items.is_empty() {
                    return self.issue(
                        IssueType::Structure,
                        here,
                        "arrays must not be empty (omit the element instead)",
                    );
                }
                let values = parent.get(&*child.name);
                if let Some(values) = values {
                    if values.as_array().is_none_or(|v| v.len() != items.len()) {
                        let message =
                            format!("'{}' must be an array of the same length as '{}'", child.ext_key, child.name);
                        return self.issue(IssueType::Structure, here, message);
                    }
                }
                for (i, item) in items.iter().enumerate() {
                    let at = Loc::Index(here, i);
                    if item.is_null() {
                        // Aligned with a value; both null is reported once, on the value side.
                        if values.is_none() {
                            let message = format!(
                                "null is only allowed in '{}' aligned with a value in '{}'",
                                child.ext_key, child.name
                            );
                            self.issue(IssueType::Structure, &at, message);
                        }
                    } else {
                        self.extension_object(ext_node, item, &at);
                    }
                }
            }
            _ if child.max > 1 => {
                let message = format!("'{}' must be an array aligned with '{}'", child.ext_key, child.name);
                self.issue(IssueType::Structure, here, message);
            }
            single => self.extension_object(ext_node, single, here),
        }
    }

    fn extension_object(&mut self, ext_node: NodeId, value: &Value, here: &Loc<'_>) {
        match value {
            Value::Object(obj) if obj.is_empty() => {
                self.issue(IssueType::Structure, here, "objects must not be empty (omit the element instead)")
            }
            Value::Object(obj) => self.object(ext_node, obj, here),
            other => {
                let message = format!(
                    "a primitive's extension must be an object with id and/or extension, found {}",
                    json_kind(other)
                );
                self.issue(IssueType::Structure, here, message);
            }
        }
    }
}
