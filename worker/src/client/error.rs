//! How a request fails, whichever client made it.

/// How one request failed.
#[derive(Debug)]
pub enum ClientError {
    /// No connection could be made.
    Connect(String),
    /// The connection failed before a whole response head came.
    Reset(String),
    /// The response was cut off or garbled.
    Read(String),
    /// No whole response in time.
    Timeout(String),
    /// The body is over the limit.
    TooLarge(u64),
    /// A redirect that cannot be followed (too many, or a bad `Location`).
    Redirect(String),
    /// A URL no request can be made of.
    BadUrl(String),
    /// A TLS handshake failed in a way another attempt would not mend (a certificate
    /// that is not trusted, a refused client certificate), described for people.
    Tls(String),
    /// Anything else: the client could not be set up, or failed in a way another
    /// attempt would not mend.
    Other(String),
    /// The URL (first or after a redirect) needs the full client: TLS or a
    /// compressed body.
    NeedsFullClient(Handoff),
}

/// A request the full client takes over from a lean one.
#[derive(Debug)]
pub struct Handoff {
    /// The URL to fetch.
    pub url: String,
    /// Redirects followed to reach it.
    pub hops: u32,
    /// Whether a redirect turned the request into a GET without a body.
    pub as_get: bool,
}

/// An error and its causes on one line, e.g. "error sending request: connection refused".
pub fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}
