//! `fhirside app …`: app registrations, client secrets, public keys.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use fhirside_identity::admin::{self, AppRegistration, Registered};
use fhirside_identity::jwt::JwkSet;
use fhirside_identity::store::{App, AppKind, NewApp, SecretInfo};
use fhirside_identity::time;
use serde_json::{json, Value};

use super::{err, fields, list_or_none, role_names, table, timestamp, Admin, Common};

#[derive(Args)]
pub struct AppArgs {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: AppCommand,
}

#[derive(Subcommand)]
enum AppCommand {
    /// Register an app. A confidential app (the default) gets a first client secret, shown once.
    Create(CreateArgs),
    /// List the app registrations.
    List,
    /// Show an app (by client id or object id) with its roles and secrets (never their values).
    Show { id: String },
    /// Delete an app with its secrets and role assignments.
    Delete { id: String },
    /// Change an app's name, redirect URIs or public keys.
    Update(UpdateArgs),
    /// Manage an app's client secrets.
    #[command(subcommand)]
    Secret(SecretCommand),
}

#[derive(Args)]
struct CreateArgs {
    /// Display name.
    #[arg(long)]
    name: String,
    /// A role to assign to the app (repeatable); see `fhirside role definitions`.
    #[arg(long = "role")]
    roles: Vec<String>,
    /// A public client (single-page or native app): no secret, must use PKCE.
    #[arg(long, conflicts_with = "service")]
    public: bool,
    /// A backend service authenticating with a signed JWT (private_key_jwt, with --jwks): no secret.
    #[arg(long)]
    service: bool,
    /// A redirect URI for the authorization code flow (repeatable): https, or http on localhost.
    #[arg(long = "redirect-uri")]
    redirect_uris: Vec<String>,
    /// A JWK Set file with the public keys for private_key_jwt client authentication.
    #[arg(long)]
    jwks: Option<PathBuf>,
    /// Days until the first client secret expires.
    #[arg(long, default_value_t = admin::DEFAULT_SECRET_DAYS, value_parser = clap::value_parser!(i64).range(1..))]
    secret_expires_days: i64,
}

#[derive(Args)]
struct UpdateArgs {
    /// The app's client id or object id.
    id: String,
    /// New display name.
    #[arg(long)]
    name: Option<String>,
    /// A redirect URI to add (repeatable).
    #[arg(long = "add-redirect-uri")]
    add_redirect_uris: Vec<String>,
    /// A redirect URI to remove (repeatable).
    #[arg(long = "remove-redirect-uri")]
    remove_redirect_uris: Vec<String>,
    /// A JWK Set file replacing the app's public keys.
    #[arg(long)]
    jwks: Option<PathBuf>,
}

#[derive(Subcommand)]
enum SecretCommand {
    /// Add a client secret; its value is shown once.
    Add {
        /// The app's client id or object id.
        #[arg(long)]
        app: String,
        /// A description, to tell secrets apart.
        #[arg(long, default_value = "")]
        name: String,
        /// Days until the secret expires.
        #[arg(long, default_value_t = admin::DEFAULT_SECRET_DAYS, value_parser = clap::value_parser!(i64).range(1..))]
        expires_days: i64,
    },
    /// List an app's client secrets (their hints, never their values).
    List {
        /// The app's client id or object id.
        #[arg(long)]
        app: String,
    },
    /// Remove a client secret; tokens already issued with it stay valid until they expire.
    Remove {
        /// The app's client id or object id.
        #[arg(long)]
        app: String,
        /// The secret's key id (see `fhirside app secret list`).
        #[arg(long)]
        key_id: String,
    },
}

