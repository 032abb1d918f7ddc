//! The session against a real PostgreSQL, each test in a schema of its own ([`crate::testing`]).

use super::*;
use crate::params;
use crate::testing::{admin_client, StoreError, TestSchema};

const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, description: "things", sql: "CREATE TABLE sqltest_things (id TEXT PRIMARY KEY, n BIGINT)" },
    Migration { version: 2, description: "a note", sql: "ALTER TABLE sqltest_things ADD COLUMN note TEXT" },
];

const TABLES: Tables = Tables { prefix: "sqltest", migrations: MIGRATIONS };

fn open(schema: &TestSchema) -> PgConnection {
    PgConnection::open(&schema.url, &TABLES).unwrap()
}

/// A schema of this test run's own.
fn new_schema(test: &str) -> TestSchema {
    TestSchema::create(&format!("fhirside_sql_test_{}_{test}", std::process::id()))
}

fn version(conn: &PgConnection) -> i64 {
    conn.read(|db| db.query_one("SELECT version FROM sqltest_version", &[])?.int(0)).unwrap()
}

fn insert(conn: &PgConnection, id: &str) -> Result<u64> {
    conn.write(|db| db.execute("INSERT INTO sqltest_things (id) VALUES (?1)", &params![id]))
}

fn count(conn: &PgConnection) -> i64 {
    conn.read(|db| db.query_one("SELECT count(*) FROM sqltest_things", &[])?.int(0)).unwrap()
}

#[test]
fn open_migrates_once_and_refuses_a_newer_schema() {
    let schema = new_schema("migrate");
    let conn = open(&schema);
    let ledger = |conn: &PgConnection| -> Vec<Row> {
        conn.read(|db| db.query("SELECT version, description FROM sqltest_migration ORDER BY version", &[])).unwrap()
    };
    let applied: Vec<(i64, String)> = ledger(&conn).iter().map(|r| (r.int(0).unwrap(), r.text(1).unwrap())).collect();
    assert_eq!(applied, [(1, "things".to_owned()), (2, "a note".to_owned())]);
    assert_eq!(version(&conn), 0, "the version row comes with the ledger");
    insert(&conn, "a").unwrap();
    drop(conn);
    let conn = open(&schema);
    assert_eq!(ledger(&conn).len(), 2, "nothing to apply the second time");
    assert_eq!(version(&conn), 1, "the version row is kept");
    drop(conn);

    admin_client()
        .batch_execute(&format!(
            "INSERT INTO {}.sqltest_migration (version, description) VALUES (3, 'newer')",
            schema.name
        ))
        .unwrap();
    let Err(e) = PgConnection::open(&schema.url, &TABLES) else { panic!("a newer schema was opened") };
    assert!(e.to_string().contains("sqltest tables have schema version 3, newer than this build's 2"), "{e}");
}

#[test]
fn write_bumps_the_version_and_commits_or_rolls_back() {
    let schema = new_schema("write");
    let conn = open(&schema);
    assert_eq!(conn.read(|db| Ok::<_, Error>(db.dialect())).unwrap(), Dialect::Postgres);
    assert_eq!(insert(&conn, "a").unwrap(), 1);
    assert_eq!((count(&conn), version(&conn)), (1, 1));

    // The caller's own error passes through, and the transaction's writes are undone.
    let refused: std::result::Result<(), StoreError> = conn.write(|db| {
        db.execute("INSERT INTO sqltest_things (id) VALUES ('b')", &[])?;
        Err(StoreError::Refused)
    });
    assert_eq!(refused, Err(StoreError::Refused));
    let failed: std::result::Result<(), StoreError> = conn.write(|db| {
        db.execute("INSERT INTO sqltest_things (id) VALUES ('c')", &[])?;
        db.execute("INSERT INTO sqltest_things (id) VALUES ('a')", &[])?;
        Ok(())
    });
    assert!(matches!(&failed, Err(StoreError::Database(m)) if m.contains("(23505)")), "{failed:?}");
    assert_eq!((count(&conn), version(&conn)), (1, 1), "nothing of either is left");

    // A panic in the caller rolls back too, and the session serves the next caller.
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _: Result<()> = conn.write(|db| {
            db.execute("INSERT INTO sqltest_things (id) VALUES ('d')", &[])?;
            panic!("the caller fails half-way");
        });
    }));
    assert!(panicked.is_err());
    assert_eq!((count(&conn), version(&conn)), (1, 1));
}

#[test]
fn values_go_in_and_come_out_as_they_were() {
    let schema = new_schema("values");
    let conn = open(&schema);
    let row = conn
        .read(|db| {
            db.query_one(
                "SELECT ?1::bigint, ?2::int, ?3::smallint, ?4::text, ?5::bytea, ?6::text, true, 'it''s ?1'",
                &params![i64::MAX, -7, 3, "t", &vec![0u8, 255], None::<&str>],
            )
        })
        .unwrap();
    assert_eq!(
        row.0,
        [
            Value::Integer(i64::MAX),
            Value::Integer(-7),
            Value::Integer(3),
            Value::Text("t".into()),
            Value::Blob(vec![0, 255]),
            Value::Null,
            Value::Integer(1),
            Value::Text("it's ?1".into()),
        ]
    );
    // An integer too wide for the column's type is an error, not a wrapped number.
    let e = conn.read(|db| db.query("SELECT ?1::int", &params![i64::from(i32::MAX) + 1])).unwrap_err();
    assert!(matches!(e, Error::Database(_)), "{e}");
}

/// A connection PostgreSQL ended (a restart, a failover, an administrator) fails the operation
/// that finds it broken; the next one connects again.
#[test]
fn a_broken_connection_is_replaced() {
    let schema = new_schema("reconnect");
    let conn = PgConnection::open(&schema.named_url(), &TABLES).unwrap();
    insert(&conn, "a").unwrap();
    assert_eq!(schema.end_sessions(), 1, "the session's one connection");
    let broken = conn.read(|db| db.query("SELECT id FROM sqltest_things", &[]));
    assert!(matches!(broken, Err(Error::Database(_))), "the broken connection's operation fails: {broken:?}");
    assert_eq!(count(&conn), 1, "the next one reconnects");
    insert(&conn, "b").unwrap();
    assert_eq!(count(&conn), 2);
}

#[test]
fn a_bad_url_is_the_callers_mistake_and_describe_names_no_password() {
    assert!(matches!(PgConnection::open("postgres://host:notaport/db", &TABLES), Err(Error::Invalid(_))));
    let config: Config = "postgres://alice:secret@db.example:5433/fhir".parse().unwrap();
    assert_eq!(describe(&config), "alice@db.example:5433/fhir");
}
