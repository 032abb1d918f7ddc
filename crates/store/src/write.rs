//! What a write means, whatever the database: preconditions, conditional matching, versioning.
//!
//! Both backends carry out a [`WriteOp`] with this one piece of logic, so that `If-Match`,
//! conditional creates and updates, and deletion markers behave the same on SQLite and PostgreSQL.
//! A backend only provides the row operations ([`Rows`]) inside a transaction it has opened, and
//! the serialisation its concurrency model needs: the SQLite writer is one thread, so it needs
//! none; PostgreSQL replicas write concurrently, so it takes a lock per resource and per
//! conditional query before reading what the write depends on.

use crate::index::IndexEntries;
use crate::meta::{self, Unstamped};
use crate::model::{Cost, ImportLine, Method, StoreError, StoredVersion, WriteOp, WriteResult};
use crate::query::SearchQuery;

/// A version about to be inserted.
pub(crate) struct NewVersion<'a> {
    pub resource_type: &'a str,
    pub id: &'a str,
    pub version: u64,
    pub last_updated: i64,
    /// The stamped JSON; `None` for a deletion marker.
    pub body: Option<&'a [u8]>,
    pub method: Method,
}

/// The row operations a backend performs inside the transaction a write runs in.
pub(crate) trait Rows {
    /// Where a version's row is: a row id on SQLite; on PostgreSQL also its shard key, which every
    /// statement on a version names so that a sharded database (Citus) routes it to one shard.
    type Key;
    /// Serialises the writes to one resource until the transaction ends (concurrent writers only).
    fn lock_resource(&mut self, resource_type: &str, id: &str) -> Result<(), StoreError>;
    /// Serialises conditional interactions with the same criteria, so that two racing conditional
    /// creates cannot both find nothing and both create.
    fn lock_query(&mut self, resource_type: &str, query: &SearchQuery) -> Result<(), StoreError>;
    /// The current version (possibly a deletion marker) with where its row is.
    fn current(&mut self, resource_type: &str, id: &str) -> Result<Option<(Self::Key, StoredVersion)>, StoreError>;
    /// Up to `limit` current, live matches, and whether there are more.
    fn matches(&mut self, query: &SearchQuery, limit: u32) -> Result<(Vec<StoredVersion>, bool), StoreError>;
    /// The `lastUpdated` of a new version: later than `previous` (the version it replaces) and than
    /// every timestamp this transaction handed out before.
    fn next_timestamp(&mut self, previous: Option<i64>) -> Result<i64, StoreError>;
    /// Ends the version at `key` at `valid_to` and drops its index rows.
    fn retire(&mut self, key: &Self::Key, valid_to: i64) -> Result<(), StoreError>;
    /// Inserts a version with its index rows (none for a deletion marker). It follows `previous`,
    /// the resource's current version, where there is one (a sharded store keeps every version of a
    /// resource on the shard of its first); a new resource is placed by its compartments in `index`.
    fn insert_version(
        &mut self,
        version: &NewVersion<'_>,
        previous: Option<&Self::Key>,
        index: &IndexEntries,
    ) -> Result<(), StoreError>;
}

