//! The engine on Azure's published mappings and messages (see `samples/README.md`), asserting the
//! values Azure documents for them.

use fhirside_medtech::{
    event_message, explain, group_measurements, observation, Change, DeviceMapping, FhirMapping, Measurement,
    MeasurementGroup, NormalizeErrorKind, ObservationContext, ObservationError, SERVICE_SYSTEM,
};
use serde_json::{json, Value};

fn sample(path: &str) -> Value {
    let full = format!("{}/tests/samples/{path}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{full}: {e}"))
}

/// A documentation snippet holding one template, wrapped in the collection a mapping needs.
fn collection(kind: &str, templates: Vec<Value>) -> Value {
    json!({"templateType": kind, "template": templates})
}

/// A bare `{typeName, …}` snippet given its template type.
fn typed(template_type: &str, template: Value) -> Value {
    json!({"templateType": template_type, "template": template})
}

/// How Azure's Mapping debugger and Event Hubs present a plain device message.
fn envelope(body: Value) -> Value {
    event_message(body, json!({}), json!({}))
}

const CONTEXT: ObservationContext<'static> =
    ObservationContext { patient_id: "patient-1", device_id: "device-1", encounter_id: None, issued: None };

fn only_group(fhir: &FhirMapping, measurements: &[Measurement]) -> MeasurementGroup {
    let grouping = group_measurements(fhir, measurements);
    assert!(grouping.errors.is_empty(), "{:?}", grouping.errors);
    assert_eq!(grouping.groups.len(), 1, "{:?}", grouping.groups);
    grouping.groups.into_iter().next().unwrap()
}

fn build(fhir: &FhirMapping, group: &MeasurementGroup, existing: Option<&Value>) -> (Value, Change) {
    let template = fhir.template(&group.type_name).unwrap();
    let built = observation(template, group, &CONTEXT, existing).unwrap();
    (built.resource, built.change)
}

fn data_of(observation: &Value, pointer: &str) -> Vec<String> {
    let data =
        observation.pointer(pointer).and_then(Value::as_str).unwrap_or_else(|| panic!("no {pointer} in {observation}"));
    data.split(' ').map(str::to_owned).collect()
}

/// The mappings and message of Azure's `calculatedcontent/single-fhir-observation` sample.
fn calculatedcontent_sample() -> (DeviceMapping, FhirMapping, Value) {
    let folder = "azure-samples/calculatedcontent-single-fhir-observation";
    let device = DeviceMapping::parse(&sample(&format!("{folder}/device-mapping.json"))).unwrap();
    let fhir = FhirMapping::parse(&sample(&format!("{folder}/fhir-destination-mapping.json"))).unwrap();
    (device, fhir, envelope(sample(&format!("{folder}/test-device-message.json"))))
}

#[test]
fn calculatedcontent_heart_rate_quantity_matches_azures_documented_output() {
    let (device, fhir, message) = calculatedcontent_sample();
    let measurements = device.normalize(&message).unwrap();
    // The normalized message of how-to-use-calculatedcontent-templates.md.
    assert_eq!(
        measurements.iter().map(Measurement::to_json).collect::<Vec<_>>(),
        [json!({
            "type": "heartrate",
            "occurrenceTimeUtc": "2023-03-13T22:46:01.875Z",
            "deviceId": "device01",
            "properties": [{"name": "hr", "value": "78"}]
        })]
    );
    let group = only_group(&fhir, &measurements);
    let (resource, change) = build(&fhir, &group, None);
    assert_eq!(change, Change::Created);
    // overview-of-fhir-destination-mapping.md's Observation, in FHIR JSON, plus what the service adds.
    assert_eq!(
        resource,
        json!({
            "resourceType": "Observation",
            "identifier": [{"system": SERVICE_SYSTEM, "value": "patient-1.device-1.heartrate.20230313224601Z.20230313224601Z"}],
            "status": "final",
            "code": {
                "coding": [
                    {"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"},
                    {"system": SERVICE_SYSTEM, "code": "heartrate", "display": "heartrate"}
                ],
                "text": "heartrate"
            },
            "subject": {"reference": "Patient/patient-1"},
            "effectivePeriod": {"start": "2023-03-13T22:46:01.8750000Z", "end": "2023-03-13T22:46:01.8750000Z"},
            "valueQuantity": {"value": 78, "unit": "count/min", "system": "http://unitsofmeasure.org", "code": "count/min"},
            "device": {"reference": "Device/device-1"}
        })
    );
    // Processing the same message again finds the Observation by identifier and changes nothing.
    let (again, change) = build(&fhir, &group, Some(&resource));
    assert_eq!((change, &again), (Change::Unchanged, &resource));
}

