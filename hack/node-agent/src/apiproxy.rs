//! Lets pods reach the API server, as a cluster's `kubernetes` Service does: listens on the
//! pods' gateway address and forwards each connection to the API server on loopback. TLS
//! passes through untouched; the API server's certificate names the gateway address.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Accepts on `listen` and copies bytes both ways to `upstream` until `shutdown`.
pub async fn run(
    listen: SocketAddr,
    upstream: SocketAddr,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    tracing::info!(%listen, %upstream, "forwarding pods' API connections");
    loop {
        let (mut pod_side, from) = tokio::select! {
            accepted = listener.accept() => accepted?,
            () = shutdown.cancelled() => return Ok(()),
        };
        tokio::spawn(async move {
            match TcpStream::connect(upstream).await {
                Ok(mut api_side) => {
                    let _ = tokio::io::copy_bidirectional(&mut pod_side, &mut api_side).await;
                }
                Err(error) => tracing::warn!(%from, %error, "API server unreachable"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bytes_flow_both_ways() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = echo.accept().await.unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&buf).await.unwrap();
        });
        let probe = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let listen = probe.local_addr().unwrap();
        drop(probe);
        let shutdown = CancellationToken::new();
        tokio::spawn(run(listen, upstream, shutdown.clone()));
        let mut client = loop {
            if let Ok(c) = TcpStream::connect(listen).await {
                break c;
            }
            tokio::task::yield_now().await;
        };
        client.write_all(b"hello").await.unwrap();
        let mut back = [0u8; 5];
        client.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"hello");
        shutdown.cancel();
    }
}
