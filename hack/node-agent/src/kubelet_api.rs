//! The kubelet's HTTPS port, as far as the API server uses it here: `/containerLogs`, behind
//! the pods/log subresource that `kubectl logs` reads.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::header::CONTENT_TYPE;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use k8s_openapi::jiff::Timestamp;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{VerifierBuilderError, WebPkiClientVerifier};
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};
use tokio_util::sync::CancellationToken;

use crate::logs::read::{LogOptions, LogReader};
use crate::logs::{ContainerLogs, Registry};

/// The TLS configuration of the kubelet port could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A certificate, key or CA file could not be read, or holds no PEM item of its kind.
    #[error("failed to read {}: {source}", path.display())]
    Pem {
        path: PathBuf,
        #[source]
        source: pem::Error,
    },
    /// A certificate of the client CA file is no usable trust anchor.
    #[error("failed to trust a certificate of {}: {source}", path.display())]
    ClientCa {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    /// The client certificate verifier could not be built (e.g. no trust anchors).
    #[error("failed to set up client certificate verification: {0}")]
    ClientVerifier(#[from] VerifierBuilderError),
    /// rustls refused the certificate or key (e.g. they do not match).
    #[error("failed to set up TLS: {0}")]
    Tls(#[from] rustls::Error),
}

/// The serving certificate and key, and the CA whose client certificates are accepted.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Without it any client may connect, as to a kubelet with anonymous auth.
    pub client_ca: Option<PathBuf>,
}

/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a follower looks for appended records.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

fn certificates(path: &PathBuf) -> Result<Vec<CertificateDer<'static>>, Error> {
    let pem_error = |source| Error::Pem {
        path: path.clone(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error)?;
    if certs.is_empty() {
        return Err(pem_error(pem::Error::NoItemsFound));
    }
    Ok(certs)
}

/// TLS 1.2/1.3 with ring; client certificates must chain to `client_ca` when it is given.
pub fn tls_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = certificates(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|source| Error::Pem {
        path: files.key.clone(),
        source,
    })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match &files.client_ca {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(path)? {
                roots.add(cert).map_err(|source| Error::ClientCa {
                    path: path.clone(),
                    source,
                })?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build()?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(builder.with_single_cert(certs, key)?))
}

/// Serves HTTPS on `listener` until `shutdown`; open log streams end then too.
pub async fn run(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
) {
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Such as too many open files: let some close.
                    tracing::warn!(%error, "kubelet port: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => return,
        };
        let (acceptor, registry, shutdown) = (acceptor.clone(), registry.clone(), shutdown.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => serve(tls, registry, shutdown).await,
                Ok(Err(error)) => {
                    tracing::warn!(%peer, %error, "kubelet port: TLS handshake failed");
                }
                Err(_) => tracing::debug!(%peer, "kubelet port: TLS handshake timed out"),
            }
        });
    }
}

/// HTTP/1.1 on one connection (the API server's kubelet client speaks it without ALPN).
async fn serve<I>(io: I, registry: Arc<Registry>, shutdown: CancellationToken)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
        let response = respond(&request, &registry, &shutdown);
        tracing::debug!(uri = %request.uri(), status = %response.status(), "kubelet port request");
        async move { Ok::<_, Infallible>(response) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), service)
        .await;
    if let Err(error) = connection {
        tracing::debug!(%error, "kubelet port: connection ended");
    }
}

type Body = UnsyncBoxBody<Bytes, Infallible>;

fn text(status: StatusCode, message: String) -> Response<Body> {
    plain(status, Full::new(Bytes::from(message)).boxed_unsync())
}

fn plain(status: StatusCode, body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, "text/plain; charset=utf-8".parse().unwrap());
    response
}

