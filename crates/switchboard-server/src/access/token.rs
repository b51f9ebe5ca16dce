//! Connection tokens: JWTs an application signs for its users, verified
//! here. The key decides the algorithm: HS256 for `--token-hmac-secret`,
//! RS256 or ES256 by the type of `--token-public-key`'s PEM; a token
//! naming any other (`none` included) is refused.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use switchboard_core::{ChannelName, Username};

use super::patterns::ChannelPatterns;

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("a token is required: ?token= or Authorization: Bearer")]
    Missing,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("the token expired at {0} (seconds since the epoch)")]
    Expired(u64),
}

/// What a valid token grants its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub username: Username,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    subscribe: ChannelPatterns,
    publish: ChannelPatterns,
}

impl Grant {
    /// Whether the holder may subscribe to `channel`, read its history and
    /// its presence.
    pub fn may_subscribe(&self, channel: &ChannelName) -> bool {
        self.subscribe.allows(channel)
    }

    pub fn may_publish(&self, channel: &ChannelName) -> bool {
        self.publish.allows(channel)
    }
}

/// The claims read from a token; `exp` and `sub` are required.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default)]
    subscribe: Vec<String>,
    #[serde(default)]
    publish: Vec<String>,
}

/// Why the verifier could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("--token-public-key {path}: {reason}")]
    PublicKey { path: String, reason: String },
    #[error("--auth token needs --token-hmac-secret or --token-public-key")]
    NoKey,
    #[error("--token-hmac-secret and --token-public-key are exclusive: give one")]
    TwoKeys,
    #[error("--token-hmac-secret is empty")]
    EmptySecret,
}

/// Checks tokens against the one key the server is given.
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

/// Where the key comes from, and what else a token must say.
#[derive(Debug, Clone, Default)]
pub struct TokenSettings<'a> {
    pub hmac_secret: Option<&'a str>,
    pub public_key: Option<&'a Path>,
    pub audience: Option<&'a str>,
    pub issuer: Option<&'a str>,
}

impl TokenVerifier {
    pub fn new(settings: &TokenSettings<'_>) -> Result<TokenVerifier, KeyError> {
        let (key, algorithm) = match (settings.hmac_secret, settings.public_key) {
            (Some(_), Some(_)) => return Err(KeyError::TwoKeys),
            (None, None) => return Err(KeyError::NoKey),
            (Some(""), None) => return Err(KeyError::EmptySecret),
            (Some(secret), None) => (
                DecodingKey::from_secret(secret.as_bytes()),
                Algorithm::HS256,
            ),
            (None, Some(path)) => public_key(path)?,
        };
        let mut validation = Validation::new(algorithm);
        // Expiry is checked here, to the second and with no leeway, after
        // the signature: an expired token with a bad signature is invalid.
        validation.validate_exp = false;
        validation.leeway = 0;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        match settings.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = settings.issuer {
            validation.set_issuer(&[issuer]);
        }
        Ok(TokenVerifier { key, validation })
    }

    /// The grant of `token`, if it is signed with the key, well formed and
    /// not expired.
    pub fn verify(&self, token: &str) -> Result<Grant, TokenError> {
        let claims = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| TokenError::Invalid(describe(e.kind())))?
            .claims;
        if now_secs() >= claims.exp {
            return Err(TokenError::Expired(claims.exp));
        }
        let username =
            Username::parse(&claims.sub).map_err(|e| TokenError::Invalid(format!("sub: {e}")))?;
        let subscribe = ChannelPatterns::parse(&claims.subscribe)
            .map_err(|e| TokenError::Invalid(format!("subscribe: {e}")))?;
        let publish = ChannelPatterns::parse(&claims.publish)
            .map_err(|e| TokenError::Invalid(format!("publish: {e}")))?;
        Ok(Grant {
            username,
            exp: claims.exp,
            subscribe,
            publish,
        })
    }
}

/// Seconds since the epoch, now.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A public key's algorithm, from its PEM: RSA keys verify RS256, P-256
/// keys ES256.
fn public_key(path: &Path) -> Result<(DecodingKey, Algorithm), KeyError> {
    let error = |reason: String| KeyError::PublicKey {
        path: path.display().to_string(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| error(e.to_string()))?;
    if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
        return Ok((key, Algorithm::RS256));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
        return Ok((key, Algorithm::ES256));
    }
    Err(error(
        "not a PEM RSA or EC (P-256) public key (-----BEGIN PUBLIC KEY-----)".into(),
    ))
}

/// Why a token failed, in words for the client.
fn describe(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::InvalidSignature => "the signature does not match the server's key".into(),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            "the token's algorithm is not the one of the server's key".into()
        }
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".into(),
        ErrorKind::InvalidAudience => "the token's aud is not this server".into(),
        ErrorKind::InvalidIssuer => "the token's iss is not the expected issuer".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("the token has no {claim} claim"),
        ErrorKind::Json(e) => format!("the token's claims: {e}"),
        ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => {
            "not a JWT (header.claims.signature, base64url)".into()
        }
        other => format!("{other:?}"),
    }
}
