//! The FHIR model as FHIRPath sees it: navigating JSON by element name, and what type a node is.
//!
//! Navigation uses the schema graph compiled for validation ([`crate::validate::schema`]), where each
//! type's children are keyed by JSON property name and choice elements are already expanded
//! (`valueQuantity`, `valueString`). FHIRPath names a choice element by its base name (`value`), so a
//! lookup that misses tries the node's choice groups and picks whichever expanded property the JSON has. A
//! primitive's `_name` sibling rides along on the node, so `given.extension` and `hasValue()` work without a
//! second lookup. Nothing here allocates per node.

use super::item::{Item, Node, NodeKind, NULL};
use super::EvalError;
use crate::definitions::definitions;
use crate::validate::schema::{Child, ChildKind};
use serde_json::{Map, Value};

/// Pushes the children named `name` of `node` onto `out`; returns whether the node's type defines `name`
/// (always `true` for untyped JSON). In `strict` mode a choice element named with its type suffix
/// (`valueQuantity`) is an error; otherwise such names, and names the definitions do not know, select
/// whatever the JSON holds under them.
pub(crate) fn child<'a>(node: &Node<'a>, name: &str, strict: bool, out: &mut Vec<Item<'a>>) -> Result<bool, EvalError> {
    match node.kind {
        NodeKind::Primitive(p) => {
            // Only `id` and `extension`, from the `_name` object.
            let known = name == "id" || name == "extension";
            if let (true, Some(ext)) = (known, node.extension.and_then(Value::as_object)) {
                let schema = &definitions().schema;
                if let Some(c) = schema.nodes[schema.by_type[p.name()] as usize].children.get(name) {
                    push_child(ext, c, out);
                }
            }
            Ok(known)
        }
        NodeKind::Complex(id) => {
            let schema_node = &definitions().schema.nodes[id as usize];
            let Some(obj) = node.value.as_object() else {
                // A placeholder from resolve(): typed, without content.
                return Ok(
                    schema_node.children.contains_key(name) || schema_node.choice_bases.iter().any(|b| &**b == name)
                );
            };
            if let Some(c) = schema_node.children.get(name) {
                if c.choice.is_some() && strict {
                    return Err(EvalError::semantic(format!(
                        "'{name}' is a choice element of {}: use its base name",
                        schema_node.name
                    )));
                }
                push_child(obj, c, out);
                return Ok(true);
            }
            if let Some(group) = schema_node.choice_bases.iter().position(|b| &**b == name) {
                for key in obj.keys() {
                    let key = key.strip_prefix('_').unwrap_or(key);
                    if key.len() > name.len() && key.starts_with(name) {
                        if let Some(c) = schema_node.children.get(key).filter(|c| c.choice == Some(group as u8)) {
                            // A choice never repeats: the first property of the group found is the element.
                            push_child(obj, c, out);
                            break;
                        }
                    }
                }
                return Ok(true);
            }
            if !strict {
                if let Some(v) = obj.get(name) {
                    push_untyped(v, out);
                }
            }
            Ok(false)
        }
        NodeKind::Untyped => {
            if let Some(v) = node.value.get(name) {
                push_untyped(v, out);
            }
            Ok(true)
        }
    }
}

fn kind_of(k: ChildKind, v: &Value) -> NodeKind {
    match k {
        ChildKind::Primitive(p, _) => NodeKind::Primitive(p),
        ChildKind::Complex(id) => NodeKind::Complex(id),
        ChildKind::Resource | ChildKind::Contained => Node::resource(v).kind,
    }
}

