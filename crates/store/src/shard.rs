//! Which shard a resource belongs on when the PostgreSQL store is distributed (Citus): its shard key.
//!
//! One key keeps a patient's data together, so that a resource, its index rows and the rest of its
//! patient's compartment are on one shard: a Patient's key is its own id; a resource in exactly one
//! Patient compartment has that patient's id; anything else — an Organization, a Practitioner, a
//! resource in no patient's compartment or in several — has its own `Type/id`, which spreads such
//! resources evenly. Patient ids cannot contain `/`, so the two kinds of key never collide.
//!
//! A resource keeps the key of its first version for good: later versions, even one that moves it
//! to another patient's compartment, stay on that shard, so that every version of a resource is on
//! one shard and a write touches one shard (see ARCHITECTURE.md, Decisions).

use crate::index::IndexEntries;

/// The compartment that decides placement.
pub(crate) const PATIENT: &str = "Patient";

/// The shard key of a new resource `resource_type/id` whose version is in the Patient compartments
/// of `patients` (repeats allowed).
pub(crate) fn key<'a>(resource_type: &str, id: &str, patients: impl IntoIterator<Item = &'a str>) -> String {
    if resource_type == PATIENT {
        return id.to_owned();
    }
    let mut only: Option<&str> = None;
    for patient in patients {
        match only {
            None => only = Some(patient),
            Some(seen) if seen == patient => {}
            Some(_) => return own_key(resource_type, id),
        }
    }
    only.map_or_else(|| own_key(resource_type, id), str::to_owned)
}

/// The shard key of a new resource from the compartment memberships in its index entries.
pub(crate) fn key_of(resource_type: &str, id: &str, index: &IndexEntries) -> String {
    let patients = index.compartments.iter().filter(|c| c.compartment == PATIENT).map(|c| c.id.as_str());
    key(resource_type, id, patients)
}

fn own_key(resource_type: &str, id: &str) -> String {
    format!("{resource_type}/{id}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::CompartmentEntry;

    #[test]
    fn a_patient_is_its_own_shard() {
        assert_eq!(key("Patient", "p1", ["p2"]), "p1");
    }

    #[test]
    fn one_patient_compartment_places_a_resource_with_its_patient() {
        assert_eq!(key("Observation", "o1", ["p1"]), "p1");
        // The same patient through two references (subject and performer) is still one.
        assert_eq!(key("Observation", "o1", ["p1", "p1"]), "p1");
    }

    #[test]
    fn no_or_several_patients_give_the_resource_its_own_key() {
        assert_eq!(key("Organization", "org", []), "Organization/org");
        assert_eq!(key("Group", "g", ["p1", "p2"]), "Group/g");
    }

    #[test]
    fn only_patient_compartments_count() {
        let index = IndexEntries {
            compartments: vec![
                CompartmentEntry { compartment: "Encounter".into(), id: "e1".into() },
                CompartmentEntry { compartment: "Practitioner".into(), id: "dr".into() },
                CompartmentEntry { compartment: "Patient".into(), id: "p9".into() },
            ],
            ..IndexEntries::default()
        };
        assert_eq!(key_of("Observation", "o", &index), "p9");
        assert_eq!(key_of("Observation", "o", &IndexEntries::default()), "Observation/o");
    }
}
