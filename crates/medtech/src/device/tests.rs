//! Device mapping validation: every problem reported, each at its path.

use super::*;
use serde_json::json;

fn issues(document: Value) -> Vec<String> {
    match DeviceMapping::parse(&document) {
        Ok(_) => Vec::new(),
        Err(e) => e.issues.iter().map(|i| format!("{}: {}", i.path, i.message)).collect(),
    }
}

#[test]
fn iomt_fhir_basic_sample_lacks_required_expressions_in_two_templates() {
    let document: Value =
        serde_json::from_str(include_str!("../../tests/samples/iomt-fhir/basic-devicecontent.json")).unwrap();
    assert_eq!(
        issues(document),
        [
            "template[4].template: deviceIdExpression is required",
            "template[4].template: timestampExpression is required",
            "template[5].template: deviceIdExpression is required",
            "template[5].template: timestampExpression is required",
        ]
    );
}

#[test]
fn every_problem_is_reported_with_its_path() {
    let document = json!({
        "templateType": "CollectionContent",
        "template": [
            {"templateType": "JsonPathContent", "template": {
                "typeName": "hr", "typeMatchExpression": "$..[?(@heartRate)", "deviceIdExpression": "$.deviceId",
                "timestampExpression": "$.endDate",
                "values": [{"valueName": "hr", "required": "yes"}, {"valueExpression": "$.x"}]
            }},
            {"templateType": "CalculatedContent", "template": {
                "typeName": "", "typeMatchExpression": {"value": "nosuch(@)", "language": "JmesPath"},
                "deviceIdExpression": {"value": "$.a", "language": "XPath"}, "timestampExpression": 5,
                "defaultExpressionLanguage": "Python"
            }},
            {"templateType": "FancyContent", "template": {}},
            {"templateType": "IotJsonPathContent", "template": {"typeName": "t", "typeMatchExpression": {"value": "$.a"}}},
            "not an object"
        ]
    });
    assert_eq!(
        issues(document),
        [
            "template[0].template.typeMatchExpression: invalid JSONPath '$..[?(@heartRate)': expected ']' at position 17",
            "template[0].template.values[0]: valueExpression is required",
            "template[0].template.values[0]: required must be true or false",
            "template[0].template.values[1]: valueName is required",
            "template[1].template: defaultExpressionLanguage must be JsonPath or JmesPath, found 'Python'",
            "template[1].template: typeName must not be empty",
            "template[1].template.typeMatchExpression: invalid JMESPath 'nosuch(@)': unknown function nosuch()",
            "template[1].template.deviceIdExpression: language must be JsonPath or JmesPath, found 'XPath'",
            "template[1].template.timestampExpression: must be a string or an object {\"value\", \"language\"}",
            "template[2].templateType: unknown template type 'FancyContent'; expected one of CalculatedContent, JsonPathContent, IotJsonPathContent, IotCentralJsonPathContent",
            "template[3].template.typeMatchExpression: must be a JSONPath string (this template type takes no {value, language} objects)",
            "template[4]: must be a JSON object",
        ]
    );
}

#[test]
fn the_collection_itself_is_checked() {
    assert_eq!(
        issues(json!({"templateType": "CollectionFhir", "template": {}})),
        [
            "templateType: expected CollectionContent, found 'CollectionFhir'",
            "template: must be an array of templates for CollectionContent",
        ]
    );
    assert_eq!(issues(json!([])), [": the mapping must be a JSON object with templateType CollectionContent"]);
    let error = DeviceMapping::parse(&json!({"template": []})).unwrap_err();
    assert_eq!(error.to_string(), "templateType is required (expected CollectionContent)");
}

#[test]
fn property_names_and_template_types_ignore_case() {
    let document = json!({
        "TEMPLATETYPE": "collectioncontenttemplate",
        "Template": [{"TemplateType": "jsonpathcontenttemplate", "Template": {
            "TypeName": "hr", "TYPEMATCHEXPRESSION": "$..[?(@hr)]", "deviceidexpression": "$.d", "TimestampExpression": "$.t",
            "Values": [{"ValueName": "hr", "ValueExpression": "$.hr", "Required": true}]
        }}]
    });
    let mapping = DeviceMapping::parse(&document).unwrap();
    let t = &mapping.templates()[0];
    assert_eq!((t.kind, t.type_name.as_str(), t.values[0].required), (TemplateKind::JsonPathContent, "hr", true));
}

#[test]
fn calculated_content_default_language_applies_to_plain_strings() {
    let document = json!({"templateType": "CollectionContent", "template": [{"templateType": "CalculatedContent", "template": {
        "typeName": "hr", "defaultExpressionLanguage": "JmesPath",
        "typeMatchExpression": "[Body][?contains(keys(@), `heartRate`)] | @[0]",
        "deviceIdExpression": "@.matchedToken.deviceId",
        "timestampExpression": {"value": "$.matchedToken.endDate", "language": "JsonPath"},
        "values": [{"valueName": "hr", "valueExpression": "matchedToken.heartRate", "required": true}]
    }}]});
    let mapping = DeviceMapping::parse(&document).unwrap();
    let t = &mapping.templates()[0];
    assert_eq!(t.type_match.language(), ExpressionLanguage::JmesPath);
    assert_eq!(t.timestamp[0].language(), ExpressionLanguage::JsonPath);
    let message = json!({"Body": {"heartRate": 78, "endDate": "2023-03-13T22:46:01Z", "deviceId": "d1"}});
    let m = mapping.normalize(&message).unwrap();
    assert_eq!(
        m[0].to_json(),
        json!({
            "type": "hr", "occurrenceTimeUtc": "2023-03-13T22:46:01Z", "deviceId": "d1",
            "properties": [{"name": "hr", "value": "78"}]
        })
    );
}
