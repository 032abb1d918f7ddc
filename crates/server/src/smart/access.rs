//! What a SMART caller may reach: the token's clinical scopes, narrowed to a patient's compartment.
//!
//! A grant is one scope that covers a resource type and an interaction. A `patient/` scope reaches
//! the compartment of the patient in context (the token's `patient` claim, else `fhirUser` when it
//! is a Patient); a `user/` scope reaches what the user may see, which for a user who is a Patient
//! is their own compartment; a `system/` scope reaches everything of its types. Types outside the
//! Patient compartment definition (Practitioner, Organization, Medication…) belong to nobody's
//! compartment: compartment-bound grants may read and search them, as a patient app must read the
//! practitioner its Observations cite, but never write them.
//!
//! The same grants decide single resources ([`SmartAccess::permits`], from the resource's own index
//! values) and searches ([`SmartAccess::search_clause`], a clause the store evaluates), so that a
//! resource is readable exactly when a search can find it.

use fhir::SearchParamType;
use fhirside_identity::validate::Claims;
use fhirside_store::{Clause, IndexEntries, StoredVersion, TokenSystem, TokenValue, Value as Matched};
use serde_json::Value;

use super::scopes::{self, ClinicalScope, Context, Interaction};
use crate::error::FhirError;

/// The SMART limits of one caller.
#[derive(Debug, Clone)]
pub struct SmartAccess {
    scopes: Vec<ClinicalScope>,
    /// The patient whose compartment compartment-bound grants reach.
    patient: Option<String>,
    /// The `fhirUser` claim as `(type, id)`.
    fhir_user: Option<(String, String)>,
}

/// One scope's reach for a given type and interaction.
#[derive(Debug, Clone, PartialEq)]
struct Grant<'a> {
    /// `Some(patient id)` when bound to that patient's compartment.
    compartment: Option<&'a str>,
    filter: &'a [(String, String)],
}

impl SmartAccess {
    /// The caller's limits from its token. A malformed clinical scope is refused (`400`), as Azure's
    /// service does, rather than silently granting less than the app believes it has.
    pub fn from_claims(claims: &Claims) -> Result<SmartAccess, FhirError> {
        let scopes = scopes::parse_all(claims.scopes()).map_err(|e| FhirError::BadRequest {
            code: "security",
            diagnostics: format!("The token's scope '{}' is not a valid SMART scope: {}.", e.scope, e.reason),
            expression: None,
        })?;
        let fhir_user = claims.str("fhirUser").or_else(|| claims.str("extension_fhirUser")).and_then(reference);
        let patient = claims
            .str("patient")
            .map(str::to_owned)
            .or_else(|| fhir_user.as_ref().filter(|(t, _)| t == "Patient").map(|(_, id)| id.clone()));
        Ok(SmartAccess { scopes, patient, fhir_user })
    }

    /// For tests and callers that already hold parsed scopes.
    pub fn new(scopes: Vec<ClinicalScope>, patient: Option<String>, fhir_user: Option<(String, String)>) -> Self {
        SmartAccess { scopes, patient, fhir_user }
    }

    /// The patient in context, if any.
    pub fn patient(&self) -> Option<&str> {
        self.patient.as_deref()
    }

