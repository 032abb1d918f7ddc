//! The values that cross the store boundary: stored versions, write operations and their results,
//! errors, and the cost of each call.

use crate::meta::Unstamped;
use bytes::Bytes;

use crate::index::IndexEntries;
use crate::query::SearchQuery;

/// How a version came to be; history bundles report it as `entry.request.method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Post,
    Put,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
        }
    }

    pub(crate) fn to_db(self) -> i64 {
        match self {
            Method::Post => 1,
            Method::Put => 2,
            Method::Delete => 3,
        }
    }

    pub(crate) fn from_db(value: i64) -> Method {
        match value {
            1 => Method::Post,
            3 => Method::Delete,
            _ => Method::Put,
        }
    }
}

/// One version of one resource as stored.
#[derive(Debug, Clone)]
pub struct StoredVersion {
    pub resource_type: String,
    pub id: String,
    /// `meta.versionId`, counting from 1.
    pub version: u64,
    /// `meta.lastUpdated` in microseconds since the Unix epoch (UTC).
    pub last_updated: i64,
    /// True for the version a delete created: it has no body.
    pub deleted: bool,
    pub method: Method,
    /// The resource JSON exactly as it is served, with `id` and `meta` already set. Empty if deleted.
    pub body: Bytes,
}

/// What a store call cost, in the units of `x-ms-request-charge` (see the README).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cost {
    pub rows_read: u64,
    pub bytes_read: u64,
    pub rows_written: u64,
    pub bytes_written: u64,
}

impl Cost {
    pub fn add(&mut self, other: Cost) {
        self.rows_read += other.rows_read;
        self.bytes_read += other.bytes_read;
        self.rows_written += other.rows_written;
        self.bytes_written += other.bytes_written;
    }

    /// The request charge: one unit per row read and per started KiB read, five per row written
    /// and per started KiB written. Deterministic, so the same request always costs the same.
    pub fn request_charge(&self) -> u64 {
        let kib = |b: u64| b.div_ceil(1024);
        self.rows_read + kib(self.bytes_read) + 5 * (self.rows_written + kib(self.bytes_written))
    }
}

/// A store result and what it cost.
#[derive(Debug)]
pub struct Outcome<T> {
    pub value: T,
    pub cost: Cost,
}

/// A write, carried out atomically by [`crate::ResourceStore::write`].
///
/// `resource` is a validated resource, serialized ahead of the store ([`Unstamped`]); the store sets
/// its `id`, `meta.versionId` and `meta.lastUpdated` (keeping any other `meta` elements).
#[derive(Debug)]
pub enum WriteOp {
    /// `POST /{type}`; with `if_none_exist`, only if nothing matches (`If-None-Exist`).
    Create {
        resource_type: String,
        id: String,
        resource: Unstamped,
        index: IndexEntries,
        if_none_exist: Option<SearchQuery>,
    },
    /// `PUT /{type}/{id}`: update, or create with the client's id.
    Update { resource_type: String, id: String, resource: Unstamped, index: IndexEntries, if_match: Option<u64> },
    /// `PUT /{type}?query`: update the one match, or create with `new_id` when there is none.
    ConditionalUpdate {
        resource_type: String,
        query: SearchQuery,
        new_id: String,
        /// The `id` the body carried, if any: it must agree with the match.
        body_id: Option<String>,
        resource: Unstamped,
        index: IndexEntries,
        if_match: Option<u64>,
    },
    /// `DELETE /{type}/{id}`.
    Delete { resource_type: String, id: String, if_match: Option<u64> },
    /// `DELETE /{type}?query`: delete up to `max` matches; more matches fail the whole operation.
    ConditionalDelete { resource_type: String, query: SearchQuery, max: u32 },
    /// One resource of a `$import`; see [`ImportLine`].
    Import(ImportLine),
}

/// One resource of a `$import`. A resource identical to the current version (its `meta` aside) is
/// left as it is, so that a resumed import repeats nothing.
#[derive(Debug)]
pub struct ImportLine {
    pub resource_type: String,
    pub id: String,
    pub resource: Unstamped,
    pub index: IndexEntries,
    /// `meta.versionId` and `meta.lastUpdated` (microseconds) to keep: `IncrementalLoad`.
    /// `None` writes the next version now (`InitialLoad`, or a file without them).
    pub keep: Option<ImportedMeta>,
    /// The resource was deleted after this version (an export's soft-deleted resource): a
    /// deletion marker follows it.
    pub soft_deleted: bool,
}

/// The version and time an imported resource keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportedMeta {
    /// `None`: the version after the current one.
    pub version: Option<u64>,
    /// `None`: now.
    pub last_updated: Option<i64>,
}

/// The result of a [`WriteOp`].
#[derive(Debug)]
pub enum WriteResult {
    /// A new resource (including update-as-create and re-creating a deleted one).
    Created(StoredVersion),
    /// A new version of an existing resource.
    Updated(StoredVersion),
    /// A conditional create found this existing resource and stored nothing.
    Existing(StoredVersion),
    /// Deletion markers written (empty when there was nothing to delete).
    Deleted(Vec<StoredVersion>),
    /// An import found this version already stored, as it is, and stored nothing.
    Unchanged(StoredVersion),
}

/// Why a store call failed. The server maps each case to an HTTP status and an OperationOutcome.
#[derive(Debug)]
pub enum StoreError {
    /// `If-Match` named another version than the current one (`412`).
    VersionConflict { expected: u64, current: Option<u64> },
    /// A conditional operation matched more resources than it may act on (`412`).
    TooManyMatches { resource_type: String, matched: usize },
    /// `If-Match` was given for a resource that does not exist (`412`).
    NotFoundForMatch,
    /// The request contradicts what is stored (`400`), e.g. a conditional update whose body id
    /// differs from the matched resource's.
    Invalid(String),
    /// The request conflicts with an existing resource (`409`).
    Conflict(String),
    /// The database failed; the message is for logs, never for clients.
    Backend(String),
    /// Transaction work asked for its writes to be rolled back (its caller knows why).
    RolledBack,
    /// The store is shutting down or its writer stopped.
    Unavailable,
}

impl StoreError {
    /// Whether this refuses one line of a `$import` (it conflicts with what is stored, or
    /// contradicts itself), written nothing for it, and lets the rest of the batch go on.
    pub fn refuses_one_line(&self) -> bool {
        matches!(self, StoreError::Conflict(_) | StoreError::Invalid(_))
    }
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::VersionConflict { expected, current } => {
                write!(f, "version conflict: expected {expected}, current {current:?}")
            }
            StoreError::TooManyMatches { resource_type, matched } => {
                write!(f, "conditional operation on {resource_type} matched {matched} resources")
            }
            StoreError::NotFoundForMatch => f.write_str("If-Match on a resource that does not exist"),
            StoreError::Invalid(message) | StoreError::Conflict(message) => f.write_str(message),
            StoreError::Backend(message) => write!(f, "database error: {message}"),
            StoreError::RolledBack => f.write_str("transaction rolled back"),
            StoreError::Unavailable => f.write_str("store unavailable"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        StoreError::Backend(error.to_string())
    }
}
