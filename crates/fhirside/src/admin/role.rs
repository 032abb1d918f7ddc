//! `fhirside role …`: role assignments and the role catalogue.

use clap::{Args, Subcommand};
use fhirside_identity::admin::{self, PrincipalKind};
use fhirside_identity::roles::ROLES;
use fhirside_identity::time;
use serde_json::{json, Value};

use super::{err, fields, table, Admin, Common, Output};

#[derive(Args)]
pub struct RoleArgs {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: RoleCommand,
}

#[derive(Subcommand)]
enum RoleCommand {
    /// Grant a role to an app or a user.
    Assign {
        /// The role's name (case-insensitive) or id; see `fhirside role definitions`.
        #[arg(long)]
        role: String,
        /// The object id of an app or user; an app's client id or a user's principal name also do.
        #[arg(long)]
        assignee: String,
    },
    /// List role assignments.
    List {
        /// Only the assignments of this app or user.
        #[arg(long)]
        assignee: Option<String>,
    },
    /// The roles and the data actions each grants.
    Definitions,
    /// Remove a role assignment by its id (see `fhirside role list`).
    Remove {
        #[arg(long)]
        id: String,
    },
}

pub fn run(args: RoleArgs) -> Result<(), String> {
    if let RoleCommand::Definitions = args.command {
        // The catalogue is built in: no store needed.
        definitions(args.common.output);
        return Ok(());
    }
    let cli = Admin::open(&args.common)?;
    match args.command {
        RoleCommand::Assign { role, assignee } => {
            let (assignment, principal) = admin::assign_role(&cli.store, &role, &assignee, time::now()).map_err(err)?;
            if principal.kind == PrincipalKind::External {
                eprintln!(
                    "fhirside: note: {} is not an app or user of this tenant; assigned to it as an object id \
                     from another issuer",
                    principal.object_id
                );
            }
            cli.emit(admin::assignment_json(&assignment, &principal), || {
                fields(&[
                    ("assigned", assignment.role.clone()),
                    (
                        "to",
                        format!(
                            "{} {}",
                            principal.kind.as_str(),
                            principal.name.as_ref().unwrap_or(&principal.object_id)
                        ),
                    ),
                    ("object id", assignment.principal_id.clone()),
                    ("assignment id", assignment.id.clone()),
                ])
            });
        }
        RoleCommand::List { assignee } => {
            let assignments = admin::role_assignments(&cli.store, assignee.as_deref()).map_err(err)?;
            let json = assignments.iter().map(|(a, p)| admin::assignment_json(a, p)).collect();
            cli.emit(Value::Array(json), || {
                if assignments.is_empty() {
                    return "no role assignments".into();
                }
                let rows: Vec<Vec<String>> = assignments
                    .iter()
                    .map(|(a, p)| {
                        let name = p.name.clone().unwrap_or_default();
                        vec![a.id.clone(), a.role.clone(), a.principal_id.clone(), p.kind.as_str().into(), name]
                    })
                    .collect();
                table(&["ID", "ROLE", "ASSIGNEE", "TYPE", "NAME"], &rows)
            });
        }
        RoleCommand::Remove { id } => {
            if !cli.store.remove_role_assignment(&id).map_err(err)? {
                return Err(format!("no role assignment with id '{id}' (see `fhirside role list`)"));
            }
            cli.emit(json!({"removed": true, "id": id}), || format!("removed role assignment {id}"));
        }
        RoleCommand::Definitions => unreachable!("handled above"),
    }
    Ok(())
}

fn definitions(output: Output) {
    match output {
        Output::Json => {
            println!("{}", serde_json::to_string_pretty(&admin::role_definitions_json()).unwrap_or_default())
        }
        Output::Table => {
            let rows: Vec<Vec<String>> = ROLES
                .iter()
                .map(|r| vec![r.name.into(), admin::role_kind_name(r.kind).into(), r.data_actions().names().join(", ")])
                .collect();
            print!("{}", table(&["ROLE", "KIND", "DATA ACTIONS"], &rows));
            println!(
                "\nRBAC roles are assigned with `fhirside role assign` and checked on every request; app roles \
                 travel in tokens' `roles` claim."
            );
        }
    }
}
