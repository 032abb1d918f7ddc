//! `fhirside medtech …`: tools for MedTech mapping authors.
//!
//! `fhirside medtech test --device-mapping D --fhir-mapping F --message M` reads Azure's two
//! mapping documents and one device message, checks the mappings, and prints what the message
//! becomes: the normalized measurements and the Observations (as JSON), or every error found. It
//! touches no server and no store, so a mapping can be debugged before it is deployed. Exit code 0
//! when the message maps cleanly, 1 when the mappings or the message have errors, 2 when a file
//! cannot be read or is not JSON.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use fhirside_medtech::{event_message, explain, DeviceMapping, FhirMapping, MappingError};
use serde_json::{json, Value};

#[derive(Args, Debug)]
pub struct MedtechArgs {
    #[command(subcommand)]
    command: MedtechCommand,
}

#[derive(Subcommand, Debug)]
enum MedtechCommand {
    /// Run a device message through a device mapping and a FHIR destination mapping.
    Test(TestArgs),
}

#[derive(Args, Debug)]
struct TestArgs {
    /// The device mapping (Azure's JSON: `CollectionContent` of content templates).
    #[arg(long)]
    device_mapping: PathBuf,
    /// The FHIR destination mapping (Azure's JSON: `CollectionFhir` of `CodeValueFhir` templates).
    #[arg(long)]
    fhir_mapping: PathBuf,
    /// The device message: its body, as a device sends it.
    #[arg(long)]
    message: PathBuf,
    /// The message file is already the event envelope (`Body`, `Properties`, `SystemProperties`),
    /// as IoT Hub delivers it; without this, the file is the body and the properties are empty.
    #[arg(long)]
    envelope: bool,
}

pub fn run(args: MedtechArgs) -> ExitCode {
    match args.command {
        MedtechCommand::Test(args) => test(&args),
    }
}

fn test(args: &TestArgs) -> ExitCode {
    let (device, fhir, message) =
        match (read_json(&args.device_mapping), read_json(&args.fhir_mapping), read_json(&args.message)) {
            (Ok(device), Ok(fhir), Ok(message)) => (device, fhir, message),
            (device, fhir, message) => {
                for error in [device.err(), fhir.err(), message.err()].into_iter().flatten() {
                    eprintln!("fhirside: {error}");
                }
                return ExitCode::from(2);
            }
        };
    let mappings = (DeviceMapping::parse(&device), FhirMapping::parse(&fhir));
    let (device, fhir) = match mappings {
        (Ok(device), Ok(fhir)) => (device, fhir),
        (device, fhir) => {
            let mut errors = Vec::new();
            let mut report = |file: &Path, error: Option<MappingError>| {
                for issue in error.map(|e| e.issues).unwrap_or_default() {
                    errors.push(format!("{}: {}: {}", file.display(), issue.path, issue.message));
                }
            };
            report(&args.device_mapping, device.err());
            report(&args.fhir_mapping, fhir.err());
            println!("{}", pretty(&json!({"normalized": [], "observations": [], "errors": errors})));
            return ExitCode::from(1);
        }
    };
    let message = if args.envelope { message } else { event_message(message, json!({}), json!({})) };
    let result = explain(&device, &fhir, &message);
    println!("{}", pretty(&result));
    let clean = result["errors"].as_array().is_none_or(Vec::is_empty);
    if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// A JSON file (a mapping, a message), or why it cannot be read.
pub(crate) fn read_json(path: &Path) -> Result<Value, String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_slice(&text).map_err(|e| format!("{} is not JSON: {e}", path.display()))
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}