#[test]
fn jsonpathcontent_heart_rate_goes_into_an_hourly_sampleddata_stream() {
    let template = sample("iomt-fhir/configuration-heartrate-template.json");
    let device = DeviceMapping::parse(&collection("CollectionContent", vec![template])).unwrap();
    let fhir = FhirMapping::parse(&sample("iomt-fhir/basic-fhirmapping.json")).unwrap();
    let measurements = device.normalize(&sample("iomt-fhir/configuration-heartrate-message.json")).unwrap();
    assert_eq!(
        measurements[0].to_json(),
        json!({"type": "heartrate", "occurrenceTimeUtc": "2019-02-01T22:46:01.875Z", "deviceId": "device123",
               "properties": [{"name": "hr", "value": "78"}]})
    );
    let group = only_group(&fhir, &measurements);
    assert_eq!(group.id_segment(), "20190201220000Z.20190201225959Z");
    let (resource, _) = build(&fhir, &group, None);
    assert_eq!(
        resource["effectivePeriod"],
        json!({"start": "2019-02-01T22:00:00.0000000Z", "end": "2019-02-01T22:59:59.9999999Z"})
    );
    assert_eq!(resource["identifier"][0]["value"], "patient-1.device-1.heartrate.20190201220000Z.20190201225959Z");
    assert_eq!(
        resource["valueSampledData"]["origin"],
        json!({"value": 0, "unit": "count/min"}),
        "origin carries the template's unit"
    );
    assert_eq!(resource["valueSampledData"]["period"], json!(1000));
    assert_eq!(resource["valueSampledData"]["dimensions"], json!(1));
    let data = data_of(&resource, "/valueSampledData/data");
    // 3600 one-second positions; 22:46:01.875 is 2761.875 s into the hour.
    assert_eq!(data.len(), 3600);
    assert_eq!(data[2761], "78");
    assert_eq!(data.iter().filter(|d| *d != "E").count(), 1);
}

