//! The operator's TLS to a pod: it dials the pod's IP (it may run outside the cluster, with no
//! cluster DNS) but verifies the certificate against the Secret's CA for the instance's name,
//! never "insecure", and presents the Secret's certificate for Redis's client authentication.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::material::{Material, fingerprint};

/// Why a TLS connection was not made.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Secret's material does not make a client configuration.
    #[error("invalid TLS material: {0}")]
    Config(String),
    /// The TCP connection failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// `ip:port`.
        addr: String,
        /// What the socket said.
        #[source]
        source: std::io::Error,
    },
    /// The handshake failed: most often a certificate that does not verify.
    #[error("TLS handshake with {addr} failed: {source}")]
    Handshake {
        /// `ip:port`.
        addr: String,
        /// What rustls said.
        #[source]
        source: std::io::Error,
    },
    /// No connection within the time allowed.
    #[error("no TLS connection to {addr} within {0:?}", .timeout)]
    Timeout {
        /// `ip:port`.
        addr: String,
        /// The time allowed.
        timeout: Duration,
    },
}

/// How the operator connects to one instance's pods.
pub struct ClientTls {
    server_name: ServerName<'static>,
    connector: TlsConnector,
    fingerprint: String,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// A TLS connection and the fingerprint of the certificate the server presented.
pub struct Dialed {
    /// The stream, handshake done.
    pub stream: TlsStream<TcpStream>,
    /// SHA-256 (hex) of the server's leaf certificate.
    pub served: String,
}

impl ClientTls {
    /// Trusts `material.ca` (and `also_trusted`, the CA of the Secret's previous content, so
    /// that pods still serving a certificate of a replaced CA can be told to reload) and
    /// verifies `server_name` in every pod's certificate.
    pub fn new(
        material: &Material,
        also_trusted: Option<&[u8]>,
        server_name: &str,
    ) -> Result<Self, Error> {
        let config_error = |e: &dyn fmt::Display| Error::Config(e.to_string());
        let mut roots = RootCertStore::empty();
        for pem in std::iter::once(material.ca.as_slice()).chain(also_trusted) {
            for cert in CertificateDer::pem_slice_iter(pem) {
                roots
                    .add(cert.map_err(|e| config_error(&e))?)
                    .map_err(|e| config_error(&e))?;
            }
        }
        let chain = CertificateDer::pem_slice_iter(&material.cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| config_error(&e))?;
        let key = PrivateKeyDer::from_pem_slice(&material.key).map_err(|e| config_error(&e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| config_error(&e))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| config_error(&e))?;
        let server_name =
            ServerName::try_from(server_name.to_owned()).map_err(|e| config_error(&e))?;
        Ok(Self {
            server_name,
            connector: TlsConnector::from(Arc::new(config)),
            fingerprint: material.fingerprint.clone(),
        })
    }

    /// Fingerprint of the Secret's certificate this client was built from.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Connects to `ip:port` and completes a verified handshake within `timeout`.
    pub async fn dial(&self, ip: &str, port: u16, timeout: Duration) -> Result<Dialed, Error> {
        let addr = if ip.contains(':') {
            format!("[{ip}]:{port}")
        } else {
            format!("{ip}:{port}")
        };
        let attempt = async {
            let tcp = TcpStream::connect(&addr)
                .await
                .map_err(|source| Error::Connect {
                    addr: addr.clone(),
                    source,
                })?;
            // Commands are small and answered one at a time: no batching delay.
            let _ = tcp.set_nodelay(true);
            let stream = self
                .connector
                .connect(self.server_name.clone(), tcp)
                .await
                .map_err(|source| Error::Handshake {
                    addr: addr.clone(),
                    source,
                })?;
            let served = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|leaf| fingerprint(leaf))
                .unwrap_or_default();
            Ok(Dialed { stream, served })
        };
        tokio::time::timeout(timeout, attempt)
            .await
            .map_err(|_| Error::Timeout {
                addr: addr.clone(),
                timeout,
            })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::material::tests::material;

    #[test]
    fn builds_from_the_secret_and_keeps_its_fingerprint() {
        let client = ClientTls::new(&material(), None, "redis-example.team-a.svc").unwrap();
        assert_eq!(client.fingerprint(), material().fingerprint);
        assert!(!format!("{client:?}").contains("PRIVATE"));
    }

    #[test]
    fn a_key_that_is_not_the_certificates_is_refused() {
        let mut mismatched = material();
        mismatched.key = include_bytes!("testdata/other.key").to_vec();
        let e = ClientTls::new(&mismatched, None, "redis-example.team-a.svc").unwrap_err();
        assert!(e.to_string().starts_with("invalid TLS material"), "{e}");
    }

    #[test]
    fn a_name_that_is_no_dns_name_is_refused() {
        let e = ClientTls::new(&material(), None, "not a name").unwrap_err();
        assert!(e.to_string().starts_with("invalid TLS material"), "{e}");
    }

    /// A real handshake against a rustls server holding the test certificate: the name the
    /// operator expects verifies, another name does not.
    #[tokio::test]
    async fn verifies_the_expected_name_while_dialing_an_ip() {
        use crate::tls::material::tests::{CERT, KEY};
        let chain = CertificateDer::pem_slice_iter(CERT.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(KEY.as_bytes()).unwrap();
        let server = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                // A failed handshake is what the second dial expects.
                let _ = acceptor.accept(tcp).await;
            }
        });
        let timeout = Duration::from_secs(5);
        let good = ClientTls::new(&material(), None, "redis-example.team-a.svc").unwrap();
        let dialed = good.dial("127.0.0.1", port, timeout).await.unwrap();
        assert_eq!(dialed.served, material().fingerprint);
        let pod = ClientTls::new(
            &material(),
            None,
            "redis-example-0.redis-example.team-a.svc",
        )
        .unwrap();
        pod.dial("127.0.0.1", port, timeout).await.unwrap();
        let other = ClientTls::new(&material(), None, "other.team-a.svc").unwrap();
        let e = other.dial("127.0.0.1", port, timeout).await.err().unwrap();
        assert!(e.to_string().contains("handshake"), "{e}");
    }
}
