//! TLS for every client of a worker, in scrape and load runs alike: which servers are
//! trusted, what the client shows of itself, and what a failed handshake tells the user.
//!
//! Trust, in this order: `--insecure` trusts any certificate; `--cacert FILE` trusts
//! exactly the authorities in FILE (as curl does); otherwise the system's store, read
//! as OpenSSL-based tools read it: `SSL_CERT_FILE` and `SSL_CERT_DIR` when either is
//! set, else the distribution's bundle (`/etc/ssl/certs` on Debian). A system with no
//! store at all falls back to the Mozilla list built into the binary.

use std::error::Error as StdError;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore,
    SignatureScheme,
};
use shared::config::{TLS_ERROR_PREFIX, TlsOptions};
use thiserror::Error;

/// Protocols offered in the ALPN extension, most preferred first.
pub const ALPN_H2_AND_HTTP1: &[&[u8]] = &[b"h2", b"http/1.1"];
/// HTTP/2 only (`--http2`).
pub const ALPN_H2: &[&[u8]] = &[b"h2"];
/// HTTP/1.1 only.
pub const ALPN_HTTP1: &[&[u8]] = &[b"http/1.1"];

/// A TLS setting that cannot be used.
#[derive(Debug, Error)]
pub enum TlsError {
    /// `--cacert` cannot be read or holds no certificate.
    #[error("--cacert {path}: {reason}")]
    CaFile {
        /// The file.
        path: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// `SSL_CERT_FILE` / `SSL_CERT_DIR` name nothing usable.
    #[error("{0}")]
    SystemStore(String),
    /// `--cert` cannot be read or holds no certificate.
    #[error("--cert {path}: {reason}")]
    ClientCert {
        /// The file.
        path: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// `--key` cannot be read or holds no private key.
    #[error("--key {path}: {reason}")]
    ClientKey {
        /// The file.
        path: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// One of `--cert` and `--key` without the other.
    #[error("--cert and --key go together: give both or neither")]
    Unpaired,
    /// rustls refused the set-up (e.g. a key that does not match its certificate).
    #[error("TLS set-up: {0}")]
    Setup(String),
}

/// The crypto provider of every TLS connection: ring, as reqwest's.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration for `options`, offering `alpn`. TLS 1.2 and 1.3, SNI and
/// session resumption (rustls' in-memory ticket cache) are on.
pub fn client_config(options: &TlsOptions, alpn: &[&[u8]]) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    let builder = if options.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(
                provider.signature_verification_algorithms,
            )))
    } else {
        builder.with_root_certificates(roots(options)?)
    };
    let mut config = match (&options.client_cert, &options.client_key) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(client_chain(cert)?, client_key(key)?)
            .map_err(|e| TlsError::Setup(format!("--cert {cert} with --key {key}: {e}")))?,
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(TlsError::Unpaired),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// The authorities trusted when the certificate is checked.
fn roots(options: &TlsOptions) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    if let Some(path) = &options.ca_file {
        let ca_error = |reason: String| TlsError::CaFile {
            path: path.clone(),
            reason,
        };
        for cert in certificates(path).map_err(ca_error)? {
            roots
                .add(cert)
                .map_err(|e| ca_error(format!("not a usable CA certificate: {e}")))?;
        }
        return Ok(roots);
    }
    let native = rustls_native_certs::load_native_certs();
    let (added, _) = roots.add_parsable_certificates(native.certs);
    let from_env = ["SSL_CERT_FILE", "SSL_CERT_DIR"]
        .into_iter()
        .filter(|var| std::env::var_os(var).is_some_and(|v| !v.is_empty()))
        .collect::<Vec<_>>();
    match (added, from_env.is_empty(), native.errors.first()) {
        (0, false, first) => Err(TlsError::SystemStore(format!(
            "{} set, but no certificate could be read from it{}",
            from_env.join(" and "),
            first.map(|e| format!(": {e}")).unwrap_or_default()
        ))),
        (0, true, _) => {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            Ok(roots)
        }
        _ => Ok(roots),
    }
}

