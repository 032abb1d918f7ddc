//! What encryption costs per operation, on one core: AES-256-GCM sealing and opening of 1 KiB and
//! 8 KiB bodies, deterministic encryption and blind indexes of a token-sized value. It prints
//! numbers and asserts nothing.
//!
//! ```sh
//! cargo run --release -p fhirside-keys --example throughput
//! ```
//!
//! A run (2026-12-04, release build, one core of a 2-core Intel Xeon with AES-NI, another
//! session compiling on the same machine; the better of two runs):
//!
//! | operation (one core)                  | µs / op |
//! |---------------------------------------|--------:|
//! | encrypt 1 KiB                         |   0.37 |
//! | decrypt 1 KiB                         |   0.19 |
//! | encrypt + decrypt 1 KiB               |   0.58 |
//! | encrypt 8 KiB                         |   1.10 |
//! | decrypt 8 KiB                         |   0.85 |
//! | encrypt + decrypt 8 KiB               |   1.93 |
//! | blind index, 54-byte token            |   0.19 |
//! | deterministic encrypt, 54-byte token  |   0.33 |
//! | deterministic decrypt, 54-byte token  |   0.33 |
//! | (of which: a 96-bit random nonce)     |   0.19 |
//!
//! For scale (bench/results): ingesting Synthea costs about 300 µs of server CPU per resource
//! (27.8 s for 92,114 resources of 2.3 KiB on average), and a read by id about 30 µs (65,891
//! reads/s on 2 cores, wrk included). Sealing an average resource (~0.6 µs) plus ten blind
//! indexes (~2 µs) is under 1 % of ingest; opening it (~0.35 µs) about 1 % of a read. The 15 %
//! budget is for what the integration adds around it: more and larger index rows, copies, and
//! post-filtering candidates by decrypting them.

use std::hint::black_box;
use std::time::{Duration, Instant};

use fhirside_keys::{Keyring, LocalKek};
use ring::rand::{SecureRandom, SystemRandom};

/// Runs `operation` for about `budget` after a warm-up and returns µs per call.
fn measure(budget: Duration, mut operation: impl FnMut()) -> f64 {
    for _ in 0..1_000 {
        operation();
    }
    let mut calls = 0u64;
    let start = Instant::now();
    while start.elapsed() < budget {
        for _ in 0..1_000 {
            operation();
        }
        calls += 1_000;
    }
    start.elapsed().as_secs_f64() * 1e6 / calls as f64
}

/// Keeps a result from being optimized away.
fn sink<T>(value: T) {
    let _ = black_box(value);
}

fn row(what: &str, micros: f64, bytes: Option<usize>) {
    let throughput = bytes.map(|b| format!("{:>8.0} MB/s", b as f64 / micros)).unwrap_or_default();
    println!("| {what:<44} | {micros:>8.3} | {:>10.0} | {throughput:>13} |", 1e6 / micros);
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let kek = LocalKek::from_bytes("benchmark", &[7u8; 32]).unwrap();
    let keyring = runtime.block_on(Keyring::create(&kek)).unwrap();
    let budget =
        Duration::from_millis(std::env::var("KEYS_BENCH_MS").ok().and_then(|ms| ms.parse().ok()).unwrap_or(1_000));
    let aad = b"Patient/6c6e5ad6-1a2b-4c3d-9e8f-0123456789ab/_history/1";

    println!("| operation (one core)                         |  µs / op |      ops/s |    throughput |");
    println!("|----------------------------------------------|---------:|-----------:|--------------:|");
    for size in [1024usize, 8192] {
        let body: Vec<u8> = (0..size).map(|i| b"{\"resourceType\":\"Patient\"}"[i % 26]).collect();
        let sealed = keyring.encrypt(&body, aad);
        let label = size / 1024;
        row(
            &format!("encrypt {label} KiB"),
            measure(budget, || sink(black_box(keyring.encrypt(black_box(&body), aad)))),
            Some(size),
        );
        row(
            &format!("decrypt {label} KiB"),
            measure(budget, || sink(black_box(keyring.decrypt(black_box(&sealed), aad).unwrap()))),
            Some(size),
        );
        row(
            &format!("encrypt + decrypt {label} KiB"),
            measure(budget, || {
                let sealed = keyring.encrypt(black_box(&body), aad);
                sink(black_box(keyring.decrypt(&sealed, aad).unwrap()));
            }),
            Some(size),
        );
    }
    let token = b"http://hospital.example.org/identifiers/mrn|1234567890";
    row(
        "blind index, 54-byte token",
        measure(budget, || sink(black_box(keyring.blind_index("token", black_box(token))))),
        None,
    );
    row(
        "deterministic encrypt, 54-byte token",
        measure(budget, || sink(black_box(keyring.encrypt_deterministic("identifier", black_box(token))))),
        None,
    );
    let sealed = keyring.encrypt_deterministic("identifier", token);
    row(
        "deterministic decrypt, 54-byte token",
        measure(budget, || sink(black_box(keyring.decrypt(black_box(&sealed), b"identifier").unwrap()))),
        None,
    );
    let random = SystemRandom::new();
    row(
        "(of which: a 96-bit random nonce)",
        measure(budget, || {
            let mut nonce = [0u8; 12];
            random.fill(&mut nonce).unwrap();
            sink(nonce);
        }),
        None,
    );
}
