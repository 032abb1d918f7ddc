//! `search`: a closed-loop load generator for FHIR search requests. Each named query is sent
//! repeatedly for a fixed time by N client threads, each on its own keep-alive HTTP/1.1
//! connection, and the result is a markdown table of requests, throughput and latency per query.
//!
//! ```text
//! search --url http://127.0.0.1:PORT [--url ...] (--query NAME=PATH)... [--queries FILE]
//!        [--duration SECONDS] [--warmup SECONDS] [--concurrency N]
//! ```
//!
//! `--url` may be given more than once (or as a comma-separated list) to spread the load over
//! several servers on one database (replicas): client thread `i` talks to URL `i % n`. The first
//! page of every query (and the `next` link it yields) comes from the first URL; a search's `next`
//! link is valid on every replica, since its continuation token is a keyset cursor, not server state.
//!
//! A query is a name and a request path relative to the base URL (`Patient?gender=female`). In a
//! queries file each non-empty line that does not start with `#` is `NAME<TAB>TARGET<TAB>PATH`,
//! where TARGET is the p50 goal in milliseconds (reported, not asserted) or `-` for none. A path of
//! the form `next:PATH` stands for the `next` link of PATH's first page: it is fetched once and that
//! link is what gets measured.
//!
//! For every query the client first sends one request and keeps its response: it must be `200`
//! with a `searchset` Bundle (otherwise the query is reported as failed, with the status and the
//! start of the body, and the next query runs), and its entries — matches, `_include`d resources and
//! `total` — go into the table as a sanity check that the query matched something. Then the threads
//! send the query back to back for `--warmup` seconds (not measured) and `--duration` seconds
//! (measured: every request's time from writing it to reading the whole response). Any non-`200`
//! response during the measurement counts as an error.
//!
//! Requests carry `Accept: application/fhir+json` and `Prefer: handling=strict`, so a parameter the
//! server does not support fails the query instead of being silently ignored. The table goes to
//! stdout, progress to stderr. Requests and responses go through the bench crate's own minimal
//! [`http`] client and [`json`] scanner.

use fhirside_bench::{http, json};
use std::fmt::Write as _;
use std::sync::Barrier;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: search --url http://HOST:PORT[,...] [--url ...] (--query NAME=PATH)... [--queries FILE] \
                     [--duration SECONDS] [--warmup SECONDS] [--concurrency N]";
/// Every request's `Prefer` header: a parameter the server does not support fails the query.
const PREFER: &str = "handling=strict";
/// How long a response may take before the query is reported as failed.
const READ_TIMEOUT: Duration = Duration::from_secs(120);

fn main() {
    if let Err(message) = run() {
        eprintln!("search: {message}");
        std::process::exit(2);
    }
}

/// One query of the suite.
struct Query {
    name: String,
    /// The p50 goal in milliseconds, if any.
    target_ms: Option<f64>,
    /// As given (`next:` included), for the report.
    given: String,
    /// What is measured: a path relative to the base URL, starting with `/`.
    path: String,
}

/// What the first response of a query said.
struct FirstPage {
    bytes: usize,
    matches: usize,
    included: usize,
    total: Option<u64>,
    next: Option<String>,
}

/// The outcome of one query.
enum Outcome {
    Measured { first: FirstPage, requests: usize, errors: usize, throughput: f64, latencies_us: Vec<u64> },
    Failed { status: Option<u16>, message: String },
}

