//! The StructureDefinitions compiled into a graph the validator (and [`crate::links`]) can walk without allocating.
//!
//! Each complex type, resource, primitive type (for its `_x` extension object) and BackboneElement becomes a
//! [`Node`]: a hash map from JSON property name to [`Child`]. Choice elements are expanded at build time
//! (`value[x]` of `Quantity | string` → `valueQuantity`, `valueString`, sharing one choice group), so looking
//! up a property is a single hash probe, and `contentReference` (Questionnaire.item.item) is just an edge back
//! to an existing node. Required elements and choice groups get bit positions so a walk records what it saw in
//! a `u64` instead of a set.

use crate::definitions::{StructureKind, TypeDef};
use crate::links::Link;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

pub(crate) type NodeId = u32;

/// Choice groups one node may have; R4's maximum is 4 (ActivityDefinition). Fixed so a walk keeps them on
/// the stack.
pub(crate) const MAX_CHOICE_GROUPS: usize = 8;

pub(crate) struct Schema {
    pub nodes: Vec<Node>,
    /// Type name → root node, for every complex type, resource and primitive type.
    pub by_type: HashMap<String, NodeId, FnvBuild>,
    /// Sorted codes of each embedded required ValueSet.
    pub value_sets: Vec<Vec<Box<str>>>,
}

pub(crate) struct Node {
    /// The type name or BackboneElement path (`Patient.contact`), for messages.
    pub name: Box<str>,
    pub is_resource: bool,
    /// The `Reference` datatype, whose `reference` string gets a syntax check.
    pub is_reference: bool,
    pub children: HashMap<Box<str>, Child, FnvBuild>,
    /// Bits of `required` that must all be seen.
    pub required_mask: u64,
    /// `(bit, element name)` of required elements and required choice groups (`value[x]`).
    pub required: Vec<(u8, Box<str>)>,
    /// Base names of the choice groups (`value` for `value[x]`), to explain an unknown type suffix.
    pub choice_bases: Vec<Box<str>>,
}

pub(crate) struct Child {
    /// The JSON property name (`valueQuantity`, `given`).
    pub name: Box<str>,
    /// The property carrying a primitive's id/extensions (`_given`).
    pub ext_key: Box<str>,
    pub max: u32,
    pub kind: ChildKind,
    /// Index of the choice group within the node.
    pub choice: Option<u8>,
    pub required_bit: Option<u8>,
    /// Index into [`Schema::value_sets`] for a `code` with a required binding.
    pub value_set: Option<u32>,
    /// Whether the element can link to another resource ([`crate::links`]), decided once here so that
    /// walking a resource for its links costs a hash probe per property.
    pub link: Option<Link>,
}

#[derive(Clone, Copy)]
pub(crate) enum ChildKind {
    /// A primitive value, with the node of its `_x` object (id + extension).
    Primitive(Primitive, NodeId),
    Complex(NodeId),
    /// Any resource (Bundle.entry.resource, Parameters.parameter.resource).
    Resource,
    /// DomainResource.contained.
    Contained,
}

/// The R4 primitive types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Primitive {
    Base64Binary,
    Boolean,
    Canonical,
    Code,
    Date,
    DateTime,
    Decimal,
    Id,
    Instant,
    Integer,
    Markdown,
    Oid,
    PositiveInt,
    String,
    Time,
    UnsignedInt,
    Uri,
    Url,
    Uuid,
    Xhtml,
}

impl Primitive {
    fn from_name(name: &str) -> Option<Primitive> {
        Some(match name {
            "base64Binary" => Primitive::Base64Binary,
            "boolean" => Primitive::Boolean,
            "canonical" => Primitive::Canonical,
            "code" => Primitive::Code,
            "date" => Primitive::Date,
            "dateTime" => Primitive::DateTime,
            "decimal" => Primitive::Decimal,
            "id" => Primitive::Id,
            "instant" => Primitive::Instant,
            "integer" => Primitive::Integer,
            "markdown" => Primitive::Markdown,
            "oid" => Primitive::Oid,
            "positiveInt" => Primitive::PositiveInt,
            "string" => Primitive::String,
            "time" => Primitive::Time,
            "unsignedInt" => Primitive::UnsignedInt,
            "uri" => Primitive::Uri,
            "url" => Primitive::Url,
            "uuid" => Primitive::Uuid,
            "xhtml" => Primitive::Xhtml,
            _ => return None,
        })
    }