/// Answers one request as the kubelet would, with its status codes and messages.
pub fn respond<B>(
    request: &Request<B>,
    registry: &Arc<Registry>,
    shutdown: &CancellationToken,
) -> Response<Body> {
    let Some(rest) = request.uri().path().strip_prefix("/containerLogs/") else {
        return text(StatusCode::NOT_FOUND, "404 page not found".into());
    };
    if request.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed".into());
    }
    let [namespace, pod, container] = rest.split('/').collect::<Vec<_>>()[..] else {
        return text(StatusCode::NOT_FOUND, "404 page not found".into());
    };
    for (value, what) in [
        (pod, "podID"),
        (container, "container name"),
        (namespace, "podNamespace"),
    ] {
        if value.is_empty() {
            let message = format!(r#"{{"message": "Missing {what}."}}"#);
            return text(StatusCode::BAD_REQUEST, message);
        }
    }
    let query = request.uri().query().unwrap_or_default();
    let opts = match LogOptions::from_query(query, Timestamp::now()) {
        Ok(opts) => opts,
        Err(error) => return text(StatusCode::BAD_REQUEST, error.to_string()),
    };
    let run_file = match locate(registry, namespace, pod, container, opts.previous) {
        Ok(path) => path,
        Err((status, message)) => return text(status, message),
    };
    let follow = opts.follow;
    let reader = match LogReader::open(&run_file, opts) {
        Ok(reader) => reader,
        Err(error) => {
            let message = format!(
                "failed to read the log of container {container:?} in pod {pod:?}: {error}"
            );
            return text(StatusCode::INTERNAL_SERVER_ERROR, message);
        }
    };
    let output = Output {
        reader,
        run_file,
        follow,
        registry: registry.clone(),
        shutdown: shutdown.clone(),
    };
    let chunks = futures::stream::unfold(output, |mut output| async move {
        let chunk = output.next_chunk().await?;
        Some((Ok(Frame::data(Bytes::from(chunk))), output))
    });
    plain(StatusCode::OK, StreamBody::new(chunks).boxed_unsync())
}

/// The run file to serve: the newest run's, or with `previous` the one before it.
fn locate(
    registry: &Registry,
    namespace: &str,
    pod: &str,
    container: &str,
    previous: bool,
) -> Result<PathBuf, (StatusCode, String)> {
    let Some(logs) = registry.pod(namespace, pod) else {
        return Err((StatusCode::NOT_FOUND, format!("pod {pod:?} does not exist")));
    };
    if !logs.containers.iter().any(|c| c == container) {
        let message = format!("container {container:?} not found in pod {pod:?}");
        return Err((StatusCode::NOT_FOUND, message));
    }
    let mut runs = ContainerLogs::new(&logs.log_dir, container).runs();
    let newest = runs.pop();
    match (previous, newest, runs.pop()) {
        (false, Some((_, path)), _) | (true, Some(_), Some((_, path))) => Ok(path),
        (true, ..) => Err((
            StatusCode::BAD_REQUEST,
            format!("previous terminated container {container:?} in pod {pod:?} not found"),
        )),
        (false, None, _) => Err((
            StatusCode::BAD_REQUEST,
            format!("container {container:?} in pod {pod:?} is waiting to start - no logs yet"),
        )),
    }
}

/// A response body being produced. Dropped when the client goes away (hyper drops the body),
/// which ends a follow.
struct Output {
    reader: LogReader,
    run_file: PathBuf,
    follow: bool,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
}