    /// The grants for `interaction` on `resource_type`, each bound to a compartment or not.
    fn grants(&self, resource_type: &str, interaction: Interaction) -> Vec<Grant<'_>> {
        let in_compartment = in_patient_compartment(resource_type);
        let mut grants = Vec::new();
        for scope in self.scopes.iter().filter(|s| s.covers(resource_type) && s.grants(interaction)) {
            let bound = match scope.context {
                Context::Patient => true,
                Context::User => self.fhir_user.as_ref().is_some_and(|(t, _)| t == "Patient"),
                Context::System => false,
            };
            // Bound to a patient but none in context: the scope reaches nothing at all.
            if bound && self.patient.is_none() {
                continue;
            }
            let compartment = match (bound, in_compartment) {
                (false, _) => None,
                // Nobody's compartment: readable, never writable, from a patient's grant.
                (true, false) if matches!(interaction, Interaction::Read | Interaction::Search) => None,
                (true, false) => continue,
                (true, true) => match self.patient.as_deref() {
                    Some(patient) => Some(patient),
                    None => continue,
                },
            };
            // A filter on a parameter this type lacks (or that is not a token) can match nothing.
            if !scope.filter.iter().all(|(param, _)| is_token_param(resource_type, param)) {
                continue;
            }
            grants.push(Grant { compartment, filter: &scope.filter });
        }
        grants
    }

    /// Fails with `403` unless some scope grants `interaction` on `resource_type`.
    pub fn require(&self, resource_type: &str, interaction: Interaction) -> Result<(), FhirError> {
        if !self.grants(resource_type, interaction).is_empty() {
            return Ok(());
        }
        let needs_patient = self.patient.is_none()
            && self
                .scopes
                .iter()
                .any(|s| s.context == Context::Patient && s.covers(resource_type) && s.grants(interaction));
        Err(FhirError::ScopeForbidden(if needs_patient {
            format!(
                "The token's patient/ scopes need a patient in context (the 'patient' or 'fhirUser' claim) to \
                 {interaction} {resource_type} resources."
            )
        } else {
            format!("The token's SMART scopes do not permit {interaction} on {resource_type} resources.")
        }))
    }

    /// Whether `resource` (of `resource_type`) is within some grant for `interaction`.
    pub fn permits(&self, resource_type: &str, interaction: Interaction, resource: &Value) -> bool {
        if let Some(unbound) = self.unbound(resource_type, interaction) {
            return unbound;
        }
        let index = crate::indexing::entries(crate::search_params::current().extract(resource_type, resource));
        let id = resource.get("id").and_then(Value::as_str);
        self.permits_indexed(resource_type, interaction, id, &index)
    }

    /// Like [`SmartAccess::permits`] for a stored body.
    pub fn permits_body(&self, resource_type: &str, interaction: Interaction, body: &[u8]) -> bool {
        if let Some(unbound) = self.unbound(resource_type, interaction) {
            return unbound;
        }
        match serde_json::from_slice::<Value>(body) {
            Ok(resource) => self.permits(resource_type, interaction, &resource),
            Err(_) => false,
        }
    }

    /// Like [`SmartAccess::permits`] for a resource about to be written, from its index rows.
    pub fn permits_indexed(
        &self,
        resource_type: &str,
        interaction: Interaction,
        id: Option<&str>,
        index: &IndexEntries,
    ) -> bool {
        self.grants(resource_type, interaction).iter().any(|grant| {
            grant.compartment.is_none_or(|patient| in_compartment(resource_type, id, index, patient))
                && grant.filter.iter().all(|(param, value)| token_matches(index, param, value))
        })
    }

    /// Fails with `403` unless a resource about to be written (its id, if known, and index rows) is
    /// within the grants for `interaction`.
    pub fn check_write(
        &self,
        resource_type: &str,
        interaction: Interaction,
        id: Option<&str>,
        index: &IndexEntries,
    ) -> Result<(), FhirError> {
        self.require(resource_type, interaction)?;
        if self.permits_indexed(resource_type, interaction, id, index) {
            return Ok(());
        }
        Err(self.outside(resource_type, interaction))
    }

    /// Fails with `403` unless the stored version a write replaces or deletes is within the grants
    /// for `interaction`.
    pub fn check_existing(&self, version: &StoredVersion, interaction: Interaction) -> Result<(), FhirError> {
        self.require(&version.resource_type, interaction)?;
        if self.permits_version(version, interaction) {
            Ok(())
        } else {
            Err(self.outside(&version.resource_type, interaction))
        }
    }

    /// Whether a stored version is within the grants for `interaction`. A deletion has no body to
    /// judge: it is shown only when the grants do not depend on content.
    pub fn permits_version(&self, version: &StoredVersion, interaction: Interaction) -> bool {
        if version.deleted {
            self.unbound(&version.resource_type, interaction) == Some(true)
        } else {
            self.permits_body(&version.resource_type, interaction, &version.body)
        }
    }

    fn outside(&self, resource_type: &str, interaction: Interaction) -> FhirError {
        let whose = match &self.patient {
            Some(patient) => format!(" (the compartment of Patient/{patient} and the scopes' parameters)"),
            None => String::new(),
        };
        FhirError::ScopeForbidden(format!(
            "The {resource_type} is outside what the token's SMART scopes permit to {interaction}{whose}."
        ))
    }

    /// `Some(answer)` when the answer does not depend on the resource: no grant, or one that
    /// reaches every resource of the type.
    fn unbound(&self, resource_type: &str, interaction: Interaction) -> Option<bool> {
        let grants = self.grants(resource_type, interaction);
        if grants.is_empty() {
            Some(false)
        } else if grants.iter().any(|g| g.compartment.is_none() && g.filter.is_empty()) {
            Some(true)
        } else {
            None
        }
    }

    /// Whether the grants for `interaction` on `resource_type` reach every resource of the type.
    pub fn reaches_all(&self, resource_type: &str, interaction: Interaction) -> bool {
        self.unbound(resource_type, interaction) == Some(true)
    }

    /// The clause a search of `types` must add so that it finds only what the grants reach:
    /// `None` when they reach every resource of those types. Fails with `403` when a type has no
    /// grant at all.
    pub fn search_clause(&self, types: &[String], interaction: Interaction) -> Result<Option<Clause>, FhirError> {
        let mut per_type: Vec<(String, Option<Clause>)> = Vec::new();
        for resource_type in types {
            self.require(resource_type, interaction)?;
            per_type.push((resource_type.clone(), self.type_clause(resource_type, interaction)));
        }
        if per_type.iter().all(|(_, c)| c.is_none()) {
            return Ok(None);
        }
        if let [(_, clause)] = per_type.as_slice() {
            return Ok(clause.clone());
        }
        // Several types: each with its own condition, types sharing one grouped (a system-wide
        // search under `patient/*.read` has three groups, not a hundred and forty alternatives).
        let mut groups: Vec<(Option<Clause>, Vec<String>)> = Vec::new();
        for (resource_type, clause) in per_type {
            let key = format!("{clause:?}");
            match groups.iter_mut().find(|(c, _)| format!("{c:?}") == key) {
                Some((_, types)) => types.push(resource_type),
                None => groups.push((clause, vec![resource_type])),
            }
        }
        Ok(Some(Clause::Any(
            groups
                .into_iter()
                .map(|(clause, types)| match clause {
                    None => Clause::Types(types),
                    Some(clause) => Clause::All(vec![Clause::Types(types), clause]),
                })
                .collect(),
        )))
    }

    /// Narrows the chains and reverse chains among `clauses` to what the scopes reach: a chain
    /// follows references only into types the caller may search, and only to resources it may see;
    /// `_has` looks only at resources it may see.
    pub fn restrict_clauses(&self, clauses: &mut [Clause]) -> Result<(), FhirError> {
        for clause in clauses.iter_mut() {
            match clause {
                Clause::Chain { target_types, clauses: inner, .. } => {
                    let reachable: Vec<String> = target_types
                        .iter()
                        .filter(|t| !self.grants(t, Interaction::Search).is_empty())
                        .cloned()
                        .collect();
                    if reachable.is_empty() {
                        return Err(FhirError::ScopeForbidden(format!(
                            "The token's SMART scopes permit no search on {}, which the chained parameter reaches.",
                            target_types.join(", ")
                        )));
                    }
                    *target_types = reachable;
                    self.restrict_clauses(inner)?;
                    inner.extend(self.search_clause(target_types, Interaction::Search)?);
                }
                Clause::Has { source_type, clauses: inner, .. } => {
                    self.restrict_clauses(inner)?;
                    inner.extend(self.search_clause(std::slice::from_ref(source_type), Interaction::Search)?);
                }
                Clause::Not(inner) => {
                    let mut one = vec![std::mem::replace(inner.as_mut(), Clause::Any(Vec::new()))];
                    self.restrict_clauses(&mut one)?;
                    **inner = one.pop().expect("one");
                }
                Clause::Any(inner) | Clause::All(inner) => self.restrict_clauses(inner)?,
                _ => {}
            }
        }
        Ok(())
    }

    /// The types a system-wide search (no `_type`) may cover: every type with a grant.
    pub fn searchable_types(&self, interaction: Interaction) -> Vec<String> {
        fhir::definitions()
            .resource_types()
            .iter()
            .filter(|t| !self.grants(t, interaction).is_empty())
            .cloned()
            .collect()
    }

    fn type_clause(&self, resource_type: &str, interaction: Interaction) -> Option<Clause> {
        let grants = self.grants(resource_type, interaction);
        if grants.iter().any(|g| g.compartment.is_none() && g.filter.is_empty()) {
            return None;
        }
        let alternatives: Vec<Clause> = grants
            .iter()
            .map(|grant| {
                let mut all: Vec<Clause> = Vec::new();
                if let Some(patient) = grant.compartment {
                    all.push(compartment_clause(resource_type, patient));
                }
                for (param, value) in grant.filter {
                    all.push(Clause::Match { param: param.clone(), values: vec![Matched::Token(token_value(value))] });
                }
                match all.len() {
                    1 => all.pop().expect("one"),
                    _ => Clause::All(all),
                }
            })
            .collect();
        Some(match alternatives.len() {
            1 => alternatives.into_iter().next().expect("one"),
            _ => Clause::Any(alternatives),
        })
    }
}

