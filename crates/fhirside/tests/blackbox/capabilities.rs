//! `GET /metadata`.

use crate::harness::Server;

#[test]
fn capability_statement_is_accurate_and_valid() {
    let server = Server::start();
    let response = server.get("/metadata").expect(200);
    let statement = response.json();
    assert_eq!(statement["resourceType"], "CapabilityStatement");
    assert_eq!(statement["fhirVersion"], "4.0.1");
    let resources = statement["rest"][0]["resource"].as_array().unwrap();
    assert_eq!(resources.len(), 146, "every concrete R4 resource type");
    let patient = resources.iter().find(|r| r["type"] == "Patient").unwrap();
    assert_eq!(patient["versioning"], "versioned-update");
    let params: Vec<&str> =
        patient["searchParam"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    // Exactly the parameters that work: the resource columns and server-evaluated ones, then every
    // R4 parameter of the type (all indexed) except `_query`, which names a custom query.
    assert_eq!(
        params,
        [
            "_id",
            "_lastUpdated",
            "_text",
            "_content",
            "_list",
            "_profile",
            "_security",
            "_source",
            "_tag",
            "active",
            "address",
            "address-city",
            "address-country",
            "address-postalcode",
            "address-state",
            "address-use",
            "birthdate",
            "death-date",
            "deceased",
            "email",
            "family",
            "gender",
            "general-practitioner",
            "given",
            "identifier",
            "language",
            "link",
            "name",
            "organization",
            "phone",
            "phonetic",
            "telecom"
        ]
    );
    let operations: Vec<&str> =
        patient["operation"].as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap()).collect();
    assert_eq!(operations, ["validate", "everything", "export"]);
    let system: Vec<&str> =
        statement["rest"][0]["operation"].as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap()).collect();
    assert!(system.contains(&"export"), "{system:?}");
    assert_eq!(statement["instantiates"][0], "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data");
    assert!(response.header("x-ms-request-charge").is_some());
    // The statement is itself a valid R4 resource.
    let validated = server.post_json("/CapabilityStatement/$validate", &statement).expect(200).json();
    assert_eq!(validated["issue"][0]["diagnostics"], "All OK", "{validated}");
}
