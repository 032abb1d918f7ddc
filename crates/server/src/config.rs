//! The server's internal configuration, built by the binary from its file, environment and flags.

/// How callers are authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// No authentication: every caller acts with every data action. Allowed only on loopback.
    None,
    /// Bearer tokens from the built-in authority, which this server also serves.
    BuiltIn,
    /// Bearer tokens from an external OpenID Connect issuer.
    External,
}

/// The endpoints of the authority that issues this service's tokens, advertised in the
/// CapabilityStatement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthUris {
    pub token: String,
    pub authorize: String,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The public FHIR base URL (no trailing slash). When unset, links are built from the request's
    /// `Host` header and [`ServerConfig::scheme`].
    pub base_url: Option<String>,
    /// `https`, or `http` when serving plain HTTP on loopback.
    pub scheme: &'static str,
    pub auth: AuthMode,
    /// The token and authorization endpoints, when authentication is on.
    pub oauth: Option<OAuthUris>,
    /// Largest request body accepted; larger ones get `413`.
    pub max_body_bytes: usize,
    /// Page size when `_count` is absent.
    pub default_page_size: u32,
    /// Largest page; a larger `_count` is clamped, as Azure's service does.
    pub max_page_size: u32,
    /// Most resources one conditional delete may remove (with `_count`).
    pub conditional_delete_max: u32,
    /// Most entries in a batch or transaction Bundle.
    pub max_bundle_entries: usize,
    /// Cross-origin resource sharing for browser apps; `None` (the default) sends no CORS headers.
    pub cors: Option<CorsConfig>,
    /// The audit records' `Location` (Azure's region of the service) [default: `local`].
    pub audit_location: String,
    /// How long a background job's lease lasts without renewal: how soon another replica resumes
    /// the job of one that died.
    pub job_lease: std::time::Duration,
    /// Bulk export's limits.
    pub export: ExportConfig,
    /// `Strict-Transport-Security` on every response; `None` over plain HTTP (where browsers
    /// ignore it) or when turned off.
    pub hsts: Option<Hsts>,
}

/// HTTP Strict Transport Security (RFC 6797): a browser that saw it over HTTPS uses only HTTPS for
/// this host for `max_age` seconds, so a network attacker cannot downgrade it to plain HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hsts {
    pub max_age: u32,
    /// Also every subdomain of the host: only when the operator says they all serve HTTPS.
    pub include_subdomains: bool,
}

impl Hsts {
    pub fn header_value(&self) -> axum::http::HeaderValue {
        let value = match self.include_subdomains {
            true => format!("max-age={}; includeSubDomains", self.max_age),
            false => format!("max-age={}", self.max_age),
        };
        axum::http::HeaderValue::from_str(&value).expect("digits and letters make a header value")
    }
}

/// Bulk export's limits.
#[derive(Debug, Clone)]
pub struct ExportConfig {
    /// Exports queued or running at once; one more is `429` with `Retry-After`.
    pub max_concurrent: u32,
    /// An output file is closed once it holds this many bytes (one resource may cross it).
    pub file_bytes: usize,
    /// Directories `$import` may read local files from (besides the bulk storage's own).
    pub import_roots: Vec<std::path::PathBuf>,
    /// How long a finished export or import (its status and files) is kept; then it is `404`.
    pub retention: std::time::Duration,
}

impl Default for ExportConfig {
    fn default() -> Self {
        ExportConfig {
            max_concurrent: 4,
            file_bytes: 64 * 1024 * 1024,
            import_roots: Vec::new(),
            retention: std::time::Duration::from_secs(24 * 3600),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            base_url: None,
            scheme: "https",
            auth: AuthMode::None,
            oauth: None,
            max_body_bytes: 16 * 1024 * 1024,
            default_page_size: 10,
            max_page_size: 1000,
            conditional_delete_max: 100,
            max_bundle_entries: 500,
            cors: None,
            audit_location: "local".into(),
            job_lease: std::time::Duration::from_secs(30),
            export: ExportConfig::default(),
            hsts: None,
        }
    }
}

