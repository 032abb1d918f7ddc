//! `fhirside serve`: open the store, set up TLS, and serve until SIGINT/SIGTERM.

use std::io::Write;
use std::sync::Arc;

use fhirside_audit::{AuditConfig, AuditLog, PostgresAuditConfig};
use fhirside_server::listener::{self, Transport};
use fhirside_server::{tls, AppState};
use fhirside_store::{PostgresConfig, PostgresStore, ResourceStore, SqliteConfig, SqliteStore};

use crate::config::Settings;

pub fn run(settings: Settings) -> Result<(), String> {
    std::fs::create_dir_all(&settings.data_dir)
        .map_err(|e| format!("cannot create data directory {}: {e}", settings.data_dir.display()))?;
    let data_dir = settings.data_dir.canonicalize().map_err(|e| e.to_string())?;
    let _lock = lock_data_dir(&data_dir)?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("fhirside")
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", settings.listen))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;

        // Encryption at rest: the store seals bodies with whatever keyring `keys` holds, which is
        // loaded (or created) before anything is read or written.
        let keys = fhirside_keys::KeyringCell::new();
        let store = Store::open(settings.database.as_deref(), &data_dir, &keys).await?;
        let encryption = crate::encryption::set_up(
            settings.encryption_key.as_deref(),
            store.shared().as_ref(),
            store.settings(&data_dir)?,
            &keys,
        )
        .await?;
        // Every request is recorded: a server that cannot record them does not start.
        let audit = match &settings.audit {
            None => None,
            // On PostgreSQL the trail is in the database, shared by every replica.
            Some(audit) => Some(Arc::new(match settings.database.as_deref() {
                Some(url) => AuditLog::open_postgres(PostgresAuditConfig {
                    url: url.to_owned(),
                    retention_days: audit.retention_days,
                    stdout: audit.stdout,
                    sync: audit.sync,
                })
                .map_err(|e| format!("cannot open the audit log in PostgreSQL: {e}"))?,
                None => {
                    let dir = data_dir.join("audit");
                    let config = AuditConfig {
                        dir: dir.clone(),
                        retention_days: audit.retention_days,
                        stdout: audit.stdout,
                        sync: audit.sync,
                    };
                    AuditLog::open(config)
                        .map_err(|e| format!("cannot open the audit log in {}: {e}", dir.display()))?
                }
            })),
        };
        let bulk = bulk_storage(settings.bulk_storage.as_deref(), &data_dir, settings.auth.authority_ca.as_deref())?;
        // The relay's state lives beside the resource store.
        let relay_store = match settings.database.as_deref() {
            Some(url) => fhirside_relay::RelayStore::open_postgres(url),
            None => fhirside_relay::RelayStore::open(&data_dir),
        }
        .map_err(|e| format!("cannot open the relay's store: {e}"))?;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "Fhirside {}", env!("CARGO_PKG_VERSION"));
        let _ = writeln!(out, "data directory: {}", data_dir.display());
        let _ = writeln!(out, "resource store: {}", store.describe());
        match &encryption {
            Some(encryption) => {
                let _ = writeln!(out, "encryption at rest: on (key-encryption key {})", encryption.provider.id());
            }
            None => {
                let _ = writeln!(out, "encryption at rest: off (--encryption-key turns it on for a new store)");
            }
        }
        let _ = writeln!(out, "bulk data: {}", bulk.describe());
        let _ = writeln!(out, "relay: {}", relay_store.describe());
        match &audit {
            Some(log) => {
                let _ = writeln!(out, "audit log: {}", log.describe());
                if log.recovered_from_journal() > 0 {
                    let _ = writeln!(
                        out,
                        "audit log: {} records of requests answered before a crash moved from the journal to the day files",
                        log.recovered_from_journal()
                    );
                }
                if let Some(torn) = log.recovered_torn_tail() {
                    let _ = writeln!(
                        out,
                        "warning: the audit log's last line was incomplete (a crash); it was moved to {}",
                        torn.display()
                    );
                }
            }
            None => {
                let _ = writeln!(out, "audit: off (requests are not recorded; for development and benchmarks only)");
            }
        }
        let (transport, reloader) = match &settings.tls {
            None => (Transport::Plain, None),
            Some(tls_settings) => {
                let files = match &tls_settings.cert_and_key {
                    Some((cert, key)) => tls::TlsFiles { cert: cert.clone(), key: key.clone(), ca: None },
                    None => tls::ensure_local_certificate(&data_dir.join("tls"), &[local.ip().to_string()])?,
                };
                if let Some(ca) = &files.ca {
                    let _ = writeln!(
                        out,
                        "TLS certificate authority: {} (for example: curl --cacert {} ...)",
                        ca.display(),
                        ca.display()
                    );
                }
                let _ = writeln!(out, "TLS certificate: {} (served anew when the file changes)", files.cert.display());
                match &tls_settings.client_auth {
                    tls::ClientAuth::Off => {}
                    tls::ClientAuth::Optional { ca } => {
                        let _ = writeln!(out, "TLS client certificates: optional, from {}", ca.display());
                    }
                    tls::ClientAuth::Required { ca } => {
                        let _ = writeln!(out, "TLS client certificates: required, from {}", ca.display());
                    }
                }
                let reloader = tls::Reloader::load(files, tls_settings.client_auth.clone())
                    .map_err(|e| format!("TLS: {e}"))?;
                (Transport::Tls(reloader.live()), Some(reloader))
            }
        };
        let scheme = if settings.http { "http" } else { "https" };
        let base = settings.server.base_url.clone().unwrap_or_else(|| format!("{scheme}://{local}"));
        let identity = crate::identity::set_up(&settings.auth, settings.database.as_deref(), &data_dir, &base).await?;
        for line in &identity.banner {
            let _ = writeln!(out, "{line}");
        }
        // Where it listens, when clients reach it through --base-url elsewhere.
        let _ = writeln!(out, "listening on: {local}");
        let _ = writeln!(out, "FHIR base URL: {base}");
        let _ = out.flush();
        drop(out);

        let mut server_config = settings.server;
        server_config.oauth = identity.oauth.clone();
        // On an encrypted installation, every index row and query passes the blinding of PHI.
        let resources: Arc<dyn ResourceStore> = match &encryption {
            Some(encryption) => {
                Arc::new(fhirside_server::protect::ProtectedStore::new(store.shared(), encryption.keys.clone()))
            }
            None => store.shared(),
        };
        let encryption_keys = encryption.as_ref().map(|encryption| encryption.keys.clone());
        let follower = encryption.map(|encryption| encryption.follow(store.shared()));
        let mut state = AppState::new(server_config, resources).with_identity(
            identity.authentication,
            identity.store,
            identity.authority,
        );
        if let Some(log) = &audit {
            state = state.with_audit(log.clone());
        }
        if let Some(keys) = &encryption_keys {
            state = state.with_encryption(keys.clone()).with_bulk(bulk.sealed_with(keys.clone()));
        } else {
            state = state.with_bulk(bulk);
        }
        if let Some(medtech) = settings.medtech {
            state = state.with_medtech(medtech);
        }
        // The relay's worker runs in this process. What this data directory's worker was sending
        // when it was killed goes out again at once.
        let relay_owner = fhirside_relay::worker_id(&data_dir).map_err(|e| format!("relay: {e}"))?;
        relay_store.release_leases(&relay_owner).map_err(|e| format!("relay: {e}"))?;
        let relay_client = fhirside_fetch::Client::new(settings.auth.authority_ca.as_deref())
            .map_err(|e| format!("relay: {e}"))?;
        let relay_store = match &encryption_keys {
            Some(keys) => relay_store.sealed_with(keys.clone()),
            None => relay_store,
        };
        let relay =
            Arc::new(fhirside_relay::Relay::new(Arc::new(relay_store), relay_client, settings.relay.clone()));
        state = state.with_relay(relay.clone());
        // Custom search parameters, and a reindex if the stored index was built with others.
        fhirside_server::search_params::prepare(&state).await.map_err(|e| format!("search parameters: {e}"))?;
        // Background jobs from the store's job table (reindex, and what later issues add).
        let worker = fhirside_server::jobs::spawn(state.clone());
        let relay_worker = fhirside_relay::worker::spawn(relay, relay_owner);
        let watcher = reloader.map(tls::Reloader::spawn);
        // MedTech's brokers: each subscription acknowledges only what it stored, so stopping it
        // anywhere loses nothing.
        let subscriptions: Vec<_> = settings
            .medtech_subscriptions
            .into_iter()
            .filter_map(|subscription| fhirside_server::medtech::start(&state, subscription))
            .collect();
        listener::serve(listener, transport, fhirside_server::router(state), shutdown_signal()).await;
        // A job in progress stops here; its lease runs out and it resumes from its checkpoint.
        worker.abort();
        if let Some(follower) = follower {
            follower.abort();
        }
        // A delivery in flight is sent again at the next start (at least once; idempotent).
        relay_worker.abort();
        for subscription in subscriptions {
            subscription.abort();
        }
        if let Some(watcher) = watcher {
            watcher.abort();
        }
        store.close();
        if let Some(log) = &audit {
            log.close();
        }
        println!("stopped");
        Ok(())
    })
}

