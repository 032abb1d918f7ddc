//! Distributing the store's tables when the database is a Citus coordinator.
//!
//! On a database with the `citus` extension, [`distribute`] (run by `fhirside db migrate` and at
//! `serve` start, after the migrations and under their lock) makes `resource` a hash-distributed
//! table by `shard_key`, the index tables distributed by the same column in its co-location group
//! (so that a resource's index rows are on its shard and the joins between them run on the shard),
//! and `resource_key` distributed by `id` in a group of its own, since its rows are found by
//! `Type/id`, not by shard. Every other table stays a plain table on the coordinator: the migration
//! ledgers, `setting` and `job` (small; the job lease's `FOR UPDATE SKIP LOCKED` is local), the
//! identity and audit tables. None is a reference table: no query joins them with distributed
//! tables, and a reference table's every write is a transaction on every node.
//!
//! Tables already distributed are skipped, so the step can be run again; a table distributed by
//! another column than the one expected is refused rather than left half-right. The statements
//! follow Citus 13's `create_distributed_table` (with `colocate_with`) and
//! `truncate_local_data_after_distributing_table`, which drops the coordinator's copy of rows a
//! table held before it was distributed. [`plan`] decides them from the catalog, so that it can be
//! tested without a Citus cluster. Migrations that come later run on the coordinator as before:
//! Citus propagates their DDL to the shards.

use super::pool::Conn;
use crate::model::StoreError;

/// A distributed table: its distribution column and the table whose co-location group it joins
/// (`none`: a group of its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Distributed {
    pub table: &'static str,
    pub column: &'static str,
    pub colocate_with: &'static str,
}

const fn by_shard(table: &'static str) -> Distributed {
    Distributed { table, column: "shard_key", colocate_with: "resource" }
}

/// The store's distributed tables in the order they are distributed: `resource` first, since the
/// index tables join its co-location group.
pub(crate) const TABLES: &[Distributed] = &[
    Distributed { table: "resource", column: "shard_key", colocate_with: "none" },
    by_shard("token_index"),
    by_shard("date_index"),
    by_shard("reference_index"),
    by_shard("string_index"),
    by_shard("number_index"),
    by_shard("quantity_index"),
    by_shard("uri_index"),
    by_shard("compartment_index"),
    by_shard("text_index"),
    Distributed { table: "resource_key", column: "id", colocate_with: "none" },
];

/// Where a database stands with Citus (`fhirside db status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Distribution {
    /// No `citus` extension: plain PostgreSQL, nothing to distribute.
    Plain,
    /// A Citus database: the store's tables that are distributed, with their distribution column,
    /// and those `fhirside db migrate` would still distribute.
    Citus { distributed: Vec<(String, String)>, pending: Vec<&'static str> },
}

/// A table of the current schema that Citus knows: its distribution column when it is
/// hash-distributed, `None` for any other kind of Citus table (reference, local).
pub(super) type CatalogEntry = (String, Option<String>);

/// The statements that distribute what `catalog` (Citus's tables in the current schema) lacks.
pub(super) fn plan(catalog: &[CatalogEntry]) -> Result<Vec<String>, StoreError> {
    let mut statements = Vec::new();
    for t in TABLES {
        match catalog.iter().find(|(table, _)| table == t.table) {
            None => {
                statements.push(format!(
                    "SELECT create_distributed_table('{}', '{}', colocate_with => '{}')",
                    t.table, t.column, t.colocate_with
                ));
                statements.push(format!("SELECT truncate_local_data_after_distributing_table('{}')", t.table));
            }
            Some((_, Some(column))) if column == t.column => {}
            Some((_, column)) => {
                let what = column
                    .as_ref()
                    .map_or("a Citus table that is not hash-distributed".to_owned(), |c| format!("distributed by {c}"));
                return Err(StoreError::Backend(format!(
                    "table {} is {what}; Fhirside distributes it by {} (undistribute it, then run `fhirside db \
                     migrate` again)",
                    t.table, t.column
                )));
            }
        }
    }
    Ok(statements)
}

async fn has_citus(conn: &mut Conn) -> Result<bool, StoreError> {
    let row = conn.query_one("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')", &[]).await?;
    Ok(row.try_get(0)?)
}