fn run() -> Result<(), String> {
    let mut urls: Vec<String> = Vec::new();
    let mut queries: Vec<Query> = Vec::new();
    let mut duration = 5.0_f64;
    let mut warmup = 1.0_f64;
    let mut concurrency: usize = 1;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value\n{USAGE}"));
        match arg.as_str() {
            "--url" => urls.extend(value()?.split(',').filter(|u| !u.is_empty()).map(str::to_owned)),
            "--query" => {
                let spec = value()?;
                let (name, path) = spec.split_once('=').ok_or_else(|| format!("--query {spec}: expected NAME=PATH"))?;
                queries.push(Query {
                    name: name.to_owned(),
                    target_ms: None,
                    given: path.to_owned(),
                    path: String::new(),
                });
            }
            "--queries" => {
                let file = value()?;
                let text = std::fs::read_to_string(&file).map_err(|e| format!("cannot read {file}: {e}"))?;
                queries.extend(parse_queries(&text).map_err(|e| format!("{file}: {e}"))?);
            }
            "--duration" => duration = value()?.parse().map_err(|e| format!("--duration: {e}"))?,
            "--warmup" => warmup = value()?.parse().map_err(|e| format!("--warmup: {e}"))?,
            "--concurrency" => {
                concurrency = value()?.parse().map_err(|e| format!("--concurrency: {e}"))?;
                if concurrency == 0 {
                    return Err("--concurrency must be at least 1".into());
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
    if queries.is_empty() {
        return Err(format!("no queries\n{USAGE}"));
    }
    if !(duration > 0.0 && warmup >= 0.0) {
        return Err("--duration must be positive and --warmup not negative".into());
    }
    // Client thread i talks to hosts[i % hosts.len()]; paths are resolved against the first URL.
    let base = urls[0].trim_end_matches('/').to_owned();
    let mut hosts = Vec::with_capacity(urls.len());
    for url in &urls {
        let host_port = url
            .trim_end_matches('/')
            .strip_prefix("http://")
            .ok_or_else(|| format!("--url {url}: must be http://HOST:PORT (plain HTTP)"))?;
        if host_port.contains('/') {
            return Err(format!("--url {url}: must be http://HOST:PORT, without a path"));
        }
        hosts.push(host_port.to_owned());
    }

    let mut outcomes = Vec::with_capacity(queries.len());
    for query in &mut queries {
        let outcome = measure(&base, &hosts, query, duration, warmup, concurrency);
        match &outcome {
            Outcome::Measured { requests, errors, throughput, latencies_us, .. } => eprintln!(
                "search: {:<28} {:>7} requests {:>8.0}/s  p50 {:>7.2} ms  p99 {:>7.2} ms{}",
                query.name,
                requests,
                throughput,
                percentile(latencies_us, 50.0),
                percentile(latencies_us, 99.0),
                if *errors > 0 { format!("  ({errors} errors)") } else { String::new() }
            ),
            Outcome::Failed { message, .. } => {
                eprintln!("search: {:<28} FAILED: {}", query.name, excerpt(message, 300))
            }
        }
        outcomes.push(outcome);
    }
    print!("{}", report(&queries, &outcomes, concurrency, hosts.len(), duration));
    Ok(())
}

/// Lines of `NAME<TAB>TARGET<TAB>PATH`.
fn parse_queries(text: &str) -> Result<Vec<Query>, String> {
    let mut queries = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let [name, target, path] = fields[..] else {
            return Err(format!("line {}: expected NAME<TAB>TARGET<TAB>PATH", n + 1));
        };
        let target_ms = match target.trim() {
            "-" | "" => None,
            t => Some(t.parse::<f64>().map_err(|e| format!("line {}: target {t:?}: {e}", n + 1))?),
        };
        queries.push(Query {
            name: name.trim().to_owned(),
            target_ms,
            given: path.trim().to_owned(),
            path: String::new(),
        });
    }
    Ok(queries)
}

/// `/PATH` for a path relative to the base, or for an absolute URL on the same base.
fn request_path(base: &str, given: &str) -> Result<String, String> {
    if let Some(rest) = given.strip_prefix(base) {
        return Ok(if rest.starts_with('/') { rest.to_owned() } else { format!("/{rest}") });
    }
    if given.starts_with("http://") || given.starts_with("https://") {
        return Err(format!("{given} is not on {base}"));
    }
    Ok(format!("/{}", given.trim_start_matches('/')))
}

fn measure(base: &str, hosts: &[String], query: &mut Query, duration: f64, warmup: f64, threads: usize) -> Outcome {
    let failed = |status: Option<u16>, message: String| Outcome::Failed { status, message };
    // The first page, on its own connection to the first server; for `next:` the page it links to.
    let mut client = http::Client::new(&hosts[0], PREFER, READ_TIMEOUT);
    let mut fetch = |path: &str| -> Result<FirstPage, Outcome> {
        let response = client.get(path).map_err(|e| failed(None, format!("GET {path}: {e}")))?;
        if response.status != 200 {
            return Err(failed(Some(response.status), String::from_utf8_lossy(&response.body).into_owned()));
        }
        searchset(&response.body).map_err(|e| {
            failed(Some(200), format!("not a searchset Bundle ({e}): {}", String::from_utf8_lossy(&response.body)))
        })
    };
    let target = match query.given.strip_prefix("next:") {
        Some(of) => {
            let of = match request_path(base, of) {
                Ok(p) => p,
                Err(e) => return failed(None, e),
            };
            let page = match fetch(&of) {
                Ok(page) => page,
                Err(outcome) => return outcome,
            };
            let Some(next) = page.next else {
                return failed(Some(200), format!("{of}: the first page has no next link"));
            };
            next
        }
        None => query.given.clone(),
    };
    query.path = match request_path(base, &target) {
        Ok(p) => p,
        Err(e) => return failed(None, e),
    };
    let first = match fetch(&query.path) {
        Ok(page) => page,
        Err(outcome) => return outcome,
    };
    drop(client);

    // Warm-up, then the measured run, each started together on every thread.
    let path = query.path.as_str();
    let barrier = Barrier::new(threads);
    let runs: Vec<Run> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let (host, barrier) = (&hosts[i % hosts.len()], &barrier);
                scope.spawn(move || drive(host, path, warmup, duration, barrier))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a client thread panicked")).collect()
    });
    let mut latencies_us = Vec::new();
    let mut errors = 0;
    let mut throughput = 0.0;
    for run in runs {
        if let Some(e) = run.failure {
            return failed(None, e);
        }
        // Each thread's own rate over its own window (which its last request overran).
        throughput += run.latencies_us.len() as f64 / run.elapsed.as_secs_f64();
        latencies_us.extend(run.latencies_us);
        errors += run.errors;
    }
    latencies_us.sort_unstable();
    Outcome::Measured { first, requests: latencies_us.len(), errors, throughput, latencies_us }
}

