//! The identity store: the installation's tenant, the authority's signing keys, app registrations
//! with their secrets and public keys, users, role assignments, and the one-time authorization
//! codes and refresh tokens of the OAuth flows.
//!
//! On the embedded default it is its own SQLite file, `identity.db` in the data directory, separate
//! from the resource store: the admin CLI (`fhirside app create`, …) opens it while `fhirside serve`
//! runs (WAL mode lets both), whereas the resource store is locked to one process.
//! Secrets and passwords are stored as slow hashes ([`crate::secret`]), codes and refresh tokens
//! as fast hashes; nothing here can be turned back into a credential.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use serde::Serialize;

use crate::jwt::JwkSet;
use crate::keys::SigningKey;
use crate::roles::Role;
use crate::secret;

mod model;

pub use model::*;

/// How often, at most, [`IdentityStore::data_version`] asks SQLite whether another process (the
/// admin CLI) changed the store: such changes are seen within this many milliseconds; this
/// process's own changes at once.
pub const EXTERNAL_CHECK_MS: u64 = 100;

/// The identity store on SQLite.
///
/// One connection behind a mutex: every operation is a handful of primary-key statements, and
/// the slow parts (PBKDF2 hashing, RSA key generation) run outside the lock.
pub struct IdentityStore {
    conn: Mutex<Connection>,
    tenant_id: String,
    /// Commits made through this store: `PRAGMA data_version` only moves for other connections'.
    own_writes: AtomicI64,
    /// The last `PRAGMA data_version` read, and when (milliseconds since `opened`): other
    /// processes' changes are looked for at most every [`EXTERNAL_CHECK_MS`], because the pragma
    /// takes the connection's lock and file locks, which every authenticated request would pay.
    external_version: AtomicI64,
    external_checked_ms: AtomicU64,
    opened: std::time::Instant,
    /// Successful client secret verifications (see [`IdentityStore::check_secret`]).
    secret_cache: Mutex<SecretCache>,
}

