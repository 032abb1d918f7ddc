//! fhirside-objects against real storage: a local directory, Azurite (Azure Blob Storage) and
//! moto (S3), the servers started by the tests themselves (see servers.rs).

mod azure;
mod local;
mod managed_identity;
mod s3;
mod scenarios;
mod servers;
