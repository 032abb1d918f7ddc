//! `ingest`: loads the Synthea-120 dataset into a running Fhirside through `POST /` and measures
//! how fast it goes.
//!
//! ```text
//! ingest --url http://127.0.0.1:PORT [--url http://127.0.0.1:PORT2 ...] [--dataset DIR] [--clients N]
//! ```
//!
//! `--url` may be given more than once, or as a comma-separated list, to spread the load over
//! several servers on one database (replicas): client connection `i` goes to URL `i % n`, in both
//! phases, so the batch bundles of the first phase go to the first URL.
//!
//! Every `*.json.bz2` file in the dataset directory is decompressed up front (with `bzcat`, in
//! parallel, before the clock starts) and kept in memory. The load then runs in two phases, both
//! timed:
//!
//! 1. the `0-*` files — the `batch` Bundles of Organizations and Practitioners, with `ifNoneExist` —
//!    one after the other on one connection, in file-name order (the patients refer to them through
//!    conditional references, so they must be stored first);
//! 2. every other file — one `transaction` Bundle per patient — taken from a shared queue (in
//!    file-name order) by N client threads, each with its own keep-alive HTTP/1.1 connection (to
//!    the URLs in turn, when there are several).
//!
//! Every request carries `Prefer: return=minimal`. Every response must be `200` with a
//! `batch-response`/`transaction-response` Bundle holding one entry per request entry, each with a
//! `2xx` status; the first failure stops the load and exits non-zero. Requests and responses go
//! through the bench crate's own minimal [`http`] client and [`json`] scanner.
//!
//! It prints a summary and, last, one machine-readable line for `bench/ingest.sh`:
//!
//! ```text
//! RESULT clients=4 urls=1 bundles=122 resources=92114 wall_s=… resources_per_s=… first_s=… patients_s=… …
//! ```

