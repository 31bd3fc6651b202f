//! Relays on loopback between an operator and the API server, which a test cuts or makes hold
//! a request: the partitions and the late deliveries of a real network, made on purpose.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::common;

/// A TCP relay to the API server, which the test can cut: every open connection dropped and no
/// new one taken, as a network partition would.
pub struct ApiProxy {
    addr: SocketAddr,
    relay: tokio::task::JoinHandle<()>,
}

impl ApiProxy {
    pub async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let relay = tokio::spawn(async move {
            // Connections live in this set: aborting the relay drops every one of them.
            let mut open = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                let upstream = upstream.clone();
                open.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Self { addr, relay }
    }

    /// A copy of the test kubeconfig whose server is this relay.
    pub fn kubeconfig(&self, name: &str) -> std::path::PathBuf {
        let text = std::fs::read_to_string(common::kubeconfig_path()).unwrap();
        let relayed: Vec<String> = text
            .lines()
            .map(|line| match line.split_once("server: https://") {
                Some((indent, _)) => format!("{indent}server: https://{}", self.addr),
                None => line.to_owned(),
            })
            .collect();
        write_kubeconfig(name, &relayed.join("\n"))
    }

    pub fn cut(&self) {
        self.relay.abort();
    }
}

impl Drop for ApiProxy {
    fn drop(&mut self) {
        self.relay.abort();
    }
}

/// Writes a kubeconfig for one test under target/e2e-logs.
fn write_kubeconfig(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/e2e-logs");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.kubeconfig"));
    std::fs::write(&path, text).unwrap();
    path
}

/// The API server's `host:port`, as the test kubeconfig names it.
pub fn api_server_address() -> String {
    let text = std::fs::read_to_string(common::kubeconfig_path()).unwrap();
    text.lines()
        .find_map(|line| {
            line.split_once("server: https://")
                .map(|(_, a)| a.trim().to_owned())
        })
        .expect("a server in the kubeconfig")
}

/// `kubectl proxy` on a free loopback port: plain HTTP in front of the API server, so a relay
/// can read each request line. Stopped when dropped.
struct KubectlProxy {
    child: std::process::Child,
    addr: String,
}

impl KubectlProxy {
    fn start() -> Self {
        use std::io::BufRead;
        let mut child =
            std::process::Command::new(super::e2e::cached_binary("kubernetes-v1.37.2/kubectl"))
                .arg("--kubeconfig")
                .arg(common::kubeconfig_path())
                .args(["proxy", "--address=127.0.0.1", "--port=0"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("kubectl proxy starts");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap();
        // "Starting to serve on 127.0.0.1:PORT"
        let addr = line
            .trim()
            .rsplit(' ')
            .next()
            .filter(|a| a.starts_with("127.0.0.1:"))
            .unwrap_or_else(|| panic!("kubectl proxy said {line:?}"))
            .to_owned();
        Self { child, addr }
    }
}

impl Drop for KubectlProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A relay in front of `kubectl proxy` that lets everything through until a request whose
/// first line starts with the armed prefix: it holds that request (the operator sees no answer,
/// gives up and closes; the held bytes and the open connection to the API server stay), and from
/// then on cuts every other connection and takes no new one. Released, the held request reaches
/// the API server whole, as a write delayed in the network would, and its answer is read.
pub struct WriteHolder {
    addr: SocketAddr,
    shared: Arc<Shared>,
    release: watch::Sender<bool>,
    relay: tokio::task::JoinHandle<()>,
    _proxy: KubectlProxy,
}

struct Shared {
    /// The request line prefix to hold; `None`: not armed, or already holding one.
    armed: Mutex<Option<String>>,
    /// Set once a request is held: every other connection is cut.
    cut: watch::Sender<bool>,
    /// The held request's first line and when it was held, and then the first line of the
    /// API server's answer.
    held: Mutex<Option<(String, k8s_openapi::jiff::Timestamp)>>,
    answer: Mutex<Option<String>>,
}

impl Shared {
    /// Whether `chunk`, the first bytes of a request, is the one to hold; if so, disarms and
    /// cuts every other connection.
    fn take(&self, chunk: &[u8]) -> bool {
        let mut armed = self.armed.lock().unwrap();
        let matches = armed
            .as_deref()
            .is_some_and(|prefix| chunk.starts_with(prefix.as_bytes()));
        if matches {
            *armed = None;
            let line = String::from_utf8_lossy(chunk);
            let first = line.lines().next().unwrap_or_default().to_owned();
            *self.held.lock().unwrap() = Some((first, k8s_openapi::jiff::Timestamp::now()));
            let _ = self.cut.send(true);
        }
        matches
    }
}

impl WriteHolder {
    pub async fn start() -> Self {
        let proxy = KubectlProxy::start();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            armed: Mutex::new(None),
            cut,
            held: Mutex::new(None),
            answer: Mutex::new(None),
        });
        let (release, _) = watch::channel(false);
        let relay = {
            let (shared, release, upstream) =
                (shared.clone(), release.subscribe(), proxy.addr.clone());
            tokio::spawn(async move {
                let mut cut = shared.cut.subscribe();
                let mut open = tokio::task::JoinSet::new();
                loop {
                    tokio::select! {
                        accepted = listener.accept() => {
                            let Ok((inbound, _)) = accepted else { break };
                            let (shared, release, upstream) =
                                (shared.clone(), release.clone(), upstream.clone());
                            open.spawn(relay(inbound, upstream, shared, release));
                        }
                        // Cut: no new connection is taken.
                        _ = until(&mut cut) => break,
                    }
                }
                drop(listener);
                while open.join_next().await.is_some() {}
            })
        };
        Self {
            addr,
            shared,
            release,
            relay,
            _proxy: proxy,
        }
    }

