//! Encryption at rest, as the binary sets it up: the key-encryption key named by
//! `--encryption-key`, and the installation's keyring, kept (wrapped) in the store's settings.
//!
//! A server refuses to start rather than serve what it cannot open or write what it should not:
//! an encrypted store without the key, a key that does not unwrap the store's data keys, or a key
//! given to a store that already holds unencrypted resources.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fhirside_keys::{
    AzureKeyVault, AzureKeyVaultConfig, KeyProvider, Keyring, KeyringCell, KeyringState, LocalKek, VaultConfig,
    VaultTransit,
};
use fhirside_store::{ResourceStore, SettingsOf};

/// The store setting that holds the keyring's state (data keys wrapped by the KEK; no secret).
pub const KEYRING_SETTING: &str = "keyring";

/// How often a server looks for a rotation made by `fhirside keys rotate` or another replica.
const FOLLOW_EVERY: Duration = Duration::from_secs(2);

/// The KEK named by an `--encryption-key` setting:
/// - `file:PATH`: 32 bytes (raw or base64) in a file only its owner may read;
/// - `env:NAME`: the same, base64, in an environment variable;
/// - `vault:https://HOST:8200/v1/MOUNT/keys/NAME`: a key of Vault's (or OpenBao's) transit engine,
///   with the token in `VAULT_TOKEN` and the namespace, if any, in `VAULT_NAMESPACE`;
/// - `azure-keyvault:https://VAULT.vault.azure.net/keys/NAME[/VERSION]`: an RSA key in Azure Key
///   Vault, with an access token for `https://vault.azure.net` in `FHIRSIDE_KEYVAULT_TOKEN`.
pub fn provider(setting: &str) -> Result<Arc<dyn KeyProvider>, String> {
    let fail = |reason: &str| format!("--encryption-key '{setting}': {reason}");
    let (scheme, rest) =
        setting.split_once(':').ok_or_else(|| fail("expected file:, env:, vault: or azure-keyvault:"))?;
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let provider: Arc<dyn KeyProvider> = match scheme {
        "file" => Arc::new(LocalKek::from_file(Path::new(rest)).map_err(|e| e.to_string())?),
        "env" => Arc::new(LocalKek::from_env(rest).map_err(|e| e.to_string())?),
        "vault" => {
            let (address, path) =
                split_url(rest).ok_or_else(|| fail("expected https://HOST[:PORT]/v1/MOUNT/keys/NAME"))?;
            let (mount, key) = path
                .strip_prefix("/v1/")
                .and_then(|p| p.rsplit_once("/keys/"))
                .ok_or_else(|| fail("the path must be /v1/MOUNT/keys/NAME, the URL of the transit key"))?;
            let token = env("VAULT_TOKEN").ok_or_else(|| fail("set VAULT_TOKEN to a token that may use the key"))?;
            let config = VaultConfig {
                address: address.to_owned(),
                mount: mount.to_owned(),
                key: key.to_owned(),
                namespace: env("VAULT_NAMESPACE"),
            };
            Arc::new(VaultTransit::new(client()?, config, token).map_err(|e| e.to_string())?)
        }
        "azure-keyvault" => {
            let (vault, path) =
                split_url(rest).ok_or_else(|| fail("expected https://VAULT.vault.azure.net/keys/NAME[/VERSION]"))?;
            let mut parts = path.trim_start_matches('/').split('/');
            let (Some("keys"), Some(name), version, None) = (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(fail("the path must be /keys/NAME or /keys/NAME/VERSION, the key's identifier"));
            };
            let token = env("FHIRSIDE_KEYVAULT_TOKEN")
                .ok_or_else(|| fail("set FHIRSIDE_KEYVAULT_TOKEN to an access token for https://vault.azure.net"))?;
            let config = AzureKeyVaultConfig {
                vault_url: vault.to_owned(),
                key_name: name.to_owned(),
                key_version: version.filter(|v| !v.is_empty()).map(str::to_owned),
            };
            Arc::new(AzureKeyVault::new(client()?, config, token).map_err(|e| e.to_string())?)
        }
        _ => return Err(fail("expected file:, env:, vault: or azure-keyvault:")),
    };
    Ok(provider)
}

fn client() -> Result<fhirside_fetch::Client, String> {
    fhirside_fetch::Client::new(None)
}

/// `https://host:port/path` → (`https://host:port`, `/path`).
fn split_url(url: &str) -> Option<(&str, &str)> {
    let after_scheme = url.find("://")? + 3;
    let slash = url[after_scheme..].find('/')? + after_scheme;
    Some((&url[..slash], &url[slash..]))
}

