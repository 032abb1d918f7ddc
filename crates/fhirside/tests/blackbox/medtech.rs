//! MedTech: device messages over `POST /medtech/v1/messages` become Observations through Azure's
//! device and FHIR destination mappings; identity resolution in `Create` and `Lookup` mode; hourly
//! SampledData windows filled out of order and late; a message sent twice stored once; a bad
//! message refused on its own; bad mappings refused at start; `fhirside medtech test`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::harness::{temp_dir, Server};

/// Azure's published mappings and messages, vendored with the mapping engine.
fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../medtech/tests/samples")
}

/// A CalculatedContent device mapping in the shape of Azure's documentation: heart rate and blood
/// pressure, with the patient's identifier in the message (which `Create` needs).
fn device_mapping() -> Value {
    let template = |type_name: &str, matched: &str, values: Value| {
        json!({"templateType": "CalculatedContent", "template": {
            "typeName": type_name,
            "typeMatchExpression": matched,
            "deviceIdExpression": "$.matchedToken.deviceId",
            "patientIdExpression": "$.matchedToken.patientId",
            "timestampExpression": "$.matchedToken.endDate",
            "values": values,
        }})
    };
    json!({"templateType": "CollectionContent", "template": [
        template("heartrate", "$..[?(@heartRate)]",
                 json!([{"required": true, "valueExpression": "$.matchedToken.heartRate", "valueName": "hr"}])),
        template("bloodpressure", "$..[?(@systolic && @diastolic)]", json!([
            {"required": true, "valueExpression": "$.matchedToken.systolic", "valueName": "systolic"},
            {"required": true, "valueExpression": "$.matchedToken.diastolic", "valueName": "diastolic"},
        ])),
    ]})
}

/// A server with the mappings; iomt-fhir's basic FHIR mapping (hourly SampledData, blood pressure
/// as components).
fn server(resolution: &str) -> Server {
    let dir = temp_dir("medtech-mappings");
    let device = dir.join("device.json");
    std::fs::write(&device, device_mapping().to_string()).unwrap();
    let fhir = samples().join("iomt-fhir/basic-fhirmapping.json");
    Server::start_in(
        &temp_dir("data"),
        &[
            "--http",
            "--medtech-device-mapping",
            device.to_str().unwrap(),
            "--medtech-fhir-mapping",
            fhir.to_str().unwrap(),
            "--medtech-resolution",
            resolution,
        ],
    )
}

fn heart_rate(value: u32, at: &str) -> Value {
    json!({"heartRate": value.to_string(), "endDate": at, "deviceId": "watch-1", "patientId": "mrn-1"})
}

fn send(server: &Server, messages: &Value) -> Vec<Value> {
    let response = server.post_json("/medtech/v1/messages", messages);
    assert_eq!(response.status, 200, "{}", String::from_utf8_lossy(&response.body));
    response.json()["messages"].as_array().unwrap().clone()
}

fn search(server: &Server, query: &str) -> Vec<Value> {
    let bundle = server.get(query).json();
    bundle["entry"].as_array().cloned().unwrap_or_default().into_iter().map(|e| e["resource"].clone()).collect()
}