/// Citus's tables in the current schema (only asked where the extension is installed: the catalog
/// table exists only then).
async fn catalog(conn: &mut Conn) -> Result<Vec<CatalogEntry>, StoreError> {
    let rows = conn
        .query(
            "SELECT c.relname::text,
                    CASE WHEN p.partmethod = 'h' THEN column_to_column_name(p.logicalrelid, p.partkey) END
             FROM pg_dist_partition p JOIN pg_class c ON c.oid = p.logicalrelid
             WHERE c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())",
            &[],
        )
        .await?;
    rows.iter().map(|row| Ok((row.try_get(0)?, row.try_get(1)?))).collect()
}

/// Where the database stands, without changing it.
pub(super) async fn inspect(conn: &mut Conn) -> Result<Distribution, StoreError> {
    if !has_citus(conn).await? {
        return Ok(Distribution::Plain);
    }
    let catalog = catalog(conn).await?;
    let distributed = TABLES
        .iter()
        .filter_map(|t| match catalog.iter().find(|(table, _)| table == t.table) {
            Some((table, Some(column))) => Some((table.clone(), column.clone())),
            _ => None,
        })
        .collect::<Vec<_>>();
    let pending = TABLES.iter().map(|t| t.table).filter(|t| !distributed.iter().any(|(d, _)| d == t)).collect();
    Ok(Distribution::Citus { distributed, pending })
}

/// Distributes the tables not yet distributed, on a Citus database; nothing on plain PostgreSQL.
/// Each statement commits on its own: a run that stops part way is completed by the next.
pub(super) async fn distribute(conn: &mut Conn) -> Result<Distribution, StoreError> {
    if !has_citus(conn).await? {
        return Ok(Distribution::Plain);
    }
    for statement in plan(&catalog(conn).await?)? {
        conn.batch(&statement)
            .await
            .map_err(|e| StoreError::Backend(format!("distributing the tables on Citus failed: {e} ({statement})")))?;
    }
    inspect(conn).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(table: &str, column: Option<&str>) -> CatalogEntry {
        (table.to_owned(), column.map(str::to_owned))
    }

    #[test]
    fn a_new_database_distributes_every_table_resource_first() {
        let statements = plan(&[]).unwrap();
        assert_eq!(statements.len(), 2 * TABLES.len());
        assert_eq!(
            &statements[..4],
            [
                "SELECT create_distributed_table('resource', 'shard_key', colocate_with => 'none')",
                "SELECT truncate_local_data_after_distributing_table('resource')",
                "SELECT create_distributed_table('token_index', 'shard_key', colocate_with => 'resource')",
                "SELECT truncate_local_data_after_distributing_table('token_index')",
            ]
        );
        for table in ["date_index", "reference_index", "string_index", "number_index", "quantity_index", "uri_index"]
            .into_iter()
            .chain(["compartment_index", "text_index"])
        {
            let create =
                format!("SELECT create_distributed_table('{table}', 'shard_key', colocate_with => 'resource')");
            assert!(statements.contains(&create), "{create}");
        }
        assert_eq!(
            statements[statements.len() - 2],
            "SELECT create_distributed_table('resource_key', 'id', colocate_with => 'none')"
        );
        // The coordinator's tables are never distributed.
        for local in ["job", "setting", "fhirside_migration", "identity_", "audit_"] {
            assert!(!statements.iter().any(|s| s.contains(&format!("('{local}"))), "{local}");
        }
    }

    #[test]
    fn what_is_distributed_is_skipped() {
        let mut catalog = vec![entry("resource", Some("shard_key")), entry("token_index", Some("shard_key"))];
        let statements = plan(&catalog).unwrap();
        assert_eq!(statements.len(), 2 * (TABLES.len() - 2));
        assert!(statements[0].contains("'date_index'"), "{}", statements[0]);
        assert!(!statements.iter().any(|s| s.contains("_table('resource'") || s.contains("_table('token_index'")));
        catalog = TABLES.iter().map(|t| entry(t.table, Some(t.column))).collect();
        // Unrelated Citus tables of the schema do not matter.
        catalog.push(entry("somebody_elses", None));
        assert!(plan(&catalog).unwrap().is_empty());
    }

    #[test]
    fn a_table_distributed_otherwise_is_refused() {
        let wrong = plan(&[entry("resource", Some("id"))]).unwrap_err().to_string();
        assert!(wrong.contains("resource is distributed by id"), "{wrong}");
        let reference = plan(&[entry("resource", Some("shard_key")), entry("token_index", None)]).unwrap_err();
        assert!(reference.to_string().contains("not hash-distributed"), "{reference}");
    }
}