/// What one client thread measured.
struct Run {
    latencies_us: Vec<u64>,
    /// Non-`200` responses.
    errors: usize,
    /// From the start of the measured window to the end of the thread's last request.
    elapsed: Duration,
    /// A request that got no response; the thread stops sending but still meets the others at the
    /// barrier.
    failure: Option<String>,
}

/// One client thread: `warmup` seconds of requests, then `duration` measured seconds, each phase
/// started on `barrier` together with the other threads.
fn drive(host_port: &str, path: &str, warmup: f64, duration: f64, barrier: &Barrier) -> Run {
    let mut client = http::Client::new(host_port, PREFER, READ_TIMEOUT);
    let mut run = Run { latencies_us: Vec::with_capacity(1 << 16), errors: 0, elapsed: Duration::ZERO, failure: None };
    for (seconds, measured) in [(warmup, false), (duration, true)] {
        barrier.wait();
        let started = Instant::now();
        let end = started + Duration::from_secs_f64(seconds);
        while run.failure.is_none() && Instant::now() < end {
            let t = Instant::now();
            match client.get(path) {
                Ok(response) if measured => {
                    run.latencies_us.push(t.elapsed().as_micros() as u64);
                    run.errors += usize::from(response.status != 200);
                }
                Ok(_) => {}
                Err(e) => run.failure = Some(format!("GET {path}: {e}")),
            }
        }
        run.elapsed = started.elapsed();
    }
    run
}

/// Nearest-rank percentile in milliseconds of sorted microsecond samples.
fn percentile(sorted_us: &[u64], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted_us.len() as f64).ceil().max(1.0) as usize - 1;
    sorted_us[rank.min(sorted_us.len() - 1)] as f64 / 1000.0
}

fn excerpt(text: &str, max: usize) -> String {
    let one_line: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    match one_line.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &one_line[..i]),
        None => one_line,
    }
}

