//! SMART clinical scopes (<https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html>):
//! `patient/Observation.read` (v1), `user/*.cruds`, `patient/Observation.rs?category=laboratory`
//! (v2, granular).
//!
//! As Azure's service reads them, the separator after the context may be `/`, `$` or `.` and `%2f`
//! stands for `/`: Entra ID cannot hold `/` in a scope name, so apps registered there send
//! `patient.Observation.read` or `patient%2fObservation.read`. Scopes that are not clinical
//! (`openid`, `launch/patient`, `fhirUser`, `user_impersonation`) are not this module's business.

use std::fmt;

/// Whose data a scope reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// The patient in context (launch or sign-in): their compartment only.
    Patient,
    /// Whatever the signed-in user may see.
    User,
    /// A backend service acting as itself.
    System,
}

/// The SMART v2 interactions: create, read, update, delete, search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interaction {
    Create,
    Read,
    Update,
    Delete,
    Search,
}

impl Interaction {
    fn bit(self) -> u8 {
        match self {
            Interaction::Create => 1,
            Interaction::Read => 2,
            Interaction::Update => 4,
            Interaction::Delete => 8,
            Interaction::Search => 16,
        }
    }

    pub fn letter(self) -> char {
        match self {
            Interaction::Create => 'c',
            Interaction::Read => 'r',
            Interaction::Update => 'u',
            Interaction::Delete => 'd',
            Interaction::Search => 's',
        }
    }
}

impl fmt::Display for Interaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Interaction::Create => "create",
            Interaction::Read => "read",
            Interaction::Update => "update",
            Interaction::Delete => "delete",
            Interaction::Search => "search",
        })
    }
}

/// One clinical scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClinicalScope {
    pub context: Context,
    /// The resource type, or `None` for `*` (and Azure's `all`).
    pub resource_type: Option<String>,
    /// The granted interactions as bits of [`Interaction`].
    actions: u8,
    /// A v2 granular scope's search parameters (`?category=laboratory`), all of which a resource must
    /// match.
    pub filter: Vec<(String, String)>,
}

impl ClinicalScope {
    pub fn grants(&self, interaction: Interaction) -> bool {
        self.actions & interaction.bit() != 0
    }

    pub fn covers(&self, resource_type: &str) -> bool {
        self.resource_type.as_deref().is_none_or(|t| t == resource_type)
    }
}

/// Why a clinical-looking scope was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidScope {
    pub scope: String,
    pub reason: String,
}

/// Parses one scope: `Ok(None)` when it is not a clinical scope at all.
pub fn parse(scope: &str) -> Result<Option<ClinicalScope>, InvalidScope> {
    let decoded = decode_slashes(scope);
    let (context, rest) = match split_context(&decoded) {
        Some(split) => split,
        None => return Ok(None),
    };
    let invalid = |reason: &str| InvalidScope { scope: scope.to_owned(), reason: reason.to_owned() };
    let (head, query) = match rest.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (rest, None),
    };
    let Some((resource_type, permission)) = head.rsplit_once('.') else {
        return Err(invalid("it has no permission after the resource type (such as .read or .rs)"));
    };
    let resource_type = match resource_type {
        "*" | "all" => None,
        t if fhir::definitions().is_resource_type(t) => Some(t.to_owned()),
        t => return Err(invalid(&format!("'{t}' is not a resource type"))),
    };
    let (actions, v2) = match permission {
        "read" => (Interaction::Read.bit() | Interaction::Search.bit(), false),
        "write" => (Interaction::Create.bit() | Interaction::Update.bit() | Interaction::Delete.bit(), false),
        "*" | "all" => (0b11111, false),
        letters => (v2_actions(letters).ok_or_else(|| invalid("its permission is not read, write, * or cruds"))?, true),
    };
    let filter = match query {
        None => Vec::new(),
        Some(_) if !v2 => return Err(invalid("only SMART v2 scopes (such as .rs) may carry search parameters")),
        Some(query) => parse_filter(query).map_err(|reason| invalid(&reason))?,
    };
    Ok(Some(ClinicalScope { context, resource_type, actions, filter }))
}

/// Parses every clinical scope of a token's `scp`.
pub fn parse_all<'a>(scopes: impl IntoIterator<Item = &'a str>) -> Result<Vec<ClinicalScope>, InvalidScope> {
    let mut parsed = Vec::new();
    for scope in scopes {
        parsed.extend(parse(scope)?);
    }
    Ok(parsed)
}