#[test]
fn blood_pressure_components_as_sampleddata_and_as_quantity() {
    // The docs' blood-pressure template reads `$.deviceid` from a message with `deviceId`: Newtonsoft's
    // JSONPath is case-sensitive, so the sample fails, here as in Azure.
    let documented = typed("JsonPathContent", sample("iomt-fhir/configuration-bloodpressure-template.json"));
    let device = DeviceMapping::parse(&collection("CollectionContent", vec![documented])).unwrap();
    let message = sample("iomt-fhir/configuration-bloodpressure-message.json");
    let error = device.normalize(&message).unwrap_err();
    assert_eq!((error.expression_name.as_str(), &error.kind), ("deviceIdExpression", &NormalizeErrorKind::Missing));
    assert_eq!(
        error.to_string(),
        "template[0] (bloodpressure), deviceIdExpression `$.deviceid`: required value not found in the message"
    );

    // With the name spelt as in the message:
    let mut fixed = sample("iomt-fhir/configuration-bloodpressure-template.json");
    fixed["deviceIdExpression"] = json!("$.deviceId");
    let device = DeviceMapping::parse(&collection("CollectionContent", vec![typed("JsonPathContent", fixed)])).unwrap();
    let measurements = device.normalize(&message).unwrap();
    assert_eq!(
        measurements[0].to_json()["properties"],
        json!([{"name": "systolic", "value": "123"}, {"name": "diastolic", "value": "87"}])
    );

    let sampled = FhirMapping::parse(&sample("iomt-fhir/basic-fhirmapping.json")).unwrap();
    let (resource, _) = build(&sampled, &only_group(&sampled, &measurements), None);
    assert_eq!(
        resource["code"]["coding"][0],
        json!({"system": "http://loinc.org", "code": "85354-9", "display": "Blood pressure panel"})
    );
    assert!(resource.get("valueSampledData").is_none(), "the panel itself has no value");
    let components = resource["component"].as_array().unwrap();
    assert_eq!(components.len(), 2);
    assert_eq!(
        components[0]["code"],
        json!({"coding": [
            {"system": "http://loinc.org", "code": "8867-4", "display": "Diastolic blood pressure"},
            {"system": SERVICE_SYSTEM, "code": "diastolic", "display": "diastolic"}
        ], "text": "diastolic"})
    );
    assert_eq!(components[1]["code"]["coding"][1]["system"], "http://snomed.info/sct");
    assert_eq!(data_of(&resource, "/component/0/valueSampledData/data")[2761], "87");
    assert_eq!(data_of(&resource, "/component/1/valueSampledData/data")[2761], "123");

    let quantity = FhirMapping::parse(&collection(
        "CollectionFhir",
        vec![sample("iomt-fhir/configuration-fhir-bloodpressure-quantity.json")],
    ))
    .unwrap();
    let (resource, _) = build(&quantity, &only_group(&quantity, &measurements), None);
    assert_eq!(resource["effectivePeriod"]["start"], "2019-02-01T22:46:01.8750000Z");
    assert_eq!(resource["component"][0]["valueQuantity"], json!({"value": 87, "unit": "mmHg"}));
    assert_eq!(resource["component"][1]["valueQuantity"], json!({"value": 123, "unit": "mmHg"}));
    assert_eq!(resource["component"][1]["code"]["text"], "systolic");
}

#[test]
fn one_message_projects_heart_rate_and_step_count() {
    let device = DeviceMapping::parse(&collection(
        "CollectionContent",
        vec![
            sample("iomt-fhir/configuration-heartrate-template.json"),
            sample("iomt-fhir/configuration-steps-template.json"),
        ],
    ))
    .unwrap();
    let measurements = device.normalize(&sample("iomt-fhir/configuration-multiple-message.json")).unwrap();
    let summary: Vec<(&str, &str)> =
        measurements.iter().map(|m| (m.type_name.as_str(), m.values[0].value.as_str())).collect();
    assert_eq!(summary, [("heartrate", "78"), ("stepcount", "2")]);

    // The docs' steps FHIR template is for `stepsCount`; the steps device template makes `stepcount`.
    let steps_template = sample("iomt-fhir/configuration-fhir-steps-sampleddata.json");
    let fhir = FhirMapping::parse(&collection("CollectionFhir", vec![steps_template.clone()])).unwrap();
    let grouping = group_measurements(&fhir, &measurements);
    assert_eq!(
        grouping.errors,
        [
            ObservationError::NoTemplate { type_name: "heartrate".into() },
            ObservationError::NoTemplate { type_name: "stepcount".into() }
        ]
    );

    let mut renamed = steps_template;
    renamed["template"]["typeName"] = json!("stepcount");
    let fhir = FhirMapping::parse(&collection("CollectionFhir", vec![renamed])).unwrap();
    let grouping = group_measurements(&fhir, &measurements[1..]);
    let (resource, _) = build(&fhir, &grouping.groups[0], None);
    // `"unit": ""` is left out: FHIR forbids empty strings.
    assert_eq!(resource["valueSampledData"]["origin"], json!({"value": 0}));
    assert_eq!(resource["valueSampledData"]["period"], json!(5000));
    let data = data_of(&resource, "/valueSampledData/data");
    assert_eq!((data.len(), data[552].as_str()), (720, "2"), "5 s positions: 2761.875 s is position 552");
}

