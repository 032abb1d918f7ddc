//! Azure's FHIR data actions and the roles that grant them.
//!
//! Two families of roles, as in Azure:
//! - **Azure RBAC roles** (`FHIR Data Reader`, `FHIR Data Contributor`, …), assigned to an object id
//!   and evaluated by the FHIR service at request time, so that removing an assignment takes
//!   effect on the next request rather than when the caller's token expires;
//! - **app roles** of the open-source FHIR server (`globalReader`, `globalAdmin`, …), which an
//!   authority puts in the token's `roles` claim; they are how an external OpenID Connect issuer
//!   grants access.
//!
//! Plus one of Fhirside's own, `Fhirside Administrator`, for the admin API (app registrations,
//! users, role assignments), which Azure manages through Microsoft Graph instead.

/// Azure's FHIR data actions (`Microsoft.HealthcareApis/workspaces/fhirservices/resources/<action>`),
/// and Fhirside's `admin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataAction {
    Read,
    Write,
    Delete,
    HardDelete,
    Export,
    ResourceValidate,
    Reindex,
    ConvertData,
    EditProfileDefinitions,
    Import,
    SearchParameter,
    BulkOperator,
    /// SMART v2 granular actions.
    Search,
    ReadById,
    Create,
    Update,
    /// Marks a SMART user, whose access is further limited by clinical scopes.
    Smart,
    /// Fhirside's admin API (identity administration). Not part of `*`.
    Admin,
    /// Fhirside's audit log query (`GET /_audit`). Not part of `*`.
    Audit,
}

impl DataAction {
    pub const ALL: [DataAction; 19] = [
        DataAction::Read,
        DataAction::Write,
        DataAction::Delete,
        DataAction::HardDelete,
        DataAction::Export,
        DataAction::ResourceValidate,
        DataAction::Reindex,
        DataAction::ConvertData,
        DataAction::EditProfileDefinitions,
        DataAction::Import,
        DataAction::SearchParameter,
        DataAction::BulkOperator,
        DataAction::Search,
        DataAction::ReadById,
        DataAction::Create,
        DataAction::Update,
        DataAction::Smart,
        DataAction::Admin,
        DataAction::Audit,
    ];

    fn bit(self) -> u32 {
        1 << (self as u32)
    }

    /// Azure's name for the action (the suffix of its data action id).
    pub fn name(self) -> &'static str {
        match self {
            DataAction::Read => "read",
            DataAction::Write => "write",
            DataAction::Delete => "delete",
            DataAction::HardDelete => "hardDelete",
            DataAction::Export => "export",
            DataAction::ResourceValidate => "resourceValidate",
            DataAction::Reindex => "reindex",
            DataAction::ConvertData => "convertData",
            DataAction::EditProfileDefinitions => "editProfileDefinitions",
            DataAction::Import => "import",
            DataAction::SearchParameter => "searchParameter",
            DataAction::BulkOperator => "bulkOperator",
            DataAction::Search => "search",
            DataAction::ReadById => "readById",
            DataAction::Create => "create",
            DataAction::Update => "update",
            DataAction::Smart => "smart",
            DataAction::Admin => "admin",
            DataAction::Audit => "audit",
        }
    }
}

/// A set of data actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DataActions(u32);

impl DataActions {
    pub const NONE: DataActions = DataActions(0);

    pub fn of(actions: &[DataAction]) -> DataActions {
        DataActions(actions.iter().fold(0, |bits, a| bits | a.bit()))
    }

    /// Azure's `*`: every FHIR data action except `smart` (and Fhirside's `admin` and `audit`).
    pub fn star() -> DataActions {
        DataActions(
            DataAction::ALL
                .iter()
                .filter(|a| !matches!(a, DataAction::Smart | DataAction::Admin | DataAction::Audit))
                .fold(0, |bits, a| bits | a.bit()),
        )
    }

    pub fn contains(self, action: DataAction) -> bool {
        self.0 & action.bit() != 0
    }

    pub fn union(self, other: DataActions) -> DataActions {
        DataActions(self.0 | other.0)
    }

