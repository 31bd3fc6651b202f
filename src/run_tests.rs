//! The writer client's timeouts, against a loopback server that never finishes its answer.

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::PostParams;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

/// A loopback server that takes a request and answers its status line, then one byte of a
/// header every 100 ms, never ending it: every read of the client gets a byte in time.
async fn trickling_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                if stream.read(&mut request).await.is_err() {
                    return;
                }
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nx-slow: ").await;
                while stream.write_all(b"a").await.is_ok() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
        }
    });
    address
}

/// Creates a ConfigMap through `client`; `None` if no answer came within `wait`.
async fn create(client: Client, wait: Duration) -> Option<Result<ConfigMap, kube::Error>> {
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let (params, object) = (PostParams::default(), ConfigMap::default());
    tokio::time::timeout(wait, api.create(&params, &object))
        .await
        .ok()
}

#[tokio::test]
async fn a_write_gives_up_when_the_whole_request_outlasts_its_timeout() {
    let address = trickling_server().await;
    let config = || Config::new(format!("http://{address}").parse().unwrap());
    let traffic = ApiTraffic::register(&prometheus::Registry::new()).unwrap();
    let timeout = Duration::from_secs(1);

    // The connection's own timeouts alone: each read gets its byte, so the request goes on.
    let mut per_read = config();
    per_read.read_timeout = Some(timeout);
    per_read.write_timeout = Some(timeout);
    let per_read = kube::client::ClientBuilder::try_from(per_read)
        .unwrap()
        .build();
    assert!(
        create(per_read, timeout * 3).await.is_none(),
        "per-read timeouts leave a trickled answer waiting"
    );

    // The writer client bounds the request as a whole.
    let writer = client_with(config(), &traffic, Some(timeout)).unwrap();
    let answered = create(writer, Duration::from_secs(60))
        .await
        .expect("the writer gives up by itself; the server never stops");
    let error = answered.expect_err("no answer ever completes");
    assert!(error.to_string().contains("timed out"), "{error}");
}

/// The User-Agent headers `config` sends.
fn agents(config: &Config) -> Vec<&str> {
    config
        .headers
        .iter()
        .filter(|(name, _)| name == ::http::header::USER_AGENT)
        .filter_map(|(_, value)| value.to_str().ok())
        .collect()
}

#[test]
fn a_replica_sends_its_identity_in_its_user_agent_once() {
    let plain = || {
        let mut config = Config::new("https://127.0.0.1:6443".parse().unwrap());
        config.headers.push((
            ::http::header::USER_AGENT,
            ::http::HeaderValue::from_static(USER_AGENT),
        ));
        config
    };
    let mut config = plain();
    send_as(&mut config, "redis-operator-5d8f-x2k");
    let expected = format!("{USER_AGENT} (redis-operator-5d8f-x2k)");
    assert_eq!(agents(&config), [expected.as_str()]);
    // Not a header value: the plain User-Agent stays.
    let mut config = plain();
    send_as(&mut config, "two\nlines");
    assert_eq!(agents(&config), [USER_AGENT]);
}
