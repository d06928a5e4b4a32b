//! Compact-JWS JWTs: signing with warrant's keys, verifying with a JWKS.
//!
//! The rules (DESIGN §3):
//! - the algorithm comes from the key, never from the token: a token verifies
//!   only if its `alg` header names exactly the algorithm of the key its `kid`
//!   selects; `none` and the HMAC algorithms are refused outright, so a public
//!   key can never be used as an HMAC secret;
//! - header keys (`jwk`, `jku`, `x5u`, `x5c`) are never trusted or fetched: a
//!   token carrying one is refused; `crit` is refused (nothing here understands
//!   an extension);
//! - `kid` is an opaque map key, compared for equality, never used as a path;
//! - keys are parsed once, when the JWKS is loaded, not per token.
//!
//! Checking the claims (issuer, audience, lifetime) is [`Expect::check`]'s job,
//! separate from the signature so each token kind states its own rules.

use std::collections::HashMap;
use std::fmt;

use aws_lc_rs::signature::{self, ParsedPublicKey, RsaPublicKeyComponents};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde_json::{Map, Value};
use warrant_core::text::shown;
use warrant_core::time::Timestamp;

use crate::error::KeyError;
use crate::keyset::SigningKey;

/// The longest token accepted, in bytes. Platform tokens are a few KiB.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// A JWS algorithm warrant verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JwsAlg {
    /// ECDSA P-256 SHA-256.
    Es256,
    /// ECDSA P-384 SHA-384.
    Es384,
    /// Ed25519.
    EdDsa,
    /// RSASSA-PKCS1-v1_5 SHA-256 (Kubernetes, most OIDC providers).
    Rs256,
    /// RSASSA-PKCS1-v1_5 SHA-384.
    Rs384,
    /// RSASSA-PKCS1-v1_5 SHA-512.
    Rs512,
    /// RSASSA-PSS SHA-256.
    Ps256,
    /// RSASSA-PSS SHA-384.
    Ps384,
    /// RSASSA-PSS SHA-512.
    Ps512,
}

impl JwsAlg {
    /// Parses a JOSE `alg` name; `None` for anything warrant does not verify.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ES256" => Self::Es256,
            "ES384" => Self::Es384,
            "EdDSA" => Self::EdDsa,
            "RS256" => Self::Rs256,
            "RS384" => Self::Rs384,
            "RS512" => Self::Rs512,
            "PS256" => Self::Ps256,
            "PS384" => Self::Ps384,
            "PS512" => Self::Ps512,
            _ => return None,
        })
    }

    /// The JOSE name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Es256 => "ES256",
            Self::Es384 => "ES384",
            Self::EdDsa => "EdDSA",
            Self::Rs256 => "RS256",
            Self::Rs384 => "RS384",
            Self::Rs512 => "RS512",
            Self::Ps256 => "PS256",
            Self::Ps384 => "PS384",
            Self::Ps512 => "PS512",
        }
    }

    fn rsa_params(self) -> Option<&'static signature::RsaParameters> {
        Some(match self {
            Self::Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            Self::Rs384 => &signature::RSA_PKCS1_2048_8192_SHA384,
            Self::Rs512 => &signature::RSA_PKCS1_2048_8192_SHA512,
            Self::Ps256 => &signature::RSA_PSS_2048_8192_SHA256,
            Self::Ps384 => &signature::RSA_PSS_2048_8192_SHA384,
            Self::Ps512 => &signature::RSA_PSS_2048_8192_SHA512,
            _ => return None,
        })
    }
}