/// Carries out one write inside the caller's transaction.
pub(crate) fn apply(rows: &mut impl Rows, op: WriteOp, cost: &mut Cost) -> Result<WriteResult, StoreError> {
    match op {
        WriteOp::Create { resource_type, id, resource, index, if_none_exist } => {
            if let Some(query) = if_none_exist {
                if let Some(existing) = single_match(rows, &resource_type, &query, cost)? {
                    return Ok(WriteResult::Existing(existing));
                }
            }
            put(rows, &resource_type, &id, resource, &index, None, Method::Post, cost)
        }
        WriteOp::Update { resource_type, id, resource, index, if_match } => {
            put(rows, &resource_type, &id, resource, &index, if_match, Method::Put, cost)
        }
        WriteOp::ConditionalUpdate { resource_type, query, new_id, body_id, resource, index, if_match } => {
            let id = match (single_match(rows, &resource_type, &query, cost)?, body_id) {
                (Some(existing), Some(body_id)) if existing.id != body_id => {
                    return Err(StoreError::Invalid(format!(
                        "The id in the body ('{body_id}') does not match the matched resource ('{}').",
                        existing.id
                    )));
                }
                (Some(existing), _) => existing.id,
                (None, Some(body_id)) => {
                    rows.lock_resource(&resource_type, &body_id)?;
                    let taken = rows.current(&resource_type, &body_id)?.is_some_and(|(_, v)| !v.deleted);
                    if taken {
                        return Err(StoreError::Conflict(format!(
                            "No resource matched, but {resource_type}/{body_id} exists and does not match the criteria."
                        )));
                    }
                    body_id
                }
                (None, None) => new_id,
            };
            put(rows, &resource_type, &id, resource, &index, if_match, Method::Put, cost)
        }
        WriteOp::Delete { resource_type, id, if_match } => {
            rows.lock_resource(&resource_type, &id)?;
            let current = rows.current(&resource_type, &id)?;
            cost.rows_read += 1;
            if let (Some(expected), Some((_, v))) = (if_match, &current) {
                if v.deleted || v.version != expected {
                    return Err(StoreError::VersionConflict { expected, current: Some(v.version) });
                }
            }
            match current {
                Some((key, v)) if !v.deleted => Ok(WriteResult::Deleted(vec![delete(rows, &key, &v, cost)?])),
                _ => Ok(WriteResult::Deleted(Vec::new())),
            }
        }
        WriteOp::ConditionalDelete { resource_type, query, max } => {
            rows.lock_query(&resource_type, &query)?;
            let (matches, more) = rows.matches(&query, max)?;
            cost.rows_read += matches.len().max(1) as u64;
            if more {
                return Err(StoreError::TooManyMatches { resource_type, matched: matches.len() + 1 });
            }
            let mut deleted = Vec::with_capacity(matches.len());
            for version in matches {
                rows.lock_resource(&version.resource_type, &version.id)?;
                // Re-read under the lock: another writer may have replaced it since the search.
                match rows.current(&version.resource_type, &version.id)? {
                    Some((key, current)) if !current.deleted => deleted.push(delete(rows, &key, &current, cost)?),
                    _ => {}
                }
            }
            Ok(WriteResult::Deleted(deleted))
        }
        WriteOp::Import(line) => import(rows, line, cost),
    }
}

/// One imported resource. Everything that can refuse it is decided before any row changes, so
/// that the caller's transaction (a batch of lines) can go on after a refusal.
///
/// - Identical to the current version (its `meta` aside): nothing is written (`Unchanged`).
/// - No version to keep: the next version, now, as an update would write it.
/// - A version to keep that is after the current one (and, when given, a later `lastUpdated`):
///   it becomes the current version with its own number and time. The same number again with the
///   same content is `Unchanged`; anything older or conflicting is refused, since history before
///   the current version is not rewritten.
/// - Soft-deleted (an export's deleted resource): the version, then a deletion marker after it. A
///   resource deleted already, at this version or later, is `Unchanged` (the marker's version is
///   returned), so that importing the same export again writes nothing.
fn import(rows: &mut impl Rows, line: ImportLine, cost: &mut Cost) -> Result<WriteResult, StoreError> {
    let ImportLine { resource_type, id, resource, index, keep, soft_deleted } = line;
    let (resource_type, id, index) = (resource_type.as_str(), id.as_str(), &index);
    rows.lock_resource(resource_type, id)?;
    cost.rows_read += 1;
    let current = rows.current(resource_type, id)?;
    if let (true, Some((_, v))) = (soft_deleted, &current) {
        if v.deleted && keep.and_then(|k| k.version).is_none_or(|version| version < v.version) {
            return Ok(WriteResult::Unchanged(v.clone()));
        }
    }
    if let Some((_, v)) = &current {
        let same_version = keep.and_then(|k| k.version).is_none_or(|version| version == v.version);
        if !v.deleted && same_version {
            let restamped = meta::stamp(&resource, resource_type, id, v.version, &meta::format_instant(v.last_updated));
            if restamped == v.body.as_ref() {
                return Ok(WriteResult::Unchanged(v.clone()));
            }
        }
    }
    let previous = current.as_ref().map(|(_, v)| (v.version, v.last_updated));
    let (version, last_updated) = match keep {
        None | Some(crate::model::ImportedMeta { version: None, last_updated: None }) => {
            (previous.map_or(1, |(v, _)| v + 1), rows.next_timestamp(previous.map(|(_, t)| t))?)
        }
        Some(crate::model::ImportedMeta { version, last_updated }) => {
            let version = version.unwrap_or(previous.map_or(1, |(v, _)| v + 1));
            if let Some((current_version, current_time)) = previous {
                if version <= current_version {
                    return Err(StoreError::Conflict(format!(
                        "{resource_type}/{id} already has version {current_version}; version {version} with other \
                         content cannot be imported before it"
                    )));
                }
                if last_updated.is_some_and(|t| t <= current_time) {
                    return Err(StoreError::Conflict(format!(
                        "{resource_type}/{id}: the imported lastUpdated is not after the current version's"
                    )));
                }
            }
            let last_updated = match last_updated {
                Some(t) => t,
                None => rows.next_timestamp(previous.map(|(_, t)| t))?,
            };
            (version, last_updated)
        }
    };
    let next = Next { resource_type, id, version, last_updated, method: Method::Put };
    let stored = store_version(rows, current, next, &resource, index, cost)?;
    if soft_deleted {
        let (key, version) = rows
            .current(resource_type, id)?
            .ok_or_else(|| StoreError::Backend(format!("{resource_type}/{id} vanished while it was imported")))?;
        delete(rows, &key, &version, cost)?;
    }
    Ok(stored)
}

