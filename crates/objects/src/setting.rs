//! The operator's one-line setting for the store, credentials coming from the environment (so
//! that they are not in command lines or configuration files):
//!
//! - `file:/abs/dir`, `file:///abs/dir` or a plain path: a local directory;
//! - `azure-blob:https://{account}.blob.core.windows.net` (or Azurite's
//!   `azure-blob:http://127.0.0.1:10000/devstoreaccount1`), with, in this order of preference,
//!   `FHIRSIDE_BLOB_ACCOUNT_KEY` (the account name is the URL's first host label, or its first
//!   path segment for an IP address or `localhost`, unless `FHIRSIDE_BLOB_ACCOUNT_NAME` says),
//!   `FHIRSIDE_BLOB_SAS`, `FHIRSIDE_BLOB_MANAGED_IDENTITY` (`system`, or a user-assigned
//!   identity's client id) or `FHIRSIDE_BLOB_TOKEN`. The secrets come first: whoever set one
//!   meant it. A managed identity comes before a static token, which expires within hours, so
//!   that a leftover token does not shadow it. The identity's tokens come from Entra's token
//!   endpoint for AKS workload identity when `AZURE_FEDERATED_TOKEN_FILE` is set (with
//!   `AZURE_TENANT_ID`, `AZURE_AUTHORITY_HOST` and, for `system`, `AZURE_CLIENT_ID`), else from
//!   App Service's endpoint when `IDENTITY_ENDPOINT` and `IDENTITY_HEADER` are both set, else
//!   from the Instance Metadata Service (`AZURE_POD_IDENTITY_AUTHORITY_HOST` replacing
//!   `http://169.254.169.254`);
//!   a managed identity is never used unless asked for, since a VM's identity may have rights
//!   the operator did not mean Fhirside to use;
//! - `s3:https://s3.{region}.amazonaws.com?region={region}` (or
//!   `s3:http://127.0.0.1:9000?region=us-east-1&path_style=true`) with `AWS_ACCESS_KEY_ID`,
//!   `AWS_SECRET_ACCESS_KEY` and, for temporary credentials, `AWS_SESSION_TOKEN`. Without
//!   `region`, an `s3.{region}.amazonaws.com` host names it, else `us-east-1`; without
//!   `path_style`, it is used for IP addresses and `localhost` only.

use std::path::PathBuf;

use base64::Engine;

use crate::managed_identity::IMDS_AUTHORITY;
use crate::text::percent_decode;
use crate::{Backend, BlobAuth, IdentityEndpoint, ManagedIdentity, ObjectError, S3Auth};

