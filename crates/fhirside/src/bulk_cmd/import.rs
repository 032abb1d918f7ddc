//! `fhirside import DIR|FILE|URL…`: kicks off `$import` with the NDJSON files of the directories
//! (as `file://` URLs the server reads itself) and the URLs given, polls its status, and prints what
//! was imported and what was refused (exit 2 when a line was).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use fhirside_fetch::Request;
use serde_json::{json, Value};

use super::progress::Progress;
use super::{
    count_file, diagnostics, file_name_of, follow, percent_encode, refused, retry_after, summary_line, Api,
    ConnectArgs, Failure, RunningJob,
};

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Directories (every `*.ndjson` in them, by name), NDJSON files, or URLs the server reads
    /// (`https://`, `s3://`, `file://`, this server's export files). A file named after a resource
    /// type (`Patient.ndjson`, `Patient-1.ndjson`) is imported as that type's input.
    #[arg(required = true, value_name = "DIR|FILE|URL")]
    inputs: Vec<String>,
    /// `InitialLoad`: each resource becomes its next version, now. `IncrementalLoad`: keeps
    /// `meta.versionId` and `meta.lastUpdated` (history carries over).
    #[arg(long, value_enum, default_value_t = Mode::InitialLoad)]
    mode: Mode,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "verbatim")]
enum Mode {
    InitialLoad,
    IncrementalLoad,
}

/// One input of the request.
struct Input {
    url: String,
    resource_type: Option<String>,
    /// The file, when it is local (its lines are counted for the ETA).
    local: Option<PathBuf>,
}

pub async fn run(args: ImportArgs, job: Rc<RunningJob>) -> Result<(), Failure> {
    let mut inputs = collect(&args.inputs)?;
    let api = Api::connect(args.connect)?;
    let started = Instant::now();
    let mut progress = Progress::new();

    // The types a file name may name: those the server serves (this also checks it answers).
    let known = resource_types(&api).await?;
    for input in &mut inputs {
        input.resource_type = type_of(&file_name_of(&input.url), &known);
    }
    // The total, for the ETA: the lines of local files; unknown with URLs.
    let (mut lines, mut bytes) = (0u64, 0u64);
    let mut all_local = true;
    for input in &inputs {
        match &input.local {
            Some(path) => {
                let (l, b) = count_file(path)?;
                lines += l;
                bytes += b;
                progress.show("counting", lines, None, started, &path.display().to_string());
            }
            None => all_local = false,
        }
    }
    let total = all_local.then_some(lines);

    let mode = match args.mode {
        Mode::InitialLoad => "InitialLoad",
        Mode::IncrementalLoad => "IncrementalLoad",
    };
    let mut parameter = vec![
        json!({"name": "inputFormat", "valueString": "application/fhir+ndjson"}),
        json!({"name": "mode", "valueString": mode}),
    ];
    for input in &inputs {
        let mut part = vec![json!({"name": "url", "valueUri": input.url})];
        if let Some(t) = &input.resource_type {
            part.push(json!({"name": "type", "valueString": t}));
        }
        parameter.push(json!({"name": "input", "part": part}));
    }
    let body = json!({"resourceType": "Parameters", "parameter": parameter}).to_string();
    let url = format!("{}/$import", api.base());
    let status = loop {
        let request = Request::new("POST", &url)
            .header("prefer", "respond-async")
            .header("content-type", "application/fhir+json")
            .header("accept", "application/fhir+json")
            .body(body.clone());
        let response = api.send(request, true).await?;
        match response.status {
            202 => match response.header("content-location") {
                Some(location) => break location.to_owned(),
                None => return Err("the server accepted the import but gave no status URL (Content-Location)".into()),
            },
            429 => {
                let wait = retry_after(&response).unwrap_or(Duration::from_secs(30));
                let why = format!("{} Retrying in {} s.", diagnostics(&response), wait.as_secs());
                progress.show("waiting", 0, total, started, &why);
                tokio::time::sleep(wait).await;
            }
            400 if inputs.iter().any(|i| i.local.is_some()) && mentions_local_files(&diagnostics(&response)) => {
                progress.clear();
                return Err(format!(
                    "{} The server reads local files itself: it must run on this machine and be started with \
                     --import-root {} (or the files must be under its bulk directory, <data dir>/bulk).",
                    refused("the import was refused", &response, "import"),
                    roots(&inputs)
                )
                .into());
            }
            _ => {
                progress.clear();
                return Err(refused("the import was refused", &response, "import").into());
            }
        }
    };
    job.started(&api, &status);

    let response = follow(&api, &status, &mut progress, total, ("imported ", "importing")).await?;
    progress.clear();
    job.finished();
    let result: Value = match response.status {
        200 => serde_json::from_slice(&response.body)
            .map_err(|e| format!("the import's result at {status} is not JSON: {e}"))?,
        404 => return Err(format!("the import at {status} is gone (cancelled or discarded by another caller)").into()),
        500 => return Err(diagnostics(&response).into()),
        _ => return Err(refused("the import's status", &response, "import").into()),
    };

    let mut by_type: BTreeMap<String, u64> = BTreeMap::new();
    for output in result.get("output").and_then(Value::as_array).into_iter().flatten() {
        let resource_type = output.get("type").and_then(Value::as_str).unwrap_or("?");
        *by_type.entry(resource_type.to_owned()).or_default() +=
            output.get("count").and_then(Value::as_u64).unwrap_or(0);
    }
    let errors: Vec<&Value> = result.get("error").and_then(Value::as_array).into_iter().flatten().collect();
    let refused_lines: u64 = errors.iter().filter_map(|e| e.get("count").and_then(Value::as_u64)).sum();
    let resources: u64 = by_type.values().sum();

    let transaction_time = result.get("transactionTime").and_then(Value::as_str).unwrap_or("");
    let mut report = Vec::new();
    let plural = if inputs.len() == 1 { "" } else { "s" };
    report.push(format!("Imported from {} input{plural} (transactionTime {transaction_time})", inputs.len()));
    for (resource_type, count) in &by_type {
        report.push(format!("  {resource_type}: {count} resources"));
    }
    if refused_lines > 0 {
        report.push(format!("Refused {refused_lines} lines:"));
        for error in &errors {
            let input = error.get("inputUrl").and_then(Value::as_str).unwrap_or("?");
            let count = error.get("count").and_then(Value::as_u64).unwrap_or(0);
            let file = error.get("url").and_then(Value::as_str).unwrap_or("");
            report.push(format!("  {input}: {count} lines; errors in {file}"));
            for line in first_diagnostics(&api, file, 5).await {
                report.push(format!("    {line}"));
            }
        }
    }
    report.push(summary_line("import", resources, inputs.len(), bytes, started.elapsed()));
    let mut out = std::io::stdout().lock();
    for line in report {
        let _ = writeln!(out, "{line}");
    }
    let _ = out.flush();
    if refused_lines > 0 {
        return Err(Failure {
            message: format!("{refused_lines} lines were refused (the error files are listed above)"),
            code: 2,
        });
    }
    Ok(())
}