    /// R4 replaces `fullUrl`s in elements of type uri, url, oid and uuid (http.html#trules); canonical is a
    /// uri too. The narrative's xhtml holds links in its attributes.
    fn link(self) -> Option<Link> {
        match self {
            Primitive::Uri | Primitive::Url | Primitive::Oid | Primitive::Uuid | Primitive::Canonical => {
                Some(Link::Uri)
            }
            Primitive::Xhtml => Some(Link::Narrative),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Primitive::Base64Binary => "base64Binary",
            Primitive::Boolean => "boolean",
            Primitive::Canonical => "canonical",
            Primitive::Code => "code",
            Primitive::Date => "date",
            Primitive::DateTime => "dateTime",
            Primitive::Decimal => "decimal",
            Primitive::Id => "id",
            Primitive::Instant => "instant",
            Primitive::Integer => "integer",
            Primitive::Markdown => "markdown",
            Primitive::Oid => "oid",
            Primitive::PositiveInt => "positiveInt",
            Primitive::String => "string",
            Primitive::Time => "time",
            Primitive::UnsignedInt => "unsignedInt",
            Primitive::Uri => "uri",
            Primitive::Url => "url",
            Primitive::Uuid => "uuid",
            Primitive::Xhtml => "xhtml",
        }
    }
}

impl Schema {
    pub(crate) fn build(
        types: &HashMap<String, TypeDef>,
        value_sets: &HashMap<String, Vec<String>>,
    ) -> Result<Schema, String> {
        let mut names: Vec<&TypeDef> = types.values().collect();
        names.sort_by(|a, b| a.name.cmp(&b.name)); // stable node ids
        let mut schema = Schema { nodes: Vec::new(), by_type: HashMap::default(), value_sets: Vec::new() };
        let mut value_set_index: HashMap<&str, u32> = HashMap::new();
        for (url, codes) in value_sets {
            value_set_index.insert(url, schema.value_sets.len() as u32);
            let mut sorted: Vec<Box<str>> = codes.iter().map(|c| c.as_str().into()).collect();
            sorted.sort();
            schema.value_sets.push(sorted);
        }
        for t in &names {
            let id = schema.add_node(&t.name, t.kind == StructureKind::Resource);
            schema.nodes[id as usize].is_reference = t.name == "Reference";
            schema.by_type.insert(t.name.clone(), id);
        }
        for t in &names {
            schema.fill(t, &value_set_index).map_err(|e| format!("{}: {e}", t.name))?;
        }
        Ok(schema)
    }

    fn add_node(&mut self, name: &str, is_resource: bool) -> NodeId {
        self.nodes.push(Node {
            name: name.into(),
            is_resource,
            is_reference: false,
            children: HashMap::default(),
            required_mask: 0,
            required: Vec::new(),
            choice_bases: Vec::new(),
        });
        (self.nodes.len() - 1) as NodeId
    }

