//! Patch formats: JSON Patch now; FHIRPath Patch joins it once FHIRPath is available.

pub(crate) mod fhirpath_patch;
pub(crate) mod json_patch;