/// Where bulk data lives: `--bulk-storage`, or the data directory's `bulk/`. Its credentials come
/// from the environment, never from the command line (where other users of the machine see them).
fn bulk_storage(
    setting: Option<&str>,
    data_dir: &std::path::Path,
    extra_ca: Option<&std::path::Path>,
) -> Result<fhirside_server::BulkStorage, String> {
    let client = fhirside_fetch::Client::new(extra_ca)?;
    match setting {
        None => Ok(fhirside_server::BulkStorage::local(data_dir.join("bulk"), client)),
        Some(setting) => {
            let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
            let objects = fhirside_objects::ObjectStore::from_setting(setting, &env, client.clone())
                .map_err(|e| format!("--bulk-storage: {e}"))?;
            Ok(fhirside_server::BulkStorage::new(objects, client))
        }
    }
}

/// The resource store in use: the embedded one, or PostgreSQL.
enum Store {
    Embedded(Arc<SqliteStore>),
    Postgres(Arc<PostgresStore>, String, Box<PostgresConfig>),
}

impl Store {
    async fn open(
        database: Option<&str>,
        data_dir: &std::path::Path,
        keys: &fhirside_keys::KeyringCell,
    ) -> Result<Store, String> {
        let seal = fhirside_store::Seal::new(keys.clone());
        match database {
            None => Ok(Store::Embedded(Arc::new(
                SqliteStore::open(&SqliteConfig { seal, ..SqliteConfig::in_dir(data_dir) })
                    .map_err(|e| format!("cannot open the store: {e}"))?,
            ))),
            Some(url) => {
                let mut config = PostgresConfig::from_url(url).map_err(|e| e.to_string())?;
                config.seal = seal;
                let store =
                    PostgresStore::open(&config).await.map_err(|e| format!("cannot open the PostgreSQL store: {e}"))?;
                Ok(Store::Postgres(Arc::new(store), config.describe(), Box::new(config)))
            }
        }
    }

