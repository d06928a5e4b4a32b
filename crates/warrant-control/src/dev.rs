//! The development user issuer (`warrant serve --dev`).
//!
//! A user issuer built into the broker so the quickstart and local work can
//! exchange user tokens without an identity provider. Its key lives only in
//! memory (tokens die with the process); its issuer is `<issuer>/dev`, its
//! audience the broker. Anyone with write access to the admin API can mint a
//! token for any user with it: it is off unless `--dev` is given, and the
//! broker says so loudly at start.

use warrant_core::keys::Alg;
use warrant_core::time::Timestamp;
use warrant_token::{Kek, KeySet, generate_key};

use crate::attest::oidc::{JwksSource, TrustProvider};
use crate::token::UserIssuer;

/// The development issuer.
pub struct DevIssuer {
    keys: KeySet,
    /// `<broker issuer>/dev`.
    pub issuer: String,
    /// The broker's issuer: the audience its tokens carry.
    pub audience: String,
}

impl std::fmt::Debug for DevIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevIssuer")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl DevIssuer {
    /// A fresh issuer with an in-memory ES256 key.
    pub fn new(broker_issuer: &str) -> Result<Self, String> {
        let kek = Kek::generate().map_err(|e| e.to_string())?;
        let t = Timestamp::now();
        let rec = generate_key(Alg::Es256, &kek, t, t).map_err(|e| e.to_string())?;
        let keys = KeySet::open(vec![rec], &kek).map_err(|e| e.to_string())?;
        Ok(Self {
            keys,
            issuer: format!("{broker_issuer}/dev"),
            audience: broker_issuer.to_owned(),
        })
    }

    /// Its entry among the trusted user issuers.
    pub fn user_issuer(&self) -> Result<UserIssuer, String> {
        let jwks =
            serde_json::to_string(&self.keys.jwks(Timestamp::now())).map_err(|e| e.to_string())?;
        Ok(UserIssuer {
            provider: TrustProvider {
                name: "dev".into(),
                issuer: self.issuer.clone(),
                jwks: JwksSource::Inline(jwks),
                audience: self.audience.clone(),
            },
            subject_claim: "sub".into(),
            groups_claim: "groups".into(),
            namespace: warrant_core::user::Namespace::development(),
        })
    }

    /// A user token for `user` in `groups`, valid for `ttl_secs`.
    pub fn mint(
        &self,
        user: &str,
        groups: &[String],
        ttl_secs: u64,
    ) -> Result<(String, Timestamp), String> {
        let now = Timestamp::now();
        let exp = now.as_secs() + i64::try_from(ttl_secs).unwrap_or(3600);
        let claims = serde_json::json!({
            "iss": self.issuer, "aud": self.audience, "sub": user, "groups": groups,
            "iat": now.as_secs(), "exp": exp,
        });
        let key = self
            .keys
            .active(now)
            .ok_or("the development key is not active")?;
        let token = warrant_token::jwt::sign(key, "JWT", &claims).map_err(|e| e.to_string())?;
        Ok((token, Timestamp::from_millis(exp * 1000)))
    }
}