#[test]
fn array_sample_with_hour_24_is_refused_like_dotnet_does() {
    let device = DeviceMapping::parse(&collection(
        "CollectionContent",
        vec![sample("iomt-fhir/configuration-heartrate-template.json")],
    ))
    .unwrap();
    let error = device.normalize(&sample("iomt-fhir/configuration-array-message.json")).unwrap_err();
    assert_eq!(error.expression, "$.endDate");
    assert!(
        matches!(&error.kind, NormalizeErrorKind::BadTimestamp(why) if why.contains("2019-02-01T24:46:01.8750000Z")),
        "{error}"
    );
}

#[test]
fn calculatedcontent_jmespath_custom_functions_give_the_readmes_values() {
    let device = DeviceMapping::parse(&sample("azure-samples/conversions-using-functions/deviceMapping.json")).unwrap();
    let fhir =
        FhirMapping::parse(&sample("azure-samples/conversions-using-functions/fhirDestinationMapping.json")).unwrap();

    let a = device.normalize(&envelope(sample("azure-samples/conversions-using-functions/testMessageA.json"))).unwrap();
    assert_eq!(
        a.iter().map(Measurement::to_json).collect::<Vec<_>>(),
        [json!({
            "type": "DeviceADataElements",
            "occurrenceTimeUtc": "2023-05-13T23:45:44Z",
            "deviceId": "device123",
            "patientId": "user123",
            "properties": [{"name": "heightInMeters", "value": "1.8288"}, {"name": "distanceInMeters", "value": "1000.0463616"}]
        })]
    );
    let (resource, _) = build(&fhir, &only_group(&fhir, &a), None);
    let components = resource["component"].as_array().unwrap();
    assert_eq!(components.len(), 2, "no weight was measured");
    assert_eq!(
        components[1]["valueQuantity"],
        json!({"value": 1000.0463616, "unit": "meter", "system": "http://loinc.org", "code": "sampleDistanceCode"})
    );

    let b = device.normalize(&envelope(sample("azure-samples/conversions-using-functions/testMessageB.json"))).unwrap();
    let summary: Vec<Value> = b.iter().map(Measurement::to_json).collect();
    let expected: Vec<Value> = [("23:01", "27.9809802487198"), ("23:02", "29.3525969275786"), ("23:03", "27.2494513533285")]
        .iter()
        .map(|(time, distance)| {
            json!({
                "type": "DeviceBDataElements",
                "occurrenceTimeUtc": format!("2023-05-23T{time}:00Z"),
                "deviceId": "deviceTypeB_456",
                "patientId": "user123",
                "properties": [{"name": "heightInMeters", "value": "1.8288"}, {"name": "distanceInMeters", "value": distance}]
            })
        })
        .collect();
    assert_eq!(summary, expected);

    // The sample's hourly Quantity components cannot hold three minutes of data; Azure's Quantity
    // processor fails on more than one value the same way.
    let group = only_group(&fhir, &b);
    let template = fhir.template("DeviceBDataElements").unwrap();
    assert_eq!(
        observation(template, &group, &CONTEXT, None).unwrap_err(),
        ObservationError::MultipleValues { value_name: "heightInMeters".into(), count: 3 }
    );
}