impl fmt::Display for JwsAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a token was refused. Messages say what was wrong, never echo key
/// material, and show token-supplied text only escaped and truncated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Not three base64url parts of JSON, or too long.
    #[error("the token is not a well-formed JWT: {0}")]
    Malformed(&'static str),
    /// `alg: none`, an HMAC algorithm, or one warrant does not verify.
    #[error(
        "the token's algorithm `{0}` is not accepted (asymmetric signatures only: ES256, ES384, EdDSA, RS256-512, PS256-512)"
    )]
    Alg(String),
    /// The header names a key source warrant never uses.
    #[error(
        "the token's header carries `{0}`; keys come only from the issuer's configured JWKS, never from the token"
    )]
    HeaderKey(&'static str),
    /// The header has `crit`.
    #[error("the token's header has `crit` extensions, which warrant does not implement")]
    Crit,
    /// No key has the token's `kid`.
    #[error("no key with kid `{0}` in the issuer's JWKS")]
    UnknownKid(String),
    /// No `kid`, and the JWKS does not have exactly one key for the algorithm.
    #[error("the token has no `kid` and the issuer's JWKS has no single key for {0}")]
    NoKey(JwsAlg),
    /// The key's algorithm is not the token's.
    #[error("the token says `{token}` but key `{kid}` is a {key} key")]
    AlgMismatch {
        /// The header's alg.
        token: String,
        /// The key.
        kid: String,
        /// The key's alg.
        key: JwsAlg,
    },
    /// The signature does not verify.
    #[error("the token's signature does not verify")]
    Signature,
    /// A claim check failed.
    #[error("{0}")]
    Claim(String),
}

/// A public key for verification, parsed once.
pub struct VerifyingKey {
    kid: Option<String>,
    alg: JwsAlg,
    key: ParsedPublicKey,
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

fn b64(v: &Value, member: &str) -> Result<Vec<u8>, String> {
    let s = v
        .get(member)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("no `{member}`"))?;
    URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| format!("`{member}` is not base64url"))
}

impl VerifyingKey {
    /// Parses one JWK. Private members are ignored; `use` other than `sig` and
    /// unknown key types are refused.
    pub fn from_jwk(jwk: &Value) -> Result<Self, String> {
        let kid = jwk.get("kid").and_then(Value::as_str).map(str::to_owned);
        if let Some(u) = jwk.get("use").and_then(Value::as_str)
            && u != "sig"
        {
            return Err(format!("`use` is `{}`, not `sig`", shown(u, 64)));
        }
        let kty = jwk.get("kty").and_then(Value::as_str).unwrap_or("");
        let crv = jwk.get("crv").and_then(Value::as_str).unwrap_or("");
        let inferred = match (kty, crv) {
            ("EC", "P-256") => JwsAlg::Es256,
            ("EC", "P-384") => JwsAlg::Es384,
            ("OKP", "Ed25519") => JwsAlg::EdDsa,
            ("RSA", _) => JwsAlg::Rs256,
            _ => {
                return Err(format!(
                    "key type `{}`/`{}` is not supported",
                    shown(kty, 64),
                    shown(crv, 64)
                ));
            }
        };
        let alg = match jwk.get("alg").and_then(Value::as_str) {
            None => inferred,
            Some(a) => {
                let a = JwsAlg::parse(a)
                    .ok_or_else(|| format!("`alg` `{}` is not supported", shown(a, 64)))?;
                let fits = match kty {
                    "RSA" => a.rsa_params().is_some(),
                    _ => a == inferred,
                };
                if !fits {
                    return Err(format!("`alg` {a} does not fit a {kty} key"));
                }
                a
            }
        };
        let rejected = |_| "the key does not parse".to_owned();
        let key = match alg {
            JwsAlg::Es256 | JwsAlg::Es384 => {
                let (x, y) = (b64(jwk, "x")?, b64(jwk, "y")?);
                let n = if alg == JwsAlg::Es256 { 32 } else { 48 };
                if x.len() != n || y.len() != n {
                    return Err("the EC coordinates have the wrong length".into());
                }
                let mut point = Vec::with_capacity(1 + 2 * n);
                point.push(4);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                let v = if alg == JwsAlg::Es256 {
                    &signature::ECDSA_P256_SHA256_FIXED
                } else {
                    &signature::ECDSA_P384_SHA384_FIXED
                };
                ParsedPublicKey::new(v, point).map_err(rejected)?
            }
            JwsAlg::EdDsa => {
                let x = b64(jwk, "x")?;
                ParsedPublicKey::new(&signature::ED25519, x).map_err(rejected)?
            }
            rsa => {
                let (n, e) = (b64(jwk, "n")?, b64(jwk, "e")?);
                let params = rsa.rsa_params().ok_or("not an RSA algorithm")?;
                RsaPublicKeyComponents {
                    n: n.as_slice(),
                    e: e.as_slice(),
                }
                .to_parsed_public_key(params)
                .map_err(rejected)?
            }
        };
        Ok(Self { kid, alg, key })
    }

