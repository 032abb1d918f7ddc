//! `fhirside export --to DIR`: kicks off `$export`, polls its status, downloads the manifest's files
//! into DIR (streamed to disk, each checked against the manifest's count), then `DELETE`s the
//! status URL so that the server frees the files.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::Args;
use fhirside_fetch::{redact, Request, Response};
use serde_json::Value;

use super::progress::Progress;
use super::{
    diagnostics, file_name_of, follow, percent_encode, refused, retry_after, summary_line, Api, ConnectArgs, Failure,
    LineCounter, RunningJob,
};

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The directory the files go to (created if missing; it must be empty unless --force).
    #[arg(long, value_name = "DIR")]
    to: PathBuf,
    /// Resource types to export, comma-separated (`_type`) [default: every type].
    #[arg(long = "type", value_name = "TYPE", value_delimiter = ',')]
    types: Vec<String>,
    /// Only resources changed after this instant (`_since`, e.g. 2024-05-01T00:00:00Z).
    #[arg(long, value_name = "INSTANT")]
    since: Option<String>,
    /// A `_typeFilter` (`Type?search`); repeatable, several for one type are OR-ed.
    #[arg(long = "type-filter", value_name = "QUERY")]
    type_filters: Vec<String>,
    /// Export the compartments of this Group's member patients (`/Group/{id}/$export`).
    #[arg(long, value_name = "ID", conflicts_with = "patient")]
    group: Option<String>,
    /// Export the compartments of every patient (`/Patient/$export`).
    #[arg(long)]
    patient: bool,
    /// Every version of each resource, not only the current one (`includeAssociatedData=_history`).
    #[arg(long)]
    history: bool,
    /// Also each deleted resource's last version, marked soft-deleted as Azure's service marks it
    /// (`includeAssociatedData=_deleted`); `fhirside import` deletes it again after storing it.
    #[arg(long)]
    deleted: bool,
    /// Write into a directory that is not empty (files of the same names are replaced).
    #[arg(long)]
    force: bool,
    /// Leave the export on the server at the end (no `DELETE` of its status URL).
    #[arg(long)]
    keep: bool,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// One file of the manifest.
struct Entry {
    resource_type: String,
    url: String,
    count: u64,
    error: bool,
}

pub async fn run(args: ExportArgs, job: Rc<RunningJob>) -> Result<(), Failure> {
    job.keep.set(args.keep);
    let dir = args.to.clone();
    let created = prepare_dir(&dir, args.force)?;
    // A directory this command created goes again if it fails or is interrupted before writing.
    let mut guard = Remove { path: dir.clone(), dir: true, armed: created };
    let result = export(args, &dir, job).await;
    guard.armed &= result.is_err();
    result
}

/// Removes a file, or a directory if empty, when dropped armed: what a failed or interrupted
/// command leaves behind.
struct Remove {
    path: PathBuf,
    dir: bool,
    armed: bool,
}

impl Drop for Remove {
    fn drop(&mut self) {
        if self.armed {
            let _ = if self.dir { std::fs::remove_dir(&self.path) } else { std::fs::remove_file(&self.path) };
        }
    }
}

