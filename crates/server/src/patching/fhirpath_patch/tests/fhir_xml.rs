//! FHIR XML → FHIR JSON (<https://hl7.org/fhir/R4/xml.html>, <https://hl7.org/fhir/R4/json.html>), for tests
//! only: the official FHIRPath Patch cases are written in XML and the patch engine works on JSON.
//!
//! Deliberately independent of the engine's own type lookup (it reads the R4 definitions directly), so a
//! mistake there is not mirrored here. What it covers is what the cases use: `value` attributes typed by the
//! element's primitive type (boolean, number or string), `id`/`url` attributes, cardinality deciding arrays,
//! a primitive's `id` and `extension` moving to its `_name` sibling (with `null`s keeping lists aligned),
//! choice elements, BackboneElements, `contentReference` (`Parameters.parameter.part`), nested resources, and
//! the narrative `div` kept as an XHTML string.

use fhir::{definitions, ElementDef, StructureKind, TypeDef};
use quick_xml::events::Event;
use serde_json::{Map, Value};

/// An XML element, with its text kept (the narrative needs it).
pub(super) struct Element {
    pub name: String,
    pub attributes: Vec<(String, String)>,
    pub children: Vec<Content>,
}

pub(super) enum Content {
    Element(Element),
    Text(String),
}

impl Element {
    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|c| match c {
            Content::Element(e) => Some(e),
            Content::Text(_) => None,
        })
    }

    pub fn child(&self, name: &str) -> Option<&Element> {
        self.elements().find(|e| e.name == name)
    }

    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Parses a document into its root element; comments, declarations and processing instructions are dropped.
pub(super) fn parse(xml: &str) -> Element {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut stack = vec![Element { name: String::new(), attributes: Vec::new(), children: Vec::new() }];
    let text = |stack: &mut Vec<Element>, s: &str| {
        let children = &mut stack.last_mut().expect("open element").children;
        match children.last_mut() {
            Some(Content::Text(t)) => t.push_str(s),
            _ => children.push(Content::Text(s.to_string())),
        }
    };
    loop {
        match reader.read_event().expect("well-formed XML") {
            Event::Start(e) => stack.push(start(&e)),
            Event::Empty(e) => {
                let element = start(&e);
                stack.last_mut().expect("open element").children.push(Content::Element(element));
            }
            Event::End(_) => {
                let element = stack.pop().expect("open element");
                stack.last_mut().expect("parent").children.push(Content::Element(element));
            }
            Event::Text(t) => text(&mut stack, &t.xml10_content()),
            Event::CData(t) => text(&mut stack, &t.xml10_content()),
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref().expect("valid character reference") {
                    Some(c) => c.to_string(),
                    None => match &*r.xml10_content() {
                        "lt" => "<",
                        "gt" => ">",
                        "amp" => "&",
                        "quot" => "\"",
                        "apos" => "'",
                        other => panic!("unknown entity &{other};"),
                    }
                    .to_string(),
                };
                text(&mut stack, &resolved);
            }
            Event::Eof => break,
            _ => {}
        }
    }
    let document = stack.pop().expect("document");
    document
        .children
        .into_iter()
        .find_map(|c| match c {
            Content::Element(e) => Some(e),
            Content::Text(_) => None,
        })
        .expect("a root element")
}

fn start(e: &quick_xml::events::BytesStart<'_>) -> Element {
    let attributes = e
        .attributes()
        .map(|a| {
            let a = a.expect("well-formed attribute");
            let value = a.normalized_value(quick_xml::XmlVersion::default()).expect("attribute value").into_owned();
            (a.key.as_ref().to_string(), value)
        })
        .collect();
    Element { name: e.name().as_ref().to_string(), attributes, children: Vec::new() }
}

/// Converts a resource element (`<Patient xmlns="http://hl7.org/fhir">`) to FHIR JSON.
pub(super) fn resource_to_json(element: &Element) -> Value {
    let owner = definitions().type_def(&element.name).unwrap_or_else(|| panic!("unknown resource {}", element.name));
    let mut object = Map::new();
    object.insert("resourceType".into(), Value::String(element.name.clone()));
    fill(&mut object, element, owner, "");
    Value::Object(object)
}

/// The element `name` of `owner` under `prefix`: its declaration (cardinality), where its type is defined
/// (itself or its contentReference target), and its type (for a choice, from the name's suffix).
fn find(owner: &'static TypeDef, prefix: &str, name: &str) -> (&'static ElementDef, &'static ElementDef, &'static str) {
    for element in &owner.elements {
        let Some(own) = element.path.strip_prefix(prefix).filter(|p| !p.contains('.')) else { continue };
        if own == name {
            let defining = match &element.content_reference {
                Some(target) => owner.elements.iter().find(|e| &e.path == target).expect("contentReference target"),
                None => element,
            };
            assert_eq!(defining.types.len(), 1, "{} has one type", element.path);
            return (element, defining, &defining.types[0].code);
        }
        if let Some(base) = own.strip_suffix("[x]") {
            if let Some(suffix) = name.strip_prefix(base) {
                for t in &element.types {
                    if t.code[..1].to_ascii_uppercase() + &t.code[1..] == suffix {
                        return (element, element, &t.code);
                    }
                }
            }
        }
    }
    panic!("{}.{prefix}{name} is not in the R4 definitions", owner.name)
}