#[test]
fn iotjsonpathcontent_takes_device_and_time_from_iot_hub_properties() {
    let device = DeviceMapping::parse(&sample("azure-docs/iotjsonpathcontent-device-mapping.json")).unwrap();
    let measurements = device.normalize(&sample("azure-docs/iotjsonpathcontent-message.json")).unwrap();
    // The normalized message of how-to-use-iotjsonpathcontent-templates.md.
    assert_eq!(
        measurements[0].to_json(),
        json!({
            "type": "HeartRate",
            "occurrenceTimeUtc": "2023-07-25T20:41:26.046Z",
            "deviceId": "sampleDeviceId",
            "patientId": "patient1",
            "properties": [{"name": "HeartRate", "value": "78"}]
        })
    );

    // Azure-Samples' IoT sample: a plain number body, enriched by IoT Hub without a creation time, so
    // the enqueued time is used.
    let device =
        DeviceMapping::parse(&sample("azure-samples/iotjsonpathcontent-single-fhir-observation/device-mapping.json"))
            .unwrap();
    let fhir = FhirMapping::parse(&sample(
        "azure-samples/iotjsonpathcontent-single-fhir-observation/fhir-destination-mapping.json",
    ))
    .unwrap();
    let message = event_message(
        sample("azure-samples/iotjsonpathcontent-single-fhir-observation/test-device-message.json"),
        json!({}),
        json!({"iothub-connection-device-id": "hub-device-7", "iothub-enqueuedtime": "2023-07-25T20:41:27Z"}),
    );
    let measurements = device.normalize(&message).unwrap();
    assert_eq!(
        (
            measurements[0].device_id.as_str(),
            measurements[0].patient_id.as_deref(),
            measurements[0].occurrence_time.to_trimmed()
        ),
        ("hub-device-7", Some("hub-device-7"), "2023-07-25T20:41:27Z".to_owned())
    );
    let (resource, _) = build(&fhir, &only_group(&fhir, &measurements), None);
    assert_eq!(
        resource["valueQuantity"],
        json!({"value": 78, "unit": "count/min", "system": "http://unitsofmeasure.org", "code": "count/min"})
    );
}

fn heart_rate_at(device: &DeviceMapping, time: &str, hr: &str) -> Measurement {
    let message = envelope(json!({"heartRate": hr, "endDate": time, "deviceId": "device123"}));
    device.normalize(&message).unwrap().remove(0)
}

#[test]
fn sampleddata_merges_out_of_order_and_late_measurements_idempotently() {
    let device = DeviceMapping::parse(&collection(
        "CollectionContent",
        vec![sample("iomt-fhir/configuration-heartrate-template.json")],
    ))
    .unwrap();
    let fhir = FhirMapping::parse(&sample("iomt-fhir/basic-fhirmapping.json")).unwrap();

    // One batch, out of order, with two values at the same instant (the first received stays).
    let batch = [
        heart_rate_at(&device, "2019-02-01T22:00:05Z", "70"),
        heart_rate_at(&device, "2019-02-01T22:00:02.500Z", "68"),
        heart_rate_at(&device, "2019-02-01T22:00:05Z", "99"),
    ];
    let group = only_group(&fhir, &batch);
    assert_eq!(group.measurement_count(), 3);
    let (stored, change) = build(&fhir, &group, None);
    assert_eq!(change, Change::Created);
    assert_eq!(data_of(&stored, "/valueSampledData/data")[..7], ["E", "E", "68", "E", "E", "70", "E"]);

    // The same batch again (a redelivered message): nothing to write.
    let (same, change) = build(&fhir, &group, Some(&stored));
    assert_eq!((change, &same), (Change::Unchanged, &stored));

    // A late measurement for the same hour lands at its own position; the status becomes amended.
    let late = only_group(&fhir, &[heart_rate_at(&device, "2019-02-01T22:00:03.900Z", "69")]);
    assert_eq!(
        late.observation_identifier("patient-1", "device-1"),
        group.observation_identifier("patient-1", "device-1")
    );
    let (merged, change) = build(&fhir, &late, Some(&stored));
    assert_eq!(change, Change::Amended);
    assert_eq!(merged["status"], "amended");
    assert_eq!(merged["effectivePeriod"], stored["effectivePeriod"]);
    assert_eq!(data_of(&merged, "/valueSampledData/data")[..7], ["E", "E", "68", "69", "E", "70", "E"]);
    assert_eq!(data_of(&merged, "/valueSampledData/data").len(), 3600);

    // Merging the late measurement again, or the first batch again, changes nothing.
    let (again, change) = build(&fhir, &late, Some(&merged));
    assert_eq!((change, &again), (Change::Unchanged, &merged));
    let (again, change) = build(&fhir, &group, Some(&merged));
    assert_eq!((change, &again), (Change::Unchanged, &merged));

    // A later value in a position already filled replaces it (the latest value in a position wins).
    let newer = only_group(&fhir, &[heart_rate_at(&device, "2019-02-01T22:00:05.500Z", "71")]);
    let (replaced, _) = build(&fhir, &newer, Some(&merged));
    assert_eq!(data_of(&replaced, "/valueSampledData/data")[5], "71");

    // The next hour is another Observation.
    let next_hour = only_group(&fhir, &[heart_rate_at(&device, "2019-02-01T23:00:00Z", "75")]);
    assert_eq!(next_hour.id_segment(), "20190201230000Z.20190201235959Z");
}

