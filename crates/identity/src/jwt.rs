//! JSON Web Tokens (RFC 7519) in compact form: decoding, and verifying a signature with a JSON Web
//! Key (RFC 7517).
//!
//! Only asymmetric algorithms exist here. `none` and the HMAC family are not merely refused by a
//! check: there is no code path that could verify them, so a token can never be "signed" with a
//! public key used as an HMAC secret.

use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::b64;

/// The signature algorithms Fhirside accepts (RFC 7518 names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
}

impl Alg {
    pub fn parse(name: &str) -> Option<Alg> {
        Some(match name {
            "RS256" => Alg::RS256,
            "RS384" => Alg::RS384,
            "RS512" => Alg::RS512,
            "PS256" => Alg::PS256,
            "PS384" => Alg::PS384,
            "PS512" => Alg::PS512,
            "ES256" => Alg::ES256,
            "ES384" => Alg::ES384,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
        }
    }

    /// The JWK key type this algorithm needs.
    fn kty(self) -> &'static str {
        match self {
            Alg::ES256 | Alg::ES384 => "EC",
            _ => "RSA",
        }
    }
}

/// A JSON Web Key: the public half of a signing key. Unknown members are ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Jwk {
    pub kty: String,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "use")]
    pub use_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// RSA modulus and exponent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    /// EC curve and point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// Certificate thumbprints (SHA-1 and SHA-256), which Entra and MSAL use as key ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x5t: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "x5t#S256")]
    pub x5t_s256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x5c: Option<Vec<String>>,
    /// When the built-in authority stops signing with this key (Unix seconds); not part of JWK.
    #[serde(default, skip)]
    pub retired_at: Option<i64>,
}

/// A JWK Set document (`{"keys": [...]}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
}

impl JwkSet {
    /// Parses a JWK Set, skipping members that are not keys this crate can use rather than
    /// refusing the whole set (issuers publish key types we need not understand).
    pub fn parse(json: &[u8]) -> Result<JwkSet, String> {
        let value: Value = serde_json::from_slice(json).map_err(|e| format!("not JSON: {e}"))?;
        let keys = value.get("keys").and_then(Value::as_array).ok_or("no \"keys\" array")?;
        Ok(JwkSet { keys: keys.iter().filter_map(|k| serde_json::from_value(k.clone()).ok()).collect() })
    }

    /// The keys a token's header points at: by `kid`, else by certificate thumbprint; without
    /// either, every key (the caller tries each).
    pub fn candidates<'a>(&'a self, token: &'a Decoded) -> impl Iterator<Item = &'a Jwk> + 'a {
        // Thumbprints are base64url, compared without padding: MSAL Python pads them
        // (`x5t#S256: "j39i…omg="`), and Entra accepts that.
        let unpadded = |t: Option<&'a str>| t.map(|t| t.trim_end_matches('='));
        let kid = token.header_str("kid");
        let x5t = unpadded(token.header_str("x5t"));
        let x5t_s256 = unpadded(token.header_str("x5t#S256"));
        self.keys.iter().filter(move |k| {
            if kid.is_none() && x5t.is_none() && x5t_s256.is_none() {
                return true;
            }
            let (k_kid, k_x5t, k_x5t_s256) =
                (unpadded(k.kid.as_deref()), unpadded(k.x5t.as_deref()), unpadded(k.x5t_s256.as_deref()));
            (kid.is_some() && k.kid.as_deref() == kid)
                || (x5t.is_some() && (k_x5t == x5t || k_kid == x5t))
                || (x5t_s256.is_some() && (k_x5t_s256 == x5t_s256 || k_kid == x5t_s256))
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtError {
    /// Not three base64url parts of JSON objects.
    Malformed,
    /// `alg` missing, `none`, HMAC, or otherwise not accepted.
    UnsupportedAlgorithm(String),
    /// No key verifies the signature.
    BadSignature,
}

impl std::fmt::Display for JwtError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwtError::Malformed => write!(f, "the token is not a well-formed JWT"),
            JwtError::UnsupportedAlgorithm(alg) => write!(f, "the signature algorithm '{alg}' is not accepted"),
            JwtError::BadSignature => write!(f, "the token's signature does not verify"),
        }
    }
}