use fhirside_bench::{http, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const USAGE: &str =
    "usage: ingest --url http://HOST:PORT[,http://HOST:PORT...] [--url ...] [--dataset DIR] [--clients N]";
/// Every request's `Prefer` header: the load measures storing, not echoing the resources back.
const PREFER: &str = "return=minimal";
/// How long a response may take: a large transaction behind other clients' can take minutes.
const READ_TIMEOUT: Duration = Duration::from_secs(600);
/// `../shared/datasets/synthea-120` beside the repository.
const DEFAULT_DATASET: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/datasets/synthea-120");

fn main() {
    if let Err(message) = run() {
        eprintln!("ingest: {message}");
        std::process::exit(1);
    }
}

/// One decompressed Bundle.
struct Bundle {
    name: String,
    bytes: Vec<u8>,
    entries: usize,
}

/// What one POST took.
struct Timing {
    bundle: usize,
    elapsed: Duration,
}

fn run() -> Result<(), String> {
    let mut urls: Vec<String> = Vec::new();
    let mut dataset = PathBuf::from(DEFAULT_DATASET);
    let mut clients: usize = 1;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value\n{USAGE}"));
        match arg.as_str() {
            "--url" => urls.extend(value()?.split(',').filter(|u| !u.is_empty()).map(str::to_owned)),
            "--dataset" => dataset = PathBuf::from(value()?),
            "--clients" => {
                clients = value()?.parse().map_err(|e| format!("--clients: {e}"))?;
                if clients == 0 {
                    return Err("--clients must be at least 1".into());
                }
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    if urls.is_empty() {
        return Err(format!("--url is required\n{USAGE}"));
    }
    // Client connection i talks to hosts[i % hosts.len()].
    let hosts: Vec<String> = urls
        .iter()
        .map(|url| {
            url.strip_prefix("http://")
                .map(|rest| rest.trim_end_matches('/').to_owned())
                .ok_or_else(|| format!("--url {url}: must be http://HOST:PORT (plain HTTP)"))
        })
        .collect::<Result<_, _>>()?;

    let started = Instant::now();
    let (first, patients) = load_dataset(&dataset)?;
    let resources: usize = first.iter().chain(&patients).map(|b| b.entries).sum();
    let bytes: usize = first.iter().chain(&patients).map(|b| b.bytes.len()).sum();
    let largest = first.iter().chain(&patients).map(|b| b.entries).max().unwrap_or(0);
    eprintln!(
        "ingest: {} bundles ({} batch + {} transaction), {resources} entries, {:.1} MB of JSON (largest bundle {largest} \
         entries); decompressed and scanned in {:.1} s",
        first.len() + patients.len(),
        first.len(),
        patients.len(),
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );

    let cpu_before = process_cpu_seconds();
    let load_start = Instant::now();

    // Phase 1: the batch bundles, in order, on one connection.
    let mut first_timings = Vec::new();
    {
        let mut client = http::Client::new(&hosts[0], PREFER, READ_TIMEOUT);
        for (i, bundle) in first.iter().enumerate() {
            let t = Instant::now();
            post_bundle(&mut client, bundle)?;
            first_timings.push(Timing { bundle: i, elapsed: t.elapsed() });
        }
    }
    let first_elapsed = load_start.elapsed();

    // Phase 2: the patient transactions from a shared queue, `clients` connections.
    let patients_start = Instant::now();
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let error: Mutex<Option<String>> = Mutex::new(None);
    let timings: Mutex<Vec<Timing>> = Mutex::new(Vec::with_capacity(patients.len()));
    std::thread::scope(|scope| {
        for c in 0..clients {
            let (next, failed, error, timings, patients) = (&next, &failed, &error, &timings, &patients);
            let host = &hosts[c % hosts.len()];
            scope.spawn(move || {
                let mut client = http::Client::new(host, PREFER, READ_TIMEOUT);
                let mut mine = Vec::new();
                while !failed.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(bundle) = patients.get(i) else { break };
                    let t = Instant::now();
                    if let Err(e) = post_bundle(&mut client, bundle) {
                        failed.store(true, Ordering::Relaxed);
                        error.lock().unwrap().get_or_insert(e);
                        break;
                    }
                    mine.push(Timing { bundle: i, elapsed: t.elapsed() });
                }
                timings.lock().unwrap().extend(mine);
            });
        }
    });
    if let Some(e) = error.into_inner().unwrap() {
        return Err(e);
    }
    let patients_elapsed = patients_start.elapsed();
    let wall = load_start.elapsed();
    let client_cpu = process_cpu_seconds().zip(cpu_before).map(|(after, before)| after - before);

    // Summary.
    let first_resources: usize = first.iter().map(|b| b.entries).sum();
    let patient_resources = resources - first_resources;
    let mut timings = timings.into_inner().unwrap();
    timings.sort_by_key(|t| t.elapsed);
    let percentile = |p: f64| -> f64 {
        if timings.is_empty() {
            return 0.0;
        }
        let rank = ((p / 100.0) * timings.len() as f64).ceil().max(1.0) as usize - 1;
        timings[rank.min(timings.len() - 1)].elapsed.as_secs_f64()
    };
    let slowest = timings.last();
    // The bundle that took longest relative to its size says whether some bundles are pathological.
    let per_entry_ms = |t: &Timing| 1e3 * t.elapsed.as_secs_f64() / patients[t.bundle].entries.max(1) as f64;
    let worst_rate = timings.iter().max_by(|a, b| per_entry_ms(a).total_cmp(&per_entry_ms(b)));
    let rate = |n: usize, d: Duration| n as f64 / d.as_secs_f64().max(1e-9);

    for t in &first_timings {
        let b = &first[t.bundle];
        eprintln!(
            "ingest: {:<48} {:>6} entries  {:>7.2} s  {:>7.0} resources/s",
            b.name,
            b.entries,
            t.elapsed.as_secs_f64(),
            rate(b.entries, t.elapsed)
        );
    }
    eprintln!(
        "ingest: {} patient transactions, {clients} client(s) on {} server(s): {patient_resources} resources in {:.2} s = {:.0} resources/s \
         (per bundle: p50 {:.2} s, p90 {:.2} s, max {:.2} s{})",
        patients.len(),
        hosts.len(),
        patients_elapsed.as_secs_f64(),
        rate(patient_resources, patients_elapsed),
        percentile(50.0),
        percentile(90.0),
        slowest.map_or(0.0, |t| t.elapsed.as_secs_f64()),
        slowest.map_or(String::new(), |t| format!(
            " for {}, {} entries",
            patients[t.bundle].name, patients[t.bundle].entries
        )),
    );
    if let Some(t) = worst_rate {
        eprintln!(
            "ingest: slowest per entry: {} ({} entries, {:.2} ms/entry, including any wait for other clients' \
             transactions; median bundle {:.2} ms/entry)",
            patients[t.bundle].name,
            patients[t.bundle].entries,
            per_entry_ms(t),
            {
                let mut v: Vec<f64> = timings.iter().map(per_entry_ms).collect();
                v.sort_by(f64::total_cmp);
                v.get(v.len() / 2).copied().unwrap_or(0.0)
            }
        );
    }
    eprintln!(
        "ingest: total {resources} resources in {:.2} s = {:.0} resources/s (client CPU {})",
        wall.as_secs_f64(),
        rate(resources, wall),
        client_cpu.map_or("unknown".into(), |s| format!("{s:.2} s")),
    );
    println!(
        "RESULT clients={clients} urls={} bundles={} resources={resources} wall_s={:.3} resources_per_s={:.0} first_s={:.3} \
         patients_s={:.3} patients_resources_per_s={:.0} bundle_p50_s={:.3} bundle_max_s={:.3} client_cpu_s={}",
        hosts.len(),
        first.len() + patients.len(),
        wall.as_secs_f64(),
        rate(resources, wall),
        first_elapsed.as_secs_f64(),
        patients_elapsed.as_secs_f64(),
        rate(patient_resources, patients_elapsed),
        percentile(50.0),
        slowest.map_or(0.0, |t| t.elapsed.as_secs_f64()),
        client_cpu.map_or("nan".into(), |s| format!("{s:.2}")),
    );
    Ok(())
}

/// Decompresses every `*.json.bz2` in `dir` (a few `bzcat`s at a time), and checks each is a batch
/// or transaction Bundle. Returns the `0-*` files and the others, each sorted by name.
fn load_dataset(dir: &Path) -> Result<(Vec<Bundle>, Vec<Bundle>), String> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().ends_with(".json.bz2")))
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(format!("no *.json.bz2 files in {}", dir.display()));
    }
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 8);
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<Result<Bundle, String>>>> = paths.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(path) = paths.get(i) else { break };
                *slots[i].lock().unwrap() = Some(read_bundle(path));
            });
        }
    });
    let mut first = Vec::new();
    let mut patients = Vec::new();
    for slot in slots {
        let bundle = slot.into_inner().unwrap().expect("every file was read")?;
        if bundle.name.starts_with("0-") {
            first.push(bundle);
        } else {
            patients.push(bundle);
        }
    }
    Ok((first, patients))
}

