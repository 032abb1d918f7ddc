//! `fhirside keys …`: the keys of encryption at rest, for operators.
//!
//! - `keys status` shows the store's data keys (ids, which is active, when each was made, the KEK
//!   and KEK version that wraps it) and whether the configured key opens them. No key material is
//!   ever printed.
//! - `keys rotate` re-wraps every data key under the KEK's current version (after rotating the key
//!   in Vault or Key Vault), or under another KEK with `--to`; with `--data-key` it also starts a
//!   new active data key. Nothing is re-encrypted and nothing stops: the keyring is one setting,
//!   written in one statement, and running servers pick up a new data key within seconds.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use fhirside_keys::{KeyProvider, Keyring};
use fhirside_store::{PostgresConfig, SettingsOf};

use crate::encryption::{open_keyring, provider, state_json, KEYRING_SETTING};

#[derive(Args, Debug)]
pub struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// Show the store's data keys and whether the configured key opens them.
    Status(Target),
    /// Re-wrap the data keys under the key-encryption key's current version (or `--to` another);
    /// `--data-key` also starts a new data key for new writes.
    Rotate(RotateArgs),
}

#[derive(Args, Debug)]
struct Target {
    /// TOML configuration file (its `data_dir`, `database` and `encryption_key` are used here).
    #[arg(long, env = "FHIRSIDE_CONFIG")]
    config: Option<PathBuf>,
    /// The data directory of the server [default: ./fhirside-data].
    #[arg(long, env = "FHIRSIDE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The servers' PostgreSQL (`postgres://…`), when they run on `--database`.
    #[arg(long, env = "FHIRSIDE_DATABASE_URL")]
    database: Option<String>,
    /// The key-encryption key the store is encrypted with (as `fhirside serve --encryption-key`).
    #[arg(long, env = "FHIRSIDE_ENCRYPTION_KEY")]
    encryption_key: Option<String>,
}

#[derive(Args, Debug)]
struct RotateArgs {
    #[command(flatten)]
    target: Target,
    /// Wrap the data keys under this key-encryption key instead (same forms as --encryption-key);
    /// the servers must then be started with it.
    #[arg(long)]
    to: Option<String>,
    /// Also start a new data key: new writes are sealed with it, older data stays readable with
    /// the older keys.
    #[arg(long)]
    data_key: bool,
}

pub fn run(args: KeysArgs) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async {
        match args.command {
            KeysCommand::Status(target) => status(target).await,
            KeysCommand::Rotate(rotate) => self::rotate(rotate).await,
        }
    })
}

/// Where the store is, and the KEK setting.
struct Located {
    data_dir: PathBuf,
    postgres: Option<PostgresConfig>,
    encryption_key: Option<String>,
}

impl Located {
    fn of(target: Target) -> Result<Located, String> {
        let admin = crate::config::admin_target(target.data_dir, target.database, target.config.as_deref())?;
        let postgres =
            admin.database.as_deref().map(PostgresConfig::from_url).transpose().map_err(|e| e.to_string())?;
        let encryption_key = crate::config::encryption_key(target.encryption_key, target.config.as_deref())?;
        Ok(Located { data_dir: admin.data_dir, postgres, encryption_key })
    }

    fn settings(&self) -> SettingsOf<'_> {
        match &self.postgres {
            Some(config) => SettingsOf::Postgres(config),
            None => SettingsOf::Embedded(&self.data_dir),
        }
    }

    fn describe(&self) -> String {
        match &self.postgres {
            Some(config) => format!("PostgreSQL {}", config.describe()),
            None => format!("the embedded store in {}", self.data_dir.display()),
        }
    }

    async fn stored(&self) -> Result<String, String> {
        fhirside_store::read_setting(self.settings(), KEYRING_SETTING)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{} is not encrypted at rest (it has no keyring)", self.describe()))
    }

    fn provider(&self) -> Result<std::sync::Arc<dyn KeyProvider>, String> {
        let setting = self.encryption_key.as_deref().ok_or("give --encryption-key (or FHIRSIDE_ENCRYPTION_KEY)")?;
        provider(setting)
    }
}

async fn status(target: Target) -> Result<(), String> {
    let located = Located::of(target)?;
    let stored = located.stored().await?;
    let state: fhirside_keys::KeyringState =
        serde_json::from_str(&stored).map_err(|e| format!("the keyring setting is not readable: {e}"))?;
    println!("{}: encrypted at rest", located.describe());
    for key in &state.keys {
        println!(
            "data key {}{}: created {} (Unix time), wrapped by {} version {}",
            key.id,
            if key.id == state.active { " (active)" } else { "" },
            key.created_at,
            key.wrapped.kek_id,
            key.wrapped.kek_version
        );
    }
    match &located.encryption_key {
        None => println!("the configured key: none given (--encryption-key), not checked"),
        Some(_) => {
            let provider = located.provider()?;
            open_keyring(provider.as_ref(), &stored).await?;
            println!("the configured key {} opens every data key", provider.id());
        }
    }
    Ok(())
}

async fn rotate(args: RotateArgs) -> Result<(), String> {
    let located = Located::of(args.target)?;
    let stored = located.stored().await?;
    let current = located.provider()?;
    let keyring = open_keyring(current.as_ref(), &stored).await?;
    let target = match &args.to {
        Some(setting) => provider(setting)?,
        None => current.clone(),
    };
    let (mut next, rewrapped): (Keyring, usize) =
        keyring.rotate_kek(target.as_ref()).await.map_err(|e| format!("cannot re-wrap the data keys: {e}"))?;
    if args.data_key {
        next = next.rotate_dek(target.as_ref()).await.map_err(|e| format!("cannot make a new data key: {e}"))?;
    }
    fhirside_store::write_setting(located.settings(), KEYRING_SETTING, &state_json(&next))
        .await
        .map_err(|e| format!("cannot store the rotated keyring: {e}"))?;
    println!("re-wrapped {rewrapped} data key(s) under {}", target.id());
    if args.data_key {
        println!("new active data key {} (servers use it within seconds)", next.active_id());
    }
    if args.to.is_some() {
        println!("start the servers with --encryption-key {}", args.to.as_deref().unwrap_or_default());
    }
    Ok(())
}
