//! Shared by the integration tests: the R4 spec examples, unpacked once per build directory.

use std::path::{Path, PathBuf};

/// The directory holding the spec's example resources (`Patient-example.json`, …), unpacked from
/// `../shared/fhir-r4/examples.tar.gz`. Test binaries run in parallel, so each unpacks into its own
/// staging directory and renames it into place; a rename that loses the race leaves the winner's.
pub fn examples_dir() -> PathBuf {
    let archive = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fhir-r4/examples.tar.gz");
    assert!(archive.exists(), "{} not found: the shared folder must sit beside the repository", archive.display());
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let dir = tmp.join("fhir-r4-examples-unpacked");
    if dir.join("Patient-example.json").exists() {
        return dir;
    }
    let staging = tmp.join(format!("fhir-r4-examples-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).unwrap();
    let status =
        std::process::Command::new("tar").arg("-xzf").arg(&archive).arg("-C").arg(&staging).status().expect("run tar");
    assert!(status.success(), "tar failed on {}", archive.display());
    if std::fs::rename(&staging, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    assert!(dir.join("Patient-example.json").exists());
    dir
}