async fn export(args: ExportArgs, dir: &Path, job: Rc<RunningJob>) -> Result<(), Failure> {
    let api = Api::connect(args.connect)?;
    let started = Instant::now();
    let mut progress = Progress::new();

    let mut query: Vec<(&str, String)> = Vec::new();
    if !args.types.is_empty() {
        query.push(("_type", args.types.join(",")));
    }
    if let Some(since) = &args.since {
        query.push(("_since", since.clone()));
    }
    for filter in &args.type_filters {
        query.push(("_typeFilter", filter.clone()));
    }
    let associated: Vec<&str> = [(args.history, "_history"), (args.deleted, "_deleted")]
        .into_iter()
        .filter(|(on, _)| *on)
        .map(|(_, v)| v)
        .collect();
    if !associated.is_empty() {
        query.push(("includeAssociatedData", associated.join(",")));
    }
    let path = match (&args.group, args.patient) {
        (Some(group), _) => format!("/Group/{}/$export", percent_encode(group, false)),
        (None, true) => "/Patient/$export".to_owned(),
        (None, false) => "/$export".to_owned(),
    };
    // The total, for the ETA: what a system search counts, when it counts what the export writes.
    let countable =
        args.group.is_none() && !args.patient && args.type_filters.is_empty() && !args.history && !args.deleted;
    let total = if countable { count(&api, &args.types, args.since.as_deref()).await? } else { None };

    let url = format!("{}{path}{}", api.base(), query_string(&query));
    let status = loop {
        let request =
            Request::new("GET", &url).header("prefer", "respond-async").header("accept", "application/fhir+json");
        let response = api.send(request, true).await?;
        match response.status {
            202 => match response.header("content-location") {
                Some(location) => break location.to_owned(),
                None => return Err("the server accepted the export but gave no status URL (Content-Location)".into()),
            },
            429 => {
                // Too many exports at once: wait our turn, as the server asks.
                let wait = retry_after(&response).unwrap_or(Duration::from_secs(30));
                let why = format!("{} Retrying in {} s.", diagnostics(&response), wait.as_secs());
                progress.show("waiting", 0, total, started, &why);
                tokio::time::sleep(wait).await;
            }
            _ => return Err(refused("the export was refused", &response, "export").into()),
        }
    };
    job.started(&api, &status);

    let response = follow(&api, &status, &mut progress, total, ("exported ", "exporting")).await?;
    progress.clear();
    let manifest: Value = match response.status {
        200 => serde_json::from_slice(&response.body)
            .map_err(|e| format!("the export's manifest at {status} is not JSON: {e}"))?,
        404 => {
            job.finished();
            return Err(format!("the export at {status} is gone (cancelled or discarded by another caller)").into());
        }
        _ => {
            let message = match response.status {
                500 => diagnostics(&response),
                _ => refused("the export's status", &response, "export"),
            };
            if !args.keep {
                let _ = api.send(Request::new("DELETE", &status), true).await;
            }
            job.finished();
            return Err(message.into());
        }
    };

    let entries = entries(&manifest)?;
    let requires_token = manifest.get("requiresAccessToken").and_then(Value::as_bool).unwrap_or(false);
    let expected: u64 = entries.iter().filter(|e| !e.error).map(|e| e.count).sum();
    let download_started = Instant::now();
    let (mut resources, mut bytes) = (0u64, 0u64);
    let mut names = HashSet::new();
    let mut by_type: BTreeMap<&str, (u64, usize)> = BTreeMap::new();
    let mut error_files = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let name = unique_name(&file_name_of(&entry.url), entry, i, &mut names);
        // The server's own files need the token; Blob and S3 URLs never get it.
        let authorize = requires_token && api.is_own(&entry.url);
        let detail = format!("file {} of {}: {name}", i + 1, entries.len());
        let before = resources;
        let (lines, size) = download(&api, &entry.url, authorize, &dir.join(&name), |lines| {
            if !entry.error {
                progress.show("downloading", before + lines, Some(expected), download_started, &detail);
            }
        })
        .await
        .map_err(|e| format!("{e} (the export stays on the server: {status})"))?;
        if lines != entry.count {
            progress.clear();
            return Err(format!(
                "{}: {lines} lines, but the manifest says {} (the export stays on the server: {status})",
                dir.join(&name).display(),
                entry.count
            )
            .into());
        }
        bytes += size;
        if entry.error {
            error_files.push((name, lines));
        } else {
            resources += lines;
            let counts = by_type.entry(&entry.resource_type).or_default();
            counts.0 += lines;
            counts.1 += 1;
        }
    }
    progress.clear();
    if args.keep {
        job.finished();
    } else {
        match api.send(Request::new("DELETE", &status), true).await {
            Ok(r) if r.is_success() || r.status == 404 => {}
            Ok(r) => eprintln!("fhirside: warning: {}", refused("discarding the export on the server", &r, "export")),
            Err(e) => eprintln!("fhirside: warning: discarding the export on the server: {e}"),
        }
        job.finished();
    }

    let transaction_time = manifest.get("transactionTime").and_then(Value::as_str).unwrap_or("");
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "Exported to {} (transactionTime {transaction_time})", dir.display());
    for (resource_type, (count, files)) in &by_type {
        let plural = if *files == 1 { "" } else { "s" };
        let _ = writeln!(out, "  {resource_type}: {count} resources in {files} file{plural}");
    }
    let errors: u64 = error_files.iter().map(|(_, n)| n).sum();
    for (name, count) in &error_files {
        let _ = writeln!(out, "  errors: {count} in {}", dir.join(name).display());
    }
    if args.keep {
        let _ = writeln!(out, "The export stays on the server: {status} (DELETE it to remove its files)");
    }
    let files = entries.len();
    let _ = writeln!(out, "{}", summary_line("export", resources, files, bytes, started.elapsed()));
    let _ = out.flush();
    if errors > 0 {
        return Err(Failure { message: format!("the export reported {errors} errors (see the error files)"), code: 2 });
    }
    Ok(())
}