    /// The key id, if the JWK had one.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The one algorithm this key verifies.
    pub fn alg(&self) -> JwsAlg {
        self.alg
    }
}

/// The keys of one issuer, by `kid`.
#[derive(Debug, Default)]
pub struct VerifyingKeys {
    by_kid: HashMap<String, VerifyingKey>,
    unnamed: Vec<VerifyingKey>,
    /// Refuse ECDSA signatures with a high `s` (warrant's own keys, whose
    /// signatures are normalised): one valid encoding per token.
    low_s_only: bool,
}

impl VerifyingKeys {
    /// The keys `set` publishes at `now`, for verifying warrant's own tokens
    /// (which are signed with a low `s`: a high twin is refused).
    pub fn published(set: &crate::keyset::KeySet, now: Timestamp) -> Self {
        let mut keys = Self::strict();
        for jwk in set.jwks(now).keys {
            // Our own JWKs always parse; one that did not would only fail to verify.
            if let Ok(k) = serde_json::to_value(&jwk)
                .map_err(|e| e.to_string())
                .and_then(|v| VerifyingKey::from_jwk(&v))
            {
                keys.insert(k);
            }
        }
        keys
    }

    /// An empty set that refuses high-`s` ECDSA signatures.
    pub fn strict() -> Self {
        Self {
            low_s_only: true,
            ..Self::default()
        }
    }

    /// Parses a JWK set (`{"keys": [...]}`). Keys that cannot be used are
    /// skipped and described in the second value, so one odd key (an encryption
    /// key, an unsupported curve) does not take the issuer down.
    pub fn from_jwks(json: &[u8]) -> Result<(Self, Vec<String>), String> {
        let v: Value =
            serde_json::from_slice(json).map_err(|e| format!("the JWKS is not JSON: {e}"))?;
        let keys = v
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("the JWKS has no `keys` array")?;
        let mut set = Self::default();
        let mut skipped = Vec::new();
        for (i, jwk) in keys.iter().enumerate() {
            match VerifyingKey::from_jwk(jwk) {
                Ok(k) => set.insert(k),
                Err(why) => skipped.push(format!("key {i}: {why}")),
            }
        }
        Ok((set, skipped))
    }

    /// Adds a key; a later key with the same `kid` replaces an earlier one.
    pub fn insert(&mut self, key: VerifyingKey) {
        match &key.kid {
            Some(kid) => {
                self.by_kid.insert(kid.clone(), key);
            }
            None => self.unnamed.push(key),
        }
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.by_kid.len() + self.unnamed.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a key has this `kid`.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.by_kid.contains_key(kid)
    }
}

/// A JWS header, as far as warrant reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// `alg`, as written.
    pub alg: String,
    /// `kid`.
    pub kid: Option<String>,
    /// `typ`.
    pub typ: Option<String>,
}

/// A token whose signature verified.
#[derive(Debug, Clone)]
pub struct Verified {
    /// Its header.
    pub header: Header,
    /// Its claims.
    pub claims: Map<String, Value>,
}

struct Parts<'a> {
    header: Header,
    signing_input: &'a [u8],
    payload: &'a str,
    signature: Vec<u8>,
}