/// The data keys of a stored keyring, unwrapped by `provider`.
pub async fn open_keyring(provider: &dyn KeyProvider, stored: &str) -> Result<Keyring, String> {
    let state: KeyringState =
        serde_json::from_str(stored).map_err(|e| format!("the store's keyring setting is not readable: {e}"))?;
    Keyring::open(provider, state).await.map_err(|e| {
        format!(
            "the encryption key {} cannot open this store's data keys: {e}. Refusing to start rather than serve \
             data it cannot read; give the key the store was encrypted with (see `fhirside keys status`).",
            provider.id()
        )
    })
}

/// The keyring of an installation, for a command that works on its state beside a running server
/// (`fhirside relay`): `None` when the store is not encrypted; an error when it is and `setting`
/// does not open it.
pub async fn keyring_for_command(
    settings: SettingsOf<'_>,
    setting: Option<&str>,
) -> Result<Option<KeyringCell>, String> {
    let stored = fhirside_store::read_setting(settings, KEYRING_SETTING)
        .await
        .map_err(|e| format!("cannot read the store's settings: {e}"))?;
    let Some(stored) = stored else { return Ok(None) };
    let setting = setting.ok_or(
        "this installation is encrypted at rest: give the servers' --encryption-key (or FHIRSIDE_ENCRYPTION_KEY)",
    )?;
    let keys = KeyringCell::new();
    keys.replace(open_keyring(provider(setting)?.as_ref(), &stored).await?);
    Ok(Some(keys))
}

pub fn state_json(keyring: &Keyring) -> String {
    serde_json::to_string(keyring.state()).expect("a keyring state serializes")
}

/// Encryption at rest of a running server: the KEK, and the keyring in force (shared with the
/// store and the search index through `keys`).
pub struct Encryption {
    pub provider: Arc<dyn KeyProvider>,
    pub keys: KeyringCell,
    /// The keyring setting as last loaded, to notice a rotation.
    loaded: String,
}

/// Loads the installation's keyring into `keys`, or creates it on a store that holds nothing yet;
/// `None` when encryption at rest is off (no `--encryption-key`, and a store without a keyring).
pub async fn set_up(
    setting: Option<&str>,
    store: &dyn ResourceStore,
    settings: SettingsOf<'_>,
    keys: &KeyringCell,
) -> Result<Option<Encryption>, String> {
    let stored =
        store.setting(KEYRING_SETTING).await.map_err(|e| format!("cannot read the store's settings: {e}"))?.value;
    let Some(setting) = setting else {
        return match stored {
            None => Ok(None),
            Some(stored) => {
                let kek = serde_json::from_str::<KeyringState>(&stored)
                    .ok()
                    .and_then(|state| state.keys.first().map(|key| key.wrapped.kek_id.clone()))
                    .unwrap_or_else(|| "unknown".into());
                Err(format!(
                    "this store is encrypted at rest (its data keys are wrapped by {kek}); start with \
                     --encryption-key naming that key"
                ))
            }
        };
    };
    let provider = provider(setting)?;
    let stored = match stored {
        Some(stored) => stored,
        None => {
            let holds_data =
                !store.live_after(0, 1).await.map_err(|e| format!("cannot read the store: {e}"))?.value.is_empty();
            if holds_data {
                return Err("--encryption-key is set, but this store already holds unencrypted resources: \
                            encryption at rest is chosen when a store is created. Start a new store with the key \
                            and move the data with $export and $import."
                    .into());
            }
            let created = Keyring::create(provider.as_ref())
                .await
                .map_err(|e| format!("cannot create a data key with {}: {e}", provider.id()))?;
            // Replicas starting together on an empty database agree on the first keyring stored.
            fhirside_store::create_setting(settings, KEYRING_SETTING, &state_json(&created))
                .await
                .map_err(|e| format!("cannot store the keyring: {e}"))?
        }
    };
    keys.replace(open_keyring(provider.as_ref(), &stored).await?);
    Ok(Some(Encryption { provider, keys: keys.clone(), loaded: stored }))
}

impl Encryption {
    /// Follows rotations: when the stored keyring changes, the new one is opened and put in force,
    /// so data keys added by `fhirside keys rotate --data-key` (or by another replica) are used for
    /// new writes and searched, within [`FOLLOW_EVERY`].
    pub fn follow(mut self, store: Arc<dyn ResourceStore>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(FOLLOW_EVERY);
            loop {
                ticks.tick().await;
                let Ok(outcome) = store.setting(KEYRING_SETTING).await else { continue };
                let Some(stored) = outcome.value else { continue };
                if stored == self.loaded {
                    continue;
                }
                match open_keyring(self.provider.as_ref(), &stored).await {
                    Ok(keyring) => self.keys.replace(keyring),
                    // The KEK moved (`keys rotate --to`): the data keys in force still serve
                    // everything written so far; a restart needs the new key. Said once.
                    Err(message) => eprintln!("warning: a rotated keyring was not loaded: {message}"),
                }
                self.loaded = stored;
            }
        })
    }
}