/// Checks that `dir` is empty (unless `force`), or creates it (then `true`).
fn prepare_dir(dir: &Path, force: bool) -> Result<bool, String> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() && !force {
                return Err(format!(
                    "{} is not empty: give a new or empty directory, or --force to write into it",
                    dir.display()
                ));
            }
            Ok(false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map(|()| true).map_err(|e| format!("cannot create {}: {e}", dir.display()))
        }
        Err(e) => Err(format!("cannot use {} as the target directory: {e}", dir.display())),
    }
}

fn query_string(query: &[(&str, String)]) -> String {
    let parts: Vec<String> = query.iter().map(|(k, v)| format!("{k}={}", percent_encode(v, false))).collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// How many resources the export will write, counted by a system search (`None` when the server
/// does not say). An unreachable server fails here, before anything starts.
async fn count(api: &Api, types: &[String], since: Option<&str>) -> Result<Option<u64>, String> {
    let mut query = vec![("_summary", "count".to_owned())];
    if !types.is_empty() {
        query.push(("_type", types.join(",")));
    }
    if let Some(since) = since {
        query.push(("_lastUpdated", format!("gt{since}")));
    }
    let url = format!("{}/{}", api.base(), query_string(&query));
    let response = api.send(Request::new("GET", &url).header("accept", "application/fhir+json"), true).await?;
    if !response.is_success() {
        return Ok(None);
    }
    let bundle: Option<Value> = serde_json::from_slice(&response.body).ok();
    Ok(bundle.and_then(|b| b.get("total").and_then(Value::as_u64)))
}

/// The manifest's `output` and `error` files.
fn entries(manifest: &Value) -> Result<Vec<Entry>, String> {
    let mut entries = Vec::new();
    for (key, error) in [("output", false), ("error", true)] {
        for item in manifest.get(key).and_then(Value::as_array).into_iter().flatten() {
            let url = item.get("url").and_then(Value::as_str).ok_or_else(|| format!("a manifest {key} has no url"))?;
            entries.push(Entry {
                resource_type: item.get("type").and_then(Value::as_str).unwrap_or("OperationOutcome").to_owned(),
                url: url.to_owned(),
                count: item.get("count").and_then(Value::as_u64).unwrap_or(0),
                error,
            });
        }
    }
    Ok(entries)
}

/// A safe, unused file name for an entry: the URL's own when it is one.
fn unique_name(from_url: &str, entry: &Entry, index: usize, used: &mut HashSet<String>) -> String {
    let plain = !from_url.is_empty()
        && from_url != "."
        && from_url != ".."
        && !from_url.contains(['/', '\\'])
        && !from_url.starts_with('.');
    let mut name = if plain { from_url.to_owned() } else { format!("{}-{}.ndjson", entry.resource_type, index + 1) };
    if used.contains(&name) {
        name = format!("{}-{name}", index + 1);
    }
    used.insert(name.clone());
    name
}

/// Streams `url` to `path` (through `path.part`, renamed when complete); returns its lines and bytes.
async fn download(
    api: &Api,
    url: &str,
    authorize: bool,
    path: &Path,
    mut tick: impl FnMut(u64),
) -> Result<(u64, u64), String> {
    let request = Request::new("GET", url)
        .header("accept", "application/fhir+ndjson")
        .timeout(Duration::from_secs(300))
        .idle_timeout(Duration::from_secs(120));
    let mut response = api.send_streaming(request, authorize).await?;
    if !response.is_success() {
        let body = response.read_to_end(64 << 10).await.unwrap_or_default();
        let answer = Response { status: response.status, headers: response.headers.clone(), body };
        return Err(refused(&format!("downloading {}", redact(url)), &answer, "export"));
    }
    let mut part = path.as_os_str().to_owned();
    part.push(".part");
    let part = PathBuf::from(part);
    let mut guard = Remove { path: part.clone(), dir: false, armed: true };
    let result = async {
        let file = std::fs::File::create(&part).map_err(|e| format!("cannot create {}: {e}", part.display()))?;
        let mut writer = std::io::BufWriter::with_capacity(1 << 20, file);
        let mut counter = LineCounter::default();
        let mut bytes = 0u64;
        while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
            writer.write_all(&chunk).map_err(|e| format!("cannot write {}: {e}", part.display()))?;
            counter.feed(&chunk);
            bytes += chunk.len() as u64;
            tick(counter.lines());
        }
        let file = writer.into_inner().map_err(|e| format!("cannot write {}: {e}", part.display()))?;
        file.sync_all().map_err(|e| format!("cannot write {}: {e}", part.display()))?;
        std::fs::rename(&part, path).map_err(|e| format!("cannot rename {}: {e}", part.display()))?;
        Ok((counter.lines(), bytes))
    }
    .await;
    guard.armed = result.is_err();
    result
}