fn split(token: &str) -> Result<Parts<'_>, JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::Malformed("longer than 16 KiB"));
    }
    let mut it = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (it.next(), it.next(), it.next(), it.next()) else {
        return Err(JwtError::Malformed(
            "a JWS in compact form has three dot-separated parts",
        ));
    };
    let header_bytes = URL_SAFE_NO_PAD
        .decode(h)
        .map_err(|_| JwtError::Malformed("the header is not base64url"))?;
    let hv: Map<String, Value> = serde_json::from_slice(&header_bytes)
        .map_err(|_| JwtError::Malformed("the header is not a JSON object"))?;
    let alg = hv
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(JwtError::Malformed("the header has no `alg`"))?
        .to_owned();
    for member in ["jwk", "jku", "x5u", "x5c"] {
        if hv.contains_key(member) {
            return Err(JwtError::HeaderKey(member));
        }
    }
    if hv.contains_key("crit") {
        return Err(JwtError::Crit);
    }
    let text = |m: &str| -> Result<Option<String>, JwtError> {
        match hv.get(m) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(JwtError::Malformed("a header member is not a string")),
        }
    };
    let header = Header {
        alg,
        kid: text("kid")?,
        typ: text("typ")?,
    };
    let signature = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| JwtError::Malformed("the signature is not base64url"))?;
    Ok(Parts {
        header,
        signing_input: &token.as_bytes()[..h.len() + 1 + p.len()],
        payload: p,
        signature,
    })
}

/// Reads a token's header without verifying anything: for choosing the keys
/// to verify it with (which issuer, whether a JWKS refresh could help).
pub fn peek_header(token: &str) -> Result<Header, JwtError> {
    split(token).map(|p| p.header)
}

/// Reads a token's claims without verifying anything: only to find which
/// issuer's keys to verify it with. Never trust what this returns.
pub fn peek_claims_unverified(token: &str) -> Result<Map<String, Value>, JwtError> {
    let parts = split(token)?;
    decode_claims(parts.payload)
}

fn decode_claims(payload: &str) -> Result<Map<String, Value>, JwtError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| JwtError::Malformed("the payload is not base64url"))?;
    serde_json::from_slice(&bytes)
        .map_err(|_| JwtError::Malformed("the payload is not a JSON object"))
}

/// Verifies `token`'s signature with `keys`. Claims are not checked: see [`Expect`].
pub fn verify(token: &str, keys: &VerifyingKeys) -> Result<Verified, JwtError> {
    let parts = split(token)?;
    let alg = match JwsAlg::parse(&parts.header.alg) {
        Some(a) => a,
        None => return Err(JwtError::Alg(shown(&parts.header.alg, 64))),
    };
    let key = match &parts.header.kid {
        Some(kid) => keys
            .by_kid
            .get(kid)
            .ok_or_else(|| JwtError::UnknownKid(shown(kid, 64)))?,
        None => {
            let mut fitting = keys
                .unnamed
                .iter()
                .chain(keys.by_kid.values())
                .filter(|k| k.alg == alg);
            match (fitting.next(), fitting.next()) {
                (Some(k), None) => k,
                _ => return Err(JwtError::NoKey(alg)),
            }
        }
    };
    if key.alg != alg {
        return Err(JwtError::AlgMismatch {
            token: alg.to_string(),
            kid: shown(key.kid.as_deref().unwrap_or(""), 64),
            key: key.alg,
        });
    }
    verify_signature(key, keys.low_s_only, parts.signing_input, &parts.signature)?;
    Ok(Verified {
        header: parts.header,
        claims: decode_claims(parts.payload)?,
    })
}

/// Whether `signature` is `key`'s over `input`: the one place a token's
/// signature is checked (and what the Wycheproof vectors are run through).
pub(crate) fn verify_signature(
    key: &VerifyingKey,
    low_s_only: bool,
    input: &[u8],
    signature: &[u8],
) -> Result<(), JwtError> {
    if low_s_only
        && matches!(key.alg, JwsAlg::Es256 | JwsAlg::Es384)
        && crate::ecdsa::is_high_s(signature)
    {
        return Err(JwtError::Signature);
    }
    key.key
        .verify_sig(input, signature)
        .map_err(|_| JwtError::Signature)
}