/// The CORS policy, with the five settings of Azure's FHIR service; one policy for all origins
/// (applied by [`crate::cors`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CorsConfig {
    /// Origins allowed to call, as `scheme://host[:port]`, or `*` for any.
    pub origins: Vec<String>,
    /// Request headers a browser app may send (beyond the CORS-safelisted ones); `*` for any.
    pub headers: Vec<String>,
    /// Methods a browser app may use; `*` for any.
    pub methods: Vec<String>,
    /// How long (seconds) a browser may cache a preflight answer (`Access-Control-Max-Age`).
    pub max_age: Option<u32>,
    /// Whether browsers may send cookies or HTTP authentication (`Access-Control-Allow-Credentials`).
    pub allow_credentials: bool,
}

impl CorsConfig {
    /// Refuses what browsers (or Azure's service) would refuse: no origin, credentials with the
    /// origin `*`, an origin that is not `scheme://host[:port]`, a header or method that is not an
    /// HTTP token.
    pub fn validate(&self) -> Result<(), String> {
        if self.origins.is_empty() {
            return Err("CORS needs at least one origin".into());
        }
        for origin in &self.origins {
            if origin != "*" && !is_origin(origin) {
                return Err(format!(
                    "CORS origin '{origin}' is not '*' nor scheme://host[:port] (for example https://app.example.com, \
                     without a path or trailing slash)"
                ));
            }
        }
        if self.allow_credentials && self.origins.iter().any(|o| o == "*") {
            return Err("CORS allow credentials cannot be combined with the origin '*' (browsers refuse it, as does \
                        Azure's FHIR service); list the allowed origins instead"
                .into());
        }
        if self.methods.is_empty() {
            return Err("CORS needs at least one method".into());
        }
        for method in &self.methods {
            if method != "*" && !is_token(method) {
                return Err(format!("CORS method '{method}' is not an HTTP method"));
            }
        }
        for header in &self.headers {
            if header != "*" && !is_token(header) {
                return Err(format!("CORS header '{header}' is not an HTTP header name"));
            }
        }
        Ok(())
    }
}

/// An HTTP token (RFC 9110 section 5.6.2): what header names and methods are made of.
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A serialized origin: `scheme://host[:port]`, nothing else.
fn is_origin(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once("://") else { return false };
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let Some((address, after)) = v6.split_once(']') else { return false };
        if address.is_empty() || !address.bytes().all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.')) {
            return false;
        }
        match after {
            "" => ("v6", None),
            _ => match after.strip_prefix(':') {
                Some(port) => ("v6", Some(port)),
                None => return false,
            },
        }
    } else {
        match rest.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        }
    };
    let host_ok = !host.is_empty()
        && !host.starts_with('.')
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'));
    let port_ok = port.is_none_or(|p| {
        !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok()
    });
    scheme_ok && host_ok && port_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(origins: &[&str], credentials: bool) -> CorsConfig {
        CorsConfig {
            origins: origins.iter().map(|s| s.to_string()).collect(),
            headers: vec!["*".into()],
            methods: vec!["GET".into()],
            max_age: None,
            allow_credentials: credentials,
        }
    }

    #[test]
    fn cors_validation() {
        assert!(cors(&["*"], false).validate().is_ok());
        assert!(cors(&["https://app.example", "http://localhost:3000", "https://[::1]:8443"], true).validate().is_ok());
        assert!(cors(&["*"], true).validate().unwrap_err().contains("credentials"));
        assert!(cors(&[], false).validate().is_err());
        for bad in [
            "app.example",
            "https://app.example/",
            "https://app.example/path",
            "https://*.example.com",
            "https://app.example:99999",
            "https://app.example:",
            "https://user@app.example",
            "null",
            "https://",
        ] {
            assert!(cors(&[bad], false).validate().unwrap_err().contains(bad), "{bad}");
        }
        let mut config = cors(&["*"], false);
        config.methods = vec!["GET POST".into()];
        assert!(config.validate().is_err());
        config.methods = vec![];
        assert!(config.validate().is_err());
        config.methods = vec!["*".into()];
        config.headers = vec!["content type".into()];
        assert!(config.validate().is_err());
    }
}