/// Adds `element`'s attributes and child elements to `object` as JSON properties.
fn fill(object: &mut Map<String, Value>, element: &Element, owner: &'static TypeDef, prefix: &str) {
    for (name, value) in &element.attributes {
        if name == "value" || name.starts_with("xmlns") {
            continue;
        }
        let (_, _, type_code) = find(owner, prefix, name);
        object.insert(name.clone(), primitive(type_code, value));
    }
    // Children of one name, in order of first appearance, and whether that element repeats.
    let mut groups: Vec<(String, bool, Vec<Converted>)> = Vec::new();
    for child in element.elements() {
        let (declared, defining, type_code) = find(owner, prefix, &child.name);
        let item = convert(child, owner, defining, type_code);
        match groups.iter_mut().find(|(n, _, _)| *n == child.name) {
            Some((_, _, items)) => items.push(item),
            None => groups.push((child.name.clone(), declared.is_repeating(), vec![item])),
        }
    }
    for (name, repeating, items) in groups {
        let (values, extensions): (Vec<_>, Vec<_>) = items.into_iter().unzip();
        if repeating {
            let array =
                |items: Vec<Option<Value>>| Value::Array(items.into_iter().map(Option::unwrap_or_default).collect());
            if values.iter().any(Option::is_some) {
                object.insert(name.clone(), array(values));
            }
            if extensions.iter().any(Option::is_some) {
                object.insert(format!("_{name}"), array(extensions));
            }
        } else {
            assert_eq!(values.len(), 1, "{name} does not repeat");
            let (value, extension) = (values.into_iter().next().unwrap(), extensions.into_iter().next().unwrap());
            if let Some(v) = value {
                object.insert(name.clone(), v);
            }
            if let Some(e) = extension {
                object.insert(format!("_{name}"), e);
            }
        }
    }
}

/// One converted element: its JSON value and its `_name` object.
type Converted = (Option<Value>, Option<Value>);

/// Converts one child element.
fn convert(element: &Element, owner: &'static TypeDef, defining: &ElementDef, type_code: &str) -> Converted {
    let defs = definitions();
    let mut object = Map::new();
    match type_code {
        "xhtml" => {
            let mut text = String::new();
            xhtml(element, &mut text);
            return (Some(Value::String(text)), None);
        }
        "BackboneElement" | "Element" => fill(&mut object, element, owner, &format!("{}.", defining.path)),
        "Resource" => return (Some(resource_to_json(element.elements().next().expect("a resource"))), None),
        t if defs.type_def(t).expect("known type").kind == StructureKind::PrimitiveType => {
            let value = element.attribute("value").map(|v| primitive(t, v));
            fill(&mut object, element, defs.type_def(t).unwrap(), "");
            return (value, (!object.is_empty()).then_some(Value::Object(object)));
        }
        t => fill(&mut object, element, defs.type_def(t).unwrap(), ""),
    }
    (Some(Value::Object(object)), None)
}

/// A primitive in FHIR JSON: booleans and numbers as JSON ones (numbers keep their text), the rest strings.
fn primitive(type_code: &str, text: &str) -> Value {
    match type_code {
        "boolean" => Value::Bool(text.parse().expect("true or false")),
        "integer" | "positiveInt" | "unsignedInt" | "decimal" => serde_json::from_str(text).expect("a JSON number"),
        _ => Value::String(text.to_string()),
    }
}

/// Serializes XHTML back to text, as FHIR JSON holds the narrative.
fn xhtml(element: &Element, out: &mut String) {
    out.push('<');
    out.push_str(&element.name);
    for (name, value) in &element.attributes {
        out.push_str(&format!(" {name}=\"{}\"", escape(value).replace('"', "&quot;")));
    }
    if element.children.is_empty() {
        out.push_str("/>");
        return;
    }
    out.push('>');
    for child in &element.children {
        match child {
            Content::Element(e) => xhtml(e, out),
            Content::Text(t) => out.push_str(&escape(t)),
        }
    }
    out.push_str(&format!("</{}>", element.name));
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[test]
fn converts_primitives_lists_extensions_and_narrative() {
    let xml = r#"<Patient xmlns="http://hl7.org/fhir">
      <text><status value="generated"/><div xmlns="http://www.w3.org/1999/xhtml"><b>x</b> &amp; y</div></text>
      <active value="true"/>
      <name><given value="A"/><given id="g"><extension url="u"><valueString value="v"/></extension></given></name>
      <deceasedBoolean value="false"/>
      <multipleBirthInteger value="2"/>
    </Patient>"#;
    let expected = serde_json::json!({
        "resourceType": "Patient",
        "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\"><b>x</b> &amp; y</div>"},
        "active": true,
        "name": [{"given": ["A", null], "_given": [null, {"id": "g", "extension": [{"url": "u", "valueString": "v"}]}]}],
        "deceasedBoolean": false,
        "multipleBirthInteger": 2
    });
    assert_eq!(resource_to_json(&parse(xml)), expected);
}
