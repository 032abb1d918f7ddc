//! FHIRPath Patch (<https://hl7.org/fhir/R4/fhirpatch.html>): a `Parameters` resource whose `operation`
//! parameters add, insert, delete, replace or move elements that FHIRPath expressions select.
//!
//! Why it is shaped this way:
//!
//! - The whole `Parameters` document is read first (types, paths parsed, values checked), so a malformed
//!   patch is a 400 before anything changes; the operations then apply in order to a working copy, and the
//!   first failure (a 422) abandons it, so the caller's resource changes only if every operation applies.
//! - The FHIRPath engine evaluates over borrowed JSON, so it cannot edit; [`fhirpath::locate`] turns each
//!   selected element into JSON steps, and the edit follows those steps on the working copy.
//! - JSON says nothing of FHIR types, so whether a new child is a list, what a choice element is called in
//!   JSON (`deceased` + `valueDateTime` → `deceasedDateTime`) and which JSON type a primitive has all come
//!   from the R4 definitions: a [`Scope`] is a type's (or BackboneElement's) set of elements, found by
//!   walking the located steps from the resource's `resourceType`.
//! - FHIR JSON splits a primitive into `name` and `_name` (its id and extensions); lists of primitives are
//!   two parallel arrays. Every list edit is applied to both, so item `i` of `given` stays item `i` of
//!   `_given`, and an array left all `null` is dropped.
//!
//! What it does not do: check that the result is a valid resource (the PATCH interaction validates it
//! afterwards), nor check primitive formats (`valueString` may fill a `date`; validation catches a bad one).

use super::json_patch::PatchError;
use fhir::fhirpath::{self, Context, Expression, Step};
use fhir::{definitions, ElementDef, StructureKind, TypeDef};
use serde_json::{Map, Value};

mod parameters;
#[cfg(test)]
mod tests;

use parameters::{read_parameters, Operation, PatchValue};

/// Applies a FHIRPath Patch `Parameters` resource to `resource`. Either every operation applies or the
/// resource is unchanged.
pub(crate) fn apply(resource: &mut Value, parameters: &Value) -> Result<(), PatchError> {
    let operations = read_parameters(parameters)?;
    let mut work = resource.clone();
    for (i, operation) in operations.iter().enumerate() {
        operation.apply(&mut work).map_err(|e| match e {
            PatchError::Malformed(m) => PatchError::Malformed(format!("operation {i}: {m}")),
            PatchError::Unprocessable(m) => PatchError::Unprocessable(format!("operation {i}: {m}")),
        })?;
    }
    *resource = work;
    Ok(())
}

fn malformed(message: impl Into<String>) -> PatchError {
    PatchError::Malformed(message.into())
}

fn unprocessable(message: impl Into<String>) -> PatchError {
    PatchError::Unprocessable(message.into())
}

fn is_primitive(type_code: &str) -> bool {
    definitions().type_def(type_code).is_some_and(|t| t.kind == StructureKind::PrimitiveType)
}

/// Whether `value` has the JSON form FHIR gives `type_code`: booleans and numbers as such, other
/// primitives as strings, complex types as objects.
fn json_kind_fits(type_code: &str, value: &Value) -> bool {
    match type_code {
        "boolean" => value.is_boolean(),
        "integer" | "positiveInt" | "unsignedInt" => value.is_i64() || value.is_u64(),
        "decimal" => value.is_number(),
        t if is_primitive(t) => value.is_string(),
        _ => value.is_object(),
    }
}

/// The JSON kind of a primitive type, for writing one primitive type into an element of another.
fn json_kind(type_code: &str) -> u8 {
    match type_code {
        "boolean" => 0,
        "integer" | "positiveInt" | "unsignedInt" | "decimal" => 1,
        _ => 2,
    }
}

fn upper_first(s: &str) -> String {
    let mut chars = s.chars();
    chars.next().map(|c| c.to_ascii_uppercase()).into_iter().chain(chars).collect()
}

/// The elements one JSON object may have: those of a type (`HumanName`, `Patient`, `date` for a `_name`
/// object), or of a BackboneElement (`Patient` with prefix `contact.`).
#[derive(Clone)]
struct Scope {
    owner: &'static TypeDef,
    /// `""`, or the BackboneElement's path with a trailing dot.
    prefix: String,
}