pub fn run(args: AppArgs) -> Result<(), String> {
    let cli = Admin::open(&args.common)?;
    match args.command {
        AppCommand::Create(create) => create_app(&cli, create),
        AppCommand::List => list(&cli),
        AppCommand::Show { id } => show(&cli, &id),
        AppCommand::Delete { id } => {
            let app = find(&cli, &id)?;
            if !cli.store.delete_app(&app.object_id).map_err(err)? {
                return Err(no_app(&id));
            }
            cli.emit(json!({"deleted": true, "clientId": app.client_id, "objectId": app.object_id}), || {
                format!("deleted app '{}' ({})", app.display_name, app.client_id)
            });
            Ok(())
        }
        AppCommand::Update(update) => update_app(&cli, update),
        AppCommand::Secret(command) => secret(&cli, command),
    }
}

fn create_app(cli: &Admin, args: CreateArgs) -> Result<(), String> {
    let kind = match (args.public, args.service) {
        (true, _) => AppKind::Public,
        (_, true) => AppKind::Service,
        _ => AppKind::Confidential,
    };
    let jwks = args.jwks.as_deref().map(read_jwks).transpose()?;
    let registration = AppRegistration {
        app: NewApp { display_name: args.name, kind, redirect_uris: args.redirect_uris, jwks },
        roles: args.roles,
        secret_days: args.secret_expires_days,
    };
    let registered = admin::register_app(&cli.store, registration, time::now()).map_err(err)?;
    cli.emit(admin::registered_json(&registered), || {
        let Registered { app, tenant_id, roles, secret } = &registered;
        let mut pairs = vec![
            ("app", app.display_name.clone()),
            ("client id", app.client_id.clone()),
            ("object id", app.object_id.clone()),
            ("tenant id", tenant_id.clone()),
            ("kind", app.kind.as_str().to_owned()),
            ("redirect URIs", list_or_none(&app.redirect_uris)),
            ("roles", list_or_none(&role_names(roles))),
        ];
        if let Some((info, value)) = secret {
            pairs.push(("client secret", value.clone()));
            pairs.push(("secret key id", info.key_id.clone()));
            pairs.push(("secret expires", timestamp(info.expires_at)));
        }
        let mut text = fields(&pairs);
        if secret.is_some() {
            text.push_str("\nCopy the client secret now: it is not stored and cannot be shown again.\n");
        }
        if kind == AppKind::Service && app.jwks.is_none() {
            text.push_str("\nThe app has no public keys yet: add them with `fhirside app update --jwks FILE`.\n");
        }
        text
    });
    Ok(())
}

fn list(cli: &Admin) -> Result<(), String> {
    let apps = cli.store.apps().map_err(err)?;
    let mut json = Vec::new();
    let mut rows = Vec::new();
    for app in &apps {
        let roles = cli.roles(&app.object_id)?;
        rows.push(vec![
            app.client_id.clone(),
            app.object_id.clone(),
            app.kind.as_str().to_owned(),
            app.display_name.clone(),
            role_names(&roles).join(", "),
        ]);
        json.push(admin::app_json(app, cli.store.tenant_id(), &roles));
    }
    cli.emit(Value::Array(json), || {
        if apps.is_empty() {
            return "no apps registered (create one with `fhirside app create --name NAME`)".into();
        }
        table(&["CLIENT ID", "OBJECT ID", "KIND", "NAME", "ROLES"], &rows)
    });
    Ok(())
}

fn show(cli: &Admin, id: &str) -> Result<(), String> {
    let app = find(cli, id)?;
    let roles = cli.roles(&app.object_id)?;
    let secrets = cli.store.secrets(&app.object_id).map_err(err)?;
    let mut json = admin::app_json(&app, cli.store.tenant_id(), &roles);
    json["secrets"] = secrets.iter().map(|s| admin::secret_json(s, None)).collect();
    cli.emit(json, || {
        let mut text = fields(&[
            ("app", app.display_name.clone()),
            ("client id", app.client_id.clone()),
            ("object id", app.object_id.clone()),
            ("tenant id", cli.store.tenant_id().to_owned()),
            ("kind", app.kind.as_str().to_owned()),
            ("created", timestamp(app.created_at)),
            ("redirect URIs", list_or_none(&app.redirect_uris)),
            ("public keys", key_count(&app)),
            ("roles", list_or_none(&role_names(&roles))),
        ]);
        if app.kind == AppKind::Confidential {
            text.push('\n');
            text.push_str(&secrets_table(&secrets));
        }
        text
    });
    Ok(())
}