#[test]
fn correlation_id_groups_span_their_measurements() {
    let device = DeviceMapping::parse(&json!({"templateType": "CollectionContent", "template": [{
        "templateType": "CalculatedContent",
        "template": {
            "typeName": "session", "typeMatchExpression": "$..[?(@hr)]", "deviceIdExpression": "$.matchedToken.device",
            "timestampExpression": "$.matchedToken.time", "correlationIdExpression": "$.Body.session",
            "values": [{"valueName": "hr", "valueExpression": "$.matchedToken.hr", "required": true}]
        }
    }]}))
    .unwrap();
    let fhir = FhirMapping::parse(&json!({"templateType": "CollectionFhir", "template": [{"templateType": "CodeValueFhir", "template": {
        "typeName": "session", "periodInterval": -1, "codes": [{"code": "x"}],
        "category": [{"text": "Vital Signs", "codes": [{"code": "vital-signs", "system": "http://terminology.hl7.org/CodeSystem/observation-category"}]}],
        "value": {"valueName": "hr", "valueType": "SampledData", "defaultPeriod": 60000, "unit": "/min"}
    }}]}))
    .unwrap();
    let message = envelope(json!({"session": "run-42", "samples": [
        {"hr": 90, "time": "2023-01-01T10:02:00Z", "device": "watch"},
        {"hr": 80, "time": "2023-01-01T10:00:00Z", "device": "watch"}
    ]}));
    let measurements = device.normalize(&message).unwrap();
    let group = only_group(&fhir, &measurements);
    let (resource, _) = build(&fhir, &group, None);
    assert_eq!(resource["identifier"][0]["value"], "patient-1.device-1.session.run-42");
    assert_eq!(
        resource["effectivePeriod"],
        json!({"start": "2023-01-01T10:00:00.0000000Z", "end": "2023-01-01T10:02:00.0000000Z"})
    );
    assert_eq!(resource["valueSampledData"]["data"], "80 E 90");
    assert_eq!(
        resource["category"],
        json!([{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}], "text": "Vital Signs"}])
    );

    // A later message of the same session widens the period backwards and forwards.
    let later = envelope(
        json!({"session": "run-42", "samples": [{"hr": 70, "time": "2023-01-01T09:59:00Z", "device": "watch"}]}),
    );
    let more = only_group(&fhir, &device.normalize(&later).unwrap());
    let (merged, change) = build(&fhir, &more, Some(&resource));
    assert_eq!(change, Change::Amended);
    assert_eq!(merged["effectivePeriod"]["start"], "2023-01-01T09:59:00.0000000Z");
    assert_eq!(merged["valueSampledData"]["data"], "70 80 E 90");

    let no_session = envelope(json!({"samples": [{"hr": 70, "time": "2023-01-01T09:59:00Z", "device": "watch"}]}));
    let error = device.normalize(&no_session).unwrap_err();
    assert_eq!((error.expression_name.as_str(), error.kind), ("correlationIdExpression", NormalizeErrorKind::Missing));
}