/// An element of a scope, as a JSON property name selects it.
#[derive(Clone)]
struct Slot {
    owner: &'static TypeDef,
    /// The element as declared: its cardinality counts.
    element: &'static ElementDef,
    /// Where its types and children are defined: the element itself, or its `contentReference` target.
    defining: &'static ElementDef,
    /// JSON name without a type suffix (`deceased` for `deceased[x]`).
    base: &'static str,
    /// The one type a suffixed choice name (`deceasedBoolean`) selects; `None` for the base name.
    chosen: Option<&'static str>,
    /// Position in the owner's definitions, for putting new properties in the spec's order.
    rank: usize,
}

impl Scope {
    fn of_type(name: &str) -> Result<Scope, PatchError> {
        let owner = definitions().type_def(name).ok_or_else(|| unprocessable(format!("unknown type '{name}'")))?;
        Ok(Scope { owner, prefix: String::new() })
    }

    fn of_resource(resource: &Value) -> Result<Scope, PatchError> {
        match resource.get("resourceType").and_then(Value::as_str) {
            Some(t) if definitions().is_resource_type(t) => Scope::of_type(t),
            other => Err(unprocessable(format!("{other:?} is not a resource type"))),
        }
    }

    fn describe(&self) -> String {
        match self.prefix.strip_suffix('.') {
            Some(path) => format!("{}.{path}", self.owner.name),
            None => self.owner.name.clone(),
        }
    }

    /// The element a JSON property name (`given`, `deceasedBoolean`) or choice base name (`deceased`) selects.
    fn element(&self, name: &str) -> Option<Slot> {
        let elements = &self.owner.elements;
        for (rank, element) in elements.iter().enumerate() {
            let Some(own) = element.path.strip_prefix(self.prefix.as_str()).filter(|p| !p.contains('.')) else {
                continue;
            };
            let (base, chosen) = match own.strip_suffix("[x]") {
                Some(base) if name == base => (base, None),
                Some(base) => match name.strip_prefix(base) {
                    Some(suffix) => match element.types.iter().find(|t| upper_first(&t.code) == suffix) {
                        Some(t) => (base, Some(t.code.as_str())),
                        None => continue,
                    },
                    None => continue,
                },
                None if own == name => (own, None),
                None => continue,
            };
            let defining = match &element.content_reference {
                Some(target) => elements.iter().find(|e| &e.path == target)?,
                None => element,
            };
            return Some(Slot { owner: self.owner, element, defining, base, chosen, rank });
        }
        None
    }

    fn require(&self, name: &str) -> Result<Slot, PatchError> {
        self.element(name).ok_or_else(|| unprocessable(format!("{} has no element '{name}'", self.describe())))
    }

    /// Where a property goes in definition order (`_name` beside `name`); `resourceType` comes first.
    fn rank(&self, key: &str) -> Option<usize> {
        if key == "resourceType" {
            return Some(0);
        }
        self.element(key.strip_prefix('_').unwrap_or(key)).map(|s| s.rank + 1)
    }
}

impl Slot {
    fn is_choice(&self) -> bool {
        self.element.path.ends_with("[x]")
    }

    fn is_repeating(&self) -> bool {
        self.element.is_repeating()
    }

    fn types(&self) -> Vec<&'static str> {
        match self.chosen {
            Some(t) => vec![t],
            None => self.defining.types.iter().map(|t| t.code.as_str()).collect(),
        }
    }

    /// The one type of an element reached through a JSON property name.
    fn single_type(&self) -> Result<&'static str, PatchError> {
        match self.types()[..] {
            [t] => Ok(t),
            _ => Err(unprocessable(format!("'{}' needs a type", self.element.path))),
        }
    }

    fn json_name(&self, type_code: &str) -> String {
        if self.is_choice() {
            format!("{}{}", self.base, upper_first(type_code))
        } else {
            self.base.to_string()
        }
    }

    /// The scope of this element's children, given its type (and, for a resource, its JSON).
    fn child_scope(&self, type_code: &str, json: Option<&Value>) -> Result<Scope, PatchError> {
        match type_code {
            "BackboneElement" | "Element" => {
                Ok(Scope { owner: self.owner, prefix: format!("{}.", self.defining.path) })
            }
            "Resource" => Scope::of_resource(json.unwrap_or(&Value::Null)),
            t => Scope::of_type(t),
        }
    }
}