/// The inputs the arguments name: URLs as they are, the `*.ndjson` files of directories (sorted
/// by name) and files as absolute `file://` URLs.
fn collect(args: &[String]) -> Result<Vec<Input>, String> {
    let mut inputs = Vec::new();
    for arg in args {
        if arg.contains("://") || arg.starts_with("file:") {
            inputs.push(Input { url: arg.clone(), resource_type: None, local: None });
            continue;
        }
        let path = Path::new(arg).canonicalize().map_err(|e| format!("{arg}: {e}"))?;
        let files = if path.is_dir() {
            let entries = std::fs::read_dir(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "ndjson") && p.is_file())
                .collect();
            files.sort();
            if files.is_empty() {
                return Err(format!("{} has no *.ndjson file", path.display()));
            }
            files
        } else {
            vec![path]
        };
        for file in files {
            let url = format!("file://{}", percent_encode(&file.to_string_lossy(), true));
            inputs.push(Input { url, resource_type: None, local: Some(file) });
        }
    }
    Ok(inputs)
}

/// The resource types of the server's CapabilityStatement.
async fn resource_types(api: &Api) -> Result<HashSet<String>, String> {
    let request = Request::new("GET", &format!("{}/metadata", api.base()))
        .header("accept", "application/fhir+json")
        .max_response_bytes(64 << 20);
    let response = api.send(request, false).await?;
    let statement: Value =
        if response.is_success() { serde_json::from_slice(&response.body).unwrap_or_default() } else { Value::Null };
    Ok(statement
        .pointer("/rest/0/resource")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| r.get("type").and_then(Value::as_str).map(str::to_owned))
        .collect())
}

/// The type a file name names: `Patient.ndjson` or `Patient-3.ndjson`.
fn type_of(name: &str, known: &HashSet<String>) -> Option<String> {
    let stem = name.strip_suffix(".ndjson")?;
    let resource_type = match stem.split_once('-') {
        Some((t, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => t,
        Some(_) => return None,
        None => stem,
    };
    known.contains(resource_type).then(|| resource_type.to_owned())
}

/// Whether a refusal is about the server not reading a local file.
fn mentions_local_files(diagnostics: &str) -> bool {
    diagnostics.contains("--import-root") || diagnostics.contains("local files") || diagnostics.contains("file://")
}

/// The directories of the local inputs, for the message.
fn roots(inputs: &[Input]) -> String {
    let dirs: BTreeSet<String> =
        inputs.iter().filter_map(|i| i.local.as_deref()?.parent().map(|p| p.display().to_string())).collect();
    dirs.into_iter().collect::<Vec<_>>().join(" --import-root ")
}

/// The first diagnostics of an error file (nothing when it cannot be read).
async fn first_diagnostics(api: &Api, url: &str, most: usize) -> Vec<String> {
    if url.is_empty() {
        return Vec::new();
    }
    let request = Request::new("GET", url).max_response_bytes(16 << 20);
    let Ok(response) = api.send(request, api.is_own(url)).await else { return Vec::new() };
    if !response.is_success() {
        return Vec::new();
    }
    String::from_utf8_lossy(&response.body)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter_map(|o| o.pointer("/issue/0/diagnostics").and_then(Value::as_str).map(str::to_owned))
        .take(most)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_from_file_names() {
        let known: HashSet<String> = ["Patient", "Observation"].iter().map(|s| s.to_string()).collect();
        assert_eq!(type_of("Patient.ndjson", &known).as_deref(), Some("Patient"));
        assert_eq!(type_of("Observation-12.ndjson", &known).as_deref(), Some("Observation"));
        assert_eq!(type_of("Patient-old.ndjson", &known), None);
        assert_eq!(type_of("patients.ndjson", &known), None);
        assert_eq!(type_of("Patient.json", &known), None);
    }
}