/// Signs `claims` as a compact JWS with `key`, `typ` in the header.
pub fn sign<C: Serialize>(key: &SigningKey, typ: &str, claims: &C) -> Result<String, KeyError> {
    let header = serde_json::json!({ "alg": key.alg().as_str(), "kid": key.kid(), "typ": typ });
    let h = serde_json::to_vec(&header).map_err(|_| KeyError::Crypto("encoding a JWS header"))?;
    let c = serde_json::to_vec(claims).map_err(|_| KeyError::Crypto("encoding JWT claims"))?;
    let mut token = String::with_capacity((h.len() + c.len()) * 4 / 3 + 100);
    URL_SAFE_NO_PAD.encode_string(&h, &mut token);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(&c, &mut token);
    let sig = key.sign(token.as_bytes())?;
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(&sig, &mut token);
    Ok(token)
}

/// What a verified token's claims must say.
#[derive(Debug, Clone)]
pub struct Expect<'a> {
    /// `iss` must equal this.
    pub issuer: &'a str,
    /// `aud` (a string or an array) must contain this.
    pub audience: &'a str,
    /// The time to check `exp`, `nbf` and `iat` against.
    pub now: Timestamp,
    /// Allowed clock difference, in seconds.
    pub leeway_secs: i64,
}

/// A NumericDate claim (RFC 7519 §2: seconds, possibly with a fraction),
/// as whole seconds. Values beyond ±10^11 s (past the year 5000) are
/// refused rather than let arithmetic on them overflow.
fn num(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, JwtError> {
    const LIMIT: i64 = 100_000_000_000;
    let Some(v) = claims.get(name) else {
        return Ok(None);
    };
    let n = match (v.as_i64(), v.as_f64()) {
        (Some(i), _) => Some(i),
        (None, Some(f)) if f.is_finite() && f.abs() < LIMIT as f64 => Some(f.floor() as i64),
        _ => None,
    };
    match n {
        Some(n) if (-LIMIT..=LIMIT).contains(&n) => Ok(Some(n)),
        _ => Err(JwtError::Claim(format!(
            "the token's `{name}` is not a usable time (seconds since 1970)"
        ))),
    }
}

/// Whether a token's `aud` (a string or an array of strings) names
/// `audience`.
pub fn names_audience(claims: &Map<String, Value>, audience: &str) -> bool {
    match claims.get("aud") {
        Some(Value::String(a)) => a == audience,
        Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(audience)),
        _ => false,
    }
}

impl Expect<'_> {
    /// Checks `iss`, `aud`, `exp` (required), `nbf` and `iat`.
    pub fn check(&self, claims: &Map<String, Value>) -> Result<(), JwtError> {
        let iss = claims.get("iss").and_then(Value::as_str).unwrap_or("");
        if iss != self.issuer {
            return Err(JwtError::Claim(format!(
                "the token's issuer is `{}`, not `{}`",
                shown(iss, 64),
                self.issuer
            )));
        }
        if !names_audience(claims, self.audience) {
            return Err(JwtError::Claim(format!(
                "the token's audience does not include `{}`",
                self.audience
            )));
        }
        let now = self.now.as_secs();
        let exp =
            num(claims, "exp")?.ok_or_else(|| JwtError::Claim("the token has no `exp`".into()))?;
        if now >= exp + self.leeway_secs {
            return Err(JwtError::Claim(format!(
                "the token expired {}s ago",
                now - exp
            )));
        }
        if let Some(nbf) = num(claims, "nbf")?
            && now + self.leeway_secs < nbf
        {
            return Err(JwtError::Claim(format!(
                "the token is not valid for another {}s (`nbf`)",
                nbf - now
            )));
        }
        if let Some(iat) = num(claims, "iat")?
            && now + self.leeway_secs < iat
        {
            return Err(JwtError::Claim(
                "the token is issued in the future (`iat`)".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
