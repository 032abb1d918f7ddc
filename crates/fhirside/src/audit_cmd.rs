//! `fhirside audit …`: the audit trail of a data directory (`<data dir>/audit`), or of the
//! servers' PostgreSQL database (`--database`).
//!
//! `fhirside audit verify` re-walks the hash chain of the audit files ([`fhirside_audit::verify`])
//! and prints the first broken link. It only reads, so it runs whether or not `fhirside serve`
//! writes the same directory (a line being written at that moment can show as a torn final line:
//! run it again). Exit code 0 when the trail is intact, 1 when a link is broken, 2 on errors.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use fhirside_audit::VerifyReport;

#[derive(Args, Debug)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// Check the hash chain of the audit trail; report the first broken link.
    Verify(VerifyArgs),
}

#[derive(Args, Debug)]
struct VerifyArgs {
    /// TOML configuration file (only its `data_dir` and `database` are used here).
    #[arg(long, env = "FHIRSIDE_CONFIG")]
    config: Option<PathBuf>,
    /// The data directory of the server [default: ./fhirside-data].
    #[arg(long, env = "FHIRSIDE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The servers' PostgreSQL (`postgres://…`), whose `audit_record` table holds the trail
    /// when they run on `--database`; else the config file's `database`.
    #[arg(long, env = "FHIRSIDE_DATABASE_URL")]
    database: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Table)]
    output: Output,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    /// Text for people.
    Table,
    /// JSON for scripts.
    Json,
}

pub fn run(args: AuditArgs) -> ExitCode {
    match args.command {
        AuditCommand::Verify(args) => match verify(&args) {
            Ok(report) => {
                print(&report, args.output);
                if report.intact() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            }
            Err(message) => {
                eprintln!("fhirside: {message}");
                ExitCode::from(2)
            }
        },
    }
}

fn verify(args: &VerifyArgs) -> Result<VerifyReport, String> {
    let target = crate::config::admin_target(args.data_dir.clone(), args.database.clone(), args.config.as_deref())?;
    if let Some(url) = &target.database {
        return fhirside_audit::postgres::verify(url)
            .map_err(|e| format!("cannot verify the audit trail in PostgreSQL: {e}"));
    }
    let dir = target.data_dir.join("audit");
    if !dir.is_dir() {
        return Err(format!("{} has no audit trail ({} does not exist)", target.data_dir.display(), dir.display()));
    }
    fhirside_audit::verify(&dir).map_err(|e| format!("cannot verify {}: {e}", dir.display()))
}

fn print(report: &VerifyReport, output: Output) {
    match output {
        Output::Json => {
            let mut json = serde_json::to_value(report).unwrap_or_default();
            json["intact"] = report.intact().into();
            println!("{}", serde_json::to_string_pretty(&json).unwrap_or_default());
        }
        Output::Table => print!("{}", text(report)),
    }
}

fn text(report: &VerifyReport) -> String {
    let range = match (report.first_sequence, report.last_sequence) {
        (Some(first), Some(last)) => format!(", sequence {first} to {last}"),
        _ => String::new(),
    };
    let mut out = match &report.first_broken {
        None => format!(
            "audit trail intact: {}, {}{range}\n",
            count(report.files as u64, "file"),
            count(report.records, "record")
        ),
        Some(link) => {
            let sequence = link.sequence.map(|s| format!(" (sequence {s})")).unwrap_or_default();
            format!(
                "audit trail BROKEN at {}:{}{sequence}: {}\n{} verified before it, in {}\n",
                link.file.display(),
                link.line,
                link.reason,
                count(report.records, "record"),
                count(report.files as u64, "file")
            )
        }
    };
    if report.starts_after_retention {
        if let Some(first) = report.first_sequence {
            out.push_str(&format!("the chain starts at sequence {first}: the records before it are gone (older files deleted by retention)\n"));
        }
    }
    if let (Some(sequence), Some(hash)) = (report.last_sequence, &report.last_hash) {
        let which = if report.intact() { "last record" } else { "last verified record" };
        out.push_str(&format!("{which}: sequence {sequence}, hash {hash}\n"));
    }
    out
}

/// `1 file`, `2 files`.
fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
