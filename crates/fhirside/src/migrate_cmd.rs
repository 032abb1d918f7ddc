//! `fhirside migrate-store --from <data dir> --to postgres://…`: moves an embedded installation's
//! resource store to PostgreSQL.
//!
//! Every version is copied as stored (history, deletion markers, versionId, lastUpdated and the
//! exact JSON bytes), then the search index is rebuilt on the target with the search parameters in
//! force, custom SearchParameters included, so search works as soon as a server starts on it. The
//! source is opened read-only under the data directory's lock: a server cannot run on it meanwhile,
//! and it stays intact, so the embedded installation remains a way back.
//!
//! The identity store (`identity.db`), where there is one, moves too, into the database's
//! `identity_*` tables: tenant, settings, signing keys, apps and their secrets' hashes, users and
//! role assignments, so that issued tokens and every credential keep working. One-time codes and
//! refresh tokens stay behind (users signed in through the old server sign in again). The target
//! is checked for both before anything is copied. The relay's state (`relay.db`), where there is
//! one, moves into the `relay_*` tables with its queue, so that queued messages are delivered from
//! the new store. The audit trail (`audit/`) stays in the data directory.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use fhirside_identity::store::{IdentityImport, IdentityStore};
use fhirside_relay::RelayStore;
use fhirside_store::{PostgresConfig, PostgresImporter, PostgresStore, RawVersion, SqliteExport};

#[derive(Args, Debug)]
pub struct MigrateArgs {
    /// The data directory of the embedded installation to copy from (its server must be stopped).
    #[arg(long, value_name = "DATA_DIR")]
    from: PathBuf,
    /// The PostgreSQL URL to copy to (`postgres://user@host:port/database`); its store must hold
    /// no resources yet.
    #[arg(long, value_name = "URL")]
    to: String,
}

/// Versions read from the source per batch.
const BATCH: u32 = 1000;

/// Most body bytes sent in one INSERT: a batch of large resources (Binary, big Bundles) is split
/// so that one statement stays far below PostgreSQL's message size limit.
const MAX_BATCH_BYTES: usize = 32 << 20;

pub fn run(args: MigrateArgs) -> Result<(), String> {
    let url = crate::config::check_database(Some(args.to))?
        .ok_or_else(|| "--to needs a PostgreSQL URL (postgres://user@host:port/database)".to_owned())?;
    let config = PostgresConfig::from_url(&url).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let source = SqliteExport::open(&args.from).map_err(|e| format!("cannot read {}: {e}", args.from.display()))?;
    let counts = source.counts().map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async {
        // The copy rebuilds the index from the bodies, which on an encrypted store are sealed.
        let keyring = fhirside_store::read_setting(
            fhirside_store::SettingsOf::Embedded(&args.from),
            crate::encryption::KEYRING_SETTING,
        )
        .await
        .map_err(|e| format!("cannot read {}: {e}", args.from.display()))?;
        if keyring.is_some() {
            return Err(format!(
                "{} is encrypted at rest, which migrate-store does not move: start a server on PostgreSQL with \
                 --encryption-key and move the data with $export and $import",
                args.from.display()
            ));
        }
        let store = PostgresStore::open(&config)
            .await
            .map_err(|e| format!("cannot open the PostgreSQL store {}: {e}", config.describe()))?;
        let importer = store.begin_import().await.map_err(|e| format!("{}: {e}", config.describe()))?;
        let identity = identity_to_move(&args.from, &url)?;
        let relay = relay_to_move(&args.from, &url)?;
        eprintln!("copying {} versions from {} to {}", counts.versions, args.from.display(), config.describe());
        let copied = copy(&source, &importer, counts.versions).await?;
        eprintln!("rebuilding the search index of {} resources", counts.live);
        let live = fhirside_server::rebuild_index(&store)
            .await
            .map_err(|e| format!("copied {copied} versions, but rebuilding the search index failed: {e}"))?;
        let identity = match identity {
            None => format!("no {} to move", fhirside_identity::store::FILE_NAME),
            Some((source, target)) => {
                // Exported again now, with whatever the CLI changed while the resources were copied.
                let moved = source
                    .export()
                    .and_then(|export| Ok((target.import(&export)?, export)))
                    .map_err(|e| format!("copied {copied} versions, but moving the identity store failed: {e}"));
                let (moved, export) = moved?;
                format!(
                    "identity moved: tenant {}, signing keys {}, apps {} (client secrets {}), users {}, \
                     role assignments {} (one-time codes and refresh tokens stay behind)",
                    export.tenant_id(),
                    moved.signing_keys,
                    moved.apps,
                    moved.secrets,
                    moved.users,
                    moved.role_assignments
                )
            }
        };
        let relay = match relay {
            None => format!("no {} to move", fhirside_relay::store::sqlite::FILE_NAME),
            Some((source, target)) => {
                let moved = source
                    .move_to(&target)
                    .map_err(|e| format!("copied {copied} versions, but moving the relay failed: {e}"))?;
                format!(
                    "relay moved: {} destinations, {} messages ({} to deliver)",
                    moved.destinations, moved.messages, moved.pending
                )
            }
        };
        println!(
            "moved {copied} versions ({live} current resources) to {} in {:.1} s; {identity}; {relay}; \
             audit/ stays in {}",
            config.describe(),
            started.elapsed().as_secs_f64(),
            args.from.display()
        );
        Ok(())
    })
}