    pub fn without(self, actions: &[DataAction]) -> DataActions {
        DataActions(self.0 & !DataActions::of(actions).0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn names(self) -> Vec<&'static str> {
        DataAction::ALL.iter().filter(|a| self.contains(**a)).map(|a| a.name()).collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleKind {
    /// An Azure RBAC role: assigned to an object id, evaluated per request.
    Rbac,
    /// An app role: carried in the token's `roles` claim.
    AppRole,
}

#[derive(Debug)]
pub struct Role {
    pub name: &'static str,
    /// Azure's role-definition id for RBAC roles; a stable id of Fhirside's for the others.
    pub id: &'static str,
    pub kind: RoleKind,
    pub description: &'static str,
    actions: fn() -> DataActions,
}

impl Role {
    pub fn data_actions(&self) -> DataActions {
        (self.actions)()
    }
}

use DataAction as A;

/// Every role Fhirside knows.
pub static ROLES: &[Role] = &[
    Role {
        name: "FHIR Data Reader",
        id: "4c8d0bbc-75d3-4935-991f-5f3c56d81508",
        kind: RoleKind::Rbac,
        description: "Read and search FHIR data.",
        actions: || DataActions::of(&[A::Read]),
    },
    Role {
        name: "FHIR Data Writer",
        id: "3f88fce4-5892-4214-ae73-ba5294559913",
        kind: RoleKind::Rbac,
        description: "Read, write and soft-delete FHIR data; export, import, validate, reindex, convert.",
        actions: || {
            DataActions::of(&[
                A::Read,
                A::Write,
                A::Delete,
                A::Export,
                A::ResourceValidate,
                A::Reindex,
                A::ConvertData,
                A::EditProfileDefinitions,
                A::Import,
            ])
        },
    },
    Role {
        name: "FHIR Data Exporter",
        id: "3db33094-8700-4567-8da5-1501d4e7e843",
        kind: RoleKind::Rbac,
        description: "Read FHIR data and run $export.",
        actions: || DataActions::of(&[A::Read, A::Export]),
    },
    Role {
        name: "FHIR Data Importer",
        id: "4465e953-8ced-4406-a58e-0f6e3f3b530b",
        kind: RoleKind::Rbac,
        description: "Read FHIR data and run $import.",
        actions: || DataActions::of(&[A::Read, A::Import]),
    },
    Role {
        name: "FHIR Data Contributor",
        id: "5a1fc7df-4bf1-4951-a576-89034ee01acd",
        kind: RoleKind::Rbac,
        description: "Every FHIR data action (including hard delete) except SMART.",
        actions: DataActions::star,
    },
    Role {
        name: "FHIR SMART User",
        id: "4ba50f17-9666-485c-a643-ff00808643f0",
        kind: RoleKind::Rbac,
        description: "Read and write FHIR data within the SMART on FHIR scopes of the token.",
        actions: || DataActions::of(&[A::Read, A::Smart]),
    },
    Role {
        name: "FHIR Data Bulk Operator",
        id: "804db8d3-32c7-4ad4-a975-3f6f90d5f5f5",
        kind: RoleKind::Rbac,
        description: "Bulk export, import, delete and update.",
        actions: || {
            DataActions::of(&[
                A::Read,
                A::Write,
                A::Delete,
                A::Export,
                A::Reindex,
                A::Import,
                A::HardDelete,
                A::BulkOperator,
            ])
        },
    },
    Role {
        name: "Search Parameter Manager",
        id: "a02f7c31-354d-4106-865a-deedf37fa038",
        kind: RoleKind::Rbac,
        description: "Manage custom search parameters and reindex.",
        actions: || DataActions::of(&[A::Read, A::Write, A::Reindex, A::SearchParameter]),
    },
    Role {
        name: "Fhirside Administrator",
        id: "f4e1a7c2-3b6d-4e58-9a0f-5d2c8b7e6a13",
        kind: RoleKind::Rbac,
        description: "Fhirside's admin API: app registrations, secrets, users, role assignments, audit.",
        actions: || DataActions::of(&[A::Admin, A::Audit]),
    },
    // The open-source FHIR server's app roles (its roles.json).
    Role {
        name: "globalReader",
        id: "globalReader",
        kind: RoleKind::AppRole,
        description: "App role: read and validate.",
        actions: || DataActions::of(&[A::Read, A::ResourceValidate]),
    },
    Role {
        name: "globalExporter",
        id: "globalExporter",
        kind: RoleKind::AppRole,
        description: "App role: read and export.",
        actions: || DataActions::of(&[A::Read, A::Export]),
    },
    Role {
        name: "globalConverter",
        id: "globalConverter",
        kind: RoleKind::AppRole,
        description: "App role: read and convert data.",
        actions: || DataActions::of(&[A::Read, A::ConvertData]),
    },
    Role {
        name: "globalImporter",
        id: "globalImporter",
        kind: RoleKind::AppRole,
        description: "App role: read and import.",
        actions: || DataActions::of(&[A::Read, A::Import]),
    },
    Role {
        name: "globalWriter",
        id: "globalWriter",
        kind: RoleKind::AppRole,
        description: "App role: every data action except hard delete and profile definitions.",
        actions: || DataActions::star().without(&[A::HardDelete, A::EditProfileDefinitions]),
    },
    Role {
        name: "globalAdmin",
        id: "globalAdmin",
        kind: RoleKind::AppRole,
        description: "App role: every data action except SMART.",
        actions: DataActions::star,
    },
    Role {
        name: "smartUser",
        id: "smartUser",
        kind: RoleKind::AppRole,
        description: "App role: every data action, limited by SMART scopes.",
        actions: || DataActions::star().union(DataActions::of(&[A::Smart])),
    },
];

/// A role by name (case-insensitive) or id.
pub fn find(name_or_id: &str) -> Option<&'static Role> {
    ROLES.iter().find(|r| r.name.eq_ignore_ascii_case(name_or_id) || r.id.eq_ignore_ascii_case(name_or_id))
}

/// The union of the data actions of the named roles; unknown names grant nothing.
pub fn data_actions<'a>(names: impl IntoIterator<Item = &'a str>) -> DataActions {
    names.into_iter().filter_map(find).fold(DataActions::NONE, |all, role| all.union(role.data_actions()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn azure_role_definitions() {
        let reader = find("fhir data reader").unwrap().data_actions();
        assert!(reader.contains(A::Read) && !reader.contains(A::Write));
        let writer = find("FHIR Data Writer").unwrap().data_actions();
        assert!(writer.contains(A::Delete) && !writer.contains(A::HardDelete) && !writer.contains(A::Smart));
        let contributor = find("5a1fc7df-4bf1-4951-a576-89034ee01acd").unwrap().data_actions();
        assert!(contributor.contains(A::HardDelete) && !contributor.contains(A::Smart));
        assert!(!contributor.contains(A::Admin), "`*` never includes admin");
        assert!(!contributor.contains(A::Audit), "`*` never includes audit");
        let administrator = find("Fhirside Administrator").unwrap().data_actions();
        assert_eq!(administrator.names(), ["admin", "audit"]);
        let smart = find("FHIR SMART User").unwrap().data_actions();
        assert!(smart.contains(A::Smart) && !smart.contains(A::Write));
        assert_eq!(data_actions(["globalReader", "globalExporter"]).names(), ["read", "export", "resourceValidate"]);
        assert!(data_actions(["no such role"]).is_empty());
    }
}
