//! The certificate material of a `spec.tls` Secret: checked before any pod is told to load it,
//! and fingerprinted, so what a pod serves can be compared with what the Secret holds.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::Secret;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

use super::{CA_KEY, CERT_KEY, KEY_KEY};

/// Why a Secret's content cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A key the Secret must hold is missing.
    #[error("Secret {secret} has no {key}")]
    Missing {
        /// The Secret.
        secret: String,
        /// The missing key.
        key: &'static str,
    },
    /// A key holds no PEM certificate (or, for `tls.key`, no PEM private key).
    #[error("Secret {secret}: {key} holds no PEM {what}")]
    NotPem {
        /// The Secret.
        secret: String,
        /// The key.
        key: &'static str,
        /// A certificate or a private key.
        what: &'static str,
    },
}

/// What a `kubernetes.io/tls` Secret with `ca.crt` holds, as PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct Material {
    /// `ca.crt`: the certificates the operator trusts.
    pub ca: Vec<u8>,
    /// `tls.crt`: the pods' certificate chain, leaf first.
    pub cert: Vec<u8>,
    /// `tls.key`.
    pub key: Vec<u8>,
    /// SHA-256 (hex) of the leaf certificate's DER: what a pod serves once it loaded this.
    pub fingerprint: String,
}

impl fmt::Debug for Material {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The private key is never printed; the fingerprint names the certificate well enough.
        f.debug_struct("Material")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// SHA-256 of a certificate's DER, lowercase hex: `openssl x509 -fingerprint -sha256` without
/// the colons.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// The first 12 hex digits of a fingerprint, for messages.
pub fn short(fingerprint: &str) -> &str {
    crate::text::prefix_chars(fingerprint, 12)
}

impl Material {
    /// Reads and checks the three keys of `secret`.
    pub fn from_secret(secret: &Secret) -> Result<Self, Error> {
        let name = secret.metadata.name.clone().unwrap_or_default();
        let data: BTreeMap<&str, &[u8]> = secret
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), v.0.as_slice()))
            .collect();
        Self::from_data(&name, &data)
    }

    /// Reads and checks the three keys of a Secret's data.
    pub fn from_data(secret: &str, data: &BTreeMap<&str, &[u8]>) -> Result<Self, Error> {
        let get = |key: &'static str| -> Result<Vec<u8>, Error> {
            data.get(key)
                .filter(|v| !v.is_empty())
                .map(|v| v.to_vec())
                .ok_or_else(|| Error::Missing {
                    secret: secret.to_owned(),
                    key,
                })
        };
        let not_pem = |key, what| Error::NotPem {
            secret: secret.to_owned(),
            key,
            what,
        };
        let (ca, cert, key) = (get(CA_KEY)?, get(CERT_KEY)?, get(KEY_KEY)?);
        first_certificate(&ca).ok_or_else(|| not_pem(CA_KEY, "certificate"))?;
        let leaf = first_certificate(&cert).ok_or_else(|| not_pem(CERT_KEY, "certificate"))?;
        PrivateKeyDer::from_pem_slice(&key).map_err(|_| not_pem(KEY_KEY, "private key"))?;
        Ok(Self {
            fingerprint: fingerprint(&leaf),
            ca,
            cert,
            key,
        })
    }
}

/// The DER of the first certificate in a PEM bundle.
fn first_certificate(pem: &[u8]) -> Option<Vec<u8>> {
    CertificateDer::pem_slice_iter(pem)
        .next()?
        .ok()
        .map(|c| c.to_vec())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A CA and a certificate it signed for `redis-example.team-a.svc` (and its pods'
    /// `*.redis-example.team-a.svc`), made with openssl for the unit tests only.
    pub(crate) const CA: &str = include_str!("testdata/ca.crt");
    pub(crate) const CERT: &str = include_str!("testdata/tls.crt");
    pub(crate) const KEY: &str = include_str!("testdata/tls.key");

    pub(crate) fn material() -> Material {
        let data = BTreeMap::from([
            (CA_KEY, CA.as_bytes()),
            (CERT_KEY, CERT.as_bytes()),
            (KEY_KEY, KEY.as_bytes()),
        ]);
        Material::from_data("redis-tls", &data).unwrap()
    }

    #[test]
    fn fingerprint_is_the_leaf_certificates_sha256() {
        // `openssl x509 -in testdata/tls.crt -noout -fingerprint -sha256`
        assert_eq!(
            material().fingerprint,
            "c0ce5fc402bae49a71f06703e36aaa3bfe7960ad05c7c50ca93f575a822ed89d"
        );
        assert_eq!(short(&material().fingerprint), "c0ce5fc402ba");
    }

    #[test]
    fn a_missing_or_garbled_key_is_named() {
        let mut data = BTreeMap::from([(CA_KEY, CA.as_bytes()), (CERT_KEY, CERT.as_bytes())]);
        let e = Material::from_data("redis-tls", &data).unwrap_err();
        assert_eq!(e.to_string(), "Secret redis-tls has no tls.key");
        data.insert(KEY_KEY, b"not a key");
        let e = Material::from_data("redis-tls", &data).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Secret redis-tls: tls.key holds no PEM private key"
        );
        data.insert(KEY_KEY, KEY.as_bytes());
        data.insert(CA_KEY, b"");
        let e = Material::from_data("redis-tls", &data).unwrap_err();
        assert_eq!(e.to_string(), "Secret redis-tls has no ca.crt");
    }

    #[test]
    fn debug_never_shows_the_key() {
        let shown = format!("{:?}", material());
        assert!(!shown.contains("PRIVATE"), "{shown}");
        assert!(shown.contains("c0ce5fc4"), "{shown}");
    }
}
