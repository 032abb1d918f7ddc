//! MedTech from message brokers: device messages published to MQTT (a private Mosquitto) and NATS
//! JetStream become Observations; bad messages are refused on their own and audited with their
//! code and no identifier; what was published while the server was down (killed mid-stream)
//! arrives after its restart, and nothing is stored twice. Azure's documented sample mappings and
//! messages (heart rate, step count, blood pressure with components) end to end over HTTP and MQTT.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{temp_dir, Server};

fn mappings() -> (String, String) {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/data/medtech");
    let path = |name: &str| data.join(name).to_str().unwrap().to_owned();
    (path("device-mapping.json"), path("fhir-mapping.json"))
}

/// Heart rates of `device`, one a second from `first` (seconds into 10:00).
fn heart_rates(device: &str, first: usize, count: usize) -> Vec<Vec<u8>> {
    (first..first + count)
        .map(|s| {
            json!({"heartRate": (60 + s % 40).to_string(), "endDate": format!("2023-03-13T10:{:02}:{:02}Z", s / 60, s % 60),
                   "deviceId": device, "patientId": format!("mrn-{device}")})
            .to_string()
            .into_bytes()
        })
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Waits until the server's counters show `received` messages; returns them.
fn wait_for(server: &Server, received: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = server.get("/medtech/v1/status").json();
        if status["messagesReceived"].as_u64() >= Some(received) {
            return status;
        }
        assert!(Instant::now() < deadline, "the server received only {status} of {received} messages");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The number of values (not `E`) in the SampledData of `device`'s heart-rate Observation.
fn samples_of(server: &Server, device: &str) -> usize {
    let devices = server.get(&format!("/Device?identifier={device}")).json();
    let id = devices["entry"][0]["resource"]["id"].as_str().unwrap().to_owned();
    let found = server.get(&format!("/Observation?device=Device/{id}")).json();
    assert_eq!(found["entry"].as_array().map(Vec::len), Some(1), "one window: {found}");
    let data = found["entry"][0]["resource"]["valueSampledData"]["data"].as_str().unwrap();
    data.split(' ').filter(|v| *v != "E").count()
}

/// Waits until every subscription of the server is connected (an MQTT broker keeps messages only
/// for a session that exists, so a first start must subscribe before anything is published).
fn wait_subscribed(server: &Server) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = server.get("/medtech/v1/status").json();
        let subscriptions = status["subscriptions"].as_array().cloned().unwrap_or_default();
        if !subscriptions.is_empty() && subscriptions.iter().all(|s| s["connected"] == true) {
            return;
        }
        assert!(Instant::now() < deadline, "not subscribed: {status}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn serve(args: &[&str]) -> Server {
    let (device, fhir) = mappings();
    let mut all = vec![
        "--http",
        "--medtech-device-mapping",
        device.as_str(),
        "--medtech-fhir-mapping",
        fhir.as_str(),
        "--medtech-resolution",
        "create",
    ];
    all.extend_from_slice(args);
    Server::start_in(&temp_dir("data"), &all)
}

#[test]
fn mqtt_messages_become_observations_at_least_once_across_a_crash() {
    let broker = fhirside_mqtt::testing::Broker::start();
    let client_id = fhirside_mqtt::testing::unique("fhirside");
    let url = broker.url();
    let mut server =
        serve(&["--medtech-mqtt", &url, "--medtech-mqtt-topic", "devices/#", "--medtech-mqtt-client-id", &client_id]);
    wait_subscribed(&server);
    let publisher = broker.config("publisher");
    let rt = runtime();
    let mut messages = heart_rates("watch-a", 0, 100);
    messages.extend(heart_rates("watch-b", 0, 100));
    messages.push(b"{not json".to_vec());
    messages
        .push(json!({"heartRate": "70", "deviceId": "watch-a", "patientId": "mrn-watch-a"}).to_string().into_bytes());
    rt.block_on(fhirside_mqtt::publish(&publisher, "devices/telemetry", &messages)).unwrap();

    let status = wait_for(&server, 202);
    assert_eq!((status["messagesStored"].as_u64(), status["messagesRefused"].as_u64()), (Some(200), Some(2)));
    assert_eq!(samples_of(&server, "watch-a"), 100);
    assert_eq!(samples_of(&server, "watch-b"), 100);

    // The refusals are in the audit trail with their codes, and without the message's identifiers.
    let audit = server.get("/_audit?operation=medtech-ingest&result=Failed").json();
    let records = audit["value"].as_array().unwrap();
    let mut codes: Vec<&str> = records.iter().map(|r| r["Properties"]["code"].as_str().unwrap()).collect();
    codes.sort_unstable();
    assert_eq!(codes, ["InvalidMessage", "NormalizationDataMapping"], "{audit}");
    assert!(records.iter().all(|r| r["RequestUri"] == format!("{url}/devices/telemetry")), "{audit}");
    assert!(!audit.to_string().contains("watch-a") && !audit.to_string().contains("mrn-"), "{audit}");
    let stored = server.get("/_audit?operation=medtech-ingest&result=Succeeded&_count=1000").json();
    assert_eq!(stored["value"].as_array().map(Vec::len), Some(200));

    // Killed: what is published meanwhile waits in the broker for the session, and arrives after
    // the restart; the window gains exactly those values.
    server.kill();
    rt.block_on(fhirside_mqtt::publish(&publisher, "devices/telemetry", &heart_rates("watch-a", 100, 50))).unwrap();
    server.restart();
    wait_for(&server, 50);
    assert_eq!(samples_of(&server, "watch-a"), 150);
    assert_eq!(samples_of(&server, "watch-b"), 100);
    let everything = server.get("/Observation?_summary=count").json();
    assert_eq!(everything["total"], 2);
    let patients = server.get("/Patient?_summary=count").json();
    assert_eq!(patients["total"], 2);
}

#[test]
fn nats_jetstream_messages_become_observations() {
    let config = fhirside_nats::testing::unique_config(&fhirside_nats::testing::shared_url());
    let url = fhirside_nats::testing::shared_url();
    let server = serve(&[
        "--medtech-nats",
        &url,
        "--medtech-nats-stream",
        &config.stream,
        "--medtech-nats-subject",
        &config.subject,
        "--medtech-nats-consumer",
        &config.consumer,
    ]);
    let rt = runtime();
    let mut messages = heart_rates("band-1", 0, 120);
    messages.push(b"[1, 2".to_vec());
    let published = rt.block_on(async {
        fhirside_nats::ensure_stream(&config).await?;
        fhirside_nats::publish(&config, &messages).await
    });
    published.unwrap();
    let status = wait_for(&server, 121);
    assert_eq!((status["messagesStored"].as_u64(), status["messagesRefused"].as_u64()), (Some(120), Some(1)));
    assert_eq!(samples_of(&server, "band-1"), 120);
    drop(server);
    rt.block_on(fhirside_nats::testing::delete_stream(&config)).unwrap();
}

/// Azure's samples from the MedTech configuration documentation (vendored with the mapping engine
/// in crates/medtech/tests/samples/iomt-fhir): the heart-rate, step-count and blood-pressure device
/// templates, the heart-rate (hourly SampledData), steps (SampledData) and blood-pressure
/// (Quantity components) FHIR templates, and the documented messages. Two corrections, as the
/// engine's own tests make them: the blood-pressure template reads `$.deviceid` from messages that
/// carry `deviceId`, and the steps FHIR template is named `stepsCount` while the device template
/// makes `stepcount`; both fail the same way in Azure.
fn azure_samples() -> (Value, Value, Vec<Value>) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../medtech/tests/samples/iomt-fhir");
    let read = |name: &str| -> Value { serde_json::from_slice(&std::fs::read(dir.join(name)).unwrap()).unwrap() };
    // The documentation shows this one without its `JsonPathContent` wrapper.
    let mut bloodpressure = json!({"templateType": "JsonPathContent",
                                   "template": read("configuration-bloodpressure-template.json")});
    bloodpressure["template"]["deviceIdExpression"] = json!("$.deviceId");
    let device = json!({"templateType": "CollectionContent", "template": [
        read("configuration-heartrate-template.json"), read("configuration-steps-template.json"), bloodpressure]});
    let heartrate = read("basic-fhirmapping.json")["template"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["template"]["typeName"] == "heartrate")
        .cloned()
        .unwrap();
    let mut steps = read("configuration-fhir-steps-sampleddata.json");
    steps["template"]["typeName"] = json!("stepcount");
    let fhir = json!({"templateType": "CollectionFhir", "template": [
        heartrate, steps, read("configuration-fhir-bloodpressure-quantity.json")]});
    let bodies = [
        "configuration-heartrate-message.json",
        "configuration-multiple-message.json",
        "configuration-bloodpressure-message.json",
    ]
    .iter()
    .map(|name| read(name)["Body"].clone())
    .collect();
    (device, fhir, bodies)
}

/// A server in Lookup mode (Azure's default) with the samples' mappings, and the samples' device
/// registered to a patient.
fn sample_server(extra: &[&str]) -> (Server, String) {
    let (device, fhir, _) = azure_samples();
    let dir = temp_dir("medtech-samples");
    std::fs::write(dir.join("device.json"), device.to_string()).unwrap();
    std::fs::write(dir.join("fhir.json"), fhir.to_string()).unwrap();
    let (device_path, fhir_path) = (dir.join("device.json"), dir.join("fhir.json"));
    let mut args = vec![
        "--http",
        "--medtech-device-mapping",
        device_path.to_str().unwrap(),
        "--medtech-fhir-mapping",
        fhir_path.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let server = Server::start_in(&temp_dir("data"), &args);
    let patient = server.post_json("/Patient", &json!({"resourceType": "Patient", "identifier": [{"value": "p-123"}]}));
    let patient = patient.json()["id"].as_str().unwrap().to_owned();
    let device = json!({"resourceType": "Device", "identifier": [{"value": "device123"}],
                        "patient": {"reference": format!("Patient/{patient}")}});
    assert_eq!(server.post_json("/Device", &device).status, 201);
    (server, patient)
}

/// The Observations the samples' three messages make: heart rate 78 (twice at one instant, one
/// value), 2 steps, and a blood pressure of 123/87 as two Quantity components.
fn assert_sample_observations(server: &Server, patient: &str) {
    let found = server.get(&format!("/Observation?subject=Patient/{patient}")).json();
    let observations: Vec<Value> = found["entry"].as_array().unwrap().iter().map(|e| e["resource"].clone()).collect();
    assert_eq!(observations.len(), 3, "{found}");
    let by_code = |code: &str| observations.iter().find(|o| o["code"]["coding"][0]["code"] == code).unwrap().clone();
    let values = |o: &Value| -> Vec<String> {
        let data = o["valueSampledData"]["data"].as_str().unwrap();
        data.split(' ').filter(|v| *v != "E").map(str::to_owned).collect()
    };
    assert_eq!(values(&by_code("8867-4")), ["78"]);
    assert_eq!(values(&by_code("55423-8")), ["2"]);
    let bp = by_code("85354-9");
    assert_eq!(bp["effectivePeriod"]["start"].as_str().unwrap()[..19], *"2019-02-01T22:46:01");
    let mut components: Vec<(String, f64)> = bp["component"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["code"]["coding"][0]["display"].as_str().unwrap().to_owned(),
                c["valueQuantity"]["value"].as_f64().unwrap(),
            )
        })
        .collect();
    components.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        components,
        [("Diastolic blood pressure".to_owned(), 87.0), ("Systolic blood pressure".to_owned(), 123.0)]
    );
    assert!(bp["component"].as_array().unwrap().iter().all(|c| c["valueQuantity"]["unit"] == "mmHg"));
}

