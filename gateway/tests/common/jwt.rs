//! JWT minting for the auth tests: HS256 with a shared secret, RS256 and ES256
//! with the committed test key pairs in `tests/fixtures/`, and hand-made
//! unsigned (`alg: none`) tokens.

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

/// The HS256 secret the auth tests configure.
pub const SECRET: &str = "roomcast-test-secret-0123456789abcdef";

/// The RSA public key (PEM) matching [`RSA_PRIVATE`].
pub const RSA_PUBLIC: &str = include_str!("../fixtures/rsa-public.pem");
/// The RSA private key (PKCS#8 PEM).
pub const RSA_PRIVATE: &str = include_str!("../fixtures/rsa-private.pem");
/// The EC P-256 public key (PEM) matching [`EC_PRIVATE`].
pub const EC_PUBLIC: &str = include_str!("../fixtures/ec-public.pem");
/// The EC P-256 private key (PKCS#8 PEM).
pub const EC_PRIVATE: &str = include_str!("../fixtures/ec-private.pem");

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// Claims for `sub` valid for the next ten minutes.
pub fn claims(sub: &str) -> Value {
    json!({"sub": sub, "iat": now(), "exp": now() + 600})
}

/// Signs `claims` with HS256 and `secret`.
pub fn hs256_with(secret: &str, claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signing")
}

/// Signs `claims` with HS256 and [`SECRET`].
pub fn hs256(claims: &Value) -> String {
    hs256_with(SECRET, claims)
}

/// Signs `claims` with RS256 and the test RSA key.
pub fn rs256(claims: &Value) -> String {
    let key = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).expect("test RSA key");
    encode(&Header::new(Algorithm::RS256), claims, &key).expect("RS256 signing")
}

/// Signs `claims` with ES256 and the test EC key.
pub fn es256(claims: &Value) -> String {
    let key = EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).expect("test EC key");
    encode(&Header::new(Algorithm::ES256), claims, &key).expect("ES256 signing")
}

/// An unsigned token: header `{"alg":"none","typ":"JWT"}`, the claims of a
/// real token, and an empty signature.
pub fn alg_none(claims: &Value) -> String {
    let signed = hs256(claims);
    let payload = signed.split('.').nth(1).expect("JWT has a payload");
    // base64url of {"alg":"none","typ":"JWT"}
    format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.")
}