/// The source's identity store and the target's identity tables, when the source has an identity
/// store; refused before anything is copied if the target cannot take it.
fn identity_to_move(from: &std::path::Path, url: &str) -> Result<Option<(IdentityStore, IdentityImport)>, String> {
    if !from.join(fhirside_identity::store::FILE_NAME).exists() {
        return Ok(None);
    }
    let read_error = |e| format!("cannot read the identity store in {}: {e}", from.display());
    let source = IdentityStore::open(from).map_err(read_error)?;
    let export = source.export().map_err(read_error)?;
    let target = IdentityImport::connect(url).map_err(|e| format!("the target's identity tables: {e}"))?;
    target.check(&export).map_err(|e| format!("cannot move the identity store: {e}"))?;
    Ok(Some((source, target)))
}

/// The source's relay store and the target's relay tables, when the source has a relay store;
/// refused before anything is copied if the target already holds relay state.
fn relay_to_move(from: &std::path::Path, url: &str) -> Result<Option<(RelayStore, RelayStore)>, String> {
    if !from.join(fhirside_relay::store::sqlite::FILE_NAME).exists() {
        return Ok(None);
    }
    let source =
        RelayStore::open(from).map_err(|e| format!("cannot read the relay store in {}: {e}", from.display()))?;
    let target = RelayStore::open_postgres(url).map_err(|e| format!("the target's relay tables: {e}"))?;
    if !target.is_empty().map_err(|e| format!("the target's relay tables: {e}"))? {
        return Err("cannot move the relay: the target already holds relay state".into());
    }
    Ok(Some((source, target)))
}

/// Copies every version in row id order, reporting progress on stderr; returns how many.
async fn copy(source: &SqliteExport, importer: &PostgresImporter<'_>, total: u64) -> Result<u64, String> {
    let (mut after, mut copied) = (0, 0u64);
    loop {
        let batch = source.versions_after(after, BATCH).map_err(|e| format!("reading the source failed: {e}"))?;
        let Some(&(last, _)) = batch.last() else { break };
        after = last;
        for chunk in chunks(batch.into_iter().map(|(_, version)| version)) {
            copied += importer.import_versions(chunk).await.map_err(|e| {
                format!(
                    "copying failed after {copied} versions: {e}; the target now holds part of the store: \
                     empty it (or use a new schema) before running migrate-store again"
                )
            })?;
        }
        eprintln!("copied {copied} of {total} versions");
    }
    Ok(copied)
}

/// Splits a batch so that no part carries more than [`MAX_BATCH_BYTES`] of bodies (a single larger
/// version goes alone).
fn chunks(versions: impl Iterator<Item = RawVersion>) -> Vec<Vec<RawVersion>> {
    let mut parts: Vec<Vec<RawVersion>> = vec![Vec::new()];
    let mut bytes = 0;
    for version in versions {
        let size = version.body.as_ref().map_or(0, Vec::len);
        if bytes + size > MAX_BATCH_BYTES && parts.last().is_some_and(|p| !p.is_empty()) {
            parts.push(Vec::new());
            bytes = 0;
        }
        bytes += size;
        if let Some(part) = parts.last_mut() {
            part.push(version);
        }
    }
    parts.retain(|p| !p.is_empty());
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use fhirside_store::Method;

    fn version(size: usize) -> RawVersion {
        RawVersion {
            resource_type: "Binary".into(),
            id: "b".into(),
            version: 1,
            last_updated: 1,
            valid_to: None,
            deleted: false,
            method: Method::Post,
            body: Some(vec![b' '; size]),
            patient_compartments: Vec::new(),
        }
    }

    #[test]
    fn large_bodies_split_a_batch() {
        let big = MAX_BATCH_BYTES / 2 + 1;
        let sizes: Vec<usize> =
            chunks([version(big), version(big), version(10), version(MAX_BATCH_BYTES * 2)].into_iter())
                .iter()
                .map(Vec::len)
                .collect();
        assert_eq!(sizes, vec![1, 2, 1]);
        assert!(chunks(std::iter::empty()).is_empty());
    }
}