fn read_bundle(path: &Path) -> Result<Bundle, String> {
    let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let output = Command::new("bzcat")
        .arg(path)
        .output()
        .map_err(|e| format!("cannot run bzcat (Debian package bzip2): {e}"))?;
    if !output.status.success() {
        return Err(format!("bzcat {}: {}", path.display(), String::from_utf8_lossy(&output.stderr).trim()));
    }
    let bytes = output.stdout;
    let (resource_type, kind, entries) = scan_request(&bytes).map_err(|e| format!("{name}: {e}"))?;
    if resource_type != "Bundle" || !(kind == "batch" || kind == "transaction") {
        return Err(format!("{name}: not a batch or transaction Bundle ({resource_type}, type {kind:?})"));
    }
    Ok(Bundle { name, bytes, entries })
}

/// `resourceType`, `type` and the number of entries of a Bundle.
fn scan_request(bytes: &[u8]) -> Result<(String, String, usize), String> {
    let mut p = json::Json::new(bytes)?;
    let (mut resource_type, mut kind, mut entries) = (String::new(), String::new(), 0);
    p.object(|p, key| {
        match key {
            "resourceType" => resource_type = p.string()?.into_owned(),
            "type" => kind = p.string()?.into_owned(),
            "entry" => p.array(|p| {
                entries += 1;
                p.skip()
            })?,
            _ => p.skip()?,
        }
        Ok(())
    })?;
    p.end()?;
    Ok((resource_type, kind, entries))
}

/// Posts one Bundle and checks the response: 200, a `*-response` Bundle, one `2xx` entry per entry.
fn post_bundle(client: &mut http::Client, bundle: &Bundle) -> Result<(), String> {
    let response = client.post("/", &bundle.bytes).map_err(|e| format!("POST {}: {e}", bundle.name))?;
    let excerpt = || String::from_utf8_lossy(&response.body[..response.body.len().min(2000)]).into_owned();
    if response.status != 200 {
        return Err(format!("POST {}: status {}: {}", bundle.name, response.status, excerpt()));
    }
    let (kind, statuses) =
        scan_response(&response.body).map_err(|e| format!("POST {}: {e}: {}", bundle.name, excerpt()))?;
    if !kind.ends_with("-response") {
        return Err(format!("POST {}: a Bundle of type {kind:?}: {}", bundle.name, excerpt()));
    }
    if statuses.len() != bundle.entries {
        return Err(format!(
            "POST {}: {} response entries for {} request entries: {}",
            bundle.name,
            statuses.len(),
            bundle.entries,
            excerpt()
        ));
    }
    if let Some((i, status)) = statuses.iter().enumerate().find(|(_, s)| !s.starts_with('2')) {
        return Err(format!("POST {}: entry {i} answered {status:?}: {}", bundle.name, excerpt()));
    }
    Ok(())
}

/// The `type` of a response Bundle and the `response.status` of each of its entries (`""` when an
/// entry has none).
fn scan_response(bytes: &[u8]) -> Result<(String, Vec<String>), String> {
    let mut p = json::Json::new(bytes)?;
    let mut kind = String::new();
    let mut statuses = Vec::new();
    p.object(|p, key| {
        match key {
            "type" => kind = p.string()?.into_owned(),
            "entry" => p.array(|p| {
                statuses.push(p.string_at(&["response", "status"])?.unwrap_or_default().into_owned());
                Ok(())
            })?,
            _ => p.skip()?,
        }
        Ok(())
    })?;
    p.end()?;
    Ok((kind, statuses))
}

/// This process's user + system CPU time so far, from `/proc/self/stat` (Linux; `None` elsewhere).
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th overall.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0) // USER_HZ, 100 on Linux
}
