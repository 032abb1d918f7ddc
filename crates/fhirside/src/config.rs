//! Configuration: flags, `FHIRSIDE_*` environment variables, a TOML file, defaults — in that order
//! of precedence.
//!
//! The file format ([`FileConfig`]) is a user-facing contract and refuses unknown keys, so a typo
//! is an error rather than a silently ignored setting. It is resolved into [`Settings`], the
//! binary's internal view, which also enforces the safety rules: plain HTTP and `--auth none` are
//! only allowed on loopback addresses.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use serde::Deserialize;

#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, env = "FHIRSIDE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory for the database, certificates and other state [default: ./fhirside-data].
    #[arg(long, env = "FHIRSIDE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8443]. Port 0 picks a free port.
    #[arg(long, env = "FHIRSIDE_LISTEN")]
    pub listen: Option<String>,
    /// Serve plain HTTP instead of HTTPS (loopback addresses only).
    #[arg(long, env = "FHIRSIDE_HTTP", num_args = 0..=1, default_missing_value = "true")]
    pub http: Option<bool>,
    /// Authentication mode: `none` (loopback only, for local development).
    #[arg(long, env = "FHIRSIDE_AUTH")]
    pub auth: Option<String>,
    /// Public FHIR base URL, when clients reach the service through a proxy.
    #[arg(long, env = "FHIRSIDE_BASE_URL")]
    pub base_url: Option<String>,
    /// PEM certificate chain to serve instead of the generated one (with --tls-key).
    #[arg(long, env = "FHIRSIDE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "FHIRSIDE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Largest accepted request body in bytes [default: 16 MiB].
    #[arg(long, env = "FHIRSIDE_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Most entries in a batch or transaction Bundle [default: 500, as in Azure's service].
    #[arg(long, env = "FHIRSIDE_MAX_BUNDLE_ENTRIES")]
    pub max_bundle_entries: Option<usize>,
}

/// The configuration file.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub http: Option<bool>,
    pub auth: Option<String>,
    pub base_url: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub max_body_bytes: Option<usize>,
    pub default_page_size: Option<u32>,
    pub max_page_size: Option<u32>,
    pub conditional_delete_max: Option<u32>,
    pub max_bundle_entries: Option<usize>,
}

/// Resolved settings for `serve`.
#[derive(Debug)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub http: bool,
    pub tls_files: Option<(PathBuf, PathBuf)>,
    pub server: fhirside_server::ServerConfig,
}

pub fn resolve(args: ServeArgs) -> Result<Settings, String> {
    let file = match &args.config {
        None => FileConfig::default(),
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
    };
    let data_dir = args.data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from("fhirside-data"));
    let listen_text = args.listen.or(file.listen).unwrap_or_else(|| "127.0.0.1:8443".into());
    let listen = resolve_listen(&listen_text)?;
    let http = args.http.or(file.http).unwrap_or(false);
    let auth_text = args.auth.or(file.auth).unwrap_or_else(|| "none".into());
    let auth = match auth_text.as_str() {
        "none" => fhirside_server::AuthMode::None,
        other => return Err(format!("unknown --auth mode '{other}'; this build supports 'none' (loopback only)")),
    };
    if http && !listen.ip().is_loopback() {
        return Err(format!(
            "plain HTTP is only allowed on a loopback address, not {listen}; drop --http to serve HTTPS"
        ));
    }
    if auth == fhirside_server::AuthMode::None && !listen.ip().is_loopback() {
        return Err(format!("--auth none is only allowed on a loopback address, not {listen}"));
    }
    let tls_files = match (args.tls_cert.or(file.tls_cert), args.tls_key.or(file.tls_key)) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => return Err("--tls-cert and --tls-key go together".into()),
    };
    let defaults = fhirside_server::ServerConfig::default();
    let base_url = args.base_url.or(file.base_url).map(|b| b.trim_end_matches('/').to_owned());
    if let Some(base) = &base_url {
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(format!("--base-url must be an http(s) URL, not '{base}'"));
        }
    }
    let server = fhirside_server::ServerConfig {
        base_url,
        scheme: if http { "http" } else { "https" },
        auth,
        max_body_bytes: args.max_body_bytes.or(file.max_body_bytes).unwrap_or(defaults.max_body_bytes),
        default_page_size: file.default_page_size.unwrap_or(defaults.default_page_size),
        max_page_size: file.max_page_size.unwrap_or(defaults.max_page_size),
        conditional_delete_max: file.conditional_delete_max.unwrap_or(defaults.conditional_delete_max),
        max_bundle_entries: args.max_bundle_entries.or(file.max_bundle_entries).unwrap_or(defaults.max_bundle_entries),
    };
    if server.default_page_size == 0 || server.default_page_size > server.max_page_size {
        return Err("default_page_size must be between 1 and max_page_size".into());
    }
    Ok(Settings { data_dir, listen, http, tls_files, server })
}

/// An `ip:port` or `host:port` (resolved now, so that the loopback rule sees real addresses).
fn resolve_listen(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    use std::net::ToSocketAddrs;
    let mut addrs = text.to_socket_addrs().map_err(|e| format!("--listen '{text}': {e}"))?;
    addrs.next().ok_or_else(|| format!("--listen '{text}' resolves to no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_plain_http_and_no_auth_off_loopback() {
        let args = ServeArgs { listen: Some("0.0.0.0:8443".into()), http: Some(true), ..Default::default() };
        assert!(resolve(args).unwrap_err().contains("plain HTTP"));
        let args = ServeArgs { listen: Some("0.0.0.0:8443".into()), ..Default::default() };
        assert!(resolve(args).unwrap_err().contains("--auth none"));
    }

    #[test]
    fn defaults_and_file_precedence() {
        let dir = std::env::temp_dir().join(format!("fhirside-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("fhirside.toml");
        std::fs::write(&file, "listen = \"127.0.0.1:9000\"\nmax_page_size = 50\n").unwrap();
        let settings = resolve(ServeArgs { config: Some(file.clone()), ..Default::default() }).unwrap();
        assert_eq!(settings.listen.port(), 9000);
        assert_eq!(settings.server.max_page_size, 50);
        assert!(!settings.http);
        let settings = resolve(ServeArgs {
            config: Some(file.clone()),
            listen: Some("127.0.0.1:9001".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(settings.listen.port(), 9001, "flags win over the file");
        std::fs::write(&file, "lisen = \"127.0.0.1:9000\"\n").unwrap();
        assert!(resolve(ServeArgs { config: Some(file), ..Default::default() }).is_err(), "unknown keys are refused");
    }
}