fn update_app(cli: &Admin, args: UpdateArgs) -> Result<(), String> {
    let mut app = find(cli, &args.id)?;
    if let Some(name) = args.name {
        app.display_name = name;
    }
    for uri in &args.remove_redirect_uris {
        let before = app.redirect_uris.len();
        app.redirect_uris.retain(|u| u != uri);
        if app.redirect_uris.len() == before {
            return Err(format!("app {} has no redirect URI '{uri}'", app.client_id));
        }
    }
    for uri in args.add_redirect_uris {
        if !app.redirect_uris.contains(&uri) {
            app.redirect_uris.push(uri);
        }
    }
    if let Some(path) = &args.jwks {
        app.jwks = Some(read_jwks(path)?);
    }
    cli.store.update_app(&app).map_err(err)?;
    let app = find(cli, &app.object_id)?;
    cli.emit(admin::stored_app_json(&cli.store, &app).map_err(err)?, || {
        fields(&[
            ("updated app", app.display_name.clone()),
            ("client id", app.client_id.clone()),
            ("redirect URIs", list_or_none(&app.redirect_uris)),
            ("public keys", key_count(&app)),
        ])
    });
    Ok(())
}

fn secret(cli: &Admin, command: SecretCommand) -> Result<(), String> {
    match command {
        SecretCommand::Add { app, name, expires_days } => {
            let found = find(cli, &app)?;
            let (info, value) =
                admin::add_secret(&cli.store, &found.object_id, &name, expires_days, time::now()).map_err(err)?;
            cli.emit(admin::added_secret_json(&found.client_id, &info, &value), || {
                let mut text = fields(&[
                    ("client id", found.client_id.clone()),
                    ("client secret", value.clone()),
                    ("secret key id", info.key_id.clone()),
                    ("expires", timestamp(info.expires_at)),
                ]);
                text.push_str("\nCopy the client secret now: it is not stored and cannot be shown again.\n");
                text
            });
        }
        SecretCommand::List { app } => {
            let found = find(cli, &app)?;
            let secrets = cli.store.secrets(&found.object_id).map_err(err)?;
            cli.emit(secrets.iter().map(|s| admin::secret_json(s, None)).collect(), || secrets_table(&secrets));
        }
        SecretCommand::Remove { app, key_id } => {
            let found = find(cli, &app)?;
            if !cli.store.remove_secret(&found.object_id, &key_id).map_err(err)? {
                return Err(format!("app {} has no client secret with key id '{key_id}'", found.client_id));
            }
            cli.emit(json!({"removed": true, "clientId": found.client_id, "keyId": key_id}), || {
                format!("removed client secret {key_id} of app {}", found.client_id)
            });
        }
    }
    Ok(())
}

fn find(cli: &Admin, id: &str) -> Result<App, String> {
    cli.store.app(id).map_err(err)?.ok_or_else(|| no_app(id))
}

fn no_app(id: &str) -> String {
    format!("no app with client id or object id '{id}' (see `fhirside app list`)")
}

fn read_jwks(path: &Path) -> Result<JwkSet, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    admin::parse_jwks(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

fn key_count(app: &App) -> String {
    app.jwks.as_ref().map_or("none".into(), |k| k.keys.len().to_string())
}

fn secrets_table(secrets: &[SecretInfo]) -> String {
    if secrets.is_empty() {
        return "no client secrets (add one with `fhirside app secret add --app ID`)\n".into();
    }
    let now = time::now();
    let rows: Vec<Vec<String>> = secrets
        .iter()
        .map(|s| {
            let expires = timestamp(s.expires_at) + if s.expires_at <= now { " (expired)" } else { "" };
            vec![s.key_id.clone(), format!("{}…", s.hint), s.display_name.clone(), expires]
        })
        .collect();
    table(&["KEY ID", "HINT", "NAME", "EXPIRES"], &rows)
}