fn client_chain(path: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    certificates(path).map_err(|reason| TlsError::ClientCert {
        path: path.to_owned(),
        reason,
    })
}

/// The PEM certificates in `path`, at least one; else why there are none.
fn certificates(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_reason(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_reason(&e))?;
    if certs.is_empty() {
        return Err("no PEM certificate in it".into());
    }
    Ok(certs)
}

fn client_key(path: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::ClientKey {
        path: path.to_owned(),
        reason: match e {
            rustls::pki_types::pem::Error::NoItemsFound => "no PEM private key in it".into(),
            e => pem_reason(&e),
        },
    })
}

fn pem_reason(e: &rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(e) => e.to_string(),
        e => format!("not PEM: {e}"),
    }
}

/// The rustls error behind a client error, if a TLS handshake or record failed: looked
/// for along the whole chain of causes, inside `io::Error`s too (whose `source` skips
/// the error they wrap).
pub fn rustls_error<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut cause = Some(e);
    while let Some(e) = cause {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        // An `io::Error` may wrap another (hyper-rustls wraps tokio-rustls' own).
        cause = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn StdError + 'static)),
            None => e.source(),
        };
    }
    None
}

/// What a TLS failure with `host` means, and what to do about it, on one line that
/// starts with [`TLS_ERROR_PREFIX`].
pub fn describe(error: &rustls::Error, host: &str) -> String {
    use CertificateError as C;
    let what = match error {
        rustls::Error::InvalidCertificate(cert) => match cert {
            C::UnknownIssuer => "certificate signed by an unknown authority: pass --cacert FILE \
                                 or add the CA to the system store"
                .to_owned(),
            C::Expired | C::ExpiredContext { .. } => {
                "certificate has expired (or the clock is wrong)".to_owned()
            }
            C::NotValidYet | C::NotValidYetContext { .. } => {
                "certificate is not valid yet (or the clock is wrong)".to_owned()
            }
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                format!("certificate is not valid for the name {host}")
            }
            C::Revoked => "certificate has been revoked".to_owned(),
            C::BadSignature => "certificate has a bad signature".to_owned(),
            C::InvalidPurpose | C::InvalidPurposeContext { .. } => {
                "certificate is not for server authentication".to_owned()
            }
            other => format!("invalid certificate: {other:?}"),
        },
        rustls::Error::AlertReceived(
            AlertDescription::CertificateRequired | AlertDescription::HandshakeFailure,
        ) => "the server refused the handshake; if it requires a client \
                      certificate, pass --cert FILE --key FILE"
            .to_owned(),
        rustls::Error::AlertReceived(
            alert @ (AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateRevoked
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::AccessDenied),
        ) => format!("the server refused our client certificate ({alert:?})"),
        other => other.to_string(),
    };
    format!("{TLS_ERROR_PREFIX}with {host}: {what}")
}

/// Whether a TLS failure would fail again on another attempt: every certificate and
/// alert error does; a garbled record or a cut-off handshake may not.
pub fn is_permanent(error: &rustls::Error) -> bool {
    matches!(
        error,
        rustls::Error::InvalidCertificate(_)
            | rustls::Error::AlertReceived(_)
            | rustls::Error::NoCertificatesPresented
            | rustls::Error::UnsupportedNameType
            | rustls::Error::PeerIncompatible(_)
            | rustls::Error::NoApplicationProtocol
    )
}

/// The server name a connection to `host` presents in SNI and checks the certificate
/// against.
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    ServerName::try_from(bare.to_owned()).map_err(|e| format!("{host}: not a TLS server name: {e}"))
}

/// `--insecure`: any certificate passes, but the handshake's signatures are still
/// checked, so that the connection is at least with whoever holds the key it showed.
#[derive(Debug)]
struct AcceptAny(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}
