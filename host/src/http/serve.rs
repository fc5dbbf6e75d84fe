//! Serving the router: plain HTTP through axum, or HTTPS through rustls and hyper, both until
//! shutdown with the requests in progress finished.

use crate::fault::Invalid;
use crate::invalid;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;

use super::{router, Api};

/// Serves until `shutdown` turns true (requests in progress finish): plain HTTP, or HTTPS
/// when `tls` is given.
pub async fn serve(
    listener: tokio::net::TcpListener,
    api: Arc<Api>,
    max_body_bytes: usize,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let address: SocketAddr = listener.local_addr()?;
    let app = router(api, max_body_bytes);
    let Some(tls) = tls else {
        tracing::info!(%address, "HTTP API listening");
        return axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = shutdown.wait_for(|stop| *stop).await;
            })
            .await;
    };
    tracing::info!(%address, "HTTP API listening (HTTPS)");
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait, as axum::serve does.
                    tracing::warn!("accepting a connection: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut shutdown) => break,
        };
        // Responses leave in several TLS records: without TCP_NODELAY, Nagle's algorithm
        // holds the last one for the client's delayed ACK (40 ms tails, measured).
        let _ = tcp.set_nodelay(true);
        let (tls, app, mut stop) = (tls.clone(), app.clone(), shutdown.clone());
        connections.spawn(async move {
            let stream = match tokio::time::timeout(std::time::Duration::from_secs(10), tls.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => return tracing::debug!(%peer, "TLS handshake: {e}"),
                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            // With a timer, hyper closes a connection whose request head takes over 30 s.
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                () = stopped(&mut stop) => {
                    // Finish the request in progress, then close.
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
        // Reap finished connections as we go.
        while connections.try_join_next().is_some() {}
    }
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Resolves when `shutdown` turns true (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// The TLS acceptor of a PEM certificate chain and private key; errors name the file.
pub fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> Result<tokio_rustls::TlsAcceptor, Invalid> {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect())
        .map_err(|e| invalid!("http.tls_cert {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(invalid!("http.tls_cert {}: no PEM certificate in it", cert.display()));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| invalid!("http.tls_key {}: {e}", key.display()))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, private)
        .map_err(|e| invalid!("http.tls_cert and http.tls_key: {e}"))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
