//! Black-box tests: they start the real `fhirside` binary on a free port and speak HTTP(S) to it.
//!
//! One binary made of modules (see DO_NOT_ADD_TEST_FILES_HERE.md). [`harness`] starts servers and
//! holds a small HTTP/1.1 client; each module covers one interaction or property.

mod harness;

mod access;
mod admin_cli;
mod audit;
mod authority;
mod bulk_cli;
mod bulk_storage;
mod bundles;
mod capabilities;
mod clients;
mod conditional;
mod cors;
mod crud;
mod durability;
mod encryption;
mod errors;
mod everything;
mod examples;
mod export;
mod history;
mod import;
mod log_hygiene;
mod medtech;
mod medtech_brokers;
mod migrate_store;
mod negotiation;
mod patch;
mod relay;
mod replicas;
mod search;
mod search_types;
mod smart;
mod smart_app;
mod smart_launch;
mod startup;
mod synthea;
mod synthea_search;
mod tls;
mod validate;