    /// A kubeconfig whose server is this relay (`kubectl proxy` adds the credentials).
    pub fn kubeconfig(&self, name: &str) -> std::path::PathBuf {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: held\n  cluster:\n    server: http://{}\n\
             contexts:\n- name: held\n  context:\n    cluster: held\n    user: held\n\
             users:\n- name: held\n  user: {{}}\ncurrent-context: held\n",
            self.addr
        );
        write_kubeconfig(name, &text)
    }

    /// Holds the next request whose first line starts with `prefix`.
    pub fn arm(&self, prefix: String) {
        *self.shared.armed.lock().unwrap() = Some(prefix);
    }

    /// The first line of the request held and when it was held, once one is.
    pub fn held(&self) -> Option<(String, k8s_openapi::jiff::Timestamp)> {
        self.shared.held.lock().unwrap().clone()
    }

    /// Delivers the held request, and returns the first line of the API server's answer.
    pub async fn release(&self) -> String {
        let _ = self.release.send(true);
        common::wait_for(Duration::from_secs(30), "the held request's answer", || {
            let answer = self.shared.answer.lock().unwrap().clone();
            async move { answer.ok_or_else(|| "no answer yet".to_owned()) }
        })
        .await
    }
}

impl Drop for WriteHolder {
    fn drop(&mut self) {
        self.relay.abort();
    }
}

/// Until `flag` is set (or its sender is gone).
async fn until(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|set| *set).await;
}

/// One connection: relayed both ways until it is cut, unless it carries the request to hold.
/// That one's bytes are kept, and the connection to the API server is left open even after the
/// client has closed (an HTTP server drops a request whose client is gone), until the release.
async fn relay(
    mut inbound: TcpStream,
    upstream: String,
    shared: Arc<Shared>,
    mut release: watch::Receiver<bool>,
) {
    let Ok(mut outbound) = TcpStream::connect(&upstream).await else {
        return;
    };
    let mut cut = shared.cut.subscribe();
    let (mut from_client, mut to_client) = inbound.split();
    let (mut from_server, mut to_server) = outbound.split();
    let (mut up, mut down) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    let mut held: Option<Vec<u8>> = None;
    let mut client_open = true;
    loop {
        tokio::select! {
            _ = until(&mut cut), if held.is_none() => return,
            read = from_client.read(&mut up), if client_open => {
                let n = read.unwrap_or(0);
                let chunk = &up[..n];
                match &mut held {
                    Some(_) if n == 0 => client_open = false,
                    Some(kept) => kept.extend_from_slice(chunk),
                    None if n == 0 => return,
                    None if shared.take(chunk) => held = Some(chunk.to_vec()),
                    None => {
                        if to_server.write_all(chunk).await.is_err() {
                            return;
                        }
                    }
                }
            }
            read = from_server.read(&mut down), if held.is_none() => {
                match read {
                    Ok(n) if n > 0 => {
                        if to_client.write_all(&down[..n]).await.is_err() {
                            return;
                        }
                    }
                    _ => return,
                }
            }
            _ = until(&mut release), if held.is_some() => break,
        }
    }
    let request = held.unwrap_or_default();
    let answer = async {
        to_server.write_all(&request).await.ok()?;
        let mut answer = Vec::new();
        while !answer.windows(2).any(|w| w == b"\r\n") {
            let n = from_server.read(&mut down).await.ok()?;
            if n == 0 {
                return None;
            }
            answer.extend_from_slice(&down[..n]);
        }
        let text = String::from_utf8_lossy(&answer);
        Some(text.lines().next().unwrap_or_default().to_owned())
    };
    let answer = tokio::time::timeout(Duration::from_secs(20), answer)
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| "no answer".to_owned());
    *shared.answer.lock().unwrap() = Some(answer);
}
