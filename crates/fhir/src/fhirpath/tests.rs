//! Unit tests of the FHIRPath engine.
