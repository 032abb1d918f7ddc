//! The built-in authority's token-signing keys: RSA 2048, RS256, as Entra ID signs.
//!
//! Keys rotate: a new key becomes the signing key, and the previous ones stay published in the
//! JWKS until every token they signed has expired, so that rotation never invalidates a token in
//! flight. Key generation uses the `rsa` crate (ring cannot generate RSA keys); signing and
//! verification use ring.

use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RsaPublicKeyComponents, RSA_PKCS1_SHA256};
use serde_json::{json, Value};

use crate::b64;
use crate::jwt::{self, Jwk};

/// A private signing key.
pub struct SigningKey {
    /// The `kid` header of the tokens it signs.
    pub kid: String,
    /// When it was created (Unix seconds).
    pub created_at: i64,
    /// When it stopped signing (Unix seconds); retired keys are published, not used.
    pub retired_at: Option<i64>,
    /// PKCS#8 DER, as stored.
    pub pkcs8: Vec<u8>,
    pair: RsaKeyPair,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid).field("retired_at", &self.retired_at).finish()
    }
}

impl SigningKey {
    /// A fresh 2048-bit key. Takes a fraction of a second; done once per installation and rotation.
    pub fn generate(created_at: i64) -> Result<SigningKey, String> {
        use rsa::pkcs8::EncodePrivateKey;
        let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).map_err(|e| e.to_string())?;
        let der = private.to_pkcs8_der().map_err(|e| e.to_string())?;
        let pkcs8 = der.as_bytes().to_vec();
        let pair = RsaKeyPair::from_pkcs8(&pkcs8).map_err(|e| e.to_string())?;
        let kid = thumbprint(&pair);
        Ok(SigningKey { kid, created_at, retired_at: None, pkcs8, pair })
    }

    pub fn from_pkcs8(
        kid: String,
        created_at: i64,
        retired_at: Option<i64>,
        pkcs8: Vec<u8>,
    ) -> Result<SigningKey, String> {
        let pair = RsaKeyPair::from_pkcs8(&pkcs8).map_err(|e| format!("signing key {kid}: {e}"))?;
        Ok(SigningKey { kid, created_at, retired_at, pkcs8, pair })
    }

    /// The public key as a JWK, the way Entra publishes its keys (`kty`, `use`, `kid`, `x5t`, `n`, `e`).
    pub fn jwk(&self) -> Jwk {
        let public = RsaPublicKeyComponents::<Vec<u8>>::from(self.pair.public());
        Jwk {
            kty: "RSA".into(),
            use_: Some("sig".into()),
            kid: Some(self.kid.clone()),
            alg: Some("RS256".into()),
            n: Some(b64::encode(&public.n)),
            e: Some(b64::encode(&public.e)),
            x5t: Some(self.kid.clone()),
            ..Jwk::default()
        }
    }

    /// Signs `claims` as a compact JWT with `typ: JWT`, `alg: RS256`, `kid` and `x5t`.
    pub fn sign(&self, claims: &Value) -> String {
        let header = json!({"typ": "JWT", "alg": "RS256", "x5t": self.kid, "kid": self.kid});
        let input = jwt::signing_input(&header, claims);
        let mut signature = vec![0; self.pair.public().modulus_len()];
        self.pair
            .sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), input.as_bytes(), &mut signature)
            .expect("RSA signing with a valid key and a buffer of the modulus length cannot fail");
        format!("{input}.{}", b64::encode(&signature))
    }
}

/// A stable key id: base64url of the SHA-256 of the public modulus, shortened. (Entra's `kid` is a
/// certificate thumbprint; ours has no certificate, so a thumbprint of the key stands in.)
fn thumbprint(pair: &RsaKeyPair) -> String {
    let public = RsaPublicKeyComponents::<Vec<u8>>::from(pair.public());
    let digest = ring::digest::digest(&ring::digest::SHA256, &public.n);
    b64::encode(&digest.as_ref()[..20])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_tokens_its_jwk_verifies_and_others_do_not() {
        let key = SigningKey::generate(0).unwrap();
        let token = key.sign(&json!({"sub": "x"}));
        let decoded = jwt::decode(&token).unwrap();
        assert_eq!(decoded.header_str("kid"), Some(key.kid.as_str()));
        decoded.verify_with(&key.jwk()).unwrap();

        let reloaded = SigningKey::from_pkcs8(key.kid.clone(), 0, None, key.pkcs8.clone()).unwrap();
        assert_eq!(reloaded.jwk(), key.jwk());

        let other = SigningKey::generate(0).unwrap();
        assert_eq!(decoded.verify_with(&other.jwk()), Err(jwt::JwtError::BadSignature));

        // A changed claim breaks the signature.
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = b64::encode(json!({"sub": "y"}).to_string());
        parts[1] = &forged;
        let forged = jwt::decode(&parts.join(".")).unwrap();
        assert_eq!(forged.verify_with(&key.jwk()), Err(jwt::JwtError::BadSignature));
    }

    #[test]
    fn refuses_none_and_hmac() {
        let key = SigningKey::generate(0).unwrap();
        for alg in ["none", "HS256", ""] {
            let header = b64::encode(json!({"alg": alg, "kid": key.kid}).to_string());
            let claims = b64::encode(json!({"sub": "x"}).to_string());
            let decoded = jwt::decode(&format!("{header}.{claims}.")).unwrap();
            assert!(matches!(decoded.verify_with(&key.jwk()), Err(jwt::JwtError::UnsupportedAlgorithm(_))));
        }
    }
}