/// A value ready to be stored: the JSON property name (with a choice's type suffix), the JSON value and a
/// primitive's `_name` object.
struct Written {
    name: String,
    value: Option<Value>,
    extension: Option<Value>,
}

/// Turns a patch value into what `slot` stores, checking that its type fits the element.
fn write(value: &PatchValue, slot: &Slot) -> Result<Written, PatchError> {
    let allowed = slot.types();
    let mismatch = |given: &str| {
        unprocessable(format!("a {given} value does not fit '{}' ({})", slot.element.path, allowed.join(" | ")))
    };
    match value {
        PatchValue::Typed { type_code, value, extension } => {
            let chosen = allowed
                .iter()
                .copied()
                .find(|t| t == type_code)
                .or_else(|| compatible(type_code, &allowed))
                .ok_or_else(|| mismatch(type_code))?;
            Ok(Written { name: slot.json_name(chosen), value: value.clone(), extension: extension.clone() })
        }
        PatchValue::Resource(resource) => {
            let resource_type = resource["resourceType"].as_str().unwrap_or_default();
            if !allowed.iter().any(|t| *t == "Resource" || *t == resource_type) {
                return Err(mismatch(resource_type));
            }
            Ok(Written { name: slot.base.to_string(), value: Some(resource.clone()), extension: None })
        }
        PatchValue::Parts(parts) => {
            let type_code = match allowed[..] {
                [t] if !is_primitive(t) && t != "Resource" => t,
                _ => return Err(mismatch("part-built")),
            };
            let object = build(parts, &slot.child_scope(type_code, None)?)?;
            Ok(Written { name: slot.json_name(type_code), value: Some(Value::Object(object)), extension: None })
        }
    }
}