/// Pushes the value(s) of property `c` of `obj`, merging a primitive's `_name` sibling.
pub(crate) fn push_child<'a>(obj: &'a Map<String, Value>, c: &Child, out: &mut Vec<Item<'a>>) {
    let value = obj.get(&*c.name);
    let ext = match c.kind {
        ChildKind::Primitive(..) => obj.get(&*c.ext_key),
        _ => None,
    };
    match (value, ext) {
        (Some(Value::Array(values)), ext) => {
            let exts = ext.and_then(Value::as_array);
            for (i, v) in values.iter().enumerate() {
                let e = exts.and_then(|e| e.get(i)).filter(|e| !e.is_null());
                if !v.is_null() || e.is_some() {
                    out.push(Item::Node(Node::new(v, e, kind_of(c.kind, v))));
                }
            }
            // `_given` longer than `given` is malformed; its extra entries are ignored.
        }
        (Some(v), ext) if !v.is_null() => out.push(Item::Node(Node::new(v, ext, kind_of(c.kind, v)))),
        (_, Some(Value::Array(exts))) => {
            for e in exts.iter().filter(|e| !e.is_null()) {
                out.push(Item::Node(Node::new(&NULL, Some(e), kind_of(c.kind, &NULL))));
            }
        }
        (_, Some(e)) if e.is_object() => out.push(Item::Node(Node::new(&NULL, Some(e), kind_of(c.kind, &NULL)))),
        _ => {}
    }
}

fn push_untyped<'a>(v: &'a Value, out: &mut Vec<Item<'a>>) {
    let one = |v: &'a Value| {
        if v.get("resourceType").is_some() {
            Node::resource(v)
        } else {
            Node::new(v, None, NodeKind::Untyped)
        }
    };
    match v {
        Value::Array(values) => out.extend(values.iter().filter(|v| !v.is_null()).map(|v| Item::Node(one(v)))),
        Value::Null => {}
        v => out.push(Item::Node(one(v))),
    }
}

/// All child elements of `node`, in JSON order (`children()`).
pub(crate) fn children<'a>(node: &Node<'a>, out: &mut Vec<Item<'a>>) {
    match node.kind {
        NodeKind::Primitive(p) => {
            if let Some(ext) = node.extension.and_then(Value::as_object) {
                let schema = &definitions().schema;
                let element = &schema.nodes[schema.by_type[p.name()] as usize];
                for name in ["id", "extension"] {
                    if let Some(c) = element.children.get(name) {
                        push_child(ext, c, out);
                    }
                }
            }
        }
        NodeKind::Complex(id) => {
            let Some(obj) = node.value.as_object() else { return };
            let schema_node = &definitions().schema.nodes[id as usize];
            for (key, v) in obj {
                if key == "resourceType" {
                    continue;
                }
                if let Some(plain) = key.strip_prefix('_') {
                    // Only an extension-only primitive is reached through its `_name` key.
                    if !obj.contains_key(plain) {
                        if let Some(c) = schema_node.children.get(plain) {
                            push_child(obj, c, out);
                        }
                    }
                    continue;
                }
                match schema_node.children.get(key.as_str()) {
                    Some(c) => push_child(obj, c, out),
                    None => push_untyped(v, out),
                }
            }
        }
        NodeKind::Untyped => {
            if let Value::Object(obj) = node.value {
                obj.iter().filter(|(k, _)| *k != "resourceType").for_each(|(_, v)| push_untyped(v, out));
            }
        }
    }
}

/// The FHIR type name of `name`'s ancestors, nearest first (`code` → `string`, `Element`).
fn base_of(name: &str) -> Option<&'static str> {
    definitions().type_def(name)?.base.as_deref()
}

/// Whether a node's FHIR type is `name` or derives from it (`Age` is a `Quantity`, `code` a `string`, every
/// resource a `Resource`). `primitive_inheritance` off makes `code` not a `string` (see `as`/`ofType`).
pub(crate) fn node_is(node: &Node<'_>, name: &str, primitive_inheritance: bool) -> bool {
    let own = node.type_name();
    if own == name {
        return true;
    }
    if let NodeKind::Primitive(_) = node.kind {
        if !primitive_inheritance {
            return false;
        }
    }
    if let NodeKind::Complex(id) = node.kind {
        let schema_name = &*definitions().schema.nodes[id as usize].name;
        if schema_name.contains('.') {
            return name == "Element" || (own == "BackboneElement" && name == "BackboneElement");
        }
    }
    let mut current = base_of(own);
    while let Some(t) = current {
        if t == name {
            return true;
        }
        current = base_of(t);
    }
    false
}

/// Whether `name` names a FHIR type (resource, datatype or primitive) in the definitions.
pub(crate) fn is_fhir_type(name: &str) -> bool {
    definitions().type_def(name).is_some() || name == "BackboneElement" || name == "Element"
}
