//! The values a FHIRPath collection holds: nodes of the resource, borrowed, and System values, owned.
//!
//! Plain navigation (`Patient.name.given`) must not allocate per node, so an element of the resource is an
//! [`Item::Node`]: a `&Value` into the caller's JSON plus a compact type tag taken from the R4 definitions.
//! Only when an operator needs the value (`=`, `<`, `+`, string functions) is it read, through
//! [`Item::system`], into a borrowed [`SystemValue`]. Literals and computed results are owned System values.

use super::decimal::Decimal;
use super::quantity::Quantity;
use super::temporal::Temporal;
use crate::definitions::definitions;
use crate::validate::schema::{NodeId, Primitive};
use serde_json::Value;
use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

/// One item of a FHIRPath collection.
#[derive(Clone, Debug)]
pub enum Item<'a> {
    /// An element of the resource (or of a resolved or contained resource).
    Node(Node<'a>),
    Boolean(bool),
    Integer(i64),
    Decimal(Decimal),
    String(Arc<str>),
    Date(Temporal),
    DateTime(Temporal),
    Time(Temporal),
    Quantity(Quantity),
    /// The result of `type()`: `namespace` is `System` or `FHIR`.
    Type {
        namespace: &'static str,
        name: Arc<str>,
    },
}

/// An element of a FHIR resource: where it is in the JSON and what FHIR type it has.
#[derive(Clone, Copy)]
pub struct Node<'a> {
    /// The element's JSON value. For a primitive with only an id/extension (`"_given": [{...}]` with no value)
    /// this is `Value::Null`.
    pub(crate) value: &'a Value,
    /// For primitives, the `_name` sibling holding the element's id and extensions.
    pub(crate) extension: Option<&'a Value>,
    pub(crate) kind: NodeKind,
}

/// The FHIR type of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NodeKind {
    Primitive(Primitive),
    /// A complex type, resource or BackboneElement: its node in the compiled schema.
    Complex(NodeId),
    /// JSON the definitions do not describe (an unknown resource type, or an element of one); typed from the
    /// JSON value itself.
    Untyped,
}

pub(crate) static NULL: Value = Value::Null;

impl<'a> Node<'a> {
    pub(crate) fn new(value: &'a Value, extension: Option<&'a Value>, kind: NodeKind) -> Node<'a> {
        Node { value, extension, kind }
    }

    /// A resource, typed from its `resourceType`.
    pub(crate) fn resource(value: &'a Value) -> Node<'a> {
        let kind = value
            .get("resourceType")
            .and_then(Value::as_str)
            .and_then(|t| definitions().schema.by_type.get(t))
            .map_or(NodeKind::Untyped, |&id| NodeKind::Complex(id));
        Node { value, extension: None, kind }
    }

    /// The JSON value (for a primitive, the primitive itself: `"male"`, `true`, `185`).
    pub fn value(&self) -> &'a Value {
        self.value
    }

    /// For a primitive element, the `_name` object with its `id` and `extension`.
    pub fn extension_object(&self) -> Option<&'a Value> {
        self.extension
    }

    /// The FHIR type name: `string`, `code`, `HumanName`, `Quantity`, `Patient`, `BackboneElement`; for JSON
    /// the definitions do not describe, the System type of the value (`String`, `Boolean`, ...) or `Element`.
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            NodeKind::Primitive(p) => p.name(),
            NodeKind::Complex(id) => {
                let schema = &definitions().schema;
                let name: &'static str = &schema.nodes[id as usize].name;
                match name.split_once('.') {
                    // A BackboneElement of a resource, or an anonymous Element inside a datatype (Timing.repeat).
                    Some((owner, _)) => match schema.by_type.get(owner) {
                        Some(&root) if schema.nodes[root as usize].is_resource => "BackboneElement",
                        _ => "Element",
                    },
                    None => name,
                }
            }
            NodeKind::Untyped => match self.value {
                Value::Bool(_) => "Boolean",
                Value::String(_) => "String",
                Value::Number(n) if n.is_i64() => "Integer",
                Value::Number(_) => "Decimal",
                _ => "Element",
            },
        }
    }

    /// Whether the node is a FHIR primitive (or an untyped JSON scalar).
    pub fn is_primitive(&self) -> bool {
        match self.kind {
            NodeKind::Primitive(_) => true,
            NodeKind::Complex(_) => false,
            NodeKind::Untyped => !self.value.is_object() && !self.value.is_array(),
        }
    }

    /// Whether the node is a resource.
    pub fn is_resource(&self) -> bool {
        match self.kind {
            NodeKind::Complex(id) => definitions().schema.nodes[id as usize].is_resource,
            _ => self.value.get("resourceType").is_some(),
        }
    }
}