#[test]
fn codeable_concept_and_string_values_with_encounter_and_issued() {
    let fhir = FhirMapping::parse(&sample("iomt-fhir/basic-fhirmapping.json")).unwrap();
    let device = DeviceMapping::parse(&json!({"templateType": "CollectionContent", "template": [{
        "templateType": "JsonPathContent",
        "template": {"typeName": "deviceRemoved", "typeMatchExpression": "$..[?(@deviceRemoved)]", "deviceIdExpression": "$.deviceid",
            "timestampExpression": "$.measurementdatetime", "encounterIdExpression": "$.visit",
            "values": [{"required": "true", "valueExpression": "$.deviceRemoved", "valueName": "deviceRemoved"}]}
    }]}))
    .unwrap();
    let message = envelope(
        json!({"deviceRemoved": true, "deviceid": "d9", "measurementdatetime": "2019-02-01T22:46:01Z", "visit": "v1"}),
    );
    let measurements = device.normalize(&message).unwrap();
    assert_eq!(measurements[0].values[0].value, "True", "booleans are written as .NET writes them");
    let group = only_group(&fhir, &measurements);
    let context = ObservationContext { encounter_id: Some("enc-3"), issued: Some("2024-01-01T00:00:00Z"), ..CONTEXT };
    let built = observation(fhir.template("deviceRemoved").unwrap(), &group, &context, None).unwrap();
    assert_eq!(built.resource["encounter"], json!({"reference": "Encounter/enc-3"}));
    assert_eq!(built.resource["issued"], "2024-01-01T00:00:00Z");
    assert_eq!(
        built.resource["valueCodeableConcept"],
        json!({"coding": [{"system": "https://www.mydevice.com/v1", "code": "Removed", "display": "Device Removed"}], "text": "Device Removed"})
    );
    let keys: Vec<&str> = built.resource.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "resourceType",
            "identifier",
            "status",
            "code",
            "subject",
            "encounter",
            "effectivePeriod",
            "issued",
            "valueCodeableConcept",
            "device"
        ]
    );

    let strings = FhirMapping::parse(
        &json!({"templateType": "CollectionFhir", "template": [{"templateType": "CodeValueFhir", "template": {
            "typeName": "deviceRemoved", "codes": [], "value": {"valueName": "deviceRemoved", "valueType": "String"}
        }}]}),
    )
    .unwrap();
    let built = observation(strings.template("deviceRemoved").unwrap(), &group, &CONTEXT, None).unwrap();
    assert_eq!(built.resource["valueString"], "True");
    // A SampledData value must be a decimal.
    let sampled = FhirMapping::parse(&json!({"templateType": "CollectionFhir", "template": [{"templateType": "CodeValueFhir", "template": {
        "typeName": "deviceRemoved", "codes": [], "value": {"valueName": "deviceRemoved", "valueType": "SampledData", "defaultPeriod": 1000, "unit": "x"}
    }}]}))
    .unwrap();
    assert_eq!(
        observation(sampled.template("deviceRemoved").unwrap(), &group, &CONTEXT, None).unwrap_err(),
        ObservationError::NotADecimal { value_name: "deviceRemoved".into(), value: "True".into() }
    );
}

