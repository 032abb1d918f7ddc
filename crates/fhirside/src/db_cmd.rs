//! `fhirside db …`: the PostgreSQL schema, for operators.
//!
//! `fhirside serve` migrates a database that is behind by itself (under an advisory lock, so that
//! replicas starting together do not race); `db migrate` does the same ahead of a rollout, and
//! `db status` shows where a database stands without changing it. On a Citus coordinator (a
//! database with the `citus` extension) migrating also distributes the store's tables; both say
//! which are.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use fhirside_store::{PostgresConfig, PostgresDistribution, SchemaStatus};

#[derive(Args, Debug)]
pub struct DbArgs {
    #[command(subcommand)]
    command: DbCommand,
}

#[derive(Subcommand, Debug)]
enum DbCommand {
    /// Apply the schema migrations this build has and the database lacks.
    Migrate(Target),
    /// Show the database's schema version and the migrations this build would apply.
    Status(Target),
}

#[derive(Args, Debug)]
struct Target {
    /// TOML configuration file (only its `database` is used here).
    #[arg(long, env = "FHIRSIDE_CONFIG")]
    config: Option<PathBuf>,
    /// The PostgreSQL URL (`postgres://user@host:port/database`).
    #[arg(long, env = "FHIRSIDE_DATABASE_URL")]
    database: Option<String>,
}

pub fn run(args: DbArgs) -> Result<(), String> {
    let (migrate, target) = match args.command {
        DbCommand::Migrate(target) => (true, target),
        DbCommand::Status(target) => (false, target),
    };
    let url = crate::config::database_url(target.database, target.config.as_deref())?;
    let config = PostgresConfig::from_url(&url).map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async {
        if migrate {
            let before = fhirside_store::postgres_schema_status(&config).await.map_err(|e| e.to_string())?;
            let after = fhirside_store::migrate_postgres(&config).await.map_err(|e| e.to_string())?;
            for (version, description) in before.pending.iter().filter(|(v, _)| *v <= after.current) {
                println!("applied {version}: {description}");
            }
            println!("{}: schema version {} (newest {})", config.describe(), after.current, after.newest);
            print_distribution(&after.distribution);
        } else {
            let status = fhirside_store::postgres_schema_status(&config).await.map_err(|e| e.to_string())?;
            print_status(&config, &status);
        }
        Ok(())
    })
}

fn print_status(config: &PostgresConfig, status: &SchemaStatus) {
    println!("{}: schema version {} (this build's newest: {})", config.describe(), status.current, status.newest);
    if status.current > status.newest {
        println!("the database was migrated by a newer Fhirside; this build refuses to serve it");
    } else if status.pending.is_empty() {
        println!("up to date");
    } else {
        for (version, description) in &status.pending {
            println!("pending {version}: {description}");
        }
    }
    print_distribution(&status.distribution);
}

fn print_distribution(distribution: &PostgresDistribution) {
    match distribution {
        PostgresDistribution::Plain => println!("plain PostgreSQL (no citus extension): no table is distributed"),
        PostgresDistribution::Citus { distributed, pending } => {
            println!("Citus: {} of the store's tables distributed", distributed.len());
            for (table, column) in distributed {
                println!("distributed {table} by {column}");
            }
            for table in pending {
                println!("not distributed yet {table} (`fhirside db migrate` distributes it)");
            }
        }
    }
}