impl fmt::Debug for Node<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Node({}: {})", self.type_name(), self.value)
    }
}

/// A value as operators see it: a node read into its System type, borrowing strings.
#[derive(Clone, Debug)]
pub(crate) enum SystemValue<'x> {
    Boolean(bool),
    Integer(i64),
    Decimal(Decimal),
    String(&'x str),
    Date(Temporal),
    DateTime(Temporal),
    Time(Temporal),
    Quantity(Cow<'x, Quantity>),
    /// A complex node (compared structurally) or a type descriptor.
    Object,
}

impl<'a> Item<'a> {
    /// The item as a System value; `None` for a primitive node without a value (only extensions) or a value
    /// that does not parse as its declared type.
    pub(crate) fn system(&self) -> Option<SystemValue<'_>> {
        Some(match self {
            Item::Node(node) => return node_system(node),
            Item::Boolean(b) => SystemValue::Boolean(*b),
            Item::Integer(i) => SystemValue::Integer(*i),
            Item::Decimal(d) => SystemValue::Decimal(*d),
            Item::String(s) => SystemValue::String(s),
            Item::Date(t) => SystemValue::Date(*t),
            Item::DateTime(t) => SystemValue::DateTime(*t),
            Item::Time(t) => SystemValue::Time(*t),
            Item::Quantity(q) => SystemValue::Quantity(Cow::Borrowed(q)),
            Item::Type { .. } => SystemValue::Object,
        })
    }

    /// The string content of a string-like item (System String or a FHIR string/code/uri/... node).
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self.system()? {
            SystemValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// An owned System value for a node (primitives), or the item itself.
    pub(crate) fn to_system_item(&self) -> Item<'a> {
        match self {
            Item::Node(node) => match node_system(node) {
                Some(SystemValue::Boolean(b)) => Item::Boolean(b),
                Some(SystemValue::Integer(i)) => Item::Integer(i),
                Some(SystemValue::Decimal(d)) => Item::Decimal(d),
                Some(SystemValue::String(s)) => Item::String(s.into()),
                Some(SystemValue::Date(t)) => Item::Date(t),
                Some(SystemValue::DateTime(t)) => Item::DateTime(t),
                Some(SystemValue::Time(t)) => Item::Time(t),
                Some(SystemValue::Quantity(q)) => Item::Quantity(q.into_owned()),
                _ => self.clone(),
            },
            other => other.clone(),
        }
    }
}

/// Reads a JSON number exactly: with `arbitrary_precision` the number keeps its literal text.
pub(crate) fn json_decimal(v: &Value) -> Option<Decimal> {
    match v {
        Value::Number(n) => Decimal::parse(n.as_str()),
        _ => None,
    }
}

fn json_integer(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            let d = json_decimal(v)?;
            d.is_integral().then(|| d.trunc() as i64)
        }),
        _ => None,
    }
}

