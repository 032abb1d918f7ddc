//! The relay's state, written once over a small [`Db`](sql::Db) interface: environments, auth
//! credentials, destinations, sources, messages, and the delivery queue ([`queue`]).
//!
//! Two backends: `relay.db` in the data directory ([`sqlite`]), or `relay_*` tables beside the
//! resource store's in PostgreSQL (`postgres.rs`), shared by replicas. A message and its
//! deliveries are inserted in one transaction that is committed (on SQLite: WAL,
//! `synchronous=FULL`) before the caller is answered.

mod export;
mod postgres;
pub mod queue;
pub mod sql;
pub mod sqlite;

use std::path::Path;
use std::sync::Mutex;

use rusqlite::Connection;
use serde_json::{Map, Value};

use crate::model::{self, Credential, Destination, Environment, Kind, Source, FLAGS};
use crate::{new_id, RelayError, Result};
pub use export::MoveCounts;
use fhirside_sql::{params, PgConnection, Row, SqliteDb};
use sql::{opened, sealed, Db, Keyed};

/// The relay's database.
pub struct RelayStore {
    backend: Backend,
    /// Encryption at rest: message bodies, credential secrets, verification tokens and the
    /// targets' answers are sealed with this keyring when there is one.
    keys: Option<fhirside_keys::KeyringCell>,
}

enum Backend {
    Sqlite(Mutex<Connection>),
    Postgres(Mutex<PgConnection>),
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl std::fmt::Debug for RelayStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayStore").finish_non_exhaustive()
    }
}

pub(crate) fn not_found(what: &str, id: &str) -> RelayError {
    RelayError::NotFound(format!("No {what} has the id '{id}'."))
}

fn parse_json(text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| RelayError::Database(format!("stored JSON: {e}")))
}

fn parse_map(text: &str) -> Result<Map<String, Value>> {
    match parse_json(text)? {
        Value::Object(map) => Ok(map),
        _ => Err(RelayError::Database("stored JSON is not an object".into())),
    }
}

const ENVIRONMENT_COLUMNS: &str = "id, organization, name, flag";
const CREDENTIAL_COLUMNS: &str = "id, environment_id, fields, secrets, created_at, updated_at";
const DESTINATION_COLUMNS: &str = "id, environment_id, name, kind, endpoint, verification_token, auth_credential, \
     cloud, setup_state, verified, verification_error, verified_at, created_at, updated_at";

fn environment_row(row: &Row) -> Result<Environment> {
    Ok(Environment { id: row.text(0)?, organization: row.int(1)?, name: row.text(2)?, flag: row.text(3)? })
}

fn credential_row(db: &dyn Db, row: &Row) -> Result<Credential> {
    let id = row.text(0)?;
    let secrets = opened(db, &format!("relay_credentials/{id}/secrets"), row.text(3)?)?;
    Ok(Credential {
        id,
        environment_id: row.text(1)?,
        fields: parse_map(&row.text(2)?)?,
        secrets: parse_map(&secrets)?,
        created_at: row.int(4)?,
        updated_at: row.int(5)?,
    })
}

fn destination_row(db: &dyn Db, row: &Row) -> Result<Destination> {
    let id = row.text(0)?;
    let verification_token = row
        .opt_text(5)?
        .map(|token| opened(db, &format!("relay_destinations/{id}/verification_token"), token))
        .transpose()?;
    Ok(Destination {
        id,
        environment_id: row.text(1)?,
        name: row.text(2)?,
        kind: Kind::parse(&row.text(3)?),
        endpoint: row.opt_text(4)?,
        verification_token,
        auth_credential: row.opt_text(6)?,
        cloud: row.opt_text(7)?.as_deref().map(parse_json).transpose()?,
        setup_state: row.opt_text(8)?.as_deref().map(parse_json).transpose()?,
        verified: row.int(9)? != 0,
        verification_error: row.opt_text(10)?,
        verified_at: row.opt_int(11)?,
        created_at: row.int(12)?,
        updated_at: row.int(13)?,
    })
}

pub(crate) fn environment_in(db: &mut dyn Db, id: &str) -> Result<Environment> {
    let sql = format!("SELECT {ENVIRONMENT_COLUMNS} FROM relay_environments WHERE id = ?1");
    db.query_opt(&sql, &params![id])?
        .as_ref()
        .map(environment_row)
        .transpose()?
        .ok_or_else(|| not_found("environment", id))
}

