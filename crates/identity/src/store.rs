//! The identity store: the installation's tenant, the authority's signing keys, app registrations
//! with their secrets and public keys, users, role assignments, and the one-time authorization
//! codes and refresh tokens of the OAuth flows.
//!
//! Two backends, one set of operations written over [`fhirside_sql::Db`]:
//! - embedded ([`IdentityStore::open`]): its own SQLite file, `identity.db` in the data directory,
//!   separate from the resource store: the admin CLI (`fhirside app create`, …) opens it while
//!   `fhirside serve` runs (WAL mode lets both), whereas the resource store is locked to one
//!   process;
//! - PostgreSQL ([`IdentityStore::open_postgres`]): `identity_*` tables in the resource store's
//!   database, shared by every replica and by the admin CLI.
//!
//! Secrets and passwords are stored as slow hashes ([`crate::secret`]), codes and refresh tokens
//! as fast hashes; nothing here can be turned back into a credential.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use crate::keys::SigningKey;
use crate::roles::Role;
use crate::secret;

mod export;
mod model;
mod postgres;
mod rows;
mod rules;
mod sqlite;

pub use export::{IdentityExport, IdentityImport, ImportCounts};
pub use model::*;
pub use rules::check_redirect_uri;

use fhirside_sql::{params, Db, PgConnection};
use rows::{find_app, find_user, from_json, to_json, APP_COLUMNS, ASSIGNMENT_COLUMNS, SECRET_COLUMNS, USER_COLUMNS};
use rules::{check_keys, check_password_value, checked_display_name, dedup, duplicate_user, no_app, no_user};

/// How often, at most, [`IdentityStore::data_version`] asks the database whether another process
/// (the admin CLI, another replica) changed the store: such changes are seen within this many
/// milliseconds; this process's own changes at once.
pub const EXTERNAL_CHECK_MS: u64 = 100;

/// The identity store, on SQLite or PostgreSQL.
///
/// One connection behind a mutex: every operation is a handful of primary-key statements, and
/// the slow parts (PBKDF2 hashing, RSA key generation) run outside the lock.
pub struct IdentityStore {
    backend: Backend,
    tenant_id: String,
    /// Commits made through this store: `PRAGMA data_version` only moves for other connections'.
    own_writes: AtomicI64,
    /// The last version read from the database, and when (milliseconds since `opened`): other
    /// processes' changes are looked for at most every [`EXTERNAL_CHECK_MS`], because the question
    /// takes the connection's lock (and on SQLite file locks, on PostgreSQL a round trip), which
    /// every authenticated request would pay.
    external_version: AtomicI64,
    external_checked_ms: AtomicU64,
    opened: std::time::Instant,
    /// Successful client secret verifications (see [`IdentityStore::check_secret`]).
    secret_cache: Mutex<SecretCache>,
}

enum Backend {
    Sqlite(Mutex<rusqlite::Connection>),
    Postgres(Mutex<PgConnection>),
}

/// Verified `(client id, fast hash of the presented secret)` pairs, so that repeated token
/// requests skip the slow hash. Emptied for an app when its secrets change here, and entirely
/// when another connection (the admin CLI, another replica) commits anything.
#[derive(Default)]
struct SecretCache {
    /// The database's version when the entries were last known to be current.
    external_version: i64,
    /// Bumped on every invalidation, so that a verification that raced one is not cached.
    generation: u64,
    entries: HashMap<(String, String), SecretInfo>,
}

/// The database file's name in the data directory.
pub const FILE_NAME: &str = "identity.db";

/// How long past its expiry a code or refresh token row is kept (to answer "expired" rather than
/// "unknown") before it is deleted.
const KEEP_EXPIRED_SECONDS: i64 = 24 * 3600;

/// The two tables of one-time values.
#[derive(Clone, Copy)]
enum OneTime {
    Code,
    RefreshToken,
}

impl OneTime {
    fn table(self) -> &'static str {
        match self {
            OneTime::Code => "identity_codes",
            OneTime::RefreshToken => "identity_refresh_tokens",
        }
    }
}

impl IdentityStore {
    /// Opens (creating and migrating if needed) `identity.db` in `data_dir`. On first open it
    /// creates the tenant id (a random GUID) and the first signing key.
    pub fn open(data_dir: &Path) -> Result<IdentityStore> {
        IdentityStore::start(Backend::Sqlite(Mutex::new(sqlite::open(data_dir)?)))
    }