    /// Adds the children of one type's elements to its root node and to new BackboneElement nodes.
    fn fill(&mut self, t: &TypeDef, value_sets: &HashMap<&str, u32>) -> Result<(), String> {
        let root = self.by_type[&t.name];
        let mut backbones: HashMap<&str, NodeId> = HashMap::new();
        for (i, element) in t.elements.iter().enumerate() {
            let (parent_path, name) = element.path.rsplit_once('.').unwrap_or(("", element.path.as_str()));
            let parent = if parent_path.is_empty() {
                root
            } else {
                *backbones.get(parent_path).ok_or_else(|| format!("no parent for {}", element.path))?
            };
            let has_children = t.elements.get(i + 1).is_some_and(|next| {
                next.path.len() > element.path.len()
                    && next.path.starts_with(&element.path)
                    && next.path.as_bytes()[element.path.len()] == b'.'
            });
            let max = match element.max.as_str() {
                "*" => u32::MAX,
                n => n.parse().map_err(|_| format!("bad max {n}"))?,
            };
            let value_set = element.value_set.as_deref().and_then(|url| value_sets.get(url).copied());
            let mut kinds: Vec<(Option<&str>, ChildKind)> = Vec::new();
            if let Some(target) = &element.content_reference {
                let node = *backbones.get(target.as_str()).ok_or_else(|| format!("bad contentReference {target}"))?;
                kinds.push((None, ChildKind::Complex(node)));
            } else if has_children {
                let node = self.add_node(&format!("{}.{}", t.name, element.path), false);
                backbones.insert(&element.path, node);
                kinds.push((None, ChildKind::Complex(node)));
            } else {
                for type_ref in &element.types {
                    let code = type_ref.code.as_str();
                    let kind = if let Some(p) = Primitive::from_name(code) {
                        ChildKind::Primitive(p, self.by_type[code])
                    } else if code == "Resource" {
                        if name == "contained" {
                            ChildKind::Contained
                        } else {
                            ChildKind::Resource
                        }
                    } else {
                        ChildKind::Complex(*self.by_type.get(code).ok_or_else(|| format!("unknown type {code}"))?)
                    };
                    kinds.push((Some(code), kind));
                }
            }
            self.add_children(parent, name, element.min, max, &kinds, value_set)?;
        }
        Ok(())
    }

    fn add_children(
        &mut self,
        parent: NodeId,
        name: &str,
        min: u32,
        max: u32,
        kinds: &[(Option<&str>, ChildKind)],
        value_set: Option<u32>,
    ) -> Result<(), String> {
        let node = &mut self.nodes[parent as usize];
        let required_bit = if min > 0 {
            let bit = node.required.len();
            if bit >= 64 {
                return Err(format!("{}: more than 64 required elements", node.name));
            }
            node.required.push((bit as u8, name.into()));
            node.required_mask |= 1 << bit;
            Some(bit as u8)
        } else {
            None
        };
        let (base, choice) = match name.strip_suffix("[x]") {
            Some(base) => {
                if node.choice_bases.len() >= MAX_CHOICE_GROUPS {
                    return Err(format!("{}: more than {MAX_CHOICE_GROUPS} choice groups", node.name));
                }
                node.choice_bases.push(base.into());
                (base, Some((node.choice_bases.len() - 1) as u8))
            }
            None => (name, None),
        };
        for &(code, kind) in kinds {
            let property = match (choice, code) {
                (Some(_), Some(code)) => format!("{base}{}{}", code[..1].to_ascii_uppercase(), &code[1..]),
                _ => base.to_string(),
            };
            let link = match kind {
                ChildKind::Primitive(_, _) if node.is_reference && property == "reference" => Some(Link::Reference),
                ChildKind::Primitive(p, _) => p.link(),
                _ => None,
            };
            let child = Child {
                ext_key: format!("_{property}").into(),
                name: property.as_str().into(),
                max,
                kind,
                choice,
                required_bit,
                value_set,
                link,
            };
            node.children.insert(property.into(), child);
        }
        Ok(())
    }
}

/// FNV-1a: property names are short, so a simple hash beats SipHash on the hot path. HashDoS does not apply:
/// the maps are built from the definitions and only looked up with client-chosen keys, never filled with them.
#[derive(Default)]
pub(crate) struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 { 0xcbf2_9ce4_8422_2325 } else { self.0 };
        for &b in bytes {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

pub(crate) type FnvBuild = BuildHasherDefault<Fnv>;