pub(crate) fn credential_in(db: &mut dyn Db, id: &str) -> Result<Credential> {
    let sql = format!("SELECT {CREDENTIAL_COLUMNS} FROM relay_credentials WHERE id = ?1");
    let row = db.query_opt(&sql, &params![id])?;
    row.as_ref().map(|row| credential_row(db, row)).transpose()?.ok_or_else(|| not_found("auth credential", id))
}

pub(crate) fn destination_in(db: &mut dyn Db, id: &str) -> Result<Destination> {
    let sql = format!("SELECT {DESTINATION_COLUMNS} FROM relay_destinations WHERE id = ?1");
    let row = db.query_opt(&sql, &params![id])?;
    row.as_ref().map(|row| destination_row(db, row)).transpose()?.ok_or_else(|| not_found("destination", id))
}

fn organization_of(fields: &Map<String, Value>) -> i64 {
    match fields.get("organization") {
        Some(Value::Number(n)) => n.as_i64().unwrap_or_default(),
        Some(Value::String(s)) => s.parse().unwrap_or_default(),
        _ => 0,
    }
}

/// The key a source posts with, and what is stored of it.
fn hash_key(key: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn new_key() -> Result<String> {
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| RelayError::Database("no randomness for a source key".into()))?;
    Ok(format!("rsk_{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()))
}

impl RelayStore {
    /// Opens `relay.db` in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<RelayStore> {
        Ok(RelayStore { backend: Backend::Sqlite(Mutex::new(sqlite::open(data_dir)?)), keys: None })
    }

    /// Opens (migrating if needed) the `relay_*` tables in the PostgreSQL database at `url`,
    /// beside the resource store's, shared by replicas.
    pub fn open_postgres(url: &str) -> Result<RelayStore> {
        Ok(RelayStore { backend: Backend::Postgres(Mutex::new(postgres::open(url)?)), keys: None })
    }

    /// Where the state lives, for the start-up banner (no password).
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Sqlite(_) => format!("{} in the data directory", sqlite::FILE_NAME),
            Backend::Postgres(conn) => format!("PostgreSQL {} (relay_* tables)", lock(conn).describe()),
        }
    }

    /// Seals what the relay stores that can carry PHI or a secret with the installation's keyring
    /// (encryption at rest).
    pub fn sealed_with(mut self, keys: fhirside_keys::KeyringCell) -> RelayStore {
        self.keys = Some(keys);
        self
    }

    /// Runs `f` in a write transaction.
    pub(crate) fn write<T>(&self, f: impl FnOnce(&mut dyn Db) -> Result<T>) -> Result<T> {
        let keyring = self.keys.as_ref().and_then(fhirside_keys::KeyringCell::get);
        let f = move |db: &mut dyn fhirside_sql::Db| f(&mut Keyed { db, keyring });
        match &self.backend {
            Backend::Sqlite(conn) => fhirside_sql::sqlite::write(&mut lock(conn), f),
            Backend::Postgres(conn) => lock(conn).write(f),
        }
    }

    /// Runs `f` on the connection, outside a transaction (each statement is its own).
    pub(crate) fn read<T>(&self, f: impl FnOnce(&mut dyn Db) -> Result<T>) -> Result<T> {
        let keyring = self.keys.as_ref().and_then(fhirside_keys::KeyringCell::get);
        let f = move |db: &mut dyn fhirside_sql::Db| f(&mut Keyed { db, keyring });
        match &self.backend {
            Backend::Sqlite(conn) => f(&mut SqliteDb(&lock(conn))),
            Backend::Postgres(conn) => lock(conn).read(f),
        }
    }

    // --- environments ---

    /// An organization's environments; the three of Redox (development, staging, production) are
    /// created the first time it is asked for.
    pub fn environments(&self, organization: i64) -> Result<Vec<Environment>> {
        self.write(|db| {
            let sql = format!("SELECT {ENVIRONMENT_COLUMNS} FROM relay_environments WHERE organization = ?1");
            let mut found: Vec<Environment> =
                db.query(&sql, &params![organization])?.iter().map(environment_row).collect::<Result<_>>()?;
            for flag in FLAGS {
                if !found.iter().any(|e| e.flag == flag) {
                    let environment =
                        Environment { id: new_id(), organization, name: flag.to_owned(), flag: flag.to_owned() };
                    db.execute(
                        "INSERT INTO relay_environments (id, organization, name, flag) VALUES (?1, ?2, ?3, ?4)",
                        &params![&environment.id, organization, &environment.name, &environment.flag],
                    )?;
                    found.push(environment);
                }
            }
            found.sort_by_key(|e| FLAGS.iter().position(|f| *f == e.flag));
            Ok(found)
        })
    }

    pub fn environment(&self, id: &str) -> Result<Environment> {
        self.read(|db| environment_in(db, id))
    }

    // --- auth credentials ---

    pub fn create_credential(&self, body: &Value, now: i64) -> Result<Credential> {
        let (fields, secrets) = model::credential_fields(body, None)?;
        self.write(|db| {
            let environment_id = fields["environmentId"].as_str().unwrap_or_default().to_owned();
            let environment = environment_in(db, &environment_id)?;
            if organization_of(&fields) != environment.organization {
                return Err(RelayError::Invalid(format!(
                    "The environment '{environment_id}' belongs to organization {}, not {}.",
                    environment.organization,
                    organization_of(&fields)
                )));
            }
            let credential =
                Credential { id: new_id(), environment_id, fields, secrets, created_at: now, updated_at: now };
            db.execute(
                "INSERT INTO relay_credentials (id, environment_id, fields, secrets, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                &params![
                    &credential.id,
                    &credential.environment_id,
                    Value::Object(credential.fields.clone()).to_string(),
                    sealed(
                        db,
                        &format!("relay_credentials/{}/secrets", credential.id),
                        Value::Object(credential.secrets.clone()).to_string()
                    ),
                    now,
                    now
                ],
            )?;
            Ok(credential)
        })
    }

    pub fn credentials(&self, environment_id: &str) -> Result<Vec<Credential>> {
        self.read(|db| {
            environment_in(db, environment_id)?;
            let sql = format!(
                "SELECT {CREDENTIAL_COLUMNS} FROM relay_credentials WHERE environment_id = ?1 ORDER BY created_at"
            );
            let rows = db.query(&sql, &params![environment_id])?;
            rows.iter().map(|row| credential_row(db, row)).collect()
        })
    }

    pub fn credential(&self, id: &str) -> Result<Credential> {
        self.read(|db| credential_in(db, id))
    }

    pub fn update_credential(&self, id: &str, body: &Value, now: i64) -> Result<Credential> {
        self.write(|db| {
            let current = credential_in(db, id)?;
            let (fields, secrets) = model::credential_fields(body, Some(&current))?;
            db.execute(
                "UPDATE relay_credentials SET fields = ?2, secrets = ?3, updated_at = ?4 WHERE id = ?1",
                &params![
                    id,
                    Value::Object(fields.clone()).to_string(),
                    sealed(db, &format!("relay_credentials/{id}/secrets"), Value::Object(secrets.clone()).to_string()),
                    now
                ],
            )?;
            Ok(Credential { fields, secrets, updated_at: now, ..current })
        })
    }

    /// Deletes a credential no destination uses.
    pub fn delete_credential(&self, id: &str) -> Result<()> {
        self.write(|db| {
            credential_in(db, id)?;
            let users = db.query("SELECT name FROM relay_destinations WHERE auth_credential = ?1", &params![id])?;
            if !users.is_empty() {
                let names: Vec<String> = users.iter().map(|r| r.text(0)).collect::<fhirside_sql::Result<_>>()?;
                return Err(RelayError::Conflict(format!(
                    "The auth credential is in use by the destination(s) {}; detach it from them first.",
                    names.iter().map(|n| format!("'{n}'")).collect::<Vec<_>>().join(", ")
                )));
            }
            db.execute("DELETE FROM relay_credentials WHERE id = ?1", &params![id])?;
            Ok(())
        })
    }

    // --- destinations ---

    /// Checks that the destination's credential exists in its environment.
    fn check_credential_of(db: &mut dyn Db, destination: &Destination) -> Result<()> {
        if let Some(id) = &destination.auth_credential {
            let credential = credential_in(db, id)
                .map_err(|_| RelayError::Invalid(format!("The authCredential '{id}' does not exist.")))?;
            if credential.environment_id != destination.environment_id {
                return Err(RelayError::Invalid(format!(
                    "The authCredential '{id}' belongs to another environment than the destination."
                )));
            }
        }
        Ok(())
    }

    pub fn create_destination(
        &self,
        environment_id: &str,
        body: &Value,
        now: i64,
    ) -> Result<(Destination, Environment)> {
        self.write(|db| {
            let environment = environment_in(db, environment_id)?;
            let destination = model::new_destination(body, new_id(), &environment, now)?;
            Self::check_credential_of(db, &destination)?;
            save_destination(db, &destination, true)?;
            Ok((destination, environment))
        })
    }

    pub fn destinations(&self, environment_id: &str) -> Result<(Vec<Destination>, Environment)> {
        self.read(|db| {
            let environment = environment_in(db, environment_id)?;
            let sql = format!(
                "SELECT {DESTINATION_COLUMNS} FROM relay_destinations WHERE environment_id = ?1 ORDER BY created_at"
            );
            let rows = db.query(&sql, &params![environment_id])?;
            let list = rows.iter().map(|row| destination_row(db, row)).collect::<Result<_>>()?;
            Ok((list, environment))
        })
    }

    pub fn destination(&self, id: &str) -> Result<(Destination, Environment)> {
        self.read(|db| {
            let destination = destination_in(db, id)?;
            let environment = environment_in(db, &destination.environment_id)?;
            Ok((destination, environment))
        })
    }

    pub fn update_destination(&self, id: &str, body: &Value, now: i64) -> Result<(Destination, Environment)> {
        self.write(|db| {
            let current = destination_in(db, id)?;
            let environment = environment_in(db, &current.environment_id)?;
            let next = model::patch_destination(&current, body, &environment, now)?;
            Self::check_credential_of(db, &next)?;
            save_destination(db, &next, false)?;
            Ok((next, environment))
        })
    }

    /// Records the outcome of a verification, unless the destination changed meanwhile.
    pub fn record_verification(
        &self,
        before: &Destination,
        result: std::result::Result<(), String>,
        now: i64,
    ) -> Result<(Destination, Environment)> {
        self.write(|db| {
            let mut current = destination_in(db, &before.id)?;
            let environment = environment_in(db, &current.environment_id)?;
            if current.updated_at == before.updated_at {
                current.verified = result.is_ok();
                current.verification_error = result.err();
                current.verified_at = Some(now);
                save_destination(db, &current, false)?;
            }
            Ok((current, environment))
        })
    }

    /// Deletes a destination, unless it is in production (Redox's rule: production needs a
    /// person at the vendor) or still has messages to deliver.
    pub fn delete_destination(&self, id: &str) -> Result<()> {
        self.write(|db| {
            let destination = destination_in(db, id)?;
            let environment = environment_in(db, &destination.environment_id)?;
            if environment.is_production() {
                return Err(RelayError::Conflict(
                    "Destinations in production cannot be deleted; only development and staging destinations can."
                        .into(),
                ));
            }
            let pending = db.query(
                "SELECT count(*) FROM relay_deliveries WHERE destination_id = ?1 AND state = 'pending'",
                &params![id],
            )?;
            let pending = pending.first().map(|r| r.int(0)).transpose()?.unwrap_or(0);
            if pending > 0 {
                return Err(RelayError::Conflict(format!(
                    "The destination still has {pending} message(s) to deliver; delete it once they are delivered or failed."
                )));
            }
            db.execute("DELETE FROM relay_destinations WHERE id = ?1", &params![id])?;
            Ok(())
        })
    }

    // --- sources ---

    /// A new source and its key, which is shown once.
    pub fn create_source(&self, environment_id: &str, body: &Value, now: i64) -> Result<(Source, String)> {
        let name = body
            .get("name")
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| RelayError::Invalid("The source needs a 'name'.".into()))?
            .to_owned();
        if let Some(key) =
            body.as_object().and_then(|m| m.keys().find(|k| !["name", "serviceRegion"].contains(&k.as_str())))
        {
            return Err(RelayError::Invalid(format!(
                "Unknown source field '{key}'. Known fields: name, serviceRegion."
            )));
        }
        let key = new_key()?;
        self.write(|db| {
            environment_in(db, environment_id)?;
            let source = Source { id: new_id(), environment_id: environment_id.to_owned(), name, created_at: now };
            db.execute(
                "INSERT INTO relay_sources (id, environment_id, name, key_hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                &params![&source.id, environment_id, &source.name, hash_key(&key), now],
            )?;
            Ok((source, key))
        })
    }

    pub fn sources(&self, environment_id: &str) -> Result<Vec<Source>> {
        self.read(|db| {
            environment_in(db, environment_id)?;
            db.query(
                "SELECT id, environment_id, name, created_at FROM relay_sources WHERE environment_id = ?1 ORDER BY created_at",
                &params![environment_id],
            )?
            .iter()
            .map(|r| Ok(Source { id: r.text(0)?, environment_id: r.text(1)?, name: r.text(2)?, created_at: r.int(3)? }))
            .collect()
        })
    }

    pub fn source(&self, id: &str) -> Result<Source> {
        self.read(|db| source_in(db, id))
    }

    /// Redox's PATCH of a source: its name; omitted fields are kept, `serviceRegion` cannot change.
    pub fn update_source(&self, id: &str, body: &Value) -> Result<Source> {
        let map = body.as_object().ok_or_else(|| RelayError::Invalid("The body must be a JSON object.".into()))?;
        if let Some(key) =
            map.keys().find(|k| !["name", "id", "environment", "hasSecret", "createdAt"].contains(&k.as_str()))
        {
            return Err(RelayError::Invalid(format!("A source's '{key}' cannot be changed; only its name.")));
        }
        self.write(|db| {
            let mut source = source_in(db, id)?;
            if let Some(name) = map.get("name") {
                source.name = name
                    .as_str()
                    .filter(|n| !n.trim().is_empty())
                    .ok_or_else(|| RelayError::Invalid("A source's 'name' must be a non-empty string.".into()))?
                    .to_owned();
                db.execute("UPDATE relay_sources SET name = ?2 WHERE id = ?1", &params![id, &source.name])?;
            }
            Ok(source)
        })
    }

    pub fn delete_source(&self, id: &str) -> Result<()> {
        self.write(|db| match db.execute("DELETE FROM relay_sources WHERE id = ?1", &params![id])? {
            0 => Err(not_found("source", id)),
            _ => Ok(()),
        })
    }

    /// The source holding `key`, which must post to `environment_id`.
    pub fn source_by_key(&self, environment_id: &str, key: &str) -> Result<Source> {
        self.read(|db| {
            let row = db.query_opt(
                "SELECT id, environment_id, name, created_at FROM relay_sources WHERE key_hash = ?1",
                &params![hash_key(key)],
            )?;
            let row = row.ok_or_else(|| RelayError::Unauthenticated("The source key is not valid.".into()))?;
            let source =
                Source { id: row.text(0)?, environment_id: row.text(1)?, name: row.text(2)?, created_at: row.int(3)? };
            if source.environment_id != environment_id {
                return Err(RelayError::Unauthenticated(format!(
                    "The source key belongs to another environment than '{environment_id}'."
                )));
            }
            Ok(source)
        })
    }
}

