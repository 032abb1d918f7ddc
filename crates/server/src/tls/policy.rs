//! What a TLS connection to Fhirside may be: the protocol versions, the cipher suites, and whether
//! the client must show a certificate.
//!
//! The lists are written out rather than taken from rustls's defaults, so that the policy an
//! operator's compliance scan checks (HIPAA's transmission security, NIST SP 800-52r2) is in this
//! file and cannot widen with a dependency update.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::ring::cipher_suite;
use rustls::crypto::CryptoProvider;
use rustls::{ServerConfig, SupportedCipherSuite, SupportedProtocolVersion};

use super::{read, TlsFiles};

/// TLS 1.3 and 1.2 only. TLS 1.0 and 1.1 are deprecated (RFC 8996): their handshakes hash with
/// MD5 and SHA-1 and their only ciphers are CBC or RC4.
static PROTOCOL_VERSIONS: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

/// Every suite authenticates its encryption (AEAD: AES-GCM or ChaCha20-Poly1305) and, for TLS 1.2,
/// agrees keys by ECDHE, so a stolen server key cannot decrypt recorded traffic (forward secrecy).
/// Left out on purpose: CBC suites (padding oracles, Lucky13) and static RSA key exchange (no
/// forward secrecy, ROBOT) — rustls implements neither, and naming the suites keeps it so.
/// ChaCha20 is there for clients without AES instructions.
static CIPHER_SUITES: &[SupportedCipherSuite] = &[
    cipher_suite::TLS13_AES_256_GCM_SHA384,
    cipher_suite::TLS13_AES_128_GCM_SHA256,
    cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
];

/// Whether clients show a certificate (mutual TLS, for service-to-service callers). It is a check
/// at the transport only: which data actions a caller holds is still decided by its token.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// No client certificate is asked for.
    #[default]
    Off,
    /// A client may connect without a certificate; one it shows must chain to `ca`.
    Optional { ca: PathBuf },
    /// A client without a certificate chaining to `ca` cannot complete the handshake.
    Required { ca: PathBuf },
}

impl ClientAuth {
    /// The client CA bundle, when client certificates are asked for.
    pub fn ca(&self) -> Option<&Path> {
        match self {
            ClientAuth::Off => None,
            ClientAuth::Optional { ca } | ClientAuth::Required { ca } => Some(ca),
        }
    }
}

/// A rustls server configuration with Fhirside's policy, from PEM files.
pub fn server_config(files: &TlsFiles, client_auth: &ClientAuth) -> Result<Arc<ServerConfig>, String> {
    let certs = rustls_pemfile::certs(&mut read(&files.cert)?.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", files.cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", files.cert.display()));
    }
    let key = rustls_pemfile::private_key(&mut read(&files.key)?.as_bytes())
        .map_err(|e| format!("{}: {e}", files.key.display()))?
        .ok_or_else(|| format!("{} holds no PEM private key", files.key.display()))?;
    let provider =
        Arc::new(CryptoProvider { cipher_suites: CIPHER_SUITES.to_vec(), ..rustls::crypto::ring::default_provider() });
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(|e| format!("TLS policy: {e}"))?;
    let builder = match client_auth {
        ClientAuth::Off => builder.with_no_client_auth(),
        ClientAuth::Optional { ca } => builder.with_client_cert_verifier(client_verifier(ca, provider, true)?),
        ClientAuth::Required { ca } => builder.with_client_cert_verifier(client_verifier(ca, provider, false)?),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("the certificate {} with the key {}: {e}", files.cert.display(), files.key.display()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Verifies client certificates against the CA bundle at `ca` (every certificate in it is trusted).
fn client_verifier(
    ca: &Path,
    provider: Arc<CryptoProvider>,
    optional: bool,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut read(ca)?.as_bytes()) {
        let cert = cert.map_err(|e| format!("{}: {e}", ca.display()))?;
        roots.add(cert).map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("the client CA bundle {} holds no PEM certificate", ca.display()));
    }
    let builder = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    let builder = if optional { builder.allow_unauthenticated() } else { builder };
    builder.build().map_err(|e| format!("the client CA bundle {}: {e}", ca.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tls_1_2_and_1_3_with_forward_secret_aead_suites() {
        assert_eq!(
            PROTOCOL_VERSIONS.iter().map(|v| v.version).collect::<Vec<_>>(),
            [rustls::ProtocolVersion::TLSv1_3, rustls::ProtocolVersion::TLSv1_2]
        );
        for suite in CIPHER_SUITES {
            let name = format!("{:?}", suite.suite());
            let aead = name.contains("_GCM_") || name.contains("_CHACHA20_POLY1305_");
            let forward_secret = name.starts_with("TLS13_") || name.starts_with("TLS_ECDHE_");
            assert!(aead && forward_secret, "{name}");
        }
    }
}
