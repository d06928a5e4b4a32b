//! The certificate authority behind the Workload API's X.509-SVIDs.
//!
//! One CA per signing key, so the CA rotates with the keys and overlaps as
//! they do: a CA is in the bundle while its signing key is published (from
//! before it signs until every SVID it signed has expired) and signs SVIDs
//! while its key is the active one. The CA's own key is not the signing
//! key: it is derived from the KEK and the signing key's id (HKDF-SHA-256,
//! for this purpose only), so it is never stored anywhere, every broker
//! sharing a store derives the same CA, and whoever lacks the KEK cannot
//! derive it (as with the sealed signing keys and the audit chain key).
//!
//! Certificates follow the X.509-SVID profile: the CA has the trust
//! domain's SPIFFE ID as its URI SAN, `cA=TRUE` and may sign certificates
//! only; an SVID has exactly one URI SAN (the SPIFFE ID), `cA=FALSE`,
//! digital signature (and key agreement) only, client and server auth, and
//! a short life. Not here: CRLs, intermediates, federation.

use std::time::Duration;

use aws_lc_rs::{agreement, hkdf, signature};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};
use warrant_core::time::Timestamp;
use zeroize::Zeroizing;

use crate::keyset::{KeyState, KeyStatus};
use crate::{Kek, KeyError};

/// How far before its issuance an SVID is already valid (clock skew).
const BACKDATE: Duration = Duration::from_secs(60);
/// How long a CA certificate says it is valid; what limits trust in it is
/// its place in the bundle, which follows its signing key.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 86_400);

/// A CA: its key id, certificate and (derived) key.
struct Ca {
    kid: String,
    state: KeyState,
    der: Vec<u8>,
    /// The CA key's public point (uncompressed, 65 bytes).
    public: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

/// A CA as a SPIFFE bundle lists it: its certificate and public key.
#[derive(Debug, Clone)]
pub struct Authority {
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// P-256 x coordinate.
    pub x: Vec<u8>,
    /// P-256 y coordinate.
    pub y: Vec<u8>,
}

/// The CAs of the published signing keys.
pub struct X509Authority {
    /// Active first, then next, then retired.
    cas: Vec<Ca>,
    trust_domain: String,
}

impl std::fmt::Debug for X509Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("X509Authority")
            .field("trust_domain", &self.trust_domain)
            .field("cas", &self.cas.iter().map(|c| &c.kid).collect::<Vec<_>>())
            .finish()
    }
}

/// An X.509-SVID and its private key.
pub struct X509Svid {
    /// The certificate, DER.
    pub cert_der: Vec<u8>,
    /// Its PKCS#8 private key, DER (for the workload only).
    pub key_pkcs8: Zeroizing<Vec<u8>>,
    /// When it stops being valid.
    pub not_after: Timestamp,
}

impl std::fmt::Debug for X509Svid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("X509Svid")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

fn crypto(what: &'static str) -> impl Fn(rcgen::Error) -> KeyError {
    move |_| KeyError::Crypto(what)
}

fn offset(t: Timestamp) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(t.as_secs())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// The P-256 CA key for signing key `kid`, derived from the KEK.
fn derive_key(kek: &Kek, kid: &str) -> Result<KeyPair, KeyError> {
    struct Len;
    impl hkdf::KeyType for Len {
        fn len(&self) -> usize {
            32
        }
    }
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"warrant").extract(kek.bytes());
    // A scalar outside [1, n-1] (odds about 2^-32) takes the next counter.
    for counter in 0u8..8 {
        let mut scalar = Zeroizing::new([0u8; 32]);
        prk.expand(&[b"x509 ca v1|", kid.as_bytes(), &[counter]], Len)
            .and_then(|okm| okm.fill(scalar.as_mut_slice()))
            .map_err(|_| KeyError::Crypto("deriving the X.509 CA key"))?;
        let Ok(private) =
            agreement::PrivateKey::from_private_key(&agreement::ECDH_P256, scalar.as_slice())
        else {
            continue;
        };
        let public = private
            .compute_public_key()
            .map_err(|_| KeyError::Crypto("deriving the X.509 CA key"))?;
        let pair = signature::EcdsaKeyPair::from_private_key_and_public_key(
            &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            scalar.as_slice(),
            public.as_ref(),
        )
        .map_err(|_| KeyError::Crypto("deriving the X.509 CA key"))?;
        let pkcs8 = pair
            .to_pkcs8v1()
            .map_err(|_| KeyError::Crypto("encoding the X.509 CA key"))?;
        let der = rustls_pki_der(pkcs8.as_ref());
        return KeyPair::from_pkcs8_der_and_sign_algo(&der, &PKCS_ECDSA_P256_SHA256)
            .map_err(crypto("loading the X.509 CA key"));
    }
    Err(KeyError::Crypto("deriving the X.509 CA key"))
}

