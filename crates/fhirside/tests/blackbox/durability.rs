//! SIGKILL in the middle of a write load: every acknowledged write survives, nothing
//! unacknowledged is half there.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::Server;

/// What one writer thread saw acknowledged.
#[derive(Default)]
struct Acknowledged {
    /// (identifier value, id, body returned by the server)
    created: Vec<(String, String, Value)>,
    /// Identifiers sent whose answer never came.
    unanswered: Vec<String>,
    /// The counter resource's id and the last acknowledged version.
    counter: Option<(String, u64)>,
}

#[test]
fn sigkill_during_writes_loses_nothing_acknowledged() {
    let mut server = Server::start_http();
    let stop = Arc::new(AtomicBool::new(false));
    let results: Arc<Mutex<Vec<Acknowledged>>> = Arc::default();
    let writers: Vec<_> = (0..8)
        .map(|t| {
            let mut client = server.client();
            let stop = stop.clone();
            let results = results.clone();
            std::thread::spawn(move || {
                let mut ack = Acknowledged::default();
                let counter_id = format!("counter-{t}");
                for n in 0.. {
                    if stop.load(Ordering::Relaxed) && n % 2 == 0 {
                        break;
                    }
                    let outcome = if n % 2 == 0 {
                        let value = format!("{t}-{n}");
                        let body = json!({"resourceType": "Patient", "identifier": [{"system": "urn:kill", "value": value}],
                                          "name": [{"family": format!("Family{n}"), "given": ["Test"]}]});
                        match client.try_request("POST", "/Patient", &[("content-type", "application/fhir+json")],
                                                 Some(body.to_string().as_bytes())) {
                            Ok(r) if r.status == 201 => {
                                let created = r.json();
                                ack.created.push((value, created["id"].as_str().unwrap().to_owned(), created));
                                true
                            }
                            Ok(r) => panic!("unexpected {}: {}", r.status, String::from_utf8_lossy(&r.body)),
                            Err(_) => {
                                ack.unanswered.push(value);
                                false
                            }
                        }
                    } else {
                        // A resource whose content records its own update count.
                        let count = ack.counter.as_ref().map_or(1, |(_, v)| v + 1);
                        let body = json!({"resourceType": "Basic", "id": counter_id,
                                          "code": {"text": format!("{count}")}});
                        match client.try_request("PUT", &format!("/Basic/{counter_id}"),
                                                 &[("content-type", "application/fhir+json")], Some(body.to_string().as_bytes())) {
                            Ok(r) if r.status == 200 || r.status == 201 => {
                                let version: u64 = r.json()["meta"]["versionId"].as_str().unwrap().parse().unwrap();
                                assert_eq!(version, count);
                                ack.counter = Some((counter_id.clone(), version));
                                true
                            }
                            Ok(r) => panic!("unexpected {}: {}", r.status, String::from_utf8_lossy(&r.body)),
                            Err(_) => false,
                        }
                    };
                    if !outcome {
                        break;
                    }
                }
                results.lock().unwrap().push(ack);
            })
        })
        .collect();

    std::thread::sleep(Duration::from_millis(1500));
    server.kill(); // SIGKILL, mid-flight
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.join().unwrap();
    }
    server.restart();

    let results = results.lock().unwrap();
    let acknowledged: usize = results.iter().map(|a| a.created.len()).sum();
    assert!(acknowledged > 50, "the load ran: {acknowledged} creates acknowledged");
    let mut client = server.client();
    for ack in results.iter() {
        for (value, id, body) in &ack.created {
            let read = client.request("GET", &format!("/Patient/{id}"), &[], None).expect(200);
            assert_eq!(&read.json(), body, "acknowledged create {value} survives intact");
            let found =
                client.request("GET", &format!("/Patient?identifier=urn:kill|{value}"), &[], None).expect(200).json();
            assert_eq!(found["entry"].as_array().map_or(0, Vec::len), 1, "its index row survives too");
        }
        // An unanswered create is either entirely there (resource and index) or entirely absent.
        for value in &ack.unanswered {
            let found =
                client.request("GET", &format!("/Patient?identifier=urn:kill|{value}"), &[], None).expect(200).json();
            if let Some(entries) = found["entry"].as_array() {
                assert_eq!(entries.len(), 1);
                let id = entries[0]["resource"]["id"].as_str().unwrap();
                client.request("GET", &format!("/Patient/{id}"), &[], None).expect(200);
            }
        }
        if let Some((id, version)) = &ack.counter {
            let read = client.request("GET", &format!("/Basic/{id}"), &[], None).expect(200).json();
            let stored: u64 = read["meta"]["versionId"].as_str().unwrap().parse().unwrap();
            // The last acknowledged version, or one more whose answer was lost in the kill.
            assert!(stored == *version || stored == version + 1, "counter at {stored}, acknowledged {version}");
            assert_eq!(read["code"]["text"], stored.to_string(), "content matches its version");
            let history =
                client.request("GET", &format!("/Basic/{id}/_history?_count=1000"), &[], None).expect(200).json();
            assert_eq!(history["entry"].as_array().unwrap().len() as u64, stored, "no version missing or extra");
        }
    }
}