    /// Opens the identity tables in the PostgreSQL database at `url` (`postgres://…`, with
    /// `options=-csearch_path%3D<schema>` for a schema other than `public`), creating and
    /// migrating them if needed. The first replica to open a new database creates the tenant and
    /// the first signing key; the others use them.
    pub fn open_postgres(url: &str) -> Result<IdentityStore> {
        IdentityStore::start(Backend::Postgres(Mutex::new(postgres::open(url)?)))
    }

    fn start(backend: Backend) -> Result<IdentityStore> {
        let mut store = IdentityStore {
            backend,
            tenant_id: String::new(),
            own_writes: AtomicI64::new(0),
            external_version: AtomicI64::new(0),
            external_checked_ms: AtomicU64::new(u64::MAX),
            opened: std::time::Instant::now(),
            secret_cache: Mutex::new(SecretCache::default()),
        };
        store.tenant_id = store.ensure_tenant()?;
        store.ensure_signing_key()?;
        Ok(store)
    }

    /// The installation's tenant (directory) id, a GUID.
    pub fn tenant_id(&self) -> &str {
        &self.tenant_id
    }

    /// Where the store is, for messages: `identity.db` in a directory, or a PostgreSQL database
    /// (without its password).
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Sqlite(conn) => {
                let conn = lock(conn);
                match conn.path() {
                    Some(path) => path.to_owned(),
                    None => FILE_NAME.to_owned(),
                }
            }
            Backend::Postgres(conn) => format!("PostgreSQL {}", lock(conn).describe()),
        }
    }

    /// A counter that changes whenever any connection commits a change: callers cache derived data
    /// (role assignments) and re-read when it moves. This process's changes move it at once,
    /// another process's within [`EXTERNAL_CHECK_MS`].
    pub fn data_version(&self) -> Result<i64> {
        let external = self.external_version()?;
        Ok(external.wrapping_add(self.own_writes.load(Ordering::SeqCst)))
    }

    /// Installation-wide settings (`authority_base`, the URL the running server's authority
    /// answers at, so that the CLI issues tokens with the same issuer).
    pub fn setting(&self, key: &str) -> Result<Option<String>> {
        self.read(|db| {
            Ok(db
                .query_opt("SELECT value FROM identity_settings WHERE key = ?1", &params![key])?
                .map(|row| row.text(0))
                .transpose()?)
        })
    }

    pub fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        self.write(|db| {
            db.execute(
                "INSERT INTO identity_settings (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &params![key, value],
            )?;
            Ok(())
        })
    }

    /// The setting `key`, set to `value` first if it has none: the first process to ask decides,
    /// and every other one reads what it decided.
    pub fn setting_or_insert(&self, key: &str, value: &str) -> Result<String> {
        if let Some(existing) = self.setting(key)? {
            return Ok(existing);
        }
        self.write(|db| {
            db.execute(
                "INSERT INTO identity_settings (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
                &params![key, value],
            )?;
            Ok(db.query_one("SELECT value FROM identity_settings WHERE key = ?1", &params![key])?.text(0)?)
        })
    }

    /// The signing keys still published: the current one (`retired_at` None) first, then retired
    /// keys newest first, excluding those retired before `published_after`.
    pub fn signing_keys(&self, published_after: i64) -> Result<Vec<SigningKey>> {
        let rows = self.read(|db| {
            Ok(db.query(
                "SELECT kid, created_at, retired_at, pkcs8 FROM identity_signing_keys
                 WHERE retired_at IS NULL OR retired_at >= ?1
                 ORDER BY retired_at IS NOT NULL, retired_at DESC, created_at DESC",
                &params![published_after],
            )?)
        })?;
        rows.iter()
            .map(|row| {
                SigningKey::from_pkcs8(row.text(0)?, row.int(1)?, row.opt_int(2)?, row.blob(3)?)
                    .map_err(IdentityError::Database)
            })
            .collect()
    }

    /// Makes a new key the signing key; the previous current key is retired at `now`.
    pub fn rotate_signing_key(&self, now: i64) -> Result<SigningKey> {
        // Generation takes up to a second: not while holding the database.
        let key = SigningKey::generate(now).map_err(IdentityError::Database)?;
        self.write(|db| {
            db.execute("UPDATE identity_signing_keys SET retired_at = ?1 WHERE retired_at IS NULL", &params![now])?;
            insert_signing_key(db, &key)
        })?;
        Ok(key)
    }

    pub fn create_app(&self, app: NewApp, now: i64) -> Result<App> {
        let display_name = checked_display_name(&app.display_name)?;
        check_keys(app.kind, app.jwks.as_ref())?;
        for uri in &app.redirect_uris {
            check_redirect_uri(uri)?;
        }
        let app = App {
            object_id: uuid::Uuid::new_v4().to_string(),
            client_id: uuid::Uuid::new_v4().to_string(),
            display_name,
            kind: app.kind,
            redirect_uris: dedup(app.redirect_uris),
            jwks: app.jwks,
            created_at: now,
        };
        let redirect_uris = to_json(&app.redirect_uris)?;
        let jwks = app.jwks.as_ref().map(to_json).transpose()?;
        self.write(|db| {
            db.execute(
                &format!("INSERT INTO identity_apps ({APP_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
                &params![
                    &app.object_id,
                    &app.client_id,
                    &app.display_name,
                    app.kind.as_str(),
                    redirect_uris,
                    jwks,
                    app.created_at
                ],
            )?;
            Ok(())
        })?;
        Ok(app)
    }

    pub fn apps(&self) -> Result<Vec<App>> {
        let sql = format!("SELECT {APP_COLUMNS} FROM identity_apps ORDER BY created_at, rowid");
        self.read(|db| db.query(&sql, &[])?.iter().map(rows::app).collect())
    }

    /// An app by client id or object id.
    pub fn app(&self, id: &str) -> Result<Option<App>> {
        self.read(|db| find_app(db, id))
    }

    /// Replaces an app's display name, redirect URIs and keys (not its ids or kind).
    pub fn update_app(&self, app: &App) -> Result<()> {
        let display_name = checked_display_name(&app.display_name)?;
        check_keys(app.kind, app.jwks.as_ref())?;
        for uri in &app.redirect_uris {
            check_redirect_uri(uri)?;
        }
        let redirect_uris = to_json(&dedup(app.redirect_uris.clone()))?;
        let jwks = app.jwks.as_ref().map(to_json).transpose()?;
        let changed = self.write(|db| {
            Ok(db.execute(
                "UPDATE identity_apps SET display_name = ?2, redirect_uris = ?3, jwks = ?4 WHERE object_id = ?1",
                &params![&app.object_id, display_name, redirect_uris, jwks],
            )?)
        })?;
        if changed == 0 {
            return Err(IdentityError::NotFound(format!("no app with object id {}", app.object_id)));
        }
        Ok(())
    }

    /// Deletes an app (by client or object id) with its secrets and role assignments.
    pub fn delete_app(&self, id: &str) -> Result<bool> {
        let deleted = self.write(|db| {
            let Some(app) = find_app(db, id)? else {
                return Ok(None);
            };
            db.execute("DELETE FROM identity_role_assignments WHERE principal_id = ?1", &params![&app.object_id])?;
            // Its outstanding codes and refresh tokens die with it.
            let client = db.dialect().json_text(r#""grant""#, "clientId");
            for table in [OneTime::Code.table(), OneTime::RefreshToken.table()] {
                db.execute(&format!("DELETE FROM {table} WHERE {client} = ?1"), &params![&app.client_id])?;
            }
            db.execute("DELETE FROM identity_apps WHERE object_id = ?1", &params![&app.object_id])?;
            Ok(Some(app.client_id))
        })?;
        match deleted {
            Some(client_id) => {
                self.forget_secrets(&client_id);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Adds a client secret to an app (by client or object id); returns it with the secret's
    /// value, which is not stored and cannot be shown again.
    pub fn add_secret(&self, app: &str, display_name: &str, now: i64, expires_at: i64) -> Result<(SecretInfo, String)> {
        let found = self.app(app)?.ok_or_else(|| no_app(app))?;
        if found.kind != AppKind::Confidential {
            return Err(IdentityError::Invalid(format!(
                "app {} is a {} client: it authenticates without client secrets",
                found.client_id,
                found.kind.as_str()
            )));
        }
        if expires_at <= now {
            return Err(IdentityError::Invalid("a client secret must expire after it is created".into()));
        }
        let secret = secret::new_client_secret();
        let info = SecretInfo {
            key_id: uuid::Uuid::new_v4().to_string(),
            display_name: display_name.trim().to_owned(),
            hint: secret.chars().take(3).collect(),
            created_at: now,
            expires_at,
        };
        let hash = secret::hash(&secret);
        self.write(|db| {
            // The app may have gone while the hash was computed; the foreign key would refuse, but
            // with a less helpful message.
            if find_app(db, &found.object_id)?.is_none() {
                return Err(no_app(app));
            }
            db.execute(
                "INSERT INTO identity_secrets (key_id, app_object_id, display_name, hint, hash, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                &params![
                    &info.key_id,
                    &found.object_id,
                    &info.display_name,
                    &info.hint,
                    &hash,
                    info.created_at,
                    info.expires_at
                ],
            )?;
            Ok(())
        })?;
        self.forget_secrets(&found.client_id);
        Ok((info, secret))
    }

    pub fn secrets(&self, app: &str) -> Result<Vec<SecretInfo>> {
        self.read(|db| {
            let found = find_app(db, app)?.ok_or_else(|| no_app(app))?;
            db.query(
                &format!(
                    "SELECT {SECRET_COLUMNS} FROM identity_secrets WHERE app_object_id = ?1 ORDER BY created_at, rowid"
                ),
                &params![&found.object_id],
            )?
            .iter()
            .map(rows::secret_info)
            .collect()
        })
    }

    /// Removes a secret by key id; tokens already issued stay valid until they expire.
    pub fn remove_secret(&self, app: &str, key_id: &str) -> Result<bool> {
        let (client_id, removed) = self.write(|db| {
            let found = find_app(db, app)?.ok_or_else(|| no_app(app))?;
            let removed = db.execute(
                "DELETE FROM identity_secrets WHERE key_id = ?1 AND app_object_id = ?2",
                &params![key_id, &found.object_id],
            )?;
            Ok((found.client_id, removed > 0))
        })?;
        self.forget_secrets(&client_id);
        Ok(removed)
    }

    /// Checks a presented client secret against the app's secrets: the matching one, if any, with
    /// its expiry (the caller reports an expired secret as such).
    pub fn check_secret(&self, client_id: &str, presented: &str) -> Result<Option<SecretInfo>> {
        let key = (client_id.to_owned(), secret::fast_hash(presented));
        // Token requests are rare enough to ask the database every time: a secret removed by the
        // CLI or another replica must fail at once.
        let external = self.fresh_external_version()?;
        let generation = {
            let mut cache = self.cache();
            if cache.external_version != external {
                // Another connection committed something (perhaps removed this secret).
                cache.entries.clear();
                cache.external_version = external;
                cache.generation += 1;
            }
            if let Some(info) = cache.entries.get(&key) {
                return Ok(Some(info.clone()));
            }
            cache.generation
        };
        // Only secrets whose hint (first three characters) matches need the slow hash.
        let hint: String = presented.chars().take(3).collect();
        let candidates = self.read(|db| {
            db.query(
                "SELECT s.key_id, s.display_name, s.hint, s.created_at, s.expires_at, s.hash
                 FROM identity_secrets s JOIN identity_apps a ON a.object_id = s.app_object_id
                 WHERE a.client_id = ?1 AND s.hint = ?2 ORDER BY s.created_at DESC",
                &params![client_id, hint],
            )?
            .iter()
            .map(|row| Ok((rows::secret_info(row)?, row.text(5)?)))
            .collect::<Result<Vec<_>>>()
        })?;
        let Some(info) = candidates.into_iter().find(|(_, hash)| secret::verify(presented, hash)).map(|(i, _)| i)
        else {
            return Ok(None);
        };
        let mut cache = self.cache();
        if cache.generation == generation {
            cache.entries.insert(key, info.clone());
        }
        Ok(Some(info))
    }

    pub fn create_user(&self, user: NewUser, now: i64) -> Result<User> {
        let upn = user.user_principal_name.trim().to_owned();
        if upn.is_empty() || upn.chars().any(char::is_whitespace) {
            return Err(IdentityError::Invalid(format!("invalid user principal name '{upn}'")));
        }
        check_password_value(&user.password)?;
        let display_name = match user.display_name.trim() {
            "" => upn.clone(),
            name => name.to_owned(),
        };
        let fhir_user = user.fhir_user.map(|f| f.trim().to_owned()).filter(|f| !f.is_empty());
        let created = User {
            object_id: uuid::Uuid::new_v4().to_string(),
            user_principal_name: upn,
            display_name,
            fhir_user,
            created_at: now,
        };
        if self.user(&created.user_principal_name)?.is_some() {
            return Err(duplicate_user(&created.user_principal_name));
        }
        let hash = secret::hash(&user.password);
        self.write(|db| {
            // Asked again under the write lock: another process may have taken the name meanwhile.
            if find_user(db, &created.user_principal_name)?.is_some() {
                return Err(duplicate_user(&created.user_principal_name));
            }
            db.execute(
                "INSERT INTO identity_users (object_id, upn, display_name, password_hash, fhir_user, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                &params![
                    &created.object_id,
                    &created.user_principal_name,
                    &created.display_name,
                    &hash,
                    created.fhir_user.as_deref(),
                    created.created_at
                ],
            )?;
            Ok(())
        })?;
        Ok(created)
    }

    pub fn users(&self) -> Result<Vec<User>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM identity_users ORDER BY created_at, rowid");
        self.read(|db| db.query(&sql, &[])?.iter().map(rows::user).collect())
    }

    /// A user by object id or user principal name.
    pub fn user(&self, id: &str) -> Result<Option<User>> {
        self.read(|db| find_user(db, id))
    }

    /// The user whose name and password these are.
    pub fn check_password(&self, user_principal_name: &str, password: &str) -> Result<Option<User>> {
        let found = self.read(|db| {
            db.query_opt(
                &format!("SELECT {USER_COLUMNS}, password_hash FROM identity_users WHERE lower(upn) = lower(?1)"),
                &params![user_principal_name.trim()],
            )?
            .map(|row| Ok((rows::user(&row)?, row.text(5)?)))
            .transpose()
        })?;
        match found {
            Some((user, hash)) => Ok(secret::verify(password, &hash).then_some(user)),
            None => {
                // As slow as a wrong password, so that timing does not tell which names exist.
                static DUMMY: OnceLock<String> = OnceLock::new();
                let _ = secret::verify(password, DUMMY.get_or_init(|| secret::hash("no such user")));
                Ok(None)
            }
        }
    }

    pub fn set_password(&self, id: &str, password: &str) -> Result<()> {
        check_password_value(password)?;
        let user = self.user(id)?.ok_or_else(|| no_user(id))?;
        let hash = secret::hash(password);
        let changed = self.write(|db| {
            Ok(db.execute(
                "UPDATE identity_users SET password_hash = ?2 WHERE object_id = ?1",
                &params![&user.object_id, &hash],
            )?)
        })?;
        if changed == 0 {
            return Err(no_user(id));
        }
        Ok(())
    }

    pub fn delete_user(&self, id: &str) -> Result<bool> {
        self.write(|db| {
            let Some(user) = find_user(db, id)? else {
                return Ok(false);
            };
            db.execute("DELETE FROM identity_role_assignments WHERE principal_id = ?1", &params![&user.object_id])?;
            let owner = db.dialect().json_text(r#""grant""#, "userObjectId");
            for table in [OneTime::Code.table(), OneTime::RefreshToken.table()] {
                db.execute(&format!("DELETE FROM {table} WHERE {owner} = ?1"), &params![&user.object_id])?;
            }
            db.execute("DELETE FROM identity_users WHERE object_id = ?1", &params![&user.object_id])?;
            Ok(true)
        })
    }

    /// Grants `role` to an object id (an app's or a user's); assigning an existing pair again
    /// returns the existing assignment.
    pub fn assign_role(&self, role: &Role, principal_id: &str, now: i64) -> Result<RoleAssignment> {
        let principal_id = principal_id.trim();
        if principal_id.is_empty() {
            return Err(IdentityError::Invalid("a role assignment needs an object id".into()));
        }
        self.write(|db| {
            db.execute(
                &format!(
                    "INSERT INTO identity_role_assignments ({ASSIGNMENT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (role, principal_id) DO NOTHING"
                ),
                &params![uuid::Uuid::new_v4().to_string(), role.name, role.id, principal_id, now],
            )?;
            let row = db.query_one(
                &format!(
                    "SELECT {ASSIGNMENT_COLUMNS} FROM identity_role_assignments WHERE role = ?1 AND principal_id = ?2"
                ),
                &params![role.name, principal_id],
            )?;
            rows::assignment(&row)
        })
    }

    /// All assignments, or those of one object id.
    pub fn role_assignments(&self, principal_id: Option<&str>) -> Result<Vec<RoleAssignment>> {
        let rows = self.read(|db| match principal_id {
            None => Ok(db.query(
                &format!("SELECT {ASSIGNMENT_COLUMNS} FROM identity_role_assignments ORDER BY created_at, rowid"),
                &[],
            )?),
            Some(principal) => Ok(db.query(
                &format!(
                    "SELECT {ASSIGNMENT_COLUMNS} FROM identity_role_assignments WHERE principal_id = ?1
                     ORDER BY created_at, rowid"
                ),
                &params![principal],
            )?),
        })?;
        rows.iter().map(rows::assignment).collect()
    }

    /// Removes an assignment by its id, or every assignment of `role` to `principal_id`.
    pub fn remove_role_assignment(&self, id: &str) -> Result<bool> {
        self.write(|db| Ok(db.execute("DELETE FROM identity_role_assignments WHERE id = ?1", &params![id])? > 0))
    }

    pub fn save_code(&self, code: &str, grant: &CodeGrant, expires_at: i64) -> Result<()> {
        self.save_one_time(OneTime::Code, code, &to_json(grant)?, expires_at)
    }

    /// Redeems an authorization code: valid once.
    pub fn redeem_code(&self, code: &str, now: i64) -> Result<Redeemed<CodeGrant>> {
        self.redeem_one_time(OneTime::Code, code, now)
    }

    pub fn save_refresh_token(&self, token: &str, grant: &RefreshGrant, expires_at: i64) -> Result<()> {
        self.save_one_time(OneTime::RefreshToken, token, &to_json(grant)?, expires_at)
    }

    /// Redeems a refresh token: valid once (the caller issues a new one with the new access token).
    pub fn redeem_refresh_token(&self, token: &str, now: i64) -> Result<Redeemed<RefreshGrant>> {
        self.redeem_one_time(OneTime::RefreshToken, token, now)
    }
}

// Private helpers.
impl IdentityStore {
    fn cache(&self) -> MutexGuard<'_, SecretCache> {
        self.secret_cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` on the connection, outside a transaction.
    fn read<T>(&self, f: impl FnOnce(&mut dyn Db) -> Result<T>) -> Result<T> {
        match &self.backend {
            Backend::Sqlite(conn) => sqlite::read(&lock(conn), f),
            Backend::Postgres(conn) => lock(conn).read(f),
        }
    }

    /// Runs `f` in a write transaction, which holds the database's write lock from its start (so
    /// that a read-then-write never fails half-way, or acts on what another process changed
    /// meanwhile), and commits it.
    fn write<T>(&self, f: impl FnOnce(&mut dyn Db) -> Result<T>) -> Result<T> {
        let value = match &self.backend {
            Backend::Sqlite(conn) => sqlite::write(&mut lock(conn), f)?,
            Backend::Postgres(conn) => lock(conn).write(f)?,
        };
        self.own_writes.fetch_add(1, Ordering::SeqCst);
        Ok(value)
    }

    fn external_version(&self) -> Result<i64> {
        let now = self.opened.elapsed().as_millis() as u64;
        let checked = self.external_checked_ms.load(Ordering::Acquire);
        if checked != u64::MAX && now.saturating_sub(checked) < EXTERNAL_CHECK_MS {
            return Ok(self.external_version.load(Ordering::Acquire));
        }
        self.fresh_external_version()
    }

    /// The database's version now (`PRAGMA data_version` on SQLite, the counter every write
    /// transaction bumps on PostgreSQL), remembered for [`IdentityStore::external_version`].
    fn fresh_external_version(&self) -> Result<i64> {
        let now = self.opened.elapsed().as_millis() as u64;
        let version = match &self.backend {
            Backend::Sqlite(conn) => sqlite::data_version(&lock(conn))?,
            Backend::Postgres(conn) => postgres::data_version(&lock(conn))?,
        };
        self.external_version.store(version, Ordering::Release);
        self.external_checked_ms.store(now, Ordering::Release);
        Ok(version)
    }

    /// Drops the cached verifications of one app's secrets.
    fn forget_secrets(&self, client_id: &str) {
        let mut cache = self.cache();
        cache.entries.retain(|(client, _), _| client != client_id);
        cache.generation += 1;
    }

    /// The tenant id, created on first open (inside the write lock, asked again, so that two
    /// processes opening a new store agree on one).
    fn ensure_tenant(&self) -> Result<String> {
        if let Some(tenant) = self.read(rows::tenant)? {
            return Ok(tenant);
        }
        self.write(|db| match rows::tenant(db)? {
            Some(tenant) => Ok(tenant),
            None => {
                let tenant = uuid::Uuid::new_v4().to_string();
                db.execute("INSERT INTO identity_settings (key, value) VALUES ('tenant_id', ?1)", &params![&tenant])?;
                Ok(tenant)
            }
        })
    }

    /// Creates the first signing key if there is none. The key is generated outside the write
    /// transaction (it is slow) and inserted only if another process has not done so meanwhile.
    fn ensure_signing_key(&self) -> Result<()> {
        let has_current = |db: &mut dyn Db| -> Result<bool> {
            Ok(db.query_opt("SELECT kid FROM identity_signing_keys WHERE retired_at IS NULL", &[])?.is_some())
        };
        if self.read(has_current)? {
            return Ok(());
        }
        let key = SigningKey::generate(crate::time::now()).map_err(IdentityError::Database)?;
        self.write(|db| if has_current(db)? { Ok(()) } else { insert_signing_key(db, &key) })
    }

    fn save_one_time(&self, kind: OneTime, value: &str, grant: &str, expires_at: i64) -> Result<()> {
        let table = kind.table();
        let purge_before = crate::time::now() - KEEP_EXPIRED_SECONDS;
        self.write(|db| {
            db.execute(&format!("DELETE FROM {table} WHERE expires_at < ?1"), &params![purge_before])?;
            db.execute(
                &format!(r#"INSERT INTO {table} (hash, "grant", expires_at, used_at) VALUES (?1, ?2, ?3, NULL)"#),
                &params![secret::fast_hash(value), grant, expires_at],
            )?;
            Ok(())
        })
    }

    fn redeem_one_time<T: serde::de::DeserializeOwned>(
        &self,
        kind: OneTime,
        value: &str,
        now: i64,
    ) -> Result<Redeemed<T>> {
        let table = kind.table();
        let hash = secret::fast_hash(value);
        let outcome = self.write(|db| {
            // The conditional UPDATE is what makes redemption single-use, across processes too.
            let grant = db.query_opt(
                &format!(
                    r#"UPDATE {table} SET used_at = ?2 WHERE hash = ?1 AND used_at IS NULL AND expires_at > ?2
                       RETURNING "grant""#
                ),
                &params![&hash, now],
            )?;
            if let Some(grant) = grant {
                return Ok(Ok(grant.text(0)?));
            }
            let state =
                db.query_opt(&format!("SELECT expires_at, used_at FROM {table} WHERE hash = ?1"), &params![&hash])?;
            Ok(Err(match state {
                None => Redeemed::Unknown,
                Some(row) if row.opt_int(1)?.is_some() => Redeemed::AlreadyUsed,
                Some(_) => Redeemed::Expired,
            }))
        })?;
        match outcome {
            Ok(grant) => Ok(Redeemed::Valid(from_json(&grant)?)),
            Err(other) => Ok(other),
        }
    }
}

fn insert_signing_key(db: &mut dyn Db, key: &SigningKey) -> Result<()> {
    db.execute(
        "INSERT INTO identity_signing_keys (kid, created_at, retired_at, pkcs8) VALUES (?1, ?2, NULL, ?3)",
        &params![&key.kid, key.created_at, &key.pkcs8],
    )?;
    Ok(())
}

/// The mutex's value; a panic while it was held left no transaction open (SQLite's rolls back on
/// drop, PostgreSQL's is rolled back by its guard).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests;
