//! Who may connect and publish: JWT verification for WebSocket clients, the
//! `Origin` allow-list, and the HTTP API key. All decided before an upgrade,
//! so a refused client never gets a WebSocket.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::config::{Auth, ConfigError};
use crate::room::{RoomAccess, RoomPattern};

/// A verified client.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// The token's `sub`; `None` for anonymous clients (whose user id is their session id).
    pub user: Option<String>,
    /// Rooms the token allows.
    pub rooms: RoomAccess,
    /// When the token expires (its `exp` plus the configured leeway).
    pub expires_at: Option<SystemTime>,
    /// The token's `exp` claim as it was (seconds since the epoch), for the
    /// answer to a `refresh`.
    pub exp: Option<u64>,
}

impl Identity {
    /// A client of a gateway without JWT verification.
    pub fn anonymous() -> Self {
        Self {
            user: None,
            rooms: RoomAccess::Any,
            expires_at: None,
            exp: None,
        }
    }
}

/// Why a client was refused (always HTTP 401).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AuthError {
    /// No token in `Authorization: Bearer` nor in `?token=`.
    #[error("missing token")]
    Missing,
    /// The token failed verification.
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// The claims Roomcast reads. Others are ignored.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    exp: Option<u64>,
    #[serde(default)]
    rooms: Option<Vec<String>>,
}

#[derive(Clone)]
struct Jwt {
    key: DecodingKey,
    validation: Validation,
    leeway: u64,
}

/// Decides whether upgrades and HTTP API calls are allowed.
#[derive(Clone)]
pub struct Authenticator {
    jwt: Option<Jwt>,
    api_key: Option<String>,
    allowed_origins: Vec<String>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field(
                "jwt",
                &self.jwt.as_ref().map(|j| j.validation.algorithms.clone()),
            )
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .field("allowed_origins", &self.allowed_origins)
            .finish()
    }
}

impl Authenticator {
    /// Builds from configuration; a key that does not parse names its field.
    pub fn from_config(auth: &Auth) -> Result<Self, ConfigError> {
        let jwt = match (&auth.jwt_secret, &auth.jwt_public_key) {
            (Some(secret), _) => Some((
                DecodingKey::from_secret(secret.as_bytes()),
                Algorithm::HS256,
            )),
            (None, Some(pem)) => Some(public_key(pem)?),
            (None, None) => None,
        };
        let jwt = jwt.map(|(key, alg)| {
            let mut validation = Validation::new(alg);
            validation.leeway = auth.jwt_leeway_seconds;
            validation.validate_nbf = true;
            validation.set_required_spec_claims(&["sub"]);
            match &auth.jwt_audience {
                Some(aud) => validation.set_audience(&[aud]),
                None => validation.validate_aud = false,
            }
            if let Some(iss) = &auth.jwt_issuer {
                validation.set_issuer(&[iss]);
            }
            Jwt {
                key,
                validation,
                leeway: auth.jwt_leeway_seconds,
            }
        });
        Ok(Self {
            jwt,
            api_key: auth.api_key.clone(),
            allowed_origins: auth
                .allowed_origins
                .iter()
                .map(|o| o.trim_end_matches('/').to_owned())
                .collect(),
        })
    }

    /// Whether clients must present a token.
    pub fn requires_token(&self) -> bool {
        self.jwt.is_some()
    }

    /// Verifies a client's token. Without JWT configured every client is anonymous.
    pub fn authenticate(&self, token: Option<&str>) -> Result<Identity, AuthError> {
        let Some(jwt) = &self.jwt else {
            return Ok(Identity::anonymous());
        };
        let token = token.filter(|t| !t.is_empty()).ok_or(AuthError::Missing)?;
        let data = jsonwebtoken::decode::<Claims>(token, &jwt.key, &jwt.validation)
            .map_err(|e| AuthError::Invalid(e.to_string()))?;
        let claims = data.claims;
        if claims.sub.is_empty() {
            return Err(AuthError::Invalid("empty sub".into()));
        }
        let rooms = match claims.rooms {
            None => RoomAccess::Any,
            Some(patterns) => {
                RoomAccess::Patterns(patterns.iter().map(|p| RoomPattern::parse(p)).collect())
            }
        };
        let expires_at = claims
            .exp
            .and_then(|exp| exp.checked_add(jwt.leeway))
            .and_then(|secs| UNIX_EPOCH.checked_add(Duration::from_secs(secs)));
        Ok(Identity {
            user: Some(claims.sub),
            rooms,
            expires_at,
            exp: claims.exp,
        })
    }