/// A decoded, not yet verified, token.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub header: Map<String, Value>,
    pub claims: Map<String, Value>,
    signing_input: String,
    signature: Vec<u8>,
}

impl Decoded {
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header.get(name).and_then(Value::as_str)
    }

    pub fn claim_str(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }

    /// A numeric date claim (`exp`, `nbf`, `iat`); Entra's v1 token responses carry some numbers
    /// as strings, so a numeric string is accepted too.
    pub fn claim_time(&self, name: &str) -> Option<i64> {
        match self.claims.get(name)? {
            Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
            Value::String(s) => s.parse().ok(),
            _ => None,
        }
    }

    /// The header's algorithm, if it is one Fhirside accepts.
    pub fn alg(&self) -> Result<Alg, JwtError> {
        let name = self.header_str("alg").unwrap_or("");
        Alg::parse(name).ok_or_else(|| JwtError::UnsupportedAlgorithm(name.to_owned()))
    }

    /// Verifies the signature with `key`, using the header's algorithm, which must match the key's
    /// type (and the key's own `alg` when it declares one).
    pub fn verify_with(&self, key: &Jwk) -> Result<(), JwtError> {
        let alg = self.alg()?;
        if key.kty != alg.kty() || key.alg.as_deref().is_some_and(|a| a != alg.as_str()) {
            return Err(JwtError::BadSignature);
        }
        let message = self.signing_input.as_bytes();
        let ok = match alg {
            Alg::ES256 | Alg::ES384 => {
                let (curve, algorithm): (_, &'static signature::EcdsaVerificationAlgorithm) = match alg {
                    Alg::ES256 => ("P-256", &signature::ECDSA_P256_SHA256_FIXED),
                    _ => ("P-384", &signature::ECDSA_P384_SHA384_FIXED),
                };
                let (Some(x), Some(y)) =
                    (key.x.as_deref().and_then(b64::decode), key.y.as_deref().and_then(b64::decode))
                else {
                    return Err(JwtError::BadSignature);
                };
                if key.crv.as_deref() != Some(curve) {
                    return Err(JwtError::BadSignature);
                }
                let mut point = Vec::with_capacity(1 + x.len() + y.len());
                point.push(0x04);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                UnparsedPublicKey::new(algorithm, point).verify(message, &self.signature).is_ok()
            }
            _ => {
                let algorithm: &'static signature::RsaParameters = match alg {
                    Alg::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
                    Alg::RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
                    Alg::RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
                    Alg::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
                    Alg::PS384 => &signature::RSA_PSS_2048_8192_SHA384,
                    _ => &signature::RSA_PSS_2048_8192_SHA512,
                };
                let (Some(n), Some(e)) =
                    (key.n.as_deref().and_then(b64::decode), key.e.as_deref().and_then(b64::decode))
                else {
                    return Err(JwtError::BadSignature);
                };
                RsaPublicKeyComponents { n, e }.verify(algorithm, message, &self.signature).is_ok()
            }
        };
        if ok {
            Ok(())
        } else {
            Err(JwtError::BadSignature)
        }
    }
}

/// Splits and decodes a compact JWT without verifying it.
pub fn decode(token: &str) -> Result<Decoded, JwtError> {
    let mut parts = token.split('.');
    let (Some(header), Some(claims), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let object = |part: &str| -> Result<Map<String, Value>, JwtError> {
        let bytes = b64::decode(part).ok_or(JwtError::Malformed)?;
        match serde_json::from_slice(&bytes) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err(JwtError::Malformed),
        }
    };
    Ok(Decoded {
        header: object(header)?,
        claims: object(claims)?,
        signing_input: format!("{header}.{claims}"),
        signature: b64::decode(signature).ok_or(JwtError::Malformed)?,
    })
}

/// `base64url(header).base64url(claims)`, the part a signature covers.
pub fn signing_input(header: &Value, claims: &Value) -> String {
    format!("{}.{}", b64::encode(header.to_string()), b64::encode(claims.to_string()))
}