fn node_system<'x>(node: &'x Node<'_>) -> Option<SystemValue<'x>> {
    let v = node.value;
    match node.kind {
        NodeKind::Primitive(p) => Some(match p {
            Primitive::Boolean => SystemValue::Boolean(v.as_bool()?),
            Primitive::Integer | Primitive::PositiveInt | Primitive::UnsignedInt => {
                SystemValue::Integer(json_integer(v)?)
            }
            Primitive::Decimal => SystemValue::Decimal(json_decimal(v)?),
            Primitive::Date => SystemValue::Date(Temporal::parse_date(v.as_str()?)?),
            Primitive::DateTime | Primitive::Instant => SystemValue::DateTime(Temporal::parse_datetime(v.as_str()?)?),
            Primitive::Time => SystemValue::Time(Temporal::parse_time(v.as_str()?)?),
            _ => SystemValue::String(v.as_str()?),
        }),
        NodeKind::Complex(id) => {
            if is_quantity_node(id) {
                quantity_of(v).map(|q| SystemValue::Quantity(Cow::Owned(q))).or(Some(SystemValue::Object))
            } else {
                Some(SystemValue::Object)
            }
        }
        NodeKind::Untyped => Some(match v {
            Value::Bool(b) => SystemValue::Boolean(*b),
            Value::String(s) => SystemValue::String(s),
            Value::Number(n) => match n.as_i64() {
                Some(i) => SystemValue::Integer(i),
                None => SystemValue::Decimal(json_decimal(v)?),
            },
            Value::Null => return None,
            _ => SystemValue::Object,
        }),
    }
}

/// Whether a schema node is `Quantity` or one of its specializations (Age, Duration, Count, Distance...).
pub(crate) fn is_quantity_node(id: NodeId) -> bool {
    let schema = &definitions().schema;
    let name = &*schema.nodes[id as usize].name;
    name == "Quantity"
        || definitions().type_def(name).and_then(|t| t.base.as_deref()) == Some("Quantity")
        || name == "MoneyQuantity"
        || name == "SimpleQuantity"
}

/// A FHIR Quantity element as a System Quantity: the UCUM code when the system is UCUM, else the unit text.
pub(crate) fn quantity_of(v: &Value) -> Option<Quantity> {
    let value = json_decimal(v.get("value")?)?;
    let code = v.get("code").and_then(Value::as_str);
    let unit = v.get("unit").and_then(Value::as_str);
    let ucum = v.get("system").and_then(Value::as_str) == Some("http://unitsofmeasure.org");
    let unit = match (ucum, code, unit) {
        (true, Some(code), _) => code,
        (_, _, Some(unit)) => unit,
        (_, Some(code), None) => code,
        _ => "1",
    };
    Some(Quantity::new(value, unit))
}

impl PartialEq for Item<'_> {
    /// Structural identity used by tests: same variant and same content (nodes: same JSON location).
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Item::Node(a), Item::Node(b)) => std::ptr::eq(a.value, b.value) && a.kind == b.kind,
            (Item::Boolean(a), Item::Boolean(b)) => a == b,
            (Item::Integer(a), Item::Integer(b)) => a == b,
            (Item::Decimal(a), Item::Decimal(b)) => a == b && a.scale() == b.scale(),
            (Item::String(a), Item::String(b)) => a == b,
            (Item::Date(a), Item::Date(b))
            | (Item::DateTime(a), Item::DateTime(b))
            | (Item::Time(a), Item::Time(b)) => a == b,
            (Item::Quantity(a), Item::Quantity(b)) => a.value == b.value && a.unit == b.unit,
            (Item::Type { namespace: a, name: x }, Item::Type { namespace: b, name: y }) => a == b && x == y,
            _ => false,
        }
    }
}

impl fmt::Display for Item<'_> {
    /// The `toString()` form; a complex node prints as its JSON.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Item::Node(node) => match node.value {
                Value::String(s) => f.write_str(s),
                Value::Null => Ok(()), // a primitive with only extensions has no value to print
                other => write!(f, "{other}"),
            },
            Item::Boolean(b) => write!(f, "{b}"),
            Item::Integer(i) => write!(f, "{i}"),
            Item::Decimal(d) => write!(f, "{d}"),
            Item::String(s) => f.write_str(s),
            Item::Date(t) => t.fmt_datetime(f, true),
            Item::DateTime(t) => t.fmt_datetime(f, false),
            Item::Time(t) => t.fmt_time(f),
            Item::Quantity(q) => write!(f, "{q}"),
            Item::Type { namespace, name } => write!(f, "{namespace}.{name}"),
        }
    }
}
