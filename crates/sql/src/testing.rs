//! Places for the tests of this crate and of the stores built on it to keep a store in: a data
//! directory of its own, or a schema of its own on the PostgreSQL at `FHIRSIDE_TEST_POSTGRES`
//! (default `postgres://root@127.0.0.1:5432/test`, as the resource store's tests). Tests that use
//! PostgreSQL fail, never skip, when the server is missing: CI starts one.

use std::path::{Path, PathBuf};

/// A directory of its own under the system's temporary one, removed with all it holds when this
/// is dropped.
pub struct TestDir(PathBuf);

impl TestDir {
    /// Creates the directory `name` (unique to the test and the run).
    pub fn create(name: &str) -> TestDir {
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path).unwrap();
        TestDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The server's URL.
pub fn postgres_url() -> String {
    std::env::var("FHIRSIDE_TEST_POSTGRES").unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".to_owned())
}

/// A connection for setting up and inspecting schemas, outside any store.
pub fn admin_client() -> postgres::Client {
    postgres::Client::connect(&postgres_url(), postgres::NoTls).expect("PostgreSQL at FHIRSIDE_TEST_POSTGRES")
}

/// A schema of its own, dropped with all it holds when this is dropped.
pub struct TestSchema {
    pub name: String,
    /// The server's URL with the schema as the search path.
    pub url: String,
}

impl TestSchema {
    /// Creates the schema `name` (a plain identifier, unique to the test), first dropping one that
    /// a killed run left behind.
    pub fn create(name: &str) -> TestSchema {
        admin_client().batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}")).unwrap();
        let base = postgres_url();
        let separator = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{separator}options=-csearch_path%3D{name}");
        TestSchema { name: name.to_owned(), url }
    }

    /// The URL with the schema's name as the application name, by which [`TestSchema::end_sessions`]
    /// finds the sessions opened with it.
    pub fn named_url(&self) -> String {
        format!("{}&application_name={}", self.url, self.name)
    }

    /// Ends the backends of the sessions opened with [`TestSchema::named_url`], as a restart of the
    /// server or an administrator would, and waits until they are gone. How many it ended.
    pub fn end_sessions(&self) -> usize {
        let mut admin = admin_client();
        // The function in the select list, so that it runs only for the rows the filter keeps.
        let ended: Vec<(i32, bool)> = admin
            .query(
                "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
                &[&self.name],
            )
            .unwrap()
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        assert!(ended.iter().all(|(_, terminated)| *terminated), "not every backend was ended: {ended:?}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        for (pid, _) in &ended {
            while !admin.query("SELECT 1 FROM pg_stat_activity WHERE pid = $1", &[pid]).unwrap().is_empty() {
                assert!(std::time::Instant::now() < deadline, "backend {pid} did not end");
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        ended.len()
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        if let Ok(mut client) = postgres::Client::connect(&postgres_url(), postgres::NoTls) {
            let _ = client.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name));
        }
    }
}

/// A store's own error, for this crate's tests of what passes through a write transaction.
#[cfg(test)]
#[derive(Debug, PartialEq)]
pub(crate) enum StoreError {
    Refused,
    Database(String),
}

#[cfg(test)]
impl From<crate::Error> for StoreError {
    fn from(e: crate::Error) -> StoreError {
        StoreError::Database(e.to_string())
    }
}
