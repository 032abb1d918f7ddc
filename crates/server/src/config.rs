//! The server's internal configuration, built by the binary from its file, environment and flags.

/// How callers are authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// No authentication: every caller acts with every data action. Allowed only on loopback.
    None,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The public FHIR base URL (no trailing slash). When unset, links are built from the request's
    /// `Host` header and [`ServerConfig::scheme`].
    pub base_url: Option<String>,
    /// `https`, or `http` when serving plain HTTP on loopback.
    pub scheme: &'static str,
    pub auth: AuthMode,
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
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            base_url: None,
            scheme: "https",
            auth: AuthMode::None,
            max_body_bytes: 16 * 1024 * 1024,
            default_page_size: 10,
            max_page_size: 1000,
            conditional_delete_max: 100,
            max_bundle_entries: 500,
        }
    }
}
