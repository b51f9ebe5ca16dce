//! Access control: who a client is and what it may do.
//!
//! - [`token`]: connection tokens (JWTs) and the [`Grant`] they carry;
//! - [`patterns`]: the channel patterns of a grant;
//! - [`expiry`]: closing connections whose token expires;
//! - [`origin`]: which web pages may connect (`--allowed-origins`).
//!
//! [`Access`] is the server's policy, built once from the settings; a
//! connection's [`Permits`] are what its token lets it do, checked by
//! its channel session on every subscribe, publish and read.

pub mod expiry;
pub mod origin;
pub mod patterns;
pub mod token;

use std::sync::Arc;

use http::{HeaderMap, StatusCode, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use switchboard_core::{ChannelName, Username};
use switchboard_proto::native::ErrorCode;
use switchboard_ws::{CloseCode, CloseFrame};

use crate::config::{AuthMode, Config};
use crate::error::ApiError;
use expiry::{Expiries, ExpiryGuard, OnExpiry};
use origin::OriginPolicy;
use token::{KeyError, TokenError, TokenSettings, TokenVerifier};

pub use token::Grant;

/// Why a request or a connection was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("{0}")]
    Forbidden(String),
    /// The HTTP API's caller has no valid credentials.
    #[error("{0}")]
    Unauthorized(String),
    #[error("pages of {0} may not connect here (--allowed-origins)")]
    OriginNotAllowed(String),
    /// A refresh on a server that takes no tokens.
    #[error("this server runs with --auth anonymous: there is no token to refresh")]
    NoTokens,
}

impl AccessError {
    /// The error code clients match on.
    pub fn code(&self) -> &'static str {
        match self {
            AccessError::Token(TokenError::Missing) => "missing_token",
            AccessError::Token(TokenError::Invalid(_)) => "invalid_token",
            AccessError::Token(TokenError::Expired(_)) => "token_expired",
            AccessError::Forbidden(_) => "forbidden",
            AccessError::Unauthorized(_) => "unauthorized",
            AccessError::OriginNotAllowed(_) => "origin_not_allowed",
            AccessError::NoTokens => "bad_request",
        }
    }

    /// The code of an in-band `error` (native protocol, Socket.IO).
    pub fn error_code(&self) -> ErrorCode {
        match self {
            AccessError::Token(TokenError::Missing) => ErrorCode::MissingToken,
            AccessError::Token(TokenError::Invalid(_)) => ErrorCode::InvalidToken,
            AccessError::Token(TokenError::Expired(_)) => ErrorCode::TokenExpired,
            AccessError::Forbidden(_)
            | AccessError::Unauthorized(_)
            | AccessError::OriginNotAllowed(_) => ErrorCode::Forbidden,
            AccessError::NoTokens => ErrorCode::BadRequest,
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            AccessError::Token(_) | AccessError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            AccessError::Forbidden(_) | AccessError::OriginNotAllowed(_) => StatusCode::FORBIDDEN,
            AccessError::NoTokens => StatusCode::BAD_REQUEST,
        }
    }
}

impl From<AccessError> for ApiError {
    fn from(e: AccessError) -> Self {
        let error = ApiError::new(e.status(), e.code(), e.to_string());
        if e.status() == StatusCode::UNAUTHORIZED {
            error.with_header(header::WWW_AUTHENTICATE, "Bearer")
        } else {
            error
        }
    }
}

/// Why the access settings could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AccessSetupError {
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// The server's access policy.
pub struct Access {
    /// `None` with `--auth anonymous`.
    tokens: Option<Tokens>,
    /// `--api-key`, hashed: compared in constant time.
    api_key: Option<[u8; 32]>,
    pub origins: OriginPolicy,
}

struct Tokens {
    verifier: Arc<TokenVerifier>,
    expiries: Arc<Expiries>,
}

/// Who a connection is, once admitted.
#[derive(Debug)]
pub enum Admission {
    /// `--auth anonymous`: the name the client gives, if any.
    Anonymous,
    Token(Grant),
}