#[test]
fn merging_refuses_an_observation_of_another_shape() {
    let fhir = FhirMapping::parse(&sample(
        "azure-samples/calculatedcontent-single-fhir-observation/fhir-destination-mapping.json",
    ))
    .unwrap();
    let device =
        DeviceMapping::parse(&sample("azure-samples/calculatedcontent-single-fhir-observation/device-mapping.json"))
            .unwrap();
    let measurements = device
        .normalize(&envelope(sample(
            "azure-samples/calculatedcontent-single-fhir-observation/test-device-message.json",
        )))
        .unwrap();
    let group = only_group(&fhir, &measurements);
    let template = fhir.template("heartrate").unwrap();
    let sampled = json!({"resourceType": "Observation", "status": "final", "effectiveDateTime": "2023-03-13T22:46:01Z",
        "valueSampledData": {"origin": {"value": 0}, "period": 1000, "dimensions": 1, "data": "1"}});
    assert_eq!(
        observation(template, &group, &CONTEXT, Some(&sampled)).unwrap_err(),
        ObservationError::Incompatible("it has valueSampledData, the template writes valueQuantity".into())
    );
    let patient = json!({"resourceType": "Patient"});
    assert!(matches!(observation(template, &group, &CONTEXT, Some(&patient)), Err(ObservationError::Incompatible(_))));
    let no_time = json!({"resourceType": "Observation", "status": "final"});
    assert!(matches!(observation(template, &group, &CONTEXT, Some(&no_time)), Err(ObservationError::Incompatible(_))));
}

#[test]
fn fhir_mapping_validation_reports_every_problem() {
    let document = json!({"templateType": "CollectionFhir", "template": [
        {"templateType": "CodeValueFhir", "template": {"typeName": "hr", "periodInterval": 30,
            "value": {"valueName": "hr", "valueType": "SampledData", "defaultPeriod": 0, "unit": "/min"}}},
        {"templateType": "CodeValueFhir", "template": {"typeName": "bp", "codes": [{"system": "http://loinc.org"}],
            "components": [{"codes": [], "value": {"valueType": "Quantity"}}, {"codes": []}]}},
        {"templateType": "CodeValueFhir", "template": {"typeName": "bp", "codes": [], "value": {"valueName": "x", "valueType": "Decimal"}}},
        {"templateType": "CodeValueFhir", "template": {"typeName": "bp", "codes": [], "value": {"valueName": "x", "valueType": "String"}}},
        {"templateType": "CodeValueFhir", "template": {"typeName": "none", "codes": []}}
    ]});
    let error = FhirMapping::parse(&document).unwrap_err();
    assert_eq!(
        error.to_string(),
        [
            "template[0].template: periodInterval must be 0 (instant), 60 (hour), 1440 (day) or -1 (correlation id)",
            "template[0].template: codes is required (an array of {code, system, display})",
            "template[0].template.value: defaultPeriod must be a positive number of milliseconds",
            "template[1].template.codes[0]: code is required",
            "template[1].template.components[0].value: valueName is required",
            "template[1].template.components[1]: value is required",
            "template[2].template.value.valueType: unknown value type 'Decimal'; expected SampledData, Quantity, String or CodeableConcept",
            "template[2].template: typeName 'bp' is already used by template[1]",
            "template[3].template: typeName 'bp' is already used by template[1]",
            "template[4].template: value or components is required",
        ]
        .join("\n")
    );
}

#[test]
fn explain_shows_measurements_observations_and_errors() {
    let (device, fhir, message) = calculatedcontent_sample();
    let report = explain(&device, &fhir, &message);
    assert_eq!(report["normalized"][0]["properties"], json!([{"name": "hr", "value": "78"}]));
    assert_eq!(report["observations"][0]["subject"], json!({"reference": "Patient/unknown"}));
    assert_eq!(report["observations"][0]["device"], json!({"reference": "Device/device01"}));
    assert_eq!(report["errors"], json!([]));

    let report = explain(&device, &fhir, &envelope(json!({"heartRate": "78", "deviceId": "device01"})));
    assert_eq!(
        report["errors"],
        json!(["template[0] (heartrate), timestampExpression `$.matchedToken.endDate`: required value not found in the message"])
    );
}
