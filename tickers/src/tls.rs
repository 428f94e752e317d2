//! HTTPS for the built-in server (`serve --tls-cert --tls-key`): rustls, HTTP/2 or
//! HTTP/1.1 by ALPN, and client certificates when `--tls-client-ca` asks for them.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A TLS setting of the server that cannot be used.
#[derive(Debug, Error)]
pub enum TlsSetupError {
    /// A PEM file cannot be read or holds nothing of the kind asked for.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// rustls refused the set-up (a key that does not match its certificate, ...).
    #[error("{0}")]
    Setup(String),
}

/// The server side of TLS: the certificate chain in `cert` and its key in `key`; with
/// `client_ca`, only clients with a certificate signed by one of its authorities get
/// through the handshake.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError::Setup(e.to_string()))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in certificates(path)? {
                roots.add(ca).map_err(|e| file_error(path, e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsSetupError::Setup(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| file_error(key, e))?;
    let mut config = builder
        .with_single_cert(certificates(cert)?, key)
        .map_err(|e| TlsSetupError::Setup(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Closes a connection whose handshake failed so that the alert sent on it reaches
/// the client: our side of it is shut, and what the client still sends is read and
/// dropped (for a few seconds at most). Closed at once, the socket would answer the
/// client's request with a reset, and a reset makes the client's kernel discard the
/// alert unread.
pub(crate) async fn linger(mut tcp: TcpStream) {
    let _ = tcp.shutdown().await;
    let mut sink = [0u8; 4096];
    let drain = async { while let Ok(1..) = tcp.read(&mut sink).await {} };
    let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "no PEM certificate in it"));
    }
    Ok(certs)
}

fn file_error(path: &Path, reason: impl ToString) -> TlsSetupError {
    TlsSetupError::File {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}
