//! `fhirside tenant show` and `fhirside authority rotate-key`.

use clap::{Args, Subcommand};
use fhirside_identity::time;
use serde_json::json;

use super::{err, fields, timestamp, Admin, Common};

#[derive(Args)]
pub struct TenantArgs {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: TenantCommand,
}

#[derive(Subcommand)]
enum TenantCommand {
    /// The tenant id, and the authority URL the server recorded (if it has run).
    Show,
}

#[derive(Args)]
pub struct AuthorityArgs {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: AuthorityCommand,
}

#[derive(Subcommand)]
enum AuthorityCommand {
    /// Sign new tokens with a new key; the previous key stays published until its tokens expire.
    RotateKey,
}

pub fn run_tenant(args: TenantArgs) -> Result<(), String> {
    let admin = Admin::open(&args.common)?;
    match args.command {
        TenantCommand::Show => {
            let authority = admin.store.setting("authority_base").map_err(err)?;
            let keys = admin.store.signing_keys(time::now()).map_err(err)?;
            let current = keys.iter().find(|k| k.retired_at.is_none()).map(|k| k.kid.clone());
            let json = json!({
                "tenantId": admin.store.tenant_id(),
                "authorityBase": authority,
                "signingKeyId": current,
                "dataDir": admin.data_dir.display().to_string(),
                "identityStore": admin.store.describe(),
            });
            admin.emit(json, || {
                fields(&[
                    ("tenant id", admin.store.tenant_id().to_owned()),
                    (
                        "authority",
                        authority
                            .clone()
                            .unwrap_or_else(|| "not recorded yet (the server records it when it runs)".into()),
                    ),
                    ("signing key id", current.clone().unwrap_or_else(|| "none".into())),
                    ("identity store", admin.store.describe()),
                ])
            });
        }
    }
    Ok(())
}

pub fn run_authority(args: AuthorityArgs) -> Result<(), String> {
    let admin = Admin::open(&args.common)?;
    match args.command {
        AuthorityCommand::RotateKey => {
            let now = time::now();
            let previous: Vec<String> = admin
                .store
                .signing_keys(now)
                .map_err(err)?
                .into_iter()
                .filter(|k| k.retired_at.is_none())
                .map(|k| k.kid)
                .collect();
            let key = admin.store.rotate_signing_key(now).map_err(err)?;
            let json = json!({"kid": key.kid, "createdAt": timestamp(key.created_at), "retiredKids": previous});
            admin.emit(json, || {
                fields(&[
                    ("new signing key", key.kid.clone()),
                    ("retired", if previous.is_empty() { "none".into() } else { previous.join(", ") }),
                ]) + "\nThe retired key stays published until the tokens it signed have expired.\n"
            });
        }
    }
    Ok(())
}
