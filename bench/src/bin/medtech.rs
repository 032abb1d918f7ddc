//! `medtech`: sends device messages to a running Fhirside through a message broker (MQTT or NATS
//! JetStream) and measures how fast they become Observations.
//!
//! ```text
//! medtech --url http://127.0.0.1:PORT --transport mqtt|nats --broker URL [--messages N] [--devices D]
//!         [--topic T] [--stream S --subject X]
//! ```
//!
//! The messages are heart rates in the shape of Azure's CalculatedContent sample
//! (`bench/data/medtech/`), from D devices, each its own patient, one second apart per device:
//! with the hourly `SampledData` mapping, each device's messages fill one window, which every batch
//! the server takes amends. The clock starts before the first message is published (publishing
//! runs at the same time as the server consumes) and stops when the server's
//! `GET /medtech/v1/status` counts every message received; the run fails if any was refused.
//!
//! It prints a summary and, last, one machine-readable line for `bench/medtech.sh`:
//!
//! ```text
//! RESULT transport=mqtt messages=… devices=… wall_s=… messages_per_s=… publish_s=… observations=…
//! ```

use std::time::{Duration, Instant};

use fhirside_bench::http;

struct Args {
    url: String,
    transport: String,
    broker: String,
    messages: usize,
    devices: usize,
    topic: String,
    stream: String,
    subject: String,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        url: String::new(),
        transport: "mqtt".into(),
        broker: String::new(),
        messages: 50_000,
        devices: 50,
        topic: "medtech/bench".into(),
        stream: "MEDTECH".into(),
        subject: "medtech.bench".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => args.url = value()?,
            "--transport" => args.transport = value()?,
            "--broker" => args.broker = value()?,
            "--messages" => args.messages = value()?.parse().map_err(|e| format!("--messages: {e}"))?,
            "--devices" => args.devices = value()?.parse().map_err(|e| format!("--devices: {e}"))?,
            "--topic" => args.topic = value()?,
            "--stream" => args.stream = value()?,
            "--subject" => args.subject = value()?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.url.is_empty() || args.broker.is_empty() {
        return Err("--url and --broker are required".into());
    }
    if args.devices == 0 || args.messages == 0 {
        return Err("--messages and --devices must be at least 1".into());
    }
    Ok(args)
}

/// Message `k`: device `k % devices`, `k / devices` seconds into the hour.
fn message(k: usize, devices: usize) -> Vec<u8> {
    let device = k % devices;
    let second = k / devices;
    format!(
        r#"{{"heartRate":"{}","endDate":"2023-03-13T10:{:02}:{:02}Z","deviceId":"bench-device-{device}","patientId":"bench-patient-{device}"}}"#,
        60 + k % 40,
        (second / 60) % 60,
        second % 60
    )
    .into_bytes()
}

/// The server's counters (`GET /medtech/v1/status`).
fn status(client: &mut http::Client<'_>) -> Result<serde_json::Value, String> {
    let response = client.get("/medtech/v1/status").map_err(|e| format!("GET /medtech/v1/status: {e}"))?;
    if response.status != 200 {
        return Err(format!("GET /medtech/v1/status answered {}", response.status));
    }
    serde_json::from_slice(&response.body).map_err(|e| format!("GET /medtech/v1/status: {e}"))
}

fn count(status: &serde_json::Value, name: &str) -> u64 {
    status[name].as_u64().unwrap_or(0)
}

fn main() {
    if let Err(error) = run() {
        eprintln!("medtech: {error}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    if args.messages > args.devices * 3600 {
        return Err("more messages than fit in one hour per device (raise --devices)".into());
    }
    let host_port = args.url.trim_start_matches("http://").trim_end_matches('/').to_owned();
    let mut client = http::Client::new(&host_port, "return=minimal", Duration::from_secs(30));
    let before = status(&mut client)?;
    let payloads: Vec<Vec<u8>> = (0..args.messages).map(|k| message(k, args.devices)).collect();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    let started = Instant::now();
    // The server consumes while this publishes; the clock runs until it has received them all.
    runtime.block_on(async {
        match args.transport.as_str() {
            "mqtt" => {
                let config = fhirside_mqtt::Config::from_url(&args.broker, "fhirside-bench-publisher")
                    .map_err(|e| e.to_string())?;
                fhirside_mqtt::publish(&config, &args.topic, &payloads).await.map_err(|e| e.to_string())
            }
            "nats" => {
                let config = fhirside_nats::Config::from_url(&args.broker, &args.stream, &args.subject, "unused")
                    .map_err(|e| e.to_string())?;
                fhirside_nats::ensure_stream(&config).await.map_err(|e| e.to_string())?;
                fhirside_nats::publish(&config, &payloads).await.map_err(|e| e.to_string())
            }
            other => Err(format!("unknown transport {other} (mqtt, nats)")),
        }
    })?;
    let publisher = started.elapsed();
    let target = count(&before, "messagesReceived") + args.messages as u64;
    let deadline = Instant::now() + Duration::from_secs(600);
    let after = loop {
        let now = status(&mut client)?;
        if count(&now, "messagesReceived") >= target {
            break now;
        }
        if Instant::now() > deadline {
            return Err(format!("the server received {} of {target} messages in 10 minutes", now["messagesReceived"]));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let wall = started.elapsed();
    let refused = count(&after, "messagesRefused") - count(&before, "messagesRefused");
    if refused > 0 {
        return Err(format!("the server refused {refused} messages"));
    }
    let observations = count(&after, "observationsWritten") - count(&before, "observationsWritten");
    let rate = args.messages as f64 / wall.as_secs_f64();
    println!(
        "{} messages from {} devices over {}: {:.2} s, {rate:.0} messages/s (published in {:.2} s), {observations} \
         Observation writes",
        args.messages,
        args.devices,
        args.transport,
        wall.as_secs_f64(),
        publisher.as_secs_f64()
    );
    println!(
        "RESULT transport={} messages={} devices={} wall_s={:.3} messages_per_s={rate:.0} publish_s={:.3} \
         observations={observations}",
        args.transport,
        args.messages,
        args.devices,
        wall.as_secs_f64(),
        publisher.as_secs_f64()
    );
    Ok(())
}