/// Writing one type into an element of another: a primitive into the element's only primitive type when
/// their JSON forms agree (`valueString` into `code`, `xhtml`), a complex type into a type it specializes
/// (`Age` into `Quantity`).
fn compatible(given: &str, allowed: &[&'static str]) -> Option<&'static str> {
    if is_primitive(given) {
        return match allowed {
            [only] if is_primitive(only) && json_kind(only) == json_kind(given) => Some(only),
            _ => None,
        };
    }
    let mut ancestor = definitions().type_def(given).and_then(|t| t.base.as_deref());
    while let Some(name) = ancestor {
        if let Some(t) = allowed.iter().find(|t| **t == name) {
            return Some(t);
        }
        ancestor = definitions().type_def(name).and_then(|t| t.base.as_deref());
    }
    None
}

/// Builds an element from `part`s, each naming one of its children.
fn build(parts: &[(String, PatchValue)], scope: &Scope) -> Result<Map<String, Value>, PatchError> {
    let mut object = Map::new();
    for (name, value) in parts {
        let slot = scope.require(name)?;
        add_child(&mut object, scope, &slot, write(value, &slot)?)?;
    }
    Ok(object)
}

/// Adds a child: appended to a list, or set when the element is single and still empty.
fn add_child(object: &mut Map<String, Value>, scope: &Scope, slot: &Slot, written: Written) -> Result<(), PatchError> {
    if slot.is_repeating() {
        return edit_list(object, scope, &written.name, |values, extensions| {
            values.push(written.value.unwrap_or(Value::Null));
            extensions.push(written.extension.unwrap_or(Value::Null));
            Ok(())
        });
    }
    let taken =
        object.keys().any(|k| scope.element(k.strip_prefix('_').unwrap_or(k)).is_some_and(|s| s.rank == slot.rank));
    if taken {
        return Err(unprocessable(format!(
            "{} already has '{}', which does not repeat (use replace)",
            scope.describe(),
            slot.base
        )));
    }
    put(object, scope, written);
    Ok(())
}

/// Sets a single-valued property and its `_name` twin.
fn put(object: &mut Map<String, Value>, scope: &Scope, written: Written) {
    let extension_key = format!("_{}", written.name);
    match written.value {
        Some(v) => insert_key(object, scope, &written.name, v),
        None => {
            object.shift_remove(&written.name);
        }
    }
    match written.extension {
        Some(e) => insert_key(object, scope, &extension_key, e),
        None => {
            object.shift_remove(&extension_key);
        }
    }
}

/// Sets `key`, keeping its place if present, else placing it in definition order (`_name` right after
/// `name`), so patched resources read like the spec's examples.
fn insert_key(object: &mut Map<String, Value>, scope: &Scope, key: &str, value: Value) {
    if let Some(existing) = object.get_mut(key) {
        *existing = value;
        return;
    }
    let position = match key.strip_prefix('_').and_then(|plain| object.keys().position(|k| k == plain)) {
        Some(plain) => plain + 1,
        None => {
            let rank = scope.rank(key).unwrap_or(usize::MAX);
            object.keys().position(|k| scope.rank(k).is_some_and(|r| r > rank)).unwrap_or(object.len())
        }
    };
    object.shift_insert(position, key.to_string(), value);
}

/// Edits a list property and its `_name` twin together, padded to one length; afterwards an array left
/// empty or all `null` is removed.
fn edit_list<R>(
    object: &mut Map<String, Value>,
    scope: &Scope,
    name: &str,
    edit: impl FnOnce(&mut Vec<Value>, &mut Vec<Value>) -> Result<R, PatchError>,
) -> Result<R, PatchError> {
    let extension_key = format!("_{name}");
    let mut take = |key: &str| match object.get_mut(key) {
        Some(Value::Array(items)) => Ok(std::mem::take(items)),
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(_) => Err(unprocessable(format!("'{key}' is not a list"))),
    };
    let (mut values, mut extensions) = (take(name)?, take(&extension_key)?);
    let len = values.len().max(extensions.len());
    values.resize(len, Value::Null);
    extensions.resize(len, Value::Null);
    let result = edit(&mut values, &mut extensions)?;
    for (key, items) in [(name, values), (extension_key.as_str(), extensions)] {
        if items.iter().all(Value::is_null) {
            object.shift_remove(key);
        } else {
            insert_key(object, scope, key, Value::Array(items));
        }
    }
    Ok(result)
}

/// A selected element: the object holding it, its property and index, and what the definitions say.
struct Target {
    /// Steps to the object that holds the element.
    parent: Vec<Step>,
    /// The scope of that object.
    parent_scope: Scope,
    slot: Slot,
    /// The element's JSON property name, without `_`.
    name: String,
    index: Option<usize>,
    /// The element's type.
    type_code: &'static str,
    /// The scope of the element's own children.
    scope: Scope,
}

/// Types the element `steps` lead to, walking the definitions from the resource's type.
fn target(resource: &Value, steps: &[Step]) -> Result<Target, PatchError> {
    let (last, parent) = steps.split_last().ok_or_else(|| unprocessable("the path selects the resource itself"))?;
    let mut scope = Scope::of_resource(resource)?;
    let mut at = resource;
    for step in parent {
        let (_, _, child_scope, json) = descend(&scope, at, step)?;
        scope = child_scope;
        at = json;
    }
    let (slot, type_code, own_scope, _) = descend(&scope, at, last)?;
    let name = last.property.strip_prefix('_').unwrap_or(&last.property).to_string();
    Ok(Target {
        parent: parent.to_vec(),
        parent_scope: scope,
        slot,
        name,
        index: last.index,
        type_code,
        scope: own_scope,
    })
}

fn descend<'v>(
    scope: &Scope,
    at: &'v Value,
    step: &Step,
) -> Result<(Slot, &'static str, Scope, &'v Value), PatchError> {
    let slot = scope.require(step.property.strip_prefix('_').unwrap_or(&step.property))?;
    let type_code = slot.single_type()?;
    let mut json = &at[step.property.as_str()];
    if let Some(i) = step.index {
        json = &json[i];
    }
    let child_scope = slot.child_scope(type_code, Some(json))?;
    Ok((slot, type_code, child_scope, json))
}

/// The JSON object `steps` lead to; with `create`, a missing or `null` last step becomes `{}` (a primitive's
/// `_name` object about to receive an extension).
fn object_at<'v>(root: &'v mut Value, steps: &[Step], create: bool) -> Result<&'v mut Map<String, Value>, PatchError> {
    let mut at = root;
    for step in steps {
        let object =
            at.as_object_mut().ok_or_else(|| unprocessable(format!("'{}' is not in an object", step.property)))?;
        if create && !object.contains_key(&step.property) {
            let plain = step.property.trim_start_matches('_');
            let position = object.keys().position(|k| k == plain).map_or(object.len(), |p| p + 1);
            object.shift_insert(position, step.property.clone(), Value::Null);
        }
        at = object.get_mut(&step.property).expect("present");
        if let Some(i) = step.index {
            if create && at.is_null() {
                *at = Value::Array(Vec::new());
            }
            let items = at.as_array_mut().ok_or_else(|| unprocessable(format!("'{}' is not a list", step.property)))?;
            if create && items.len() <= i {
                items.resize(i + 1, Value::Null);
            }
            at = items.get_mut(i).ok_or_else(|| unprocessable(format!("'{}' has no item {i}", step.property)))?;
        }
        if create && at.is_null() {
            *at = Value::Object(Map::new());
        }
    }
    at.as_object_mut().ok_or_else(|| unprocessable("the path does not select an object"))
}

