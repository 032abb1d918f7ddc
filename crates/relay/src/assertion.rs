//! Client assertions for the `OAuth_2.0_2-legged_JWT` strategy: a short-lived JWT signed with the
//! credential's private key (RFC 7523's `private_key_jwt`, as Entra and Fhirside's authority take
//! it) instead of a client secret. `iss` and `sub` are the client id, `aud` the token endpoint,
//! and each assertion has a fresh `jti` and lives five minutes.
//!
//! The key is PKCS#8 PEM: RSA signs RS384, EC P-256 ES256, EC P-384 ES384 (what ring signs; the
//! JWS form of ECDSA is the fixed-width `r‖s`).

use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, RsaKeyPair};
use serde_json::json;

/// How long an assertion is valid.
const LIFETIME_SECONDS: i64 = 300;

pub enum SigningKey {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair, &'static str),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.alg())
    }
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl SigningKey {
    /// Reads a `-----BEGIN PRIVATE KEY-----` (PKCS#8) PEM.
    pub fn from_pem(pem: &str) -> Result<SigningKey, String> {
        let body: String = pem
            .lines()
            .map(str::trim)
            .skip_while(|l| !l.starts_with("-----BEGIN PRIVATE KEY-----"))
            .skip(1)
            .take_while(|l| !l.starts_with("-----END"))
            .collect();
        if body.is_empty() {
            return Err("expected a PKCS#8 PEM ('-----BEGIN PRIVATE KEY-----')".into());
        }
        let der = base64::engine::general_purpose::STANDARD.decode(body).map_err(|_| "the PEM is not valid base64")?;
        if let Ok(key) = RsaKeyPair::from_pkcs8(&der) {
            return Ok(SigningKey::Rsa(key));
        }
        let rng = SystemRandom::new();
        if let Ok(key) = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &der, &rng) {
            return Ok(SigningKey::Ec(key, "ES256"));
        }
        if let Ok(key) = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P384_SHA384_FIXED_SIGNING, &der, &rng) {
            return Ok(SigningKey::Ec(key, "ES384"));
        }
        Err("not an RSA, P-256 or P-384 private key".into())
    }

    pub fn alg(&self) -> &'static str {
        match self {
            SigningKey::Rsa(_) => "RS384",
            SigningKey::Ec(_, alg) => alg,
        }
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        let rng = SystemRandom::new();
        match self {
            SigningKey::Rsa(key) => {
                let mut out = vec![0; key.public().modulus_len()];
                key.sign(&signature::RSA_PKCS1_SHA384, &rng, message, &mut out).map_err(|_| "RSA signing failed")?;
                Ok(out)
            }
            SigningKey::Ec(key, _) => {
                Ok(key.sign(&rng, message).map_err(|_| "ECDSA signing failed")?.as_ref().to_vec())
            }
        }
    }

    /// A signed assertion for `client_id` at `token_url`, issued at `now` (seconds).
    pub fn assertion(&self, client_id: &str, token_url: &str, kid: Option<&str>, now: i64) -> Result<String, String> {
        let mut header = json!({ "alg": self.alg(), "typ": "JWT" });
        if let Some(kid) = kid {
            header["kid"] = json!(kid);
        }
        let claims = json!({
            "iss": client_id,
            "sub": client_id,
            "aud": token_url,
            "jti": crate::new_id(),
            "iat": now,
            "nbf": now,
            "exp": now + LIFETIME_SECONDS,
        });
        let input = format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()));
        let signature = self.sign(input.as_bytes())?;
        Ok(format!("{input}.{}", b64url(&signature)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::KeyPair as _;

    fn pem(der: &[u8]) -> String {
        let body = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = body.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
        format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", lines.join("\n"))
    }

    #[test]
    fn an_ec_assertion_verifies_with_the_public_key() {
        let rng = SystemRandom::new();
        let der = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let key = SigningKey::from_pem(&pem(der.as_ref())).unwrap();
        assert_eq!(key.alg(), "ES256");
        let jwt = key.assertion("app", "https://login.example/t/oauth2/v2.0/token", Some("k1"), 1000).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        let decode = |p: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(p).unwrap();
        let header: serde_json::Value = serde_json::from_slice(&decode(parts[0])).unwrap();
        let claims: serde_json::Value = serde_json::from_slice(&decode(parts[1])).unwrap();
        assert_eq!(header, json!({"alg": "ES256", "typ": "JWT", "kid": "k1"}));
        assert_eq!(claims["iss"], "app");
        assert_eq!(claims["sub"], "app");
        assert_eq!(claims["aud"], "https://login.example/t/oauth2/v2.0/token");
        assert_eq!(claims["exp"], 1300);
        let public = match &key {
            SigningKey::Ec(pair, _) => pair.public_key().as_ref().to_vec(),
            SigningKey::Rsa(_) => unreachable!(),
        };
        signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, public)
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &decode(parts[2]))
            .expect("the signature verifies");
        let second = key.assertion("app", "u", None, 1000).unwrap();
        assert_ne!(second.split('.').nth(1), jwt.split('.').nth(1), "a fresh jti each time");
    }

    #[test]
    fn keys_that_cannot_sign_are_named() {
        assert!(SigningKey::from_pem("not a key").unwrap_err().contains("PKCS#8"));
        assert!(SigningKey::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----")
            .unwrap_err()
            .contains("not an RSA"));
    }
}