    /// Whether a browser upgrade from `origin` is allowed. Requests without
    /// an `Origin` (non-browser clients) are not subject to the list.
    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        match origin {
            _ if self.allowed_origins.is_empty() => true,
            None => true,
            Some(origin) => {
                let origin = origin.trim_end_matches('/');
                self.allowed_origins
                    .iter()
                    .any(|allowed| allowed == "*" || allowed.eq_ignore_ascii_case(origin))
            }
        }
    }

    /// Whether an HTTP API request's `Authorization` header carries the API key
    /// (always true when no key is configured).
    pub fn api_key_ok(&self, authorization: Option<&str>) -> bool {
        let Some(key) = &self.api_key else {
            return true;
        };
        let presented = authorization.and_then(bearer).unwrap_or("");
        constant_time_eq(presented.as_bytes(), key.as_bytes())
    }
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn public_key(pem: &str) -> Result<(DecodingKey, Algorithm), ConfigError> {
    if let Ok(key) = DecodingKey::from_rsa_pem(pem.as_bytes()) {
        return Ok((key, Algorithm::RS256));
    }
    DecodingKey::from_ec_pem(pem.as_bytes())
        .map(|key| (key, Algorithm::ES256))
        .map_err(|e| {
            ConfigError(format!(
                "auth.jwt_public_key is neither an RSA nor an EC PEM public key: {e}"
            ))
        })
}

/// Compares secrets in time independent of where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    fn hs(secret: &str) -> Authenticator {
        Authenticator::from_config(&Auth {
            jwt_secret: Some(secret.into()),
            ..Auth::default()
        })
        .unwrap()
    }

    fn token(claims: serde_json::Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"s"),
        )
        .unwrap()
    }

    #[test]
    fn verifies_hs256_and_reads_claims() {
        let exp = unix_now() + 60;
        let id = hs("s")
            .authenticate(Some(&token(
                json!({"sub":"alice","exp":exp,"rooms":["chat:*"]}),
            )))
            .unwrap();
        assert_eq!(id.user.as_deref(), Some("alice"));
        assert_eq!(id.expires_at, Some(UNIX_EPOCH + Duration::from_secs(exp)));
        assert_eq!(
            id.rooms,
            RoomAccess::Patterns(vec![RoomPattern::Prefix("chat:".into())])
        );
    }

    #[test]
    fn refuses_what_the_contract_refuses() {
        let auth = hs("s");
        let now = unix_now();
        assert_eq!(auth.authenticate(None), Err(AuthError::Missing));
        for claims in [
            json!({"exp": now + 60}),
            json!({"sub":"a","exp": now - 10}),
            json!({"sub":"a","nbf": now + 60}),
            json!({"sub": 5}),
            json!({"sub":"a","rooms":"chat:*"}),
        ] {
            assert!(
                auth.authenticate(Some(&token(claims.clone()))).is_err(),
                "{claims}"
            );
        }
        let forged = encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub":"a"}),
            &EncodingKey::from_secret(b"x"),
        )
        .unwrap();
        assert!(auth.authenticate(Some(&forged)).is_err());
        // alg none: header {"alg":"none"}, no signature.
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhIn0.";
        assert!(auth.authenticate(Some(none)).is_err());
        assert!(auth.authenticate(Some("garbage")).is_err());
    }

    #[test]
    fn without_jwt_everyone_is_anonymous() {
        let auth = Authenticator::from_config(&Auth::default()).unwrap();
        assert_eq!(auth.authenticate(None), Ok(Identity::anonymous()));
        assert!(!auth.requires_token());
    }

    #[test]
    fn a_bad_public_key_names_the_field() {
        let err = Authenticator::from_config(&Auth {
            jwt_public_key: Some("nope".into()),
            ..Auth::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("auth.jwt_public_key"));
    }

    #[test]
    fn origins_and_api_keys() {
        let auth = Authenticator::from_config(&Auth {
            allowed_origins: vec!["https://app.example/".into()],
            api_key: Some("k3y".into()),
            ..Auth::default()
        })
        .unwrap();
        assert!(auth.origin_allowed(Some("https://app.example")));
        assert!(!auth.origin_allowed(Some("https://evil.example")));
        assert!(auth.origin_allowed(None));
        assert!(auth.api_key_ok(Some("Bearer k3y")));
        assert!(auth.api_key_ok(Some("bearer  k3y ")));
        assert!(!auth.api_key_ok(Some("Bearer k3")));
        assert!(!auth.api_key_ok(Some("k3y")));
        assert!(!auth.api_key_ok(None));
    }
}