pub(crate) fn parse(setting: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Backend, ObjectError> {
    // An empty variable counts as unset.
    let env = |name: &str| env(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    let setting = setting.trim();
    if let Some(url) = setting.strip_prefix("azure-blob:") {
        return azure(url, &env);
    }
    if let Some(url) = setting.strip_prefix("s3:") {
        return s3(url, &env);
    }
    let path = match setting.strip_prefix("file:") {
        Some(rest) => file_url_path(rest)?,
        None if looks_like_url(setting) => {
            return Err(ObjectError::Invalid(
                "unknown kind of object store: use file:/dir, a path, azure-blob:URL or s3:URL".into(),
            ))
        }
        None => PathBuf::from(setting),
    };
    if path.as_os_str().is_empty() {
        return Err(ObjectError::Invalid("the object store's directory is empty".into()));
    }
    let root = std::path::absolute(&path)
        .map_err(|e| ObjectError::Invalid(format!("the object store's directory {}: {e}", path.display())))?;
    Ok(Backend::Local { root })
}

/// The path of a `file:` URL given without its scheme: `/abs`, `///abs` or `//localhost/abs`.
pub(crate) fn file_url_path(rest: &str) -> Result<PathBuf, ObjectError> {
    let path = match rest.strip_prefix("//") {
        Some(after) => match after.find('/') {
            Some(at) if matches!(&after[..at], "" | "localhost") => &after[at..],
            _ => return Err(ObjectError::Invalid("a file: URL must name a local absolute path".into())),
        },
        None => rest,
    };
    if !path.starts_with('/') {
        return Err(ObjectError::Invalid("a file: URL must name an absolute path".into()));
    }
    let decoded = percent_decode(path).ok_or_else(|| ObjectError::Invalid("a malformed file: URL".into()))?;
    Ok(PathBuf::from(decoded))
}

/// `scheme:` with a scheme of two or more letters (so `C:` or a relative path is not one).
fn looks_like_url(setting: &str) -> bool {
    setting.split_once(':').is_some_and(|(scheme, _)| {
        scheme.len() > 1 && scheme.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    })
}

fn azure(url: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Backend, ObjectError> {
    let account_url = url.trim().trim_end_matches('/').to_owned();
    if account_url.contains(['?', '#']) {
        return Err(ObjectError::Invalid(
            "the Azure Blob account URL must have no query: give a SAS in FHIRSIDE_BLOB_SAS".into(),
        ));
    }
    let (host, path) = check_service_url(&account_url, "Azure Blob account")?;
    let auth = if let Some(key) = env("FHIRSIDE_BLOB_ACCOUNT_KEY") {
        if base64::engine::general_purpose::STANDARD.decode(&key).is_err() {
            return Err(ObjectError::Invalid("FHIRSIDE_BLOB_ACCOUNT_KEY is not valid base64".into()));
        }
        let account = match env("FHIRSIDE_BLOB_ACCOUNT_NAME") {
            Some(name) => name,
            None => account_name(&host, &path).ok_or_else(|| {
                ObjectError::Invalid(
                    "cannot tell the storage account's name from the URL: set FHIRSIDE_BLOB_ACCOUNT_NAME".into(),
                )
            })?,
        };
        BlobAuth::SharedKey { account, key }
    } else if let Some(sas) = env("FHIRSIDE_BLOB_SAS") {
        BlobAuth::Sas(sas.trim_start_matches('?').to_owned())
    } else if let Some(which) = env("FHIRSIDE_BLOB_MANAGED_IDENTITY") {
        BlobAuth::ManagedIdentity(managed_identity(&which, env)?)
    } else if let Some(token) = env("FHIRSIDE_BLOB_TOKEN") {
        BlobAuth::Bearer(token)
    } else {
        return Err(ObjectError::Invalid(
            "no credentials for Azure Blob Storage: set FHIRSIDE_BLOB_ACCOUNT_KEY, FHIRSIDE_BLOB_SAS, \
             FHIRSIDE_BLOB_MANAGED_IDENTITY or FHIRSIDE_BLOB_TOKEN"
                .into(),
        ));
    };
    Ok(Backend::AzureBlob { account_url, auth })
}

/// `FHIRSIDE_BLOB_MANAGED_IDENTITY` (`system`, or a user-assigned identity's client id) and the
/// endpoint the platform's variables name.
fn managed_identity(which: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<ManagedIdentity, ObjectError> {
    let client_id = if which.eq_ignore_ascii_case("system") {
        None
    } else if is_guid(which) {
        Some(which.to_ascii_lowercase())
    } else {
        return Err(ObjectError::Invalid(
            "FHIRSIDE_BLOB_MANAGED_IDENTITY must be 'system' or a user-assigned identity's client id (a GUID)".into(),
        ));
    };
    // AKS workload identity, which Azure's SDKs try before a managed identity: the webhook sets
    // these variables in the pods of a service account that has an identity.
    if let Some(token_file) = env("AZURE_FEDERATED_TOKEN_FILE") {
        return workload_identity(client_id, token_file, env);
    }
    // Which platform this is, told as Azure's SDKs tell it: Service Fabric and Azure Arc set
    // IDENTITY_ENDPOINT with other variables and speak other protocols, so they are refused
    // rather than mistaken for App Service or the metadata service.
    let identity_endpoint = env("IDENTITY_ENDPOINT");
    if identity_endpoint.is_some() && env("IDENTITY_SERVER_THUMBPRINT").is_some() {
        return Err(ObjectError::Invalid(
            "IDENTITY_SERVER_THUMBPRINT is set: Service Fabric's managed identity endpoint is not supported".into(),
        ));
    }
    let endpoint = match (identity_endpoint, env("IDENTITY_HEADER")) {
        (Some(url), Some(header)) => {
            check_url(&url, "IDENTITY_ENDPOINT", is_loopback, "the loopback interface")?;
            IdentityEndpoint::AppService { url, header }
        }
        (Some(_), None) if env("IMDS_ENDPOINT").is_some() => {
            return Err(ObjectError::Invalid(
                "IDENTITY_ENDPOINT and IMDS_ENDPOINT are set: Azure Arc's managed identity endpoint is not supported"
                    .into(),
            ));
        }
        _ => {
            let authority = env("AZURE_POD_IDENTITY_AUTHORITY_HOST").unwrap_or_else(|| IMDS_AUTHORITY.to_owned());
            let authority = authority.trim_end_matches('/').to_owned();
            // Plain http as the client allows it for the metadata service (src/managed_identity.rs).
            let imds_host = IMDS_AUTHORITY.trim_start_matches("http://");
            let (_, path) = check_url(
                &authority,
                "AZURE_POD_IDENTITY_AUTHORITY_HOST",
                |host| is_loopback(host) || host == imds_host,
                "the loopback interface and 169.254.169.254",
            )?;
            if !path.is_empty() || authority.contains(['?', '#']) {
                return Err(ObjectError::Invalid(
                    "AZURE_POD_IDENTITY_AUTHORITY_HOST must be scheme://host[:port], without a path".into(),
                ));
            }
            IdentityEndpoint::Imds { authority }
        }
    };
    Ok(ManagedIdentity { client_id, endpoint })
}

/// The Entra authority workload identity tokens come from unless `AZURE_AUTHORITY_HOST` says.
const ENTRA_AUTHORITY: &str = "https://login.microsoftonline.com";

/// AKS workload identity: the identity's client id (`FHIRSIDE_BLOB_MANAGED_IDENTITY`'s, or
/// `AZURE_CLIENT_ID` for `system`, as the pod's service account names it), its tenant, and the
/// authority to exchange the service account's token at.
fn workload_identity(
    client_id: Option<String>,
    token_file: String,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ManagedIdentity, ObjectError> {
    let client_id = match client_id.or_else(|| env("AZURE_CLIENT_ID")) {
        Some(id) if is_guid(&id) => id.to_ascii_lowercase(),
        _ => {
            return Err(ObjectError::Invalid(
                "AZURE_FEDERATED_TOKEN_FILE is set (workload identity): FHIRSIDE_BLOB_MANAGED_IDENTITY or \
                 AZURE_CLIENT_ID must name the identity's client id (a GUID)"
                    .into(),
            ))
        }
    };
    let tenant = env("AZURE_TENANT_ID").unwrap_or_default();
    // A GUID or a domain name: it becomes a segment of the token endpoint's path.
    if tenant.is_empty() || !tenant.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') {
        return Err(ObjectError::Invalid(
            "AZURE_FEDERATED_TOKEN_FILE is set (workload identity): AZURE_TENANT_ID must name the tenant".into(),
        ));
    }
    let authority = env("AZURE_AUTHORITY_HOST").unwrap_or_else(|| ENTRA_AUTHORITY.to_owned());
    let authority = authority.trim_end_matches('/').to_owned();
    let (_, path) = check_url(&authority, "AZURE_AUTHORITY_HOST", is_loopback, "the loopback interface")?;
    if !path.is_empty() || authority.contains(['?', '#']) {
        return Err(ObjectError::Invalid("AZURE_AUTHORITY_HOST must be scheme://host[:port], without a path".into()));
    }
    let endpoint = IdentityEndpoint::Workload { authority, tenant, token_file: token_file.into() };
    Ok(ManagedIdentity { client_id: Some(client_id), endpoint })
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` in hexadecimal digits: how Entra writes client ids.
fn is_guid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `{account}.blob.core.windows.net` names the account first; an emulator on an IP address or
/// `localhost` names it as the first path segment.
fn account_name(host: &str, path: &str) -> Option<String> {
    let name = if is_ip_or_localhost(host) {
        path.trim_start_matches('/').split('/').next()?
    } else {
        host.split('.').next()?
    };
    (!name.is_empty()).then(|| name.to_owned())
}

fn s3(url: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Backend, ObjectError> {
    let url = url.trim();
    let (endpoint, query) = url.split_once('?').unwrap_or((url, ""));
    let endpoint = endpoint.trim_end_matches('/').to_owned();
    let (host, _) = check_service_url(&endpoint, "S3 endpoint")?;
    let mut region = None;
    let mut path_style = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "region" if !value.is_empty() => region = Some(value.to_owned()),
            "path_style" => {
                path_style = Some(match value {
                    "true" | "1" | "" => true,
                    "false" | "0" => false,
                    _ => return Err(ObjectError::Invalid("path_style must be true or false".into())),
                })
            }
            _ => return Err(ObjectError::Invalid(format!("unknown S3 setting '{}'", name.escape_default()))),
        }
    }
    let region = region.or_else(|| aws_region(&host)).unwrap_or_else(|| "us-east-1".to_owned());
    if !region.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(ObjectError::Invalid("the S3 region has characters no region has".into()));
    }
    let path_style = path_style.unwrap_or_else(|| is_ip_or_localhost(&host));
    let (Some(access_key_id), Some(secret_access_key)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY"))
    else {
        return Err(ObjectError::Invalid(
            "no credentials for S3: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY".into(),
        ));
    };
    let auth = S3Auth { access_key_id, secret_access_key, session_token: env("AWS_SESSION_TOKEN") };
    Ok(Backend::S3 { endpoint, region, auth, path_style })
}

/// `s3.{region}.amazonaws.com` or `s3-{region}.amazonaws.com` (older hosts).
fn aws_region(host: &str) -> Option<String> {
    let rest = host.strip_suffix(".amazonaws.com")?;
    let region = rest.strip_prefix("s3.").or_else(|| rest.strip_prefix("s3-"))?;
    (!region.is_empty() && !region.contains('.')).then(|| region.to_owned())
}

/// Checks an http(s) URL of a service (plain http only for the loopback interface, as the
/// client will insist) and returns its lower-case host (without port) and its path.
fn check_service_url(url: &str, what: &str) -> Result<(String, String), ObjectError> {
    check_url(url, &format!("the {what} URL"), is_loopback, "emulators on the loopback interface")
}

/// Checks the http(s) URL `name` gives, plain http only to hosts `plain_http_ok` accepts
/// (`plain_http_for` says which, in messages), and returns its lower-case host (without port) and
/// its path.
fn check_url(
    url: &str,
    name: &str,
    plain_http_ok: impl Fn(&str) -> bool,
    plain_http_for: &str,
) -> Result<(String, String), ObjectError> {
    let authority_and_path = if let Some(rest) = url.strip_prefix("https://") {
        rest
    } else if let Some(rest) = url.strip_prefix("http://") {
        rest
    } else {
        return Err(ObjectError::Invalid(format!("{name} must start with https:// (or http:// for {plain_http_for})")));
    };
    fhirside_fetch::host_header(url).map_err(|e| ObjectError::Invalid(format!("{name}: {e}")))?;
    let (authority, path) =
        authority_and_path.split_at(authority_and_path.find(['/', '?', '#']).unwrap_or(authority_and_path.len()));
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or("").to_owned(),
        None => authority.split(':').next().unwrap_or("").to_ascii_lowercase(),
    };
    if url.starts_with("http://") && !plain_http_ok(&host) {
        return Err(ObjectError::Invalid(format!("{name} must use https: plain http is only for {plain_http_for}")));
    }
    Ok((host, path.to_owned()))
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn is_ip_or_localhost(host: &str) -> bool {
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string())
    }

    const KEY: &str = "a2V5"; // base64 of "key"

    #[test]
    fn local_settings() {
        let none = env(&[]);
        for (setting, root) in [
            ("file:/srv/exports", "/srv/exports"),
            ("file:///srv/my%20exports", "/srv/my exports"),
            ("file://localhost/srv/x", "/srv/x"),
            ("/srv/exports/", "/srv/exports/"),
        ] {
            assert_eq!(parse(setting, &none).unwrap(), Backend::Local { root: PathBuf::from(root) }, "{setting}");
        }
        let Backend::Local { root } = parse("relative/dir", &none).unwrap() else { panic!() };
        assert!(root.is_absolute() && root.ends_with("relative/dir"));
        for bad in ["file:relative", "file://host/x", "ftp://x/y", "https://x/y", ""] {
            assert!(matches!(parse(bad, &none), Err(ObjectError::Invalid(_))), "{bad}");
        }
    }

    #[test]
    fn azure_settings() {
        let with_key = env(&[("FHIRSIDE_BLOB_ACCOUNT_KEY", KEY), ("FHIRSIDE_BLOB_SAS", "sv=1&sig=x")]);
        assert_eq!(
            parse("azure-blob:https://acct.blob.core.windows.net/", &with_key).unwrap(),
            Backend::AzureBlob {
                account_url: "https://acct.blob.core.windows.net".into(),
                auth: BlobAuth::SharedKey { account: "acct".into(), key: KEY.into() }
            }
        );
        assert_eq!(
            parse("azure-blob:http://127.0.0.1:10000/devstoreaccount1", &with_key).unwrap(),
            Backend::AzureBlob {
                account_url: "http://127.0.0.1:10000/devstoreaccount1".into(),
                auth: BlobAuth::SharedKey { account: "devstoreaccount1".into(), key: KEY.into() }
            }
        );
        let named = env(&[("FHIRSIDE_BLOB_ACCOUNT_KEY", KEY), ("FHIRSIDE_BLOB_ACCOUNT_NAME", "real")]);
        let Backend::AzureBlob { auth, .. } = parse("azure-blob:https://blobs.example.org", &named).unwrap() else {
            panic!()
        };
        assert_eq!(auth, BlobAuth::SharedKey { account: "real".into(), key: KEY.into() });
        let sas = env(&[
            ("FHIRSIDE_BLOB_ACCOUNT_KEY", ""),
            ("FHIRSIDE_BLOB_SAS", "?sv=1&sig=x"),
            ("FHIRSIDE_BLOB_TOKEN", "t"),
        ]);
        let Backend::AzureBlob { auth, .. } = parse("azure-blob:https://a.blob.core.windows.net", &sas).unwrap() else {
            panic!()
        };
        assert_eq!(auth, BlobAuth::Sas("sv=1&sig=x".into()));
        let token = env(&[("FHIRSIDE_BLOB_TOKEN", "t")]);
        let Backend::AzureBlob { auth, .. } = parse("azure-blob:https://a.blob.core.windows.net", &token).unwrap()
        else {
            panic!()
        };
        assert_eq!(auth, BlobAuth::Bearer("t".into()));

        for (setting, vars) in [
            ("azure-blob:https://a.blob.core.windows.net", &[][..]),
            ("azure-blob:http://a.blob.core.windows.net", &[("FHIRSIDE_BLOB_TOKEN", "t")][..]),
            ("azure-blob:https://a.blob.core.windows.net?sv=1&sig=secret", &[("FHIRSIDE_BLOB_TOKEN", "t")][..]),
            ("azure-blob:https://a.blob.core.windows.net", &[("FHIRSIDE_BLOB_ACCOUNT_KEY", "not base64!")][..]),
            ("azure-blob:http://127.0.0.1:10000", &[("FHIRSIDE_BLOB_ACCOUNT_KEY", KEY)][..]),
        ] {
            let error = parse(setting, &env(vars)).unwrap_err();
            assert!(matches!(error, ObjectError::Invalid(_)), "{setting}");
            assert!(!error.to_string().contains("secret") && !error.to_string().contains("not base64!"), "{error}");
        }
    }

    const URL: &str = "azure-blob:https://a.blob.core.windows.net";

    /// How the Blob store at [`URL`] is authorized with these variables.
    fn auth(vars: &[(&str, &str)]) -> Result<BlobAuth, ObjectError> {
        match parse(URL, &env(vars))? {
            Backend::AzureBlob { auth, .. } => Ok(auth),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn managed_identity_settings() {
        let imds = |client_id: Option<&str>, authority: &str| {
            BlobAuth::ManagedIdentity(ManagedIdentity {
                client_id: client_id.map(str::to_owned),
                endpoint: IdentityEndpoint::Imds { authority: authority.into() },
            })
        };
        let client = "6A1F6E3B-2C4D-4E5F-8A9B-0C1D2E3F4A5B";
        assert_eq!(auth(&[("FHIRSIDE_BLOB_MANAGED_IDENTITY", "system")]).unwrap(), imds(None, IMDS_AUTHORITY));
        assert_eq!(auth(&[("FHIRSIDE_BLOB_MANAGED_IDENTITY", "System")]).unwrap(), imds(None, IMDS_AUTHORITY));
        assert_eq!(
            auth(&[("FHIRSIDE_BLOB_MANAGED_IDENTITY", client)]).unwrap(),
            imds(Some("6a1f6e3b-2c4d-4e5f-8a9b-0c1d2e3f4a5b"), IMDS_AUTHORITY)
        );
        let pod = [
            ("FHIRSIDE_BLOB_MANAGED_IDENTITY", "system"),
            ("AZURE_POD_IDENTITY_AUTHORITY_HOST", "http://127.0.0.1:2579/"),
        ];
        assert_eq!(auth(&pod).unwrap(), imds(None, "http://127.0.0.1:2579"));
        let app = [
            ("FHIRSIDE_BLOB_MANAGED_IDENTITY", "system"),
            ("IDENTITY_ENDPOINT", "http://localhost:42356/msi/token"),
            ("IDENTITY_HEADER", "header-secret"),
            ("AZURE_POD_IDENTITY_AUTHORITY_HOST", "http://127.0.0.1:2579"),
        ];
        // App Service's endpoint needs both of its variables; with one, the metadata service is
        // asked, as Azure's SDKs do.
        for half in [&app[..2], &[app[0], app[2]][..]] {
            assert_eq!(auth(half).unwrap(), imds(None, IMDS_AUTHORITY), "{half:?}");
        }
        let app_auth = auth(&app).unwrap();
        assert_eq!(
            app_auth,
            BlobAuth::ManagedIdentity(ManagedIdentity {
                client_id: None,
                endpoint: IdentityEndpoint::AppService {
                    url: "http://localhost:42356/msi/token".into(),
                    header: "header-secret".into()
                },
            })
        );
        assert!(!format!("{app_auth:?}").contains("header-secret"), "{app_auth:?}");
        let store = crate::ObjectStore::from_setting(URL, &env(&app), fhirside_fetch_client()).unwrap();
        assert_eq!(
            store.describe(),
            "Azure Blob Storage at https://a.blob.core.windows.net (managed identity, system-assigned, \
             tokens from the identity endpoint http://localhost:42356/msi/token)"
        );
        assert!(!format!("{store:?}").contains("header-secret"));
        let store = crate::ObjectStore::from_setting(
            URL,
            &env(&[("FHIRSIDE_BLOB_MANAGED_IDENTITY", client)]),
            fhirside_fetch_client(),
        )
        .unwrap();
        assert_eq!(
            store.describe(),
            "Azure Blob Storage at https://a.blob.core.windows.net (managed identity, user-assigned, client id \
             6a1f6e3b-2c4d-4e5f-8a9b-0c1d2e3f4a5b, tokens from the instance metadata service at http://169.254.169.254)"
        );

        // Precedence: key, SAS, managed identity, token.
        let all = |extra: &[(&'static str, &'static str)]| {
            let mut vars = vec![("FHIRSIDE_BLOB_MANAGED_IDENTITY", "system"), ("FHIRSIDE_BLOB_TOKEN", "t")];
            vars.extend_from_slice(extra);
            auth(&vars).unwrap()
        };
        assert_eq!(all(&[]), imds(None, IMDS_AUTHORITY));
        assert_eq!(all(&[("FHIRSIDE_BLOB_SAS", "sv=1&sig=x")]), BlobAuth::Sas("sv=1&sig=x".into()));
        assert!(matches!(all(&[("FHIRSIDE_BLOB_ACCOUNT_KEY", KEY)]), BlobAuth::SharedKey { .. }));
        assert_eq!(
            auth(&[("FHIRSIDE_BLOB_MANAGED_IDENTITY", ""), ("FHIRSIDE_BLOB_TOKEN", "t")]).unwrap(),
            BlobAuth::Bearer("t".into())
        );

        let none = auth(&[]).unwrap_err().to_string();
        assert!(none.contains("FHIRSIDE_BLOB_MANAGED_IDENTITY") && none.contains("FHIRSIDE_BLOB_TOKEN"), "{none}");
        for (vars, expected) in [
            (&[("FHIRSIDE_BLOB_MANAGED_IDENTITY", "user-assigned")][..], "'system' or a user-assigned"),
            (&[("FHIRSIDE_BLOB_MANAGED_IDENTITY", "6a1f6e3b-2c4d-4e5f-8a9b-0c1d2e3f4a5")][..], "(a GUID)"),
            (
                &[
                    ("FHIRSIDE_BLOB_MANAGED_IDENTITY", "system"),
                    ("IDENTITY_ENDPOINT", "http://localhost:40342/metadata/identity/oauth2/token"),
                    ("IMDS_ENDPOINT", "http://localhost:40342"),
                ][..],
                "Azure Arc",
            ),
            (
                &[
                    ("FHIRSIDE_BLOB_MANAGED_IDENTITY", "system"),
                    ("IDENTITY_ENDPOINT", "http://10.0.0.4:8081/msi/token"),
                    ("IDENTITY_HEADER", "header-secret"),
                ][..],
                "IDENTITY_ENDPOINT must use https",
            ),
            (
                &[
                    ("FHIRSIDE_BLOB_MANAGED_IDENTITY", "system"),
                    ("IDENTITY_ENDPOINT", "https://localhost:2377/metadata/identity/oauth2/token"),
                    ("IDENTITY_HEADER", "header-secret"),
                    ("IDENTITY_SERVER_THUMBPRINT", "ab12"),
                ][..],
                "Service Fabric",
            ),
            (
                &[
                    ("FHIRSIDE_BLOB_MANAGED_IDENTITY", "system"),
                    ("AZURE_POD_IDENTITY_AUTHORITY_HOST", "http://169.254.1.1"),
                ][..],
                "AZURE_POD_IDENTITY_AUTHORITY_HOST must use https",
            ),
            (
                &[
                    ("FHIRSIDE_BLOB_MANAGED_IDENTITY", "system"),
                    ("AZURE_POD_IDENTITY_AUTHORITY_HOST", "http://127.0.0.1:1/x"),
                ][..],
                "without a path",
            ),
            (
                &[
                    ("FHIRSIDE_BLOB_MANAGED_IDENTITY", "system"),
                    ("AZURE_POD_IDENTITY_AUTHORITY_HOST", "169.254.169.254"),
                ][..],
                "must start with https://",
            ),
        ] {
            let error = auth(vars).unwrap_err();
            assert!(matches!(error, ObjectError::Invalid(_)), "{error}");
            assert!(error.to_string().contains(expected), "{vars:?}: {error}");
            assert!(!error.to_string().contains("header-secret"), "{error}");
        }
    }

    #[test]
    fn workload_identity_settings() {
        let workload = |client_id: &str, authority: &str| {
            BlobAuth::ManagedIdentity(ManagedIdentity {
                client_id: Some(client_id.into()),
                endpoint: IdentityEndpoint::Workload {
                    authority: authority.into(),
                    tenant: "72f988bf-86f1-41af-91ab-2d7cd011db47".into(),
                    token_file: "/var/run/secrets/azure/tokens/azure-identity-token".into(),
                },
            })
        };
        // What the AKS webhook sets in the pod.
        let pod = [
            ("FHIRSIDE_BLOB_MANAGED_IDENTITY", "system"),
            ("AZURE_FEDERATED_TOKEN_FILE", "/var/run/secrets/azure/tokens/azure-identity-token"),
            ("AZURE_CLIENT_ID", "6A1F6E3B-2C4D-4E5F-8A9B-0C1D2E3F4A5B"),
            ("AZURE_TENANT_ID", "72f988bf-86f1-41af-91ab-2d7cd011db47"),
            ("AZURE_AUTHORITY_HOST", "https://login.microsoftonline.com/"),
            // A workload identity is asked before the node's managed identity.
            ("AZURE_POD_IDENTITY_AUTHORITY_HOST", "http://127.0.0.1:2579"),
        ];
        let client = "6a1f6e3b-2c4d-4e5f-8a9b-0c1d2e3f4a5b";
        assert_eq!(auth(&pod).unwrap(), workload(client, "https://login.microsoftonline.com"));
        // Without AZURE_AUTHORITY_HOST, Entra's public cloud; a client id of Fhirside's own wins.
        let other = "0e4ba29c-4112-4a0b-84f8-77dd188a24b5";
        let mine = [pod[1], pod[2], pod[3], ("FHIRSIDE_BLOB_MANAGED_IDENTITY", other)];
        assert_eq!(auth(&mine).unwrap(), workload(other, "https://login.microsoftonline.com"));
        let store = crate::ObjectStore::from_setting(URL, &env(&pod), fhirside_fetch_client()).unwrap();
        assert_eq!(
            store.describe(),
            "Azure Blob Storage at https://a.blob.core.windows.net (workload identity, user-assigned, client id \
             6a1f6e3b-2c4d-4e5f-8a9b-0c1d2e3f4a5b, tokens from https://login.microsoftonline.com, tenant \
             72f988bf-86f1-41af-91ab-2d7cd011db47, for the workload token in \
             /var/run/secrets/azure/tokens/azure-identity-token)"
        );
        for (change, expected) in [
            (("AZURE_CLIENT_ID", ""), "AZURE_CLIENT_ID must name"),
            (("AZURE_CLIENT_ID", "not-a-guid"), "AZURE_CLIENT_ID must name"),
            (("AZURE_TENANT_ID", ""), "AZURE_TENANT_ID must name"),
            (("AZURE_TENANT_ID", "t/../x"), "AZURE_TENANT_ID must name"),
            (("AZURE_AUTHORITY_HOST", "http://login.example"), "AZURE_AUTHORITY_HOST must use https"),
            (("AZURE_AUTHORITY_HOST", "https://login.example/tenant"), "without a path"),
        ] {
            let vars: Vec<(&str, &str)> =
                pod.iter().map(|&(name, value)| if name == change.0 { change } else { (name, value) }).collect();
            let error = auth(&vars).unwrap_err();
            assert!(matches!(error, ObjectError::Invalid(_)), "{error}");
            assert!(error.to_string().contains(expected), "{change:?}: {error}");
        }
    }

    fn fhirside_fetch_client() -> fhirside_fetch::Client {
        let ca = fhirside_fetch::testing::temp_file(&fhirside_fetch::testing::tls_fixture().0);
        let client = fhirside_fetch::Client::new(Some(&ca)).unwrap();
        let _ = std::fs::remove_file(ca);
        client
    }

    #[test]
    fn s3_settings() {
        let creds =
            env(&[("AWS_ACCESS_KEY_ID", "AKID"), ("AWS_SECRET_ACCESS_KEY", "secret"), ("AWS_SESSION_TOKEN", "")]);
        let auth = S3Auth { access_key_id: "AKID".into(), secret_access_key: "secret".into(), session_token: None };
        assert_eq!(
            parse("s3:https://s3.eu-west-1.amazonaws.com?region=eu-west-1", &creds).unwrap(),
            Backend::S3 {
                endpoint: "https://s3.eu-west-1.amazonaws.com".into(),
                region: "eu-west-1".into(),
                auth: auth.clone(),
                path_style: false
            }
        );
        assert_eq!(
            parse("s3:http://127.0.0.1:9000/?region=us-east-1&path_style=true", &creds).unwrap(),
            Backend::S3 {
                endpoint: "http://127.0.0.1:9000".into(),
                region: "us-east-1".into(),
                auth: auth.clone(),
                path_style: true
            }
        );
        let Backend::S3 { region, path_style, .. } = parse("s3:https://s3.ap-south-1.amazonaws.com", &creds).unwrap()
        else {
            panic!()
        };
        assert_eq!((region.as_str(), path_style), ("ap-south-1", false));
        let Backend::S3 { region, path_style, .. } = parse("s3:http://localhost:9000", &creds).unwrap() else {
            panic!()
        };
        assert_eq!((region.as_str(), path_style), ("us-east-1", true));
        let temporary = env(&[("AWS_ACCESS_KEY_ID", "A"), ("AWS_SECRET_ACCESS_KEY", "S"), ("AWS_SESSION_TOKEN", "T")]);
        let Backend::S3 { auth, .. } = parse("s3:https://minio.example.org?path_style=1", &temporary).unwrap() else {
            panic!()
        };
        assert_eq!(auth.session_token.as_deref(), Some("T"));

        for (setting, vars) in [
            ("s3:https://s3.amazonaws.com", &[("AWS_ACCESS_KEY_ID", "A")][..]),
            ("s3:http://s3.amazonaws.com", &[("AWS_ACCESS_KEY_ID", "A"), ("AWS_SECRET_ACCESS_KEY", "S")][..]),
            (
                "s3:https://s3.amazonaws.com?colour=blue",
                &[("AWS_ACCESS_KEY_ID", "A"), ("AWS_SECRET_ACCESS_KEY", "S")][..],
            ),
            (
                "s3:https://s3.amazonaws.com?path_style=maybe",
                &[("AWS_ACCESS_KEY_ID", "A"), ("AWS_SECRET_ACCESS_KEY", "S")][..],
            ),
            (
                "s3:https://s3.amazonaws.com?region=a/b",
                &[("AWS_ACCESS_KEY_ID", "A"), ("AWS_SECRET_ACCESS_KEY", "S")][..],
            ),
            ("s3:s3.amazonaws.com", &[("AWS_ACCESS_KEY_ID", "A"), ("AWS_SECRET_ACCESS_KEY", "S")][..]),
        ] {
            assert!(matches!(parse(setting, &env(vars)), Err(ObjectError::Invalid(_))), "{setting}");
        }
    }
}