/// Verified `(client id, fast hash of the presented secret)` pairs, so that repeated token
/// requests skip the slow hash. Emptied for an app when its secrets change here, and entirely
/// when another connection (the admin CLI) commits anything.
#[derive(Default)]
struct SecretCache {
    /// `PRAGMA data_version` when the entries were last known to be current.
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

/// Each entry migrates from version `i` to `i + 1`. Forward-only.
const MIGRATIONS: &[&str] = &[
    // 1: the whole identity model.
    r#"CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
    CREATE TABLE signing_keys (
        kid TEXT PRIMARY KEY,
        created_at INTEGER NOT NULL,
        retired_at INTEGER,
        pkcs8 BLOB NOT NULL
    );
    -- At most one current (unretired) key.
    CREATE UNIQUE INDEX signing_keys_current ON signing_keys ((retired_at IS NULL)) WHERE retired_at IS NULL;
    CREATE TABLE apps (
        object_id TEXT PRIMARY KEY,
        client_id TEXT NOT NULL UNIQUE,
        display_name TEXT NOT NULL,
        kind TEXT NOT NULL,
        redirect_uris TEXT NOT NULL,
        jwks TEXT,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE secrets (
        key_id TEXT PRIMARY KEY,
        app_object_id TEXT NOT NULL REFERENCES apps (object_id) ON DELETE CASCADE,
        display_name TEXT NOT NULL,
        hint TEXT NOT NULL,
        hash TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
    );
    CREATE INDEX secrets_app ON secrets (app_object_id);
    CREATE TABLE users (
        object_id TEXT PRIMARY KEY,
        upn TEXT NOT NULL UNIQUE COLLATE NOCASE,
        display_name TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        fhir_user TEXT,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE role_assignments (
        id TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        role_definition_id TEXT NOT NULL,
        principal_id TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        UNIQUE (role, principal_id)
    );
    CREATE INDEX role_assignments_principal ON role_assignments (principal_id);
    CREATE TABLE codes (
        hash TEXT PRIMARY KEY,
        "grant" TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        used_at INTEGER
    ) WITHOUT ROWID;
    CREATE INDEX codes_expiry ON codes (expires_at);
    CREATE TABLE refresh_tokens (
        hash TEXT PRIMARY KEY,
        "grant" TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        used_at INTEGER
    ) WITHOUT ROWID;
    CREATE INDEX refresh_tokens_expiry ON refresh_tokens (expires_at);"#,
];

/// The two tables of one-time values.
#[derive(Clone, Copy)]
enum OneTime {
    Code,
    RefreshToken,
}

impl OneTime {
    fn table(self) -> &'static str {
        match self {
            OneTime::Code => "codes",
            OneTime::RefreshToken => "refresh_tokens",
        }
    }
}

impl IdentityStore {
    /// Opens (creating and migrating if needed) `identity.db` in `data_dir`. On first open it
    /// creates the tenant id (a random GUID) and the first signing key.
    pub fn open(data_dir: &Path) -> Result<IdentityStore> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| IdentityError::Database(format!("cannot create {}: {e}", data_dir.display())))?;
        let path = data_dir.join(FILE_NAME);
        // The file holds the authority's private keys: readable by its owner only. SQLite gives the
        // WAL and shared-memory files the database file's permissions.
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| IdentityError::Database(format!("cannot open {}: {e}", path.display())))?;
        }
        let mut conn = Connection::open(&path)?;
        conn.busy_timeout(Duration::from_millis(5000))?;
        // Switching a new file to WAL needs an exclusive lock for a moment; another process opening
        // the same new file can make it fail with "busy" rather than wait, so retry briefly.
        let mut attempt = 0;
        loop {
            match conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get::<_, String>(0)) {
                Ok(_) => break,
                Err(e) if is_busy(&e) && attempt < 100 => {
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(e.into()),
            }
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrate(&mut conn)?;
        let tenant_id = ensure_tenant(&mut conn)?;
        let store = IdentityStore {
            conn: Mutex::new(conn),
            tenant_id,
            own_writes: AtomicI64::new(0),
            external_version: AtomicI64::new(0),
            external_checked_ms: AtomicU64::new(u64::MAX),
            opened: std::time::Instant::now(),
            secret_cache: Mutex::new(SecretCache::default()),
        };
        store.ensure_signing_key()?;
        Ok(store)
    }

    /// The installation's tenant (directory) id, a GUID.
    pub fn tenant_id(&self) -> &str {
        &self.tenant_id
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
        let conn = self.lock();
        Ok(conn.query_row("SELECT value FROM settings WHERE key = ?1", [key], |row| row.get(0)).optional()?)
    }

    pub fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO settings (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )?;
            Ok(())
        })
    }

    /// The setting `key`, set to `value` first if it has none: the first process to ask decides,
    /// and every other one reads what it decided.
    pub fn setting_or_insert(&self, key: &str, value: &str) -> Result<String> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
                params![key, value],
            )?;
            Ok(tx.query_row("SELECT value FROM settings WHERE key = ?1", [key], |row| row.get(0))?)
        })
    }

    /// The signing keys still published: the current one (`retired_at` None) first, then retired
    /// keys newest first, excluding those retired before `published_after`.
    pub fn signing_keys(&self, published_after: i64) -> Result<Vec<SigningKey>> {
        let rows: Vec<(String, i64, Option<i64>, Vec<u8>)> = {
            let conn = self.lock();
            let mut stmt = conn.prepare_cached(
                "SELECT kid, created_at, retired_at, pkcs8 FROM signing_keys
                 WHERE retired_at IS NULL OR retired_at >= ?1
                 ORDER BY retired_at IS NOT NULL, retired_at DESC, created_at DESC",
            )?;
            let rows = stmt
                .query_map([published_after], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)))?
                .collect::<rusqlite::Result<_>>()?;
            rows
        };
        rows.into_iter()
            .map(|(kid, created_at, retired_at, pkcs8)| {
                SigningKey::from_pkcs8(kid, created_at, retired_at, pkcs8).map_err(IdentityError::Database)
            })
            .collect()
    }

    /// Makes a new key the signing key; the previous current key is retired at `now`.
    pub fn rotate_signing_key(&self, now: i64) -> Result<SigningKey> {
        // Generation takes up to a second: not while holding the database.
        let key = SigningKey::generate(now).map_err(IdentityError::Database)?;
        self.write(|tx| {
            tx.execute("UPDATE signing_keys SET retired_at = ?1 WHERE retired_at IS NULL", [now])?;
            tx.execute(
                "INSERT INTO signing_keys (kid, created_at, retired_at, pkcs8) VALUES (?1, ?2, NULL, ?3)",
                params![key.kid, key.created_at, key.pkcs8],
            )?;
            Ok(())
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
        self.write(|tx| {
            tx.execute(
                "INSERT INTO apps (object_id, client_id, display_name, kind, redirect_uris, jwks, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    app.object_id,
                    app.client_id,
                    app.display_name,
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
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&format!("SELECT {APP_COLUMNS} FROM apps ORDER BY created_at, rowid"))?;
        let rows = stmt.query_map([], raw_app)?.collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter().map(RawApp::into_app).collect()
    }

    /// An app by client id or object id.
    pub fn app(&self, id: &str) -> Result<Option<App>> {
        find_app(&self.lock(), id)
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
        let changed = self.write(|tx| {
            Ok(tx.execute(
                "UPDATE apps SET display_name = ?2, redirect_uris = ?3, jwks = ?4 WHERE object_id = ?1",
                params![app.object_id, display_name, redirect_uris, jwks],
            )?)
        })?;
        if changed == 0 {
            return Err(IdentityError::NotFound(format!("no app with object id {}", app.object_id)));
        }
        Ok(())
    }

    /// Deletes an app (by client or object id) with its secrets and role assignments.
    pub fn delete_app(&self, id: &str) -> Result<bool> {
        let deleted = self.write(|tx| {
            let Some(app) = find_app(tx, id)? else {
                return Ok(None);
            };
            tx.execute("DELETE FROM role_assignments WHERE principal_id = ?1", [&app.object_id])?;
            // Its outstanding codes and refresh tokens die with it.
            for table in ["codes", "refresh_tokens"] {
                tx.execute(
                    &format!(r#"DELETE FROM {table} WHERE json_extract("grant", '$.clientId') = ?1"#),
                    [&app.client_id],
                )?;
            }
            tx.execute("DELETE FROM apps WHERE object_id = ?1", [&app.object_id])?;
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
        self.write(|tx| {
            // The app may have gone while the hash was computed; the foreign key would refuse, but
            // with a less helpful message.
            if find_app(tx, &found.object_id)?.is_none() {
                return Err(no_app(app));
            }
            tx.execute(
                "INSERT INTO secrets (key_id, app_object_id, display_name, hint, hash, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    info.key_id,
                    found.object_id,
                    info.display_name,
                    info.hint,
                    hash,
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
        let conn = self.lock();
        let found = find_app(&conn, app)?.ok_or_else(|| no_app(app))?;
        let mut stmt = conn.prepare_cached(
            "SELECT key_id, display_name, hint, created_at, expires_at FROM secrets
             WHERE app_object_id = ?1 ORDER BY created_at, rowid",
        )?;
        let rows = stmt.query_map([&found.object_id], secret_info)?.collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// Removes a secret by key id; tokens already issued stay valid until they expire.
    pub fn remove_secret(&self, app: &str, key_id: &str) -> Result<bool> {
        let (client_id, removed) = self.write(|tx| {
            let found = find_app(tx, app)?.ok_or_else(|| no_app(app))?;
            let removed = tx.execute(
                "DELETE FROM secrets WHERE key_id = ?1 AND app_object_id = ?2",
                params![key_id, found.object_id],
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
        // Token requests are rare enough to ask SQLite every time: a secret removed by the CLI
        // must fail at once.
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
        let candidates: Vec<(SecretInfo, String)> = {
            let conn = self.lock();
            let mut stmt = conn.prepare_cached(
                "SELECT s.key_id, s.display_name, s.hint, s.created_at, s.expires_at, s.hash
                 FROM secrets s JOIN apps a ON a.object_id = s.app_object_id
                 WHERE a.client_id = ?1 AND s.hint = ?2 ORDER BY s.created_at DESC",
            )?;
            let rows = stmt
                .query_map([client_id, hint.as_str()], |row| Ok((secret_info(row)?, row.get(5)?)))?
                .collect::<rusqlite::Result<_>>()?;
            rows
        };
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
        self.write(|tx| {
            tx.execute(
                "INSERT INTO users (object_id, upn, display_name, password_hash, fhir_user, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    created.object_id,
                    created.user_principal_name,
                    created.display_name,
                    hash,
                    created.fhir_user,
                    created.created_at
                ],
            )
            .map_err(|e| match e.sqlite_error_code() {
                Some(rusqlite::ErrorCode::ConstraintViolation) => duplicate_user(&created.user_principal_name),
                _ => e.into(),
            })?;
            Ok(())
        })?;
        Ok(created)
    }

    pub fn users(&self) -> Result<Vec<User>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY created_at, rowid"))?;
        let rows = stmt.query_map([], user_row)?.collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// A user by object id or user principal name.
    pub fn user(&self, id: &str) -> Result<Option<User>> {
        find_user(&self.lock(), id)
    }

    /// The user whose name and password these are.
    pub fn check_password(&self, user_principal_name: &str, password: &str) -> Result<Option<User>> {
        let found = {
            let conn = self.lock();
            conn.query_row(
                &format!("SELECT {USER_COLUMNS}, password_hash FROM users WHERE upn = ?1"),
                [user_principal_name.trim()],
                |row| Ok((user_row(row)?, row.get::<_, String>(5)?)),
            )
            .optional()?
        };
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
        let changed = self.write(|tx| {
            Ok(tx.execute("UPDATE users SET password_hash = ?2 WHERE object_id = ?1", params![user.object_id, hash])?)
        })?;
        if changed == 0 {
            return Err(no_user(id));
        }
        Ok(())
    }

    pub fn delete_user(&self, id: &str) -> Result<bool> {
        self.write(|tx| {
            let Some(user) = find_user(tx, id)? else {
                return Ok(false);
            };
            tx.execute("DELETE FROM role_assignments WHERE principal_id = ?1", [&user.object_id])?;
            for table in ["codes", "refresh_tokens"] {
                tx.execute(
                    &format!(r#"DELETE FROM {table} WHERE json_extract("grant", '$.userObjectId') = ?1"#),
                    [&user.object_id],
                )?;
            }
            tx.execute("DELETE FROM users WHERE object_id = ?1", [&user.object_id])?;
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
        self.write(|tx| {
            tx.execute(
                "INSERT INTO role_assignments (id, role, role_definition_id, principal_id, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (role, principal_id) DO NOTHING",
                params![uuid::Uuid::new_v4().to_string(), role.name, role.id, principal_id, now],
            )?;
            Ok(tx.query_row(
                &format!("SELECT {ASSIGNMENT_COLUMNS} FROM role_assignments WHERE role = ?1 AND principal_id = ?2"),
                params![role.name, principal_id],
                assignment_row,
            )?)
        })
    }

    /// All assignments, or those of one object id.
    pub fn role_assignments(&self, principal_id: Option<&str>) -> Result<Vec<RoleAssignment>> {
        let conn = self.lock();
        let rows = match principal_id {
            None => conn
                .prepare_cached(&format!(
                    "SELECT {ASSIGNMENT_COLUMNS} FROM role_assignments ORDER BY created_at, rowid"
                ))?
                .query_map([], assignment_row)?
                .collect::<rusqlite::Result<_>>()?,
            Some(principal) => conn
                .prepare_cached(&format!(
                    "SELECT {ASSIGNMENT_COLUMNS} FROM role_assignments WHERE principal_id = ?1
                     ORDER BY created_at, rowid"
                ))?
                .query_map([principal], assignment_row)?
                .collect::<rusqlite::Result<_>>()?,
        };
        Ok(rows)
    }

    /// Removes an assignment by its id, or every assignment of `role` to `principal_id`.
    pub fn remove_role_assignment(&self, id: &str) -> Result<bool> {
        self.write(|tx| Ok(tx.execute("DELETE FROM role_assignments WHERE id = ?1", [id])? > 0))
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
    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves no transaction open (it rolls back on drop).
        self.conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn cache(&self) -> MutexGuard<'_, SecretCache> {
        self.secret_cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` in an IMMEDIATE transaction (the write lock taken up front, so that a
    /// read-then-write never fails half-way for another process's write) and commits it.
    fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let value = f(&tx)?;
        tx.commit()?;
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

    /// `PRAGMA data_version` now, remembered for [`IdentityStore::external_version`].
    fn fresh_external_version(&self) -> Result<i64> {
        let now = self.opened.elapsed().as_millis() as u64;
        let version: i64 = self.lock().query_row("PRAGMA data_version", [], |row| row.get(0))?;
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

    /// Creates the first signing key if there is none. The key is generated outside the write
    /// transaction (it is slow) and inserted only if another process has not done so meanwhile.
    fn ensure_signing_key(&self) -> Result<()> {
        let has_current = |conn: &Connection| -> Result<bool> {
            Ok(conn.query_row("SELECT EXISTS (SELECT 1 FROM signing_keys WHERE retired_at IS NULL)", [], |row| {
                row.get(0)
            })?)
        };
        if has_current(&self.lock())? {
            return Ok(());
        }
        let key = SigningKey::generate(crate::time::now()).map_err(IdentityError::Database)?;
        self.write(|tx| {
            if !has_current(tx)? {
                tx.execute(
                    "INSERT INTO signing_keys (kid, created_at, retired_at, pkcs8) VALUES (?1, ?2, NULL, ?3)",
                    params![key.kid, key.created_at, key.pkcs8],
                )?;
            }
            Ok(())
        })
    }

    fn save_one_time(&self, kind: OneTime, value: &str, grant: &str, expires_at: i64) -> Result<()> {
        let table = kind.table();
        let purge_before = crate::time::now() - KEEP_EXPIRED_SECONDS;
        self.write(|tx| {
            tx.execute(&format!("DELETE FROM {table} WHERE expires_at < ?1"), [purge_before])?;
            tx.execute(
                &format!(r#"INSERT INTO {table} (hash, "grant", expires_at, used_at) VALUES (?1, ?2, ?3, NULL)"#),
                params![secret::fast_hash(value), grant, expires_at],
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
        let outcome = self.write(|tx| {
            // The conditional UPDATE is what makes redemption single-use, across processes too.
            let grant: Option<String> = tx
                .query_row(
                    &format!(
                        r#"UPDATE {table} SET used_at = ?2 WHERE hash = ?1 AND used_at IS NULL AND expires_at > ?2
                           RETURNING "grant""#
                    ),
                    params![hash, now],
                    |row| row.get(0),
                )
                .optional()?;
            if let Some(grant) = grant {
                return Ok(Ok(grant));
            }
            let state: Option<(i64, Option<i64>)> = tx
                .query_row(&format!("SELECT expires_at, used_at FROM {table} WHERE hash = ?1"), [&hash], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })
                .optional()?;
            Ok(Err(match state {
                None => Redeemed::Unknown,
                Some((_, Some(_))) => Redeemed::AlreadyUsed,
                Some((_, None)) => Redeemed::Expired,
            }))
        })?;
        match outcome {
            Ok(grant) => Ok(Redeemed::Valid(from_json(&grant)?)),
            Err(other) => Ok(other),
        }
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
}

/// Brings the database to the newest schema, refusing one written by a newer Fhirside. Runs in an
/// IMMEDIATE transaction, so that two processes opening a new file at once migrate it once.
fn migrate(conn: &mut Connection) -> Result<()> {
    let newest = MIGRATIONS.len() as i64;
    let current: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if current == newest {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current: i64 = tx.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if current > newest {
        return Err(IdentityError::Database(format!(
            "{FILE_NAME} has schema version {current}, newer than this build's {newest}; \
             upgrade Fhirside instead of downgrading it"
        )));
    }
    for sql in MIGRATIONS.iter().skip(current as usize) {
        tx.execute_batch(sql)?;
    }
    tx.pragma_update(None, "user_version", newest)?;
    tx.commit()?;
    Ok(())
}

/// The tenant id, created on first open (inside the write lock, re-checked, so that two processes
/// opening a new file agree on one).
fn ensure_tenant(conn: &mut Connection) -> Result<String> {
    let read = |conn: &Connection| -> Result<Option<String>> {
        Ok(conn.query_row("SELECT value FROM settings WHERE key = 'tenant_id'", [], |row| row.get(0)).optional()?)
    };
    if let Some(tenant) = read(conn)? {
        return Ok(tenant);
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let tenant = match read(&tx)? {
        Some(tenant) => tenant,
        None => {
            let tenant = uuid::Uuid::new_v4().to_string();
            tx.execute("INSERT INTO settings (key, value) VALUES ('tenant_id', ?1)", [&tenant])?;
            tenant
        }
    };
    tx.commit()?;
    Ok(tenant)
}

const APP_COLUMNS: &str = "object_id, client_id, display_name, kind, redirect_uris, jwks, created_at";
const USER_COLUMNS: &str = "object_id, upn, display_name, fhir_user, created_at";
const ASSIGNMENT_COLUMNS: &str = "id, role, role_definition_id, principal_id, created_at";

/// An app row before its JSON columns are parsed (which can fail with our error, not rusqlite's).
struct RawApp {
    object_id: String,
    client_id: String,
    display_name: String,
    kind: String,
    redirect_uris: String,
    jwks: Option<String>,
    created_at: i64,
}

fn raw_app(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawApp> {
    Ok(RawApp {
        object_id: row.get(0)?,
        client_id: row.get(1)?,
        display_name: row.get(2)?,
        kind: row.get(3)?,
        redirect_uris: row.get(4)?,
        jwks: row.get(5)?,
        created_at: row.get(6)?,
    })
}

impl RawApp {
    fn into_app(self) -> Result<App> {
        let kind = match self.kind.as_str() {
            "confidential" => AppKind::Confidential,
            "public" => AppKind::Public,
            "service" => AppKind::Service,
            other => return Err(IdentityError::Database(format!("app {}: unknown kind '{other}'", self.object_id))),
        };
        Ok(App {
            redirect_uris: from_json(&self.redirect_uris)?,
            jwks: self.jwks.as_deref().map(from_json).transpose()?,
            object_id: self.object_id,
            client_id: self.client_id,
            display_name: self.display_name,
            kind,
            created_at: self.created_at,
        })
    }
}

fn find_app(conn: &Connection, id: &str) -> Result<Option<App>> {
    let id = id.trim();
    let raw = conn
        .query_row(&format!("SELECT {APP_COLUMNS} FROM apps WHERE client_id = ?1 OR object_id = ?1"), [id], raw_app)
        .optional()?;
    raw.map(RawApp::into_app).transpose()
}

fn find_user(conn: &Connection, id: &str) -> Result<Option<User>> {
    let id = id.trim();
    Ok(conn
        .query_row(&format!("SELECT {USER_COLUMNS} FROM users WHERE object_id = ?1 OR upn = ?1"), [id], user_row)
        .optional()?)
}

fn user_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        object_id: row.get(0)?,
        user_principal_name: row.get(1)?,
        display_name: row.get(2)?,
        fhir_user: row.get(3)?,
        created_at: row.get(4)?,
    })
}

fn secret_info(row: &rusqlite::Row<'_>) -> rusqlite::Result<SecretInfo> {
    Ok(SecretInfo {
        key_id: row.get(0)?,
        display_name: row.get(1)?,
        hint: row.get(2)?,
        created_at: row.get(3)?,
        expires_at: row.get(4)?,
    })
}

fn assignment_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RoleAssignment> {
    Ok(RoleAssignment {
        id: row.get(0)?,
        role: row.get(1)?,
        role_definition_id: row.get(2)?,
        principal_id: row.get(3)?,
        created_at: row.get(4)?,
    })
}

/// A public client has no credentials: no secrets (see `add_secret`) and no public keys.
fn check_keys(kind: AppKind, jwks: Option<&JwkSet>) -> Result<()> {
    if kind == AppKind::Public && jwks.is_some() {
        return Err(IdentityError::Invalid("a public client has no credentials, so no public keys (jwks)".into()));
    }
    Ok(())
}

fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| IdentityError::Database(e.to_string()))
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| IdentityError::Database(format!("stored JSON: {e}")))
}

fn no_app(id: &str) -> IdentityError {
    IdentityError::NotFound(format!("no app with client id or object id '{id}'"))
}

fn no_user(id: &str) -> IdentityError {
    IdentityError::NotFound(format!("no user with object id or user principal name '{id}'"))
}

fn duplicate_user(upn: &str) -> IdentityError {
    IdentityError::Conflict(format!("a user named '{upn}' already exists"))
}

fn checked_display_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() {
        return Err(IdentityError::Invalid("an app needs a non-empty display name".into()));
    }
    Ok(name.to_owned())
}

fn check_password_value(password: &str) -> Result<()> {
    if password.is_empty() {
        return Err(IdentityError::Invalid("the password must not be empty".into()));
    }
    Ok(())
}

fn dedup(mut uris: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    uris.retain(|u| seen.insert(u.clone()));
    uris
}

/// A redirect URI must be an absolute `https` URL, or `http` on the loopback host (native apps and
/// local development), without a fragment (RFC 6749 §3.1.2).
pub fn check_redirect_uri(uri: &str) -> Result<()> {
    let invalid = || {
        IdentityError::Invalid(format!(
            "invalid redirect URI '{uri}': it must be an absolute https URL, or http on localhost or 127.0.0.1, \
             without a fragment"
        ))
    };
    if uri.is_empty() || uri.contains('#') || uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid());
    }
    let (scheme, rest) = uri.split_once("://").ok_or_else(invalid)?;
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    if authority.contains('@') {
        return Err(invalid());
    }
    let (host, port) = if authority.starts_with('[') {
        let close = authority.find(']').ok_or_else(invalid)?;
        (&authority[..=close], &authority[close + 1..])
    } else {
        match authority.find(':') {
            Some(colon) => (&authority[..colon], &authority[colon..]),
            None => (authority, ""),
        }
    };
    let host_ok = !host.is_empty()
        && if host.starts_with('[') {
            host[1..host.len() - 1].chars().all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        } else {
            host.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
        };
    let port_ok = port.is_empty() || port.strip_prefix(':').is_some_and(|p| p.parse::<u16>().is_ok());
    if !host_ok || !port_ok {
        return Err(invalid());
    }
    let loopback = host.eq_ignore_ascii_case("localhost") || host == "127.0.0.1" || host == "[::1]";
    match scheme.to_ascii_lowercase().as_str() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(invalid()),
    }
}

#[cfg(test)]
mod tests;
