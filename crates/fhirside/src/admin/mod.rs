//! Identity administration: `fhirside app|user|role|tenant|authority …`.
//!
//! The commands open the identity store directly, where `serve` keeps it: in the PostgreSQL
//! database with `--database` (or `FHIRSIDE_DATABASE_URL`, or the config file's `database`), else
//! `identity.db` in the data directory. Both are shared between processes, so the commands work
//! whether or not servers run on the same store; they never take the directory's `LOCK`, which
//! guards the embedded resource store only. Output is text for people by default, or JSON with
//! `--output json`. A client secret is shown once, when it is created; hashes and passwords never.
//! The rules and the JSON shapes are [`fhirside_identity::admin`]'s, shared with the admin REST
//! API; the text output is the CLI's own.

mod app;
mod role;
mod tenant;
mod user;

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use fhirside_identity::store::{IdentityStore, RoleAssignment};
use serde_json::Value;

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Manage app registrations, their client secrets and public keys.
    App(app::AppArgs),
    /// Manage users (for the authorization code flow).
    User(user::UserArgs),
    /// Assign roles, list assignments and the role definitions.
    Role(role::RoleArgs),
    /// Show the installation's tenant.
    Tenant(tenant::TenantArgs),
    /// Manage the built-in authority's signing keys.
    Authority(tenant::AuthorityArgs),
}

/// Options every admin command takes (before or after the subcommand).
#[derive(Args, Debug)]
pub struct Common {
    /// TOML configuration file (only its `data_dir` and `database` are used here).
    #[arg(long, env = "FHIRSIDE_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// The data directory of the server [default: ./fhirside-data].
    #[arg(long, env = "FHIRSIDE_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// The PostgreSQL database of the servers (`postgres://user@host:port/database`), whose
    /// identity store the command edits instead of the data directory's.
    #[arg(long, env = "FHIRSIDE_DATABASE_URL", global = true)]
    database: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Table, global = true)]
    output: Output,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Text for people.
    Table,
    /// JSON for scripts.
    Json,
}

pub fn run(command: AdminCommand) -> Result<(), String> {
    match command {
        AdminCommand::App(args) => app::run(args),
        AdminCommand::User(args) => user::run(args),
        AdminCommand::Role(args) => role::run(args),
        AdminCommand::Tenant(args) => tenant::run_tenant(args),
        AdminCommand::Authority(args) => tenant::run_authority(args),
    }
}

/// An open identity store and how to print.
struct Admin {
    store: IdentityStore,
    output: Output,
    data_dir: PathBuf,
}

impl Admin {
    fn open(common: &Common) -> Result<Admin, String> {
        let target =
            crate::config::admin_target(common.data_dir.clone(), common.database.clone(), common.config.as_deref())?;
        let store = crate::identity::open_store(target.database.as_deref(), &target.data_dir)?;
        Ok(Admin { store, output: common.output, data_dir: target.data_dir })
    }

    /// Prints `json` or `text` per `--output`.
    fn emit(&self, json: Value, text: impl FnOnce() -> String) {
        match self.output {
            Output::Json => println!("{}", serde_json::to_string_pretty(&json).unwrap_or_default()),
            Output::Table => {
                let text = text();
                if text.ends_with('\n') {
                    print!("{text}");
                } else {
                    println!("{text}");
                }
            }
        }
    }

    /// The role assignments of one object id.
    fn roles(&self, object_id: &str) -> Result<Vec<RoleAssignment>, String> {
        self.store.role_assignments(Some(object_id)).map_err(err)
    }
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn timestamp(seconds: i64) -> String {
    fhirside_identity::time::rfc3339(seconds)
}

/// Left-aligned columns under a header.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut out = String::new();
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  "));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// `label: value` lines, the labels aligned.
fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(label, _)| label.len() + 1).max().unwrap_or(0);
    pairs.iter().map(|(label, value)| format!("{:<width$} {value}\n", format!("{label}:"))).collect()
}

/// Reads a password from `--password`, or the first line of standard input with `--password-stdin`
/// (how long it must be is [`fhirside_identity::admin`]'s rule).
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
struct PasswordArgs {
    /// The password (visible in the process list and shell history: prefer --password-stdin).
    #[arg(long)]
    password: Option<String>,
    /// Read the password from the first line of standard input.
    #[arg(long)]
    password_stdin: bool,
}

impl PasswordArgs {
    fn read(&self) -> Result<String, String> {
        if let Some(password) = &self.password {
            return Ok(password.clone());
        }
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map_err(|e| format!("cannot read standard input: {e}"))?;
        Ok(line.trim_end_matches(['\n', '\r']).to_owned())
    }
}

/// The items joined by commas, or `none`.
fn list_or_none<S: AsRef<str>>(items: &[S]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.iter().map(AsRef::as_ref).collect::<Vec<_>>().join(", ")
    }
}

/// The role names of assignments.
fn role_names(roles: &[RoleAssignment]) -> Vec<&str> {
    roles.iter().map(|r| r.role.as_str()).collect()
}
