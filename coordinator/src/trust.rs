//! The TLS flags of scrape and load runs, checked before anything starts: every file
//! they name is read once here, so that a missing CA file or a key that does not match
//! its certificate is a usage error, not ten thousand failed batches.

use std::path::Path;

use shared::config::TlsOptions;
use worker::tls::{self, TlsError};

use crate::cli::TlsArgs;
use crate::error::{UsageError, usage};
use crate::messages;

/// The options the flags ask for, with absolute paths (workers may run elsewhere in
/// the file system's eyes: they are read again by each worker).
pub fn options(args: &TlsArgs) -> TlsOptions {
    let absolute = |path: &Path| {
        std::path::absolute(path)
            .unwrap_or_else(|_| path.to_owned())
            .display()
            .to_string()
    };
    TlsOptions {
        ca_file: args.cacert.as_deref().map(absolute),
        insecure: args.insecure,
        client_cert: args.cert.as_deref().map(absolute),
        client_key: args.key.as_deref().map(absolute),
    }
}

/// Checks that `options` can be used, by building the configuration a worker builds;
/// warns once under `--insecure`.
pub fn check(options: &TlsOptions) -> Result<(), UsageError> {
    tls::client_config(options, tls::ALPN_H2_AND_HTTP1).map_err(|e| {
        let flag = match &e {
            TlsError::CaFile { .. } => "--cacert",
            TlsError::ClientCert { .. } | TlsError::Unpaired | TlsError::Setup(_) => "--cert",
            TlsError::ClientKey { .. } => "--key",
            TlsError::SystemStore(_) => "SSL_CERT_FILE",
        };
        usage(flag, strip_flag(&e.to_string(), flag))
    })?;
    if options.insecure {
        messages::warn(
            "--insecure: server certificates are not checked; anyone on the path can read and change this run's traffic",
        );
    }
    Ok(())
}

/// The error's text without the flag it starts with: [`UsageError`] puts it there.
fn strip_flag<'a>(text: &'a str, flag: &str) -> &'a str {
    text.strip_prefix(flag)
        .map_or(text, |rest| rest.trim_start_matches(':').trim_start())
}
