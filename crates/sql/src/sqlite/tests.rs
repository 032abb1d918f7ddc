use super::*;
use crate::params;
use crate::testing::{StoreError, TestDir};

const MIGRATIONS: &[&str] =
    &["CREATE TABLE things (id TEXT PRIMARY KEY, n INTEGER, data BLOB)", "ALTER TABLE things ADD COLUMN note TEXT"];

/// A data directory of this test's own.
fn test_dir(test: &str) -> TestDir {
    TestDir::create(&format!("fhirside-sql-test-{}-{test}", std::process::id()))
}

fn count(conn: &mut Connection) -> i64 {
    SqliteDb(conn).query_one("SELECT count(*) FROM things", &[]).unwrap().int(0).unwrap()
}

#[test]
fn open_creates_the_file_for_its_owner_in_wal_mode_and_migrates_once() {
    let dir = test_dir("open");
    let conn = open(dir.path(), "things.db", MIGRATIONS).unwrap();
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |row| row.get(0)).unwrap();
    assert_eq!(mode, "wal");
    let version: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0)).unwrap();
    assert_eq!(version, 2);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("things.db")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    SqliteDb(&conn).execute("INSERT INTO things (id, note) VALUES (?1, ?2)", &params!["a", "kept"]).unwrap();
    drop(conn);
    // Opened again: nothing to migrate, the row is still there.
    let conn = open(dir.path(), "things.db", MIGRATIONS).unwrap();
    let row = SqliteDb(&conn).query_one("SELECT note FROM things WHERE id = ?1", &params!["a"]).unwrap();
    assert_eq!(row.text(0).unwrap(), "kept");
}

#[test]
fn open_refuses_a_file_of_a_newer_build() {
    let dir = test_dir("newer");
    drop(open(dir.path(), "things.db", MIGRATIONS).unwrap());
    let e = open(dir.path(), "things.db", &MIGRATIONS[..1]).unwrap_err();
    assert!(e.to_string().contains("things.db has schema version 2, newer than this build's 1"), "{e}");
}

#[test]
fn values_go_in_and_come_out_as_they_were() {
    let dir = test_dir("values");
    let conn = open(dir.path(), "things.db", MIGRATIONS).unwrap();
    let mut db = SqliteDb(&conn);
    assert_eq!(db.dialect(), Dialect::Sqlite);
    let none: Option<i64> = None;
    let inserted = db
        .execute(
            "INSERT INTO things (id, n, data, note) VALUES (?1, ?2, ?3, ?4)",
            &params!["a", -5, &vec![0u8, 255], none],
        )
        .unwrap();
    assert_eq!(inserted, 1);
    let row = db.query_one("SELECT id, n, data, note FROM things", &[]).unwrap();
    assert_eq!(row.0, [Value::Text("a".into()), Value::Integer(-5), Value::Blob(vec![0, 255]), Value::Null]);
    assert!(db.query_opt("SELECT id FROM things WHERE id = ?1", &params!["b"]).unwrap().is_none());
    assert!(db.query_one("SELECT id FROM things WHERE id = ?1", &params!["b"]).is_err());
    // The stores keep no real numbers.
    let e = db.query("SELECT 1.5", &[]).unwrap_err();
    assert_eq!(e.to_string(), "unexpected real number 1.5 in column 0");
}

#[test]
fn write_commits_what_succeeds_and_rolls_back_what_fails() {
    let dir = test_dir("write");
    let mut conn = open(dir.path(), "things.db", MIGRATIONS).unwrap();
    let inserted: Result<u64> = write(&mut conn, |db| db.execute("INSERT INTO things (id) VALUES ('a')", &[]));
    assert_eq!(inserted.unwrap(), 1);
    assert_eq!(count(&mut conn), 1);

    // The caller's own error passes through unchanged, and the transaction's writes are undone.
    let refused: std::result::Result<(), StoreError> = write(&mut conn, |db| {
        db.execute("INSERT INTO things (id) VALUES ('b')", &[])?;
        Err(StoreError::Refused)
    });
    assert_eq!(refused, Err(StoreError::Refused));
    assert_eq!(count(&mut conn), 1);
    let failed: std::result::Result<(), StoreError> = write(&mut conn, |db| {
        db.execute("INSERT INTO things (id) VALUES ('c')", &[])?;
        db.execute("INSERT INTO things (id) VALUES ('a')", &[])?;
        Ok(())
    });
    assert!(matches!(&failed, Err(StoreError::Database(m)) if m.contains("UNIQUE")), "{failed:?}");
    assert_eq!(count(&mut conn), 1);
}