#[test]
fn messages_become_observations_once_with_created_identities() {
    let server = server("create");
    let first = send(
        &server,
        &json!([
            heart_rate(72, "2023-03-13T10:00:05Z"),
            heart_rate(70, "2023-03-13T10:00:01Z"),
            {"systolic": "120", "diastolic": "80", "endDate": "2023-03-13T10:00:03Z", "deviceId": "watch-1",
             "patientId": "mrn-1"},
            {"heartRate": "75", "deviceId": "watch-1", "patientId": "mrn-1"},
        ]),
    );
    assert_eq!(first.len(), 4);
    for result in &first[..3] {
        assert_eq!(result["status"], "processed", "{result}");
    }
    // The fourth has no timestamp: refused with why, the others stored all the same.
    assert_eq!(first[3]["status"], "failed");
    assert_eq!(first[3]["code"], "NormalizationDataMapping");
    assert!(first[3]["reason"].as_str().unwrap().contains("timestamp"), "{}", first[3]);

    // Create mode made the Patient and the Device (linked to it) from the identifiers, once.
    let patients = search(&server, "/Patient?identifier=mrn-1");
    assert_eq!(patients.len(), 1);
    let devices = search(&server, "/Device?identifier=watch-1");
    assert_eq!(devices.len(), 1);
    let (patient, device) = (patients[0]["id"].as_str().unwrap(), devices[0]["id"].as_str().unwrap());
    assert_eq!(devices[0]["patient"]["reference"], format!("Patient/{patient}"));

    // One hourly heart-rate Observation holding both values at their offsets, one blood pressure.
    let observations = search(&server, &format!("/Observation?subject=Patient/{patient}"));
    assert_eq!(observations.len(), 2, "{observations:?}");
    let hr = search(&server, "/Observation?code=http://loinc.org|8867-4");
    assert_eq!(hr.len(), 1);
    let hr = &hr[0];
    assert_eq!(hr["device"]["reference"], format!("Device/{device}"));
    assert_eq!(hr["effectivePeriod"]["start"].as_str().unwrap()[..19], *"2023-03-13T10:00:00");
    let data = |observation: &Value| -> Vec<String> {
        let data = observation["valueSampledData"]["data"].as_str().unwrap();
        data.split(' ').map(str::to_owned).collect()
    };
    let samples = data(hr);
    assert_eq!((samples[0].as_str(), samples[1].as_str(), samples[5].as_str()), ("E", "70", "72"));
    let identifier = &hr["identifier"][0];
    assert_eq!(
        identifier["value"],
        format!("{patient}.{device}.heartrate.20230313100000Z.20230313105959Z"),
        "{identifier}"
    );
    let bp = search(&server, "/Observation?code=http://loinc.org|85354-9");
    assert_eq!(bp.len(), 1, "{bp:?}");
    let components = bp[0]["component"].as_array().unwrap();
    assert_eq!(components.len(), 2);

    // The messages of one request are grouped together: the window is written once.
    assert_eq!(hr["meta"]["versionId"], "1");
    // The same message again changes nothing; a late one lands in the same Observation.
    let hr_id = hr["id"].as_str().unwrap();
    let again = send(&server, &json!(heart_rate(72, "2023-03-13T10:00:05Z")));
    assert_eq!(again[0]["status"], "processed");
    assert_eq!(again[0]["unchanged"], json!([format!("Observation/{hr_id}")]));
    assert_eq!(again[0]["observations"], json!([]));
    let late = send(&server, &json!(heart_rate(90, "2023-03-13T10:30:00Z")));
    assert_eq!(late[0]["observations"], json!([format!("Observation/{hr_id}")]));
    let hr = server.get(&format!("/Observation/{hr_id}")).json();
    assert_eq!(hr["meta"]["versionId"], "2");
    assert_eq!(hr["status"], "amended");
    let samples = data(&hr);
    assert_eq!((samples[1].as_str(), samples[5].as_str(), samples[1800].as_str()), ("70", "72", "90"));
    assert_eq!(search(&server, "/Observation").len(), 2);
    assert_eq!(search(&server, "/Patient").len(), 1);
    assert_eq!(search(&server, "/Device").len(), 1);

    // What this server has handled: 6 messages, one refused; the heart-rate window written twice
    // (created, then amended by the late message) and the blood pressure once.
    let status = server.get("/medtech/v1/status").json();
    assert_eq!(
        status,
        json!({"subscriptions": [], "resolution": "create", "messagesReceived": 6, "messagesStored": 5, "messagesRefused": 1,
               "observationsWritten": 3})
    );
}

