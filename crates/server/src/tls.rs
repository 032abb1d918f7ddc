//! TLS: the policy of every HTTPS connection ([`policy`]), certificate files that are reloaded
//! when they change ([`reload`]), and a local certificate authority for the first start.
//!
//! `fhirside serve` must speak HTTPS with no set-up, yet clients must be able to verify it. So on
//! first start it creates a small CA (`ca.pem`, whose key never leaves the data directory) and a
//! server certificate signed by it for `localhost`, `127.0.0.1`, `::1` and the listen host. Users
//! point clients at `ca.pem` (`curl --cacert`), and the certificate can be re-issued for new host
//! names without changing what clients trust. Operators with their own certificate pass it instead.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

mod policy;
mod reload;

pub use policy::{server_config, ClientAuth};
pub use reload::{LiveConfig, Reload, Reloader, POLL};

/// The PEM files a TLS listener uses.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The CA that signed `cert`, for clients to trust; `None` for operator-supplied certificates.
    pub ca: Option<PathBuf>,
}

/// Makes (or re-uses) the self-managed CA and a server certificate covering `hosts`.
pub fn ensure_local_certificate(dir: &Path, hosts: &[String]) -> Result<TlsFiles, String> {
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let ca_path = dir.join("ca.pem");
    let ca_key_path = dir.join("ca-key.pem");
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    let hosts_path = dir.join("cert-hosts.txt");

    // The CA's parameters are rebuilt rather than parsed back from `ca.pem`: signing needs only
    // its distinguished name and key, and rebuilding avoids an X.509 parser dependency.
    let ca_key = if ca_path.exists() && ca_key_path.exists() {
        KeyPair::from_pem(&read(&ca_key_path)?).map_err(|e| format!("{}: {e}", ca_key_path.display()))?
    } else {
        let key = KeyPair::generate().map_err(|e| e.to_string())?;
        let cert = ca_params().self_signed(&key).map_err(|e| e.to_string())?;
        write_private(&ca_key_path, &key.serialize_pem())?;
        fs::write(&ca_path, cert.pem()).map_err(|e| format!("cannot write {}: {e}", ca_path.display()))?;
        key
    };

    let mut wanted: Vec<String> = ["localhost", "127.0.0.1", "::1"].iter().map(|s| s.to_string()).collect();
    for host in hosts {
        if !wanted.contains(host) {
            wanted.push(host.clone());
        }
    }
    let current = fs::read_to_string(&hosts_path).unwrap_or_default();
    if !(cert_path.exists() && key_path.exists() && current == wanted.join("\n")) {
        let issuer = Issuer::new(ca_params(), ca_key);
        let key = KeyPair::generate().map_err(|e| e.to_string())?;
        let mut params = CertificateParams::new(wanted.clone()).map_err(|e| e.to_string())?;
        params.distinguished_name.push(DnType::CommonName, "Fhirside");
        let cert = params.signed_by(&key, &issuer).map_err(|e| e.to_string())?;
        write_private(&key_path, &key.serialize_pem())?;
        fs::write(&cert_path, cert.pem()).map_err(|e| format!("cannot write {}: {e}", cert_path.display()))?;
        fs::write(&hosts_path, wanted.join("\n")).map_err(|e| format!("cannot write {}: {e}", hosts_path.display()))?;
    }
    Ok(TlsFiles { cert: cert_path, key: key_path, ca: Some(ca_path) })
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, "Fhirside local CA");
    params.distinguished_name.push(DnType::OrganizationName, "Fhirside");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

fn read(path: &Path) -> Result<String, String> {
    fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Writes a private key readable by its owner only.
fn write_private(path: &Path, contents: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    file.write_all(contents.as_bytes()).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