fn select(path: &Expression, resource: &Value) -> Result<Vec<Vec<Step>>, PatchError> {
    // Strict: a misspelt element is an error, not a path that silently selects nothing.
    let context = Context::new().strict(true);
    fhirpath::locate(path, resource, &context).map_err(|e| unprocessable(format!("path '{path}': {e}")))
}

fn select_one(path: &Expression, resource: &Value, what: &str) -> Result<Vec<Step>, PatchError> {
    let mut found = select(path, resource)?;
    match found.len() {
        1 => Ok(found.pop().expect("one")),
        0 => Err(unprocessable(format!("no content found at '{path}' when {what}"))),
        n => Err(unprocessable(format!("'{path}' selects {n} elements; {what} needs exactly one"))),
    }
}

/// A list the path of an insert or move selects: its holder and property.
struct List {
    parent: Vec<Step>,
    parent_scope: Scope,
    slot: Slot,
    name: String,
}

/// The list whose items `path` selects. Indexes count in the whole list. An empty list selects nothing,
/// so for a path ending in a plain name (`Patient.identifier`) its holder is found from the rest.
fn select_list(path: &Expression, resource: &Value) -> Result<List, PatchError> {
    let found = select(path, resource)?;
    let Some(first) = found.first() else { return empty_list(path, resource) };
    let t = target(resource, first)?;
    let same_list = |steps: &Vec<Step>| {
        steps.split_last().is_some_and(|(last, parent)| {
            last.index.is_some() && last.property.trim_start_matches('_') == t.name && parent == &t.parent[..]
        })
    };
    if !t.slot.is_repeating() || !found.iter().all(same_list) {
        return Err(unprocessable(format!("'{path}' does not select a list")));
    }
    Ok(List { parent: t.parent, parent_scope: t.parent_scope, slot: t.slot, name: t.name })
}

fn empty_list(path: &Expression, resource: &Value) -> Result<List, PatchError> {
    let source = path.source().trim();
    let (head, name) = source.rsplit_once('.').unwrap_or(("", source));
    let plain = |s: &str| s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !s.is_empty();
    let unknown = || unprocessable(format!("'{path}' selects nothing, so its list cannot be found"));
    if !plain(name) {
        return Err(unknown());
    }
    let holder = match head {
        "" => Vec::new(),
        head => select_one(&fhirpath::parse(head).map_err(|_| unknown())?, resource, "finding the list")?,
    };
    let (parent, parent_scope) = container(resource, holder)?;
    let slot = parent_scope.require(name)?;
    if !slot.is_repeating() || slot.is_choice() {
        return Err(unprocessable(format!("'{path}' does not select a list")));
    }
    Ok(List { parent, parent_scope, name: slot.base.to_string(), slot })
}

/// The object that holds the children of the element at `steps`: the element itself, or for a primitive
/// its `_name` object (where its `id` and `extension` go).
fn container(resource: &Value, steps: Vec<Step>) -> Result<(Vec<Step>, Scope), PatchError> {
    if steps.is_empty() {
        return Ok((steps, Scope::of_resource(resource)?));
    }
    let t = target(resource, &steps)?;
    let mut steps = steps;
    if is_primitive(t.type_code) {
        let last = steps.last_mut().expect("not empty");
        if !last.property.starts_with('_') {
            last.property = format!("_{}", last.property);
        }
    }
    Ok((steps, t.scope))
}

/// `index` as a position in `0..end`.
fn index_in(index: i64, end: usize, what: &str) -> Result<usize, PatchError> {
    usize::try_from(index).ok().filter(|i| *i < end).ok_or_else(|| match end {
        0 => unprocessable(format!("{what} {index} is out of range: the list is empty")),
        _ => unprocessable(format!("{what} {index} is out of range 0 to {}", end - 1)),
    })
}