#[test]
fn lookup_needs_a_device_that_exists_and_bad_requests_are_refused() {
    let server = server("lookup");
    let unknown = send(&server, &json!(heart_rate(72, "2023-03-13T10:00:05Z")));
    assert_eq!(unknown[0]["status"], "failed");
    assert_eq!(unknown[0]["code"], "DeviceNotFound");
    assert!(unknown[0]["reason"].as_str().unwrap().contains("no Device has the identifier 'watch-1'"), "{unknown:?}");
    assert!(search(&server, "/Observation").is_empty());
    assert!(search(&server, "/Patient").is_empty());

    // Register the patient and the device, as Lookup expects: then the message is stored.
    let patient = server.post_json("/Patient", &json!({"resourceType": "Patient", "identifier": [{"value": "mrn-1"}]}));
    let patient = patient.json()["id"].as_str().unwrap().to_owned();
    let device = json!({"resourceType": "Device", "identifier": [{"value": "watch-1"}],
                        "patient": {"reference": format!("Patient/{patient}")}});
    assert_eq!(server.post_json("/Device", &device).status, 201);
    let stored = send(&server, &json!(heart_rate(72, "2023-03-13T10:00:05Z")));
    assert_eq!(stored[0]["status"], "processed", "{stored:?}");
    let observations = search(&server, "/Observation");
    assert_eq!(observations.len(), 1);
    assert_eq!(observations[0]["subject"]["reference"], format!("Patient/{patient}"));

    for (body, status) in [(&b"not json"[..], 400), (&b"[]"[..], 400), (&b"42"[..], 400)] {
        let response =
            server.request("POST", "/medtech/v1/messages", &[("content-type", "application/json")], Some(body));
        assert_eq!(response.status, status);
        assert_eq!(response.json()["resourceType"], "OperationOutcome");
    }
}

#[test]
fn without_mappings_the_endpoint_says_so_and_bad_mappings_stop_the_start() {
    let server = Server::start_http();
    let response = server.post_json("/medtech/v1/messages", &json!({}));
    assert_eq!(response.status, 400);
    assert!(response.json()["issue"][0]["diagnostics"].as_str().unwrap().contains("MedTech is not configured"));

    let dir = temp_dir("medtech-bad");
    let device = dir.join("device.json");
    let broken = json!({"templateType": "CollectionContent", "template": [
        {"templateType": "CalculatedContent", "template": {"typeName": "hr", "typeMatchExpression": "$..[?(@hr)]",
         "values": [{"valueName": "hr", "required": true}]}}]});
    std::fs::write(&device, broken.to_string()).unwrap();
    let fhir = samples().join("iomt-fhir/basic-fhirmapping.json");
    let stderr = crate::harness::serve_refused(
        &[
            "--http",
            "--auth",
            "none",
            "--listen",
            "127.0.0.1:0",
            "--medtech-device-mapping",
            device.to_str().unwrap(),
            "--medtech-fhir-mapping",
            fhir.to_str().unwrap(),
        ],
        &[],
    );
    assert!(stderr.contains("device mapping at template[0]"), "{stderr}");
    assert!(stderr.contains("valueExpression"), "{stderr}");
}

#[test]
fn medtech_test_shows_what_a_message_becomes() {
    let sample = samples().join("azure-samples/calculatedcontent-single-fhir-observation");
    // `fhirside medtech test` with the sample's mappings and `message`: its exit code and output.
    let run = |message: &Path| -> (Option<i32>, Value) {
        let output = Command::new(env!("CARGO_BIN_EXE_fhirside"))
            .args(["medtech", "test", "--device-mapping"])
            .arg(sample.join("device-mapping.json"))
            .arg("--fhir-mapping")
            .arg(sample.join("fhir-destination-mapping.json"))
            .arg("--message")
            .arg(message)
            .output()
            .unwrap();
        let result = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stderr)));
        (output.status.code(), result)
    };
    let (code, result) = run(&sample.join("test-device-message.json"));
    assert_eq!(code, Some(0), "{result}");
    assert_eq!(result["normalized"][0]["properties"][0], json!({"name": "hr", "value": "78"}));
    assert_eq!(result["observations"][0]["valueQuantity"]["value"], 78);
    assert_eq!(result["errors"], json!([]));

    // A message no template can read: exit 1 with the error.
    let message = temp_dir("medtech-message").join("message.json");
    std::fs::write(&message, json!({"heartRate": "78", "deviceId": "d"}).to_string()).unwrap();
    let (code, result) = run(&message);
    assert_eq!(code, Some(1));
    assert_eq!(result["errors"].as_array().unwrap().len(), 1, "{result}");
}