/// Zero or one match for a conditional interaction; more is an error.
fn single_match(
    rows: &mut impl Rows,
    resource_type: &str,
    query: &SearchQuery,
    cost: &mut Cost,
) -> Result<Option<StoredVersion>, StoreError> {
    rows.lock_query(resource_type, query)?;
    let (mut matches, more) = rows.matches(query, 1)?;
    cost.rows_read += 1;
    if more {
        return Err(StoreError::TooManyMatches { resource_type: resource_type.to_owned(), matched: 2 });
    }
    Ok(matches.pop())
}

/// Writes a new version of `resource_type/id` (version 1 if it never existed).
#[allow(clippy::too_many_arguments)]
fn put(
    rows: &mut impl Rows,
    resource_type: &str,
    id: &str,
    resource: Unstamped,
    index: &IndexEntries,
    if_match: Option<u64>,
    method: Method,
    cost: &mut Cost,
) -> Result<WriteResult, StoreError> {
    // A create carries a fresh server-assigned id: nobody else writes it, so there is nothing to
    // lock or look up (the unique index on current versions would still refuse a collision).
    let current = match method {
        Method::Post => None,
        _ => {
            rows.lock_resource(resource_type, id)?;
            cost.rows_read += 1;
            rows.current(resource_type, id)?
        }
    };
    match (if_match, &current) {
        (Some(_), None) => return Err(StoreError::NotFoundForMatch),
        (Some(expected), Some((_, v))) if v.version != expected || v.deleted => {
            return Err(StoreError::VersionConflict { expected, current: Some(v.version) });
        }
        _ => {}
    }
    let last_updated = rows.next_timestamp(current.as_ref().map(|(_, v)| v.last_updated))?;
    let version = current.as_ref().map_or(1, |(_, v)| v.version + 1);
    let next = Next { resource_type, id, version, last_updated, method };
    store_version(rows, current, next, &resource, index, cost)
}

/// The identity of a version about to be stored.
struct Next<'a> {
    resource_type: &'a str,
    id: &'a str,
    version: u64,
    last_updated: i64,
    method: Method,
}

/// Stores `resource` as the new current version, retiring `current`: how every write that keeps
/// content ends, once it has decided the version's number and time.
fn store_version<R: Rows>(
    rows: &mut R,
    current: Option<(R::Key, StoredVersion)>,
    next: Next<'_>,
    resource: &Unstamped,
    index: &IndexEntries,
    cost: &mut Cost,
) -> Result<WriteResult, StoreError> {
    let Next { resource_type, id, version, last_updated, method } = next;
    let created = current.as_ref().is_none_or(|(_, v)| v.deleted);
    if let Some((key, _)) = &current {
        rows.retire(key, last_updated)?;
    }
    let body = meta::stamp(resource, resource_type, id, version, &meta::format_instant(last_updated));
    let new = NewVersion { resource_type, id, version, last_updated, body: Some(&body), method };
    rows.insert_version(&new, current.as_ref().map(|(key, _)| key), index)?;
    cost.rows_written += 1 + index.len() as u64;
    cost.bytes_written += body.len() as u64;
    let stored = StoredVersion {
        resource_type: resource_type.to_owned(),
        id: id.to_owned(),
        version,
        last_updated,
        deleted: false,
        method,
        body: body.into(),
    };
    Ok(if created { WriteResult::Created(stored) } else { WriteResult::Updated(stored) })
}

/// Writes a deletion marker after `current` (at `key`), which the caller has locked.
fn delete<R: Rows>(
    rows: &mut R,
    key: &R::Key,
    current: &StoredVersion,
    cost: &mut Cost,
) -> Result<StoredVersion, StoreError> {
    let last_updated = rows.next_timestamp(Some(current.last_updated))?;
    rows.retire(key, last_updated)?;
    let version = current.version + 1;
    let marker = NewVersion {
        resource_type: &current.resource_type,
        id: &current.id,
        version,
        last_updated,
        body: None,
        method: Method::Delete,
    };
    rows.insert_version(&marker, Some(key), &IndexEntries::default())?;
    cost.rows_written += 1;
    Ok(StoredVersion {
        resource_type: current.resource_type.clone(),
        id: current.id.clone(),
        version,
        last_updated,
        deleted: true,
        method: Method::Delete,
        body: Default::default(),
    })
}