fn source_in(db: &mut dyn Db, id: &str) -> Result<Source> {
    let row = db
        .query_opt("SELECT id, environment_id, name, created_at FROM relay_sources WHERE id = ?1", &params![id])?
        .ok_or_else(|| not_found("source", id))?;
    Ok(Source { id: row.text(0)?, environment_id: row.text(1)?, name: row.text(2)?, created_at: row.int(3)? })
}

/// Inserts or updates every column of a destination.
fn save_destination(db: &mut dyn Db, d: &Destination, insert: bool) -> Result<()> {
    let sql = if insert {
        "INSERT INTO relay_destinations (id, environment_id, name, kind, endpoint, verification_token, auth_credential, \
         cloud, setup_state, verified, verification_error, verified_at, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
    } else {
        "UPDATE relay_destinations SET environment_id = ?2, name = ?3, kind = ?4, endpoint = ?5, \
         verification_token = ?6, auth_credential = ?7, cloud = ?8, setup_state = ?9, verified = ?10, \
         verification_error = ?11, verified_at = ?12, created_at = ?13, updated_at = ?14 WHERE id = ?1"
    };
    db.execute(
        sql,
        &params![
            &d.id,
            &d.environment_id,
            &d.name,
            d.kind.as_str(),
            d.endpoint.as_deref(),
            d.verification_token.clone().map(|token| sealed(
                db,
                &format!("relay_destinations/{}/verification_token", d.id),
                token
            )),
            d.auth_credential.as_deref(),
            d.cloud.as_ref().map(Value::to_string),
            d.setup_state.as_ref().map(Value::to_string),
            i64::from(d.verified),
            d.verification_error.as_deref(),
            d.verified_at,
            d.created_at,
            d.updated_at
        ],
    )?;
    Ok(())
}

/// An API status for a delivery state.
pub(crate) fn shown_status(state: &str) -> &'static str {
    match state {
        "succeeded" => "succeeded",
        "pending" => "pending",
        _ => "failed",
    }
}

#[cfg(test)]
mod tests;