impl Admission {
    /// The user a token names, if there is one.
    pub fn username(&self) -> Option<&Username> {
        match self {
            Admission::Anonymous => None,
            Admission::Token(grant) => Some(&grant.username),
        }
    }

    /// Refuses a channel named at connect the token does not allow.
    pub fn check_subscribe(&self, channel: &ChannelName) -> Result<(), AccessError> {
        match self {
            Admission::Token(grant) if !grant.may_subscribe(channel) => {
                Err(forbidden_subscribe(channel))
            }
            _ => Ok(()),
        }
    }
}

/// Who calls the HTTP API.
#[derive(Debug)]
pub enum Caller {
    /// `--auth anonymous`: anyone, as today.
    Anyone,
    /// The `--api-key`: the application's back end.
    Service,
    /// A user's Bearer token.
    User(Grant),
}

impl Access {
    pub fn new(config: &Config, tls: bool) -> Result<Access, AccessSetupError> {
        let tokens = match config.auth {
            AuthMode::Anonymous => None,
            AuthMode::Token => {
                let settings = TokenSettings {
                    hmac_secret: config.token_hmac_secret.as_deref(),
                    public_key: config.token_public_key.as_deref(),
                    audience: config.token_audience.as_deref(),
                    issuer: config.token_issuer.as_deref(),
                };
                Some(Tokens {
                    verifier: Arc::new(TokenVerifier::new(&settings)?),
                    expiries: Expiries::start(),
                })
            }
        };
        Ok(Access {
            tokens,
            api_key: config
                .api_key
                .as_deref()
                .filter(|key| !key.is_empty())
                .map(digest),
            origins: OriginPolicy::new(&config.allowed_origins, config.trust_proxy, tls),
        })
    }

    pub fn tokens_required(&self) -> bool {
        self.tokens.is_some()
    }

    /// Refuses a browser page of another origin than the server's own
    /// that `--allowed-origins` does not list.
    pub fn check_origin(&self, headers: &HeaderMap) -> Result<(), AccessError> {
        if self.origins.allows(headers) {
            return Ok(());
        }
        let origin = headers
            .get(header::ORIGIN)
            .and_then(|o| o.to_str().ok())
            .unwrap_or("?");
        Err(AccessError::OriginNotAllowed(
            origin.chars().take(200).collect(),
        ))
    }

    /// Who a new connection is: with tokens, the grant of the token in
    /// `Authorization: Bearer` (which wins) or `?token=`.
    pub fn admit(
        &self,
        headers: &HeaderMap,
        query_token: Option<&str>,
    ) -> Result<Admission, AccessError> {
        let Some(tokens) = &self.tokens else {
            return Ok(Admission::Anonymous);
        };
        let token = match authorization(headers) {
            Some(Credentials::Bearer(token)) => Some(token),
            _ => query_token.filter(|t| !t.is_empty()),
        };
        let token = token.ok_or(TokenError::Missing)?;
        Ok(Admission::Token(tokens.verifier.verify(token)?))
    }

    /// Who holds `token` (a Socket.IO `auth.token`).
    pub fn admit_token(&self, token: &str) -> Result<Admission, AccessError> {
        match &self.tokens {
            Some(tokens) => Ok(Admission::Token(tokens.verifier.verify(token)?)),
            None => Ok(Admission::Anonymous),
        }
    }

    /// Who is calling the HTTP API: with tokens, the API key or a user's
    /// Bearer token; without, anyone.
    pub fn caller(&self, headers: &HeaderMap) -> Result<Caller, AccessError> {
        let Some(tokens) = &self.tokens else {
            return Ok(Caller::Anyone);
        };
        match authorization(headers) {
            Some(Credentials::ApiKey(key)) => match &self.api_key {
                Some(expected) if bool::from(digest(key).ct_eq(expected)) => Ok(Caller::Service),
                _ => Err(AccessError::Unauthorized("the API key is not valid".into())),
            },
            Some(Credentials::Bearer(token)) => tokens
                .verifier
                .verify(token)
                .map(Caller::User)
                .map_err(|e| AccessError::Unauthorized(e.to_string())),
            None => Err(AccessError::Unauthorized(
                "credentials are required: Authorization: apikey KEY, or Bearer TOKEN".into(),
            )),
        }
    }