#[test]
fn azures_documented_samples_end_to_end_over_http() {
    let (server, patient) = sample_server(&[]);
    let (_, _, bodies) = azure_samples();
    let results = server.post_json("/medtech/v1/messages", &Value::Array(bodies)).json();
    let statuses: Vec<&str> =
        results["messages"].as_array().unwrap().iter().map(|m| m["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["processed"; 3], "{results}");
    assert_sample_observations(&server, &patient);
}

#[test]
fn azures_documented_samples_end_to_end_over_mqtt() {
    let broker = fhirside_mqtt::testing::Broker::start();
    let client_id = fhirside_mqtt::testing::unique("fhirside");
    let url = broker.url();
    let (server, patient) = sample_server(&["--medtech-mqtt", &url, "--medtech-mqtt-client-id", &client_id]);
    wait_subscribed(&server);
    let (_, _, bodies) = azure_samples();
    let payloads: Vec<Vec<u8>> = bodies.iter().map(|b| b.to_string().into_bytes()).collect();
    runtime().block_on(fhirside_mqtt::publish(&broker.config("publisher"), "medtech/device123", &payloads)).unwrap();
    let status = wait_for(&server, 3);
    assert_eq!(status["messagesStored"], 3, "{status}");
    assert_sample_observations(&server, &patient);
}
