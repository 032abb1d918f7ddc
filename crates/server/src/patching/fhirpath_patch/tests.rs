//! Unit tests: one behaviour per operation and per error; the official cases are in `official_cases`.

mod fhir_xml;
mod official_cases;