fn report(queries: &[Query], outcomes: &[Outcome], concurrency: usize, servers: usize, duration: f64) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "| Query | Request | Requests | Req/s | p50 (ms) | p99 (ms) | First page | Target p50 | |");
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---|---:|---|");
    let mut failures = Vec::new();
    for (query, outcome) in queries.iter().zip(outcomes) {
        // `|` inside a table cell, code span or not, is escaped as `\|` (GitHub-flavoured markdown).
        let request = match query.given.strip_prefix("next:") {
            Some(of) => format!("`next` link of `{of}`"),
            None if query.path.is_empty() => format!("`{}`", query.given),
            None => format!("`{}`", query.path.trim_start_matches('/')),
        }
        .replace('|', "\\|");
        let target = query.target_ms.map_or("".to_owned(), |t| format!("< {t} ms"));
        match outcome {
            Outcome::Measured { first, requests, errors, throughput, latencies_us } => {
                let p50 = percentile(latencies_us, 50.0);
                let mut page = format!("{} match", first.matches);
                if first.included > 0 {
                    let _ = write!(page, " + {} incl.", first.included);
                }
                if let Some(total) = first.total {
                    let _ = write!(page, ", total {total}");
                }
                let _ = write!(page, ", {:.1} KB", first.bytes as f64 / 1024.0);
                if first.matches == 0 {
                    page = format!("**{page}** (matched nothing)");
                }
                let mut verdict = match query.target_ms {
                    Some(t) if p50 < t => "met".to_owned(),
                    Some(_) => "**missed**".to_owned(),
                    None => String::new(),
                };
                if *errors > 0 {
                    verdict = format!("**{errors} errors** {verdict}");
                }
                let _ = writeln!(
                    out,
                    "| {} | {request} | {requests} | {:.0} | {p50:.2} | {:.2} | {page} | {target} | {verdict} |",
                    query.name,
                    throughput,
                    percentile(latencies_us, 99.0),
                );
            }
            Outcome::Failed { status, message } => {
                let status = status.map_or("no response".to_owned(), |s| format!("status {s}"));
                let _ = writeln!(
                    out,
                    "| {} | {request} | | | | | **failed: {status}** (see below) | {target} | |",
                    query.name
                );
                failures.push((query, status, message));
            }
        }
    }
    let _ = writeln!(out);
    // Connection i talks to server i % servers.
    let spread = match (servers, concurrency.min(servers)) {
        (1, _) => String::new(),
        (_, 1) => format!(" to the first of {servers} servers"),
        (_, used) => format!(" spread over {used} of {servers} servers"),
    };
    let _ = writeln!(
        out,
        "{concurrency} connection(s){spread}, {duration} s per query after the warm-up. p50/p99: nearest rank over every \
         measured request. First page: the entries of one response (`search.mode` match, include), its `total` if \
         present, and its size."
    );
    if !failures.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(out, "Failed queries (first response):");
        let _ = writeln!(out);
        for (query, status, message) in failures {
            let _ = writeln!(out, "- **{}** (`{}`): {status}: `{}`", query.name, query.given, excerpt(message, 1500));
        }
    }
    out
}

/// Reads what the table needs from a searchset Bundle.
fn searchset(bytes: &[u8]) -> Result<FirstPage, String> {
    let mut p = json::Json::new(bytes)?;
    let mut page = FirstPage { bytes: bytes.len(), matches: 0, included: 0, total: None, next: None };
    let (mut resource_type, mut kind) = (String::new(), String::new());
    p.object(|p, key| {
        match key {
            "resourceType" => resource_type = p.string()?.into_owned(),
            "type" => kind = p.string()?.into_owned(),
            "total" => page.total = Some(p.number()?.parse().map_err(|e| format!("total: {e}"))?),
            "link" => p.array(|p| {
                let (mut relation, mut url) = (String::new(), String::new());
                p.object(|p, key| {
                    match key {
                        "relation" => relation = p.string()?.into_owned(),
                        "url" => url = p.string()?.into_owned(),
                        _ => p.skip()?,
                    }
                    Ok(())
                })?;
                if relation == "next" {
                    page.next = Some(url);
                }
                Ok(())
            })?,
            "entry" => p.array(|p| {
                match p.string_at(&["search", "mode"])?.as_deref() {
                    Some("include") => page.included += 1,
                    Some("outcome") => {}
                    _ => page.matches += 1,
                }
                Ok(())
            })?,
            _ => p.skip()?,
        }
        Ok(())
    })?;
    if resource_type != "Bundle" || kind != "searchset" {
        return Err(format!("resourceType {resource_type:?}, type {kind:?}"));
    }
    Ok(page)
}
