//! `fhirside`: the FHIR R4 service in one binary.
//!
//! `fhirside serve` runs the service on its embedded store, or on PostgreSQL with `--database`. Settings come from flags, then
//! `FHIRSIDE_*` environment variables, then the config file, then defaults ([`config`]).

mod admin;
mod audit_cmd;
mod bulk_cmd;
mod config;
mod db_cmd;
mod encryption;
mod identity;
mod keys_cmd;
mod medtech_cmd;
mod migrate_cmd;
mod relay_cmd;
mod serve;
mod token;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Requests allocate many small, short-lived strings; mimalloc serves them faster than glibc's
/// allocator (see ARCHITECTURE.md, Decisions).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "fhirside", version, about = "Fhirside: a FHIR R4 health data service")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the FHIR service.
    Serve(Box<config::ServeArgs>),
    #[command(flatten)]
    Admin(admin::AdminCommand),
    /// Get an access token for an app from the built-in authority (like `az account get-access-token`).
    Token(token::TokenArgs),
    /// Check the audit trail (`audit verify`).
    Audit(audit_cmd::AuditArgs),
    /// Encryption at rest: `keys status`, `keys rotate [--data-key] [--to KEY]`.
    Keys(keys_cmd::KeysArgs),
    /// The PostgreSQL schema: `db migrate`, `db status`.
    Db(db_cmd::DbArgs),
    /// Move an embedded installation's resources to PostgreSQL (`--from <data dir> --to postgres://…`).
    MigrateStore(migrate_cmd::MigrateArgs),
    /// Export a running server's data to a directory (`$export`, with a progress bar).
    Export(Box<bulk_cmd::ExportArgs>),
    /// Import NDJSON files or URLs into a running server (`$import`, with a progress bar).
    Import(Box<bulk_cmd::ImportArgs>),
    /// MedTech mappings: `medtech test` runs a device message through them.
    Medtech(medtech_cmd::MedtechArgs),
    /// The relay: auth credentials, destinations (and verify), sources, message status.
    Relay(Box<relay_cmd::RelayArgs>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => match config::resolve(*args).and_then(serve::run) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("fhirside: {message}");
                ExitCode::from(2)
            }
        },
        Command::Token(args) => match token::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("fhirside: {message}");
                ExitCode::from(1)
            }
        },
        Command::Audit(args) => audit_cmd::run(args),
        Command::Keys(args) => match keys_cmd::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("fhirside: {message}");
                ExitCode::from(1)
            }
        },
        Command::Db(args) => match db_cmd::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("fhirside: {message}");
                ExitCode::from(1)
            }
        },
        Command::MigrateStore(args) => match migrate_cmd::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("fhirside: {message}");
                ExitCode::from(1)
            }
        },
        Command::Export(args) => bulk_cmd::run_export(*args),
        Command::Import(args) => bulk_cmd::run_import(*args),
        Command::Medtech(args) => medtech_cmd::run(args),
        Command::Relay(args) => match relay_cmd::run(*args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("fhirside: {message}");
                ExitCode::from(1)
            }
        },
        Command::Admin(command) => match admin::run(command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("fhirside: {message}");
                ExitCode::from(1)
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::Cli;

    /// Issued secrets and tokens may begin with `-` (Entra's secret alphabet has it): such a value
    /// is the option's value, not an unknown flag.
    #[test]
    fn secrets_and_tokens_may_begin_with_a_hyphen() {
        let secret = "-2Q8~a.b_c";
        let commands: [&[&str]; 5] = [
            &["token", "--client-id", "app", "--client-secret", secret],
            &["export", "--to", "out", "--client-id", "app", "--client-secret", secret],
            &["import", "in", "--token", secret],
            &[
                "relay",
                "credential",
                "create",
                "--organization",
                "1",
                "--environment",
                "e",
                "--name",
                "n",
                "--url",
                "https://host/t/oauth2/v2.0/token",
                "--client-id",
                "app",
                "--client-secret",
                secret,
            ],
            &[
                "relay",
                "destination",
                "create",
                "--environment",
                "e",
                "--name",
                "n",
                "--endpoint",
                "https://host/in",
                "--verification-token",
                secret,
            ],
        ];
        for args in commands {
            let parsed = Cli::try_parse_from(std::iter::once("fhirside").chain(args.iter().copied()));
            assert!(parsed.is_ok(), "{args:?}: {}", parsed.err().map(|e| e.to_string()).unwrap_or_default());
        }
    }
}