    /// Where this store's settings are, for reading and writing them on their own.
    fn settings<'a>(&'a self, data_dir: &'a std::path::Path) -> Result<fhirside_store::SettingsOf<'a>, String> {
        Ok(match self {
            Store::Embedded(_) => fhirside_store::SettingsOf::Embedded(data_dir),
            Store::Postgres(_, _, config) => fhirside_store::SettingsOf::Postgres(config),
        })
    }

    fn shared(&self) -> Arc<dyn ResourceStore> {
        match self {
            Store::Embedded(store) => store.clone(),
            Store::Postgres(store, _, _) => store.clone(),
        }
    }

    fn describe(&self) -> String {
        match self {
            Store::Embedded(_) => "embedded (fhirside.db in the data directory)".into(),
            Store::Postgres(_, target, _) => format!("PostgreSQL {target}"),
        }
    }

    /// Lets the embedded store's writer finish; PostgreSQL has committed everything already.
    fn close(&self) {
        if let Store::Embedded(store) = self {
            store.close();
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Holds an exclusive lock on the data directory for the life of the process, so that two
/// servers never share one embedded database.
fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File, String> {
    use std::os::fd::AsRawFd;
    let path = dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    // SAFETY: flock on a file descriptor we own; no memory is shared with the call.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    if !locked {
        return Err(format!("{} is in use by another fhirside process", dir.display()));
    }
    Ok(file)
}