/// `%2f` (any case) as `/`.
fn decode_slashes(scope: &str) -> String {
    let mut out = String::with_capacity(scope.len());
    let mut rest = scope;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        if rest[at..].len() >= 3 && rest[at + 1..at + 3].eq_ignore_ascii_case("2f") {
            out.push('/');
            rest = &rest[at + 3..];
        } else {
            out.push('%');
            rest = &rest[at + 1..];
        }
    }
    out.push_str(rest);
    out
}

fn split_context(scope: &str) -> Option<(Context, &str)> {
    for (name, context) in [("patient", Context::Patient), ("user", Context::User), ("system", Context::System)] {
        if let Some(rest) = scope.strip_prefix(name) {
            if let Some(rest) = rest.strip_prefix(['/', '$', '.']) {
                return Some((context, rest));
            }
        }
    }
    None
}

/// `cruds` in that order, each letter at most once.
fn v2_actions(letters: &str) -> Option<u8> {
    const ORDER: [Interaction; 5] =
        [Interaction::Create, Interaction::Read, Interaction::Update, Interaction::Delete, Interaction::Search];
    let mut actions = 0;
    let mut next = 0;
    for c in letters.chars() {
        let position = ORDER[next..].iter().position(|i| i.letter() == c)? + next;
        actions |= ORDER[position].bit();
        next = position + 1;
    }
    (actions != 0).then_some(actions)
}

/// A granular scope's parameters: plain `name=value` pairs. Modifiers, chains and result
/// parameters could widen what a scope grants in ways a reader of the scope would not expect, so
/// they are refused (as Azure's service does).
fn parse_filter(query: &str) -> Result<Vec<(String, String)>, String> {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    if pairs.is_empty() {
        return Err("its search parameters are empty".into());
    }
    for (name, value) in &pairs {
        if name.is_empty() || value.is_empty() {
            return Err(format!("its search parameter '{name}={value}' has no name or no value"));
        }
        if name.contains([':', '.']) || name.starts_with('_') {
            return Err(format!(
                "its search parameter '{name}' uses a modifier, a chain or a result parameter, which scopes may not"
            ));
        }
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(text: &str) -> ClinicalScope {
        parse(text).unwrap().unwrap()
    }

    fn letters(s: &ClinicalScope) -> String {
        [Interaction::Create, Interaction::Read, Interaction::Update, Interaction::Delete, Interaction::Search]
            .iter()
            .filter(|i| s.grants(**i))
            .map(|i| i.letter())
            .collect()
    }

    #[test]
    fn v1_scopes() {
        let s = scope("patient/*.read");
        assert_eq!((s.context, s.resource_type.as_deref(), letters(&s).as_str()), (Context::Patient, None, "rs"));
        let s = scope("user/Observation.write");
        assert_eq!(
            (s.context, s.resource_type.as_deref(), letters(&s).as_str()),
            (Context::User, Some("Observation"), "cud")
        );
        assert_eq!(letters(&scope("system/*.*")), "cruds");
        assert_eq!(letters(&scope("patient/all.all")), "cruds");
    }

    #[test]
    fn v2_scopes() {
        assert_eq!(letters(&scope("patient/Observation.rs")), "rs");
        assert_eq!(letters(&scope("user/*.cruds")), "cruds");
        assert_eq!(letters(&scope("user/Encounter.cu")), "cu");
        let s = scope(
            "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory",
        );
        assert_eq!(
            s.filter,
            [(
                "category".to_owned(),
                "http://terminology.hl7.org/CodeSystem/observation-category|laboratory".to_owned()
            )]
        );
        // Out of order or repeated letters are not v2 permissions.
        for bad in ["patient/Observation.sr", "patient/Observation.rr", "patient/Observation.x", "patient/Observation."]
        {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn entra_spellings() {
        assert_eq!(scope("patient.Observation.read"), scope("patient/Observation.read"));
        assert_eq!(scope("patient$Observation.read"), scope("patient/Observation.read"));
        assert_eq!(scope("patient%2FObservation.rs"), scope("patient/Observation.rs"));
        assert_eq!(scope("patient%2f*.read"), scope("patient/*.read"));
    }

    #[test]
    fn non_clinical_scopes_are_not_ours() {
        for other in
            ["openid", "fhirUser", "launch", "launch/patient", "offline_access", "user_impersonation", "patients/x"]
        {
            assert_eq!(parse(other), Ok(None), "{other}");
        }
    }

    #[test]
    fn refusals() {
        for bad in [
            "patient/Unicorn.read",
            "patient/Observation",
            "patient/Observation.read?category=x",
            "patient/Observation.rs?code:text=x",
            "patient/Observation.rs?subject.name=x",
            "patient/Observation.rs?_include=Observation:subject",
            "patient/Observation.rs?category=",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