impl Operation {
    fn apply(&self, resource: &mut Value) -> Result<(), PatchError> {
        match self {
            Operation::Add { path, name, value } => {
                let (steps, scope) = container(resource, select_one(path, resource, "adding")?)?;
                let slot = scope.require(name)?;
                let written = write(value, &slot)?;
                add_child(object_at(resource, &steps, true)?, &scope, &slot, written)
            }
            Operation::Insert { path, index, value } => {
                let list = select_list(path, resource)?;
                let written = write(value, &list.slot)?;
                let object = object_at(resource, &list.parent, false)?;
                edit_list(object, &list.parent_scope, &list.name, |values, extensions| {
                    let at = index_in(*index, values.len() + 1, "index")?;
                    values.insert(at, written.value.unwrap_or(Value::Null));
                    extensions.insert(at, written.extension.unwrap_or(Value::Null));
                    Ok(())
                })
            }
            Operation::Delete { path } => {
                let found = select(path, resource)?;
                let steps = match &found[..] {
                    [] => return Ok(()), // Deleting what is not there is a no-op, per the spec.
                    [one] => one,
                    more => {
                        return Err(unprocessable(format!(
                            "'{path}' selects {} elements; delete needs at most one",
                            more.len()
                        )))
                    }
                };
                let t = target(resource, steps)?;
                remove(object_at(resource, &t.parent, false)?, &t.parent_scope, &t.name, t.index)?;
                prune_empty(resource, t.parent)
            }
            Operation::Replace { path, value } => {
                let t = target(resource, &select_one(path, resource, "replacing")?)?;
                // The base name, so that a choice may change type (deceasedBoolean → deceasedDateTime).
                let slot = t.parent_scope.require(t.slot.base)?;
                let written = write(value, &slot)?;
                let object = object_at(resource, &t.parent, false)?;
                match t.index {
                    Some(i) => edit_list(object, &t.parent_scope, &t.name, |values, extensions| {
                        values[i] = written.value.unwrap_or(Value::Null);
                        extensions[i] = written.extension.unwrap_or(Value::Null);
                        Ok(())
                    }),
                    None => {
                        if written.name != t.name {
                            remove(object, &t.parent_scope, &t.name, None)?;
                        }
                        put(object, &t.parent_scope, written);
                        Ok(())
                    }
                }
            }
            Operation::Move { path, source, destination } => {
                let list = select_list(path, resource)?;
                let object = object_at(resource, &list.parent, false)?;
                edit_list(object, &list.parent_scope, &list.name, |values, extensions| {
                    let from = index_in(*source, values.len(), "source")?;
                    let to = index_in(*destination, values.len(), "destination")?;
                    let (value, extension) = (values.remove(from), extensions.remove(from));
                    values.insert(to, value);
                    extensions.insert(to, extension);
                    Ok(())
                })
            }
        }
    }
}

/// Removes an element (and its `_name` twin, or its item in both lists).
fn remove(object: &mut Map<String, Value>, scope: &Scope, name: &str, index: Option<usize>) -> Result<(), PatchError> {
    match index {
        Some(i) => edit_list(object, scope, name, |values, extensions| {
            values.remove(i);
            extensions.remove(i);
            Ok(())
        }),
        None => {
            object.shift_remove(name);
            object.shift_remove(&format!("_{name}"));
            Ok(())
        }
    }
}

/// FHIR JSON has no empty objects: an element a delete leaves without content goes too, and so on up to
/// the resource. A primitive's emptied `_name` object goes without its value.
fn prune_empty(resource: &mut Value, mut steps: Vec<Step>) -> Result<(), PatchError> {
    while let Some(last) = steps.pop() {
        let scope = match &steps[..] {
            [] => Scope::of_resource(resource)?,
            holder => target(resource, holder)?.scope,
        };
        let object = object_at(resource, &steps, false)?;
        let mut at = &object[last.property.as_str()];
        if let Some(i) = last.index {
            at = &at[i];
        }
        if !at.as_object().is_some_and(Map::is_empty) {
            break;
        }
        match (last.property.strip_prefix('_'), last.index) {
            (Some(plain), Some(i)) => edit_list(object, &scope, plain, |_, extensions| {
                extensions[i] = Value::Null;
                Ok(())
            })?,
            (Some(_), None) => drop(object.shift_remove(&last.property)),
            (None, index) => remove(object, &scope, &last.property, index)?,
        }
    }
    Ok(())
}