impl Output {
    /// The next output, or `None` once the response is complete: at the end of the file, or
    /// with `follow` once the run is over (its container exited) and all it wrote was sent.
    async fn next_chunk(&mut self) -> Option<Vec<u8>> {
        loop {
            if self.reader.is_exhausted() {
                return None;
            }
            // Sampled before reading: if the run was over by then, this read sees all it wrote.
            let more_to_come = self.follow && self.registry.is_active(&self.run_file);
            // A blocking read, but of about READ_STEP bytes, mostly just written: from the page cache.
            match self.reader.read_more() {
                Ok(chunk) if !chunk.is_empty() => return Some(chunk),
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(file = %self.run_file.display(), %error, "failed to read container log");
                    return None;
                }
            }
            if !more_to_come {
                return None;
            }
            tokio::select! {
                () = tokio::time::sleep(FOLLOW_POLL) => {}
                () = self.shutdown.cancelled() => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::read::{Stream, format_record};
    use std::io::Write;
    use std::path::Path;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A registry with pod ns/web (containers init, main) whose logs live in a fresh directory.
    struct Fixture {
        state: PathBuf,
        registry: Arc<Registry>,
        logs: ContainerLogs,
    }

    impl Fixture {
        fn new(name: &str) -> Self {
            let state =
                std::env::temp_dir().join(format!("node-agent-api-{name}-{}", std::process::id()));
            let pod = serde_json::from_value(serde_json::json!({
                "metadata": {"name": "web", "namespace": "ns", "uid": "u1"},
                "spec": {"initContainers": [{"name": "init"}], "containers": [{"name": "main"}]}
            }))
            .unwrap();
            let registry = Arc::new(Registry::default());
            registry.add_pod(&state, &pod);
            let logs = ContainerLogs::new(&crate::logs::log_dir(&state, "ns", "web", "u1"), "main");
            std::fs::create_dir_all(&logs.runs_dir).unwrap();
            Self {
                state,
                registry,
                logs,
            }
        }

        fn append(&self, run: i32, content: &str) {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.logs.run_file(run))
                .unwrap();
            let record = format_record(Timestamp::now(), Stream::Stdout, false, content.as_bytes());
            file.write_all(&record).unwrap();
        }

        async fn get(&self, uri: &str) -> (StatusCode, String) {
            let request = Request::get(uri).body(()).unwrap();
            let response = respond(&request, &self.registry, &CancellationToken::new());
            let status = response.status();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8(body.to_vec()).unwrap())
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.state);
        }
    }

    #[tokio::test]
    async fn unknown_pods_containers_and_missing_runs_get_the_kubelets_answers() {
        let f = Fixture::new("errors");
        let get = |uri| f.get(uri);
        assert_eq!(
            get("/containerLogs/ns/db/main").await,
            (StatusCode::NOT_FOUND, r#"pod "db" does not exist"#.into())
        );
        assert_eq!(
            get("/containerLogs/other/web/main").await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            get("/containerLogs/ns/web/sidecar").await,
            (
                StatusCode::NOT_FOUND,
                r#"container "sidecar" not found in pod "web""#.into()
            )
        );
        assert_eq!(
            get("/containerLogs/ns/web/init").await,
            (
                StatusCode::BAD_REQUEST,
                r#"container "init" in pod "web" is waiting to start - no logs yet"#.into()
            )
        );
        f.append(0, "first run");
        assert_eq!(
            get("/containerLogs/ns/web/main?previous=true").await,
            (
                StatusCode::BAD_REQUEST,
                r#"previous terminated container "main" in pod "web" not found"#.into()
            )
        );
        assert_eq!(
            get("/containerLogs/ns/web/main?tailLines=x").await.0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            get("/containerLogs/ns/web/").await,
            (
                StatusCode::BAD_REQUEST,
                r#"{"message": "Missing container name."}"#.into()
            )
        );
        assert_eq!(get("/pods").await.0, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn the_newest_run_is_current_and_the_one_before_is_previous() {
        let f = Fixture::new("runs");
        f.append(1, "first run");
        f.append(2, "second run");
        assert_eq!(
            f.get("/containerLogs/ns/web/main").await,
            (StatusCode::OK, "second run\n".into())
        );
        assert_eq!(
            f.get("/containerLogs/ns/web/main?previous=true").await,
            (StatusCode::OK, "first run\n".into())
        );
        // Not being written: a follow returns at once.
        assert_eq!(
            f.get("/containerLogs/ns/web/main?follow=true").await,
            (StatusCode::OK, "second run\n".into())
        );
    }

    /// Reads from `client` until `want` arrived; bounded by the test's timeout.
    async fn read_until(client: &mut tokio::net::TcpStream, seen: &mut String, want: &str) {
        let mut buf = [0; 4096];
        while !seen.contains(want) {
            let n = client.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed before {want:?}; got {seen:?}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }

    #[tokio::test]
    async fn a_follow_streams_appended_lines_and_ends_when_the_client_goes() {
        let f = Fixture::new("follow");
        f.append(0, "before");
        let run_file = f.logs.run_file(0);
        f.registry.set_active(&run_file, true);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let registry = f.registry.clone();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            serve(tcp, registry, CancellationToken::new()).await;
        });
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        client
            .write_all(b"GET /containerLogs/ns/web/main?follow=true HTTP/1.1\r\nHost: node\r\n\r\n")
            .await
            .unwrap();
        let mut seen = String::new();
        let within = Duration::from_secs(10);
        tokio::time::timeout(within, read_until(&mut client, &mut seen, "before\n"))
            .await
            .expect("existing lines");
        assert!(seen.starts_with("HTTP/1.1 200 OK"), "{seen}");
        f.append(0, "after");
        tokio::time::timeout(within, read_until(&mut client, &mut seen, "after\n"))
            .await
            .expect("appended line");
        drop(client);
        tokio::time::timeout(within, server)
            .await
            .expect("the connection ends with its client")
            .unwrap();
        assert!(Path::new(&run_file).exists());
    }

    #[tokio::test]
    async fn a_follow_ends_once_its_run_is_over() {
        let f = Fixture::new("over");
        f.append(0, "only");
        let run_file = f.logs.run_file(0);
        f.registry.set_active(&run_file, true);
        let request = Request::get("/containerLogs/ns/web/main?follow=1")
            .body(())
            .unwrap();
        let response = respond(&request, &f.registry, &CancellationToken::new());
        let registry = f.registry.clone();
        tokio::spawn(async move {
            tokio::time::sleep(FOLLOW_POLL * 2).await;
            registry.set_active(&run_file, false);
        });
        let body = tokio::time::timeout(Duration::from_secs(10), response.into_body().collect())
            .await
            .expect("the follow ends")
            .unwrap();
        assert_eq!(body.to_bytes(), "only\n");
    }
}
