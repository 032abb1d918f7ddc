//! `fhirside user …`: users who sign in at the built-in authority (authorization code flow).

use clap::{Args, Subcommand};
use fhirside_identity::admin;
use fhirside_identity::store::{NewUser, User};
use fhirside_identity::time;
use serde_json::{json, Value};

use super::{err, fields, list_or_none, role_names, table, Admin, Common, PasswordArgs};

#[derive(Args)]
pub struct UserArgs {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: UserCommand,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user.
    Create {
        /// The user principal name (sign-in name), e.g. alice@example.org.
        #[arg(long)]
        name: String,
        /// Display name [default: the user principal name].
        #[arg(long, default_value = "")]
        display_name: String,
        #[command(flatten)]
        password: PasswordArgs,
        /// The FHIR resource that is this user, for SMART's fhirUser claim (e.g. Practitioner/123).
        #[arg(long)]
        fhir_user: Option<String>,
        /// A role to assign to the user (repeatable); see `fhirside role definitions`.
        #[arg(long = "role")]
        roles: Vec<String>,
    },
    /// List the users.
    List,
    /// Delete a user (by object id or user principal name) with their role assignments.
    Delete { id: String },
    /// Set a user's password.
    SetPassword {
        /// The user's object id or user principal name.
        id: String,
        #[command(flatten)]
        password: PasswordArgs,
    },
}

pub fn run(args: UserArgs) -> Result<(), String> {
    let cli = Admin::open(&args.common)?;
    match args.command {
        UserCommand::Create { name, display_name, password, fhir_user, roles } => {
            let new = NewUser { user_principal_name: name, display_name, password: password.read()?, fhir_user };
            let (user, roles) = admin::create_user(&cli.store, new, &roles, time::now()).map_err(err)?;
            cli.emit(admin::user_json(&user, &roles), || {
                fields(&[
                    ("user", user.user_principal_name.clone()),
                    ("object id", user.object_id.clone()),
                    ("display name", user.display_name.clone()),
                    ("fhirUser", user.fhir_user.clone().unwrap_or_else(|| "none".into())),
                    ("roles", list_or_none(&role_names(&roles))),
                ])
            });
        }
        UserCommand::List => {
            let users = cli.store.users().map_err(err)?;
            let mut json = Vec::new();
            let mut rows = Vec::new();
            for user in &users {
                let roles = cli.roles(&user.object_id)?;
                rows.push(vec![
                    user.object_id.clone(),
                    user.user_principal_name.clone(),
                    user.display_name.clone(),
                    user.fhir_user.clone().unwrap_or_default(),
                    role_names(&roles).join(", "),
                ]);
                json.push(admin::user_json(user, &roles));
            }
            cli.emit(Value::Array(json), || {
                if users.is_empty() {
                    return "no users (create one with `fhirside user create --name UPN --password-stdin`)".into();
                }
                table(&["OBJECT ID", "USER PRINCIPAL NAME", "DISPLAY NAME", "FHIR USER", "ROLES"], &rows)
            });
        }
        UserCommand::Delete { id } => {
            let user = find(&cli, &id)?;
            if !cli.store.delete_user(&user.object_id).map_err(err)? {
                return Err(no_user(&id));
            }
            cli.emit(json!({"deleted": true, "objectId": user.object_id}), || {
                format!("deleted user {} ({})", user.user_principal_name, user.object_id)
            });
        }
        UserCommand::SetPassword { id, password } => {
            let user = find(&cli, &id)?;
            admin::set_password(&cli.store, &user.object_id, &password.read()?).map_err(err)?;
            cli.emit(json!({"passwordSet": true, "objectId": user.object_id}), || {
                format!("set the password of {}", user.user_principal_name)
            });
        }
    }
    Ok(())
}

fn find(cli: &Admin, id: &str) -> Result<User, String> {
    cli.store.user(id).map_err(err)?.ok_or_else(|| no_user(id))
}

fn no_user(id: &str) -> String {
    format!("no user with object id or user principal name '{id}' (see `fhirside user list`)")
}