fn rustls_pki_der(b: &[u8]) -> rustls_pki_types::PrivatePkcs8KeyDer<'static> {
    rustls_pki_types::PrivatePkcs8KeyDer::from(b.to_vec())
}

impl X509Authority {
    /// The CAs of every published key in `keys` (see `KeySet::status`),
    /// for `trust_domain`.
    pub fn derive(kek: &Kek, keys: &[KeyStatus], trust_domain: &str) -> Result<Self, KeyError> {
        let mut cas = Vec::new();
        for k in keys.iter().filter(|k| k.state != KeyState::Expired) {
            let key = derive_key(kek, &k.kid)?;
            let mut params = CertificateParams::default();
            let mut dn = DistinguishedName::new();
            dn.push(DnType::OrganizationName, trust_domain);
            dn.push(DnType::CommonName, format!("warrant X.509 CA {}", k.kid));
            params.distinguished_name = dn;
            params.subject_alt_names = vec![SanType::URI(
                format!("spiffe://{trust_domain}")
                    .try_into()
                    .map_err(crypto("the trust domain is not a URI"))?,
            )];
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            params.not_before = offset(k.created_at - BACKDATE);
            params.not_after = offset(k.created_at + CA_VALIDITY);
            // The same serial on every broker: the certificate differs only
            // in its (randomised) signature.
            let serial = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, k.kid.as_bytes());
            let mut s = serial.as_ref()[..16].to_vec();
            s[0] &= 0x7f;
            params.serial_number = Some(SerialNumber::from_slice(&s));
            let cert = params
                .self_signed(&key)
                .map_err(crypto("signing the X.509 CA certificate"))?;
            cas.push(Ca {
                kid: k.kid.clone(),
                state: k.state,
                der: cert.der().to_vec(),
                public: key.public_key_raw().to_vec(),
                issuer: Issuer::new(params, key),
            });
        }
        let rank = |s: KeyState| match s {
            KeyState::Active => 0,
            KeyState::Next => 1,
            _ => 2,
        };
        cas.sort_by_key(|c| rank(c.state));
        Ok(Self {
            cas,
            trust_domain: trust_domain.to_owned(),
        })
    }

    /// The bundle: every published CA certificate, DER, concatenated
    /// (the Workload API's `bundle` encoding).
    pub fn bundle(&self) -> Vec<u8> {
        self.cas
            .iter()
            .flat_map(|c| c.der.iter().copied())
            .collect()
    }

    /// The CAs of the bundle, active first.
    pub fn authorities(&self) -> Vec<Authority> {
        self.cas
            .iter()
            .filter(|c| c.public.len() == 65)
            .map(|c| Authority {
                der: c.der.clone(),
                x: c.public[1..33].to_vec(),
                y: c.public[33..65].to_vec(),
            })
            .collect()
    }

    /// The key ids the bundle holds, active first.
    pub fn kids(&self) -> Vec<&str> {
        self.cas.iter().map(|c| c.kid.as_str()).collect()
    }

    /// A new X.509-SVID for `spiffe_id` (which must be in this trust
    /// domain), valid from a minute ago for `ttl`, signed by the active CA.
    pub fn issue(
        &self,
        spiffe_id: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<X509Svid, KeyError> {
        let prefix = format!("spiffe://{}/", self.trust_domain);
        if !spiffe_id.starts_with(&prefix) {
            return Err(KeyError::Crypto(
                "the SPIFFE ID is not of this trust domain",
            ));
        }
        let ca = self
            .cas
            .iter()
            .find(|c| c.state == KeyState::Active)
            .ok_or(KeyError::Crypto("no X.509 CA is active"))?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(crypto("generating the SVID key"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "SPIFFE");
        params.subject_alt_names = vec![SanType::URI(
            spiffe_id
                .to_owned()
                .try_into()
                .map_err(crypto("the SPIFFE ID is not a URI"))?,
        )];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyAgreement,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let not_after = now + ttl;
        params.not_before = offset(now - BACKDATE);
        params.not_after = offset(not_after);
        let mut serial = [0u8; 16];
        aws_lc_rs::rand::fill(&mut serial).map_err(|_| KeyError::Crypto("drawing a serial"))?;
        serial[0] &= 0x7f;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let cert = params
            .signed_by(&key, &ca.issuer)
            .map_err(crypto("signing the X.509-SVID"))?;
        Ok(X509Svid {
            cert_der: cert.der().to_vec(),
            key_pkcs8: Zeroizing::new(key.serialize_der()),
            not_after,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn status(kid: &str, state: KeyState) -> KeyStatus {
        KeyStatus {
            kid: kid.into(),
            alg: warrant_core::keys::Alg::Es256,
            state,
            created_at: Timestamp::from_millis(1_700_000_000_000),
            activates_at: Timestamp::from_millis(1_700_000_000_000),
            retired_at: None,
            published_until: None,
        }
    }

    /// The CA's public key, from its certificate (the DER after the
    /// P-256 SubjectPublicKeyInfo prefix).
    fn ca_key(a: &X509Authority, i: usize) -> Vec<u8> {
        let der = &a.cas[i].der;
        let prefix = [0x03, 0x42, 0x00, 0x04];
        let at = der.windows(4).position(|w| w == prefix).unwrap();
        der[at..at + 68].to_vec()
    }

    #[test]
    fn every_broker_with_the_kek_derives_the_same_ca_and_no_one_else_does() {
        let kek = Kek::generate().unwrap();
        let keys = [status("k1", KeyState::Active), status("k2", KeyState::Next)];
        let a = X509Authority::derive(&kek, &keys, "example.org").unwrap();
        let b = X509Authority::derive(&kek, &keys, "example.org").unwrap();
        assert_eq!(a.kids(), ["k1", "k2"]);
        assert_eq!(ca_key(&a, 0), ca_key(&b, 0));
        assert_ne!(ca_key(&a, 0), ca_key(&a, 1), "one CA key per signing key");
        let other = X509Authority::derive(&Kek::generate().unwrap(), &keys, "example.org").unwrap();
        assert_ne!(ca_key(&a, 0), ca_key(&other, 0));
        // Expired keys leave the bundle.
        let c = X509Authority::derive(
            &kek,
            &[
                status("k0", KeyState::Expired),
                status("k1", KeyState::Active),
            ],
            "example.org",
        )
        .unwrap();
        assert_eq!(c.kids(), ["k1"]);
    }

    #[test]
    fn svids_are_for_this_trust_domain_and_signed_by_the_active_ca() {
        let kek = Kek::generate().unwrap();
        let a =
            X509Authority::derive(&kek, &[status("k1", KeyState::Active)], "example.org").unwrap();
        let now = Timestamp::now();
        let svid = a
            .issue(
                "spiffe://example.org/agent/a/1",
                Duration::from_secs(300),
                now,
            )
            .unwrap();
        assert!(
            svid.cert_der
                .windows(30)
                .any(|w| w == b"spiffe://example.org/agent/a/1"[..30].as_ref())
        );
        assert_eq!(svid.not_after, now + Duration::from_secs(300));
        assert!(!svid.key_pkcs8.is_empty());
        assert!(
            a.issue("spiffe://other.org/agent/a/1", Duration::from_secs(1), now)
                .is_err()
        );
        assert!(
            a.issue("spiffe://example.org.evil/x", Duration::from_secs(1), now)
                .is_err()
        );
        let none_active =
            X509Authority::derive(&kek, &[status("k2", KeyState::Next)], "example.org").unwrap();
        assert!(
            none_active
                .issue("spiffe://example.org/a", Duration::from_secs(1), now)
                .is_err()
        );
    }
}