    /// A connection's permits: what `admission` grants, with `on_expiry`
    /// run (to close the connection) when its token expires unrefreshed.
    pub fn permits(&self, admission: Admission, on_expiry: OnExpiry) -> Permits {
        match (admission, &self.tokens) {
            (Admission::Token(grant), Some(tokens)) => {
                let expiry = tokens.expiries.watch(grant.exp, on_expiry);
                Permits::Token(Box::new(TokenPermits {
                    grant,
                    verifier: tokens.verifier.clone(),
                    expiry,
                }))
            }
            _ => Permits::Anyone,
        }
    }
}

/// What a connection may do.
#[derive(Debug, Default)]
pub enum Permits {
    /// `--auth anonymous`: everything.
    #[default]
    Anyone,
    /// What its token grants, until it expires.
    Token(Box<TokenPermits>),
}

#[derive(Debug)]
pub struct TokenPermits {
    grant: Grant,
    verifier: Arc<TokenVerifier>,
    /// Closes the connection at the grant's expiry; gone with the permits.
    expiry: ExpiryGuard,
}

impl Permits {
    pub fn check_subscribe(&self, channel: &ChannelName) -> Result<(), AccessError> {
        match self {
            Permits::Token(permits) if !permits.grant.may_subscribe(channel) => {
                Err(forbidden_subscribe(channel))
            }
            _ => Ok(()),
        }
    }

    pub fn check_publish(&self, channel: &ChannelName) -> Result<(), AccessError> {
        match self {
            Permits::Token(permits) if !permits.grant.may_publish(channel) => {
                Err(forbidden_publish(channel))
            }
            _ => Ok(()),
        }
    }

    /// Takes a new token for the same user: its grant replaces the
    /// current one, and its expiry the old. Returns the new expiry. A
    /// refused token leaves everything as it was.
    pub fn refresh(&mut self, token: &str) -> Result<u64, AccessError> {
        let Permits::Token(permits) = self else {
            return Err(AccessError::NoTokens);
        };
        let grant = permits.verifier.verify(token)?;
        if grant.username != permits.grant.username {
            return Err(AccessError::Token(TokenError::Invalid(format!(
                "the new token is for {}, this connection for {}",
                grant.username.as_str(),
                permits.grant.username.as_str()
            ))));
        }
        if !permits.expiry.reschedule(grant.exp) {
            // Expired meanwhile: the connection is being closed.
            return Err(AccessError::Token(TokenError::Expired(permits.grant.exp)));
        }
        let exp = grant.exp;
        permits.grant = grant;
        Ok(exp)
    }
}

/// How a connection whose token expired is closed: 1008 naming the expiry.
pub fn token_expired() -> CloseFrame {
    CloseFrame::new(CloseCode::POLICY_VIOLATION, "token expired")
}

/// `Authorization`'s credentials.
enum Credentials<'a> {
    Bearer(&'a str),
    ApiKey(&'a str),
}

fn authorization(headers: &HeaderMap) -> Option<Credentials<'_>> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, credentials) = value.split_once(' ')?;
    let credentials = credentials.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        Some(Credentials::Bearer(credentials))
    } else if scheme.eq_ignore_ascii_case("apikey") {
        Some(Credentials::ApiKey(credentials))
    } else {
        None
    }
}

/// A secret's SHA-256: keys of any length compare in the same time.
pub(crate) fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

pub fn forbidden_subscribe(channel: &ChannelName) -> AccessError {
    AccessError::Forbidden(format!(
        "the token does not allow subscribing to {}",
        channel.as_str()
    ))
}

pub fn forbidden_publish(channel: &ChannelName) -> AccessError {
    AccessError::Forbidden(format!(
        "the token does not allow publishing to {}",
        channel.as_str()
    ))
}