/// `Patient/123`, `https://fhir.example.org/Patient/123` or `…/Patient/123/_history/2` as
/// `(Patient, 123)`.
fn reference(url: &str) -> Option<(String, String)> {
    let path = url.split('?').next().unwrap_or(url);
    let path = match path.find("/_history/") {
        Some(at) => &path[..at],
        None => path,
    };
    let mut parts = path.trim_end_matches('/').rsplit('/');
    let id = parts.next()?;
    let resource_type = parts.next()?;
    fhir::definitions().is_resource_type(resource_type).then(|| (resource_type.to_owned(), id.to_owned()))
}

/// Whether `resource_type` has a place in the Patient compartment definition (Patient itself too).
pub fn in_patient_compartment(resource_type: &str) -> bool {
    resource_type == "Patient" || fhir::definitions().compartment_params("Patient", resource_type).is_some()
}

fn in_compartment(resource_type: &str, id: Option<&str>, index: &IndexEntries, patient: &str) -> bool {
    (resource_type == "Patient" && id == Some(patient))
        || index.compartments.iter().any(|c| c.compartment == "Patient" && c.id == patient)
}

fn compartment_clause(resource_type: &str, patient: &str) -> Clause {
    let compartment = Clause::Compartment { compartment: "Patient".into(), id: patient.to_owned() };
    if resource_type == "Patient" {
        Clause::Any(vec![Clause::Id(vec![patient.to_owned()]), compartment])
    } else {
        compartment
    }
}

fn is_token_param(resource_type: &str, param: &str) -> bool {
    crate::search_params::current().search_param(resource_type, param).is_some_and(|p| p.kind == SearchParamType::Token)
}

/// A scope's token value: `code`, `system|code`, `|code` or `system|`.
fn token_value(text: &str) -> TokenValue {
    match text.split_once('|') {
        None => TokenValue { system: TokenSystem::Any, code: Some(text.to_owned()) },
        Some(("", code)) => TokenValue { system: TokenSystem::None, code: Some(code.to_owned()) },
        Some((system, "")) => TokenValue { system: TokenSystem::Is(system.to_owned()), code: None },
        Some((system, code)) => TokenValue { system: TokenSystem::Is(system.to_owned()), code: Some(code.to_owned()) },
    }
}

fn token_matches(index: &IndexEntries, param: &str, value: &str) -> bool {
    let wanted = token_value(value);
    index.tokens.iter().filter(|t| t.param == param).any(|t| {
        let system = match &wanted.system {
            TokenSystem::Any => true,
            TokenSystem::None => t.system.is_none(),
            TokenSystem::Is(s) => t.system.as_deref() == Some(s.as_str()),
        };
        system && wanted.code.as_deref().is_none_or(|c| c == t.code)
    })
}
