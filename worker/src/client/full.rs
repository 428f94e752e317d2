//! reqwest, for what the lean clients do not do: TLS and compressed bodies. It is built
//! on first use: a worker that only fetches plain `http://` URLs never loads TLS roots
//! or touches the code behind them, and stays smaller for it.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::BytesMut;
use http::header::{
    ACCEPT, CONTENT_TYPE, HeaderMap, HeaderValue, LINK, LOCATION, RETRY_AFTER, USER_AGENT,
};
use reqwest::redirect::Policy;
use shared::config::{TlsOptions, WorkerConfig};
use shared::proxy::ProxyConfig;

use super::{
    Ask, ClientError, ConfigError, Response, Verb, conditional, header_map, one_line, redirect,
};
use crate::budget::{Budget, Charge};
use crate::hosts::HostGates;
use crate::tls;

/// The reqwest client of one worker.
pub struct FullClient {
    headers: HeaderMap,
    user_agent: HeaderValue,
    timeout: Duration,
    connect_timeout: Duration,
    max_redirects: u32,
    location_trusted: bool,
    max_idle: usize,
    http2: bool,
    tls: TlsOptions,
    proxy: ProxyConfig,
    /// The run's method, and what goes with it.
    verb: Verb,
    client: OnceLock<Result<reqwest::Client, String>>,
    budget: Arc<Budget>,
}

impl FullClient {
    /// A client for `config` that sends `verb`, whose bodies are charged to `budget`;
    /// fails on headers that HTTP does not allow.
    pub fn new(
        config: &WorkerConfig,
        verb: Verb,
        budget: Arc<Budget>,
    ) -> Result<FullClient, ConfigError> {
        Ok(FullClient {
            verb,
            headers: header_map(&config.headers)?,
            user_agent: HeaderValue::from_str(&config.user_agent)
                .map_err(|_| ConfigError::UserAgent)?,
            timeout: Duration::from_millis(config.timeout_ms),
            connect_timeout: Duration::from_millis(config.connect_timeout_ms),
            max_redirects: config.max_redirects,
            location_trusted: config.location_trusted,
            max_idle: config.concurrency as usize,
            http2: config.http2,
            tls: config.tls.clone(),
            proxy: config.proxy.clone(),
            client: OnceLock::new(),
            budget,
        })
    }

    /// Every header of a request to the job's own origin but those of its method:
    /// the `--header`s and the `User-Agent`.
    pub fn all_headers(&self) -> HeaderMap {
        let mut headers = self.headers.clone();
        headers.insert(USER_AGENT, self.user_agent.clone());
        headers
    }

    fn client(&self) -> Result<&reqwest::Client, ClientError> {
        let built = self.client.get_or_init(|| {
            // The protocol is the user's choice, as on the lean paths: HTTP/1.1 unless
            // --http2.
            let alpn = match self.http2 {
                true => tls::ALPN_H2,
                false => tls::ALPN_HTTP1,
            };
            let tls = tls::client_config(&self.tls, alpn).map_err(|e| e.to_string())?;
            // The proxy is decided as for the lean clients, never from reqwest's own
            // reading of the environment.
            let builder = reqwest::Client::builder()
                .use_preconfigured_tls(tls)
                .no_proxy();
            let builder = match self.proxy.is_direct() {
                true => builder,
                false => {
                    let proxies = self.proxy.clone();
                    builder.proxy(reqwest::Proxy::custom(move |url| {
                        let host = url.host_str()?;
                        let proxy = proxies.for_target(url.scheme() == "https", host)?;
                        Some(proxy.url.clone())
                    }))
                }
            };
            let builder = if self.http2 {
                builder.http2_prior_knowledge()
            } else {
                builder
            };
            builder
                .user_agent(self.user_agent.clone())
                .timeout(self.timeout)
                .connect_timeout(self.connect_timeout)
                // Redirects are followed by hand, to decide per hop which headers go.
                .redirect(Policy::none())
                .pool_max_idle_per_host(self.max_idle)
                .tcp_nodelay(true)
                .build()
                .map_err(|e| format!("the HTTP client cannot be built: {e}"))
        });
        built.as_ref().map_err(|e| ClientError::Other(e.clone()))
    }

    /// Sends what `ask` says to `url` for the job's URL `original`, `hops` redirects
    /// away from it, following further redirects with the `--header`s for
    /// `original`'s origin only. A body is read only for a 2xx status, chunk by chunk,
    /// so that one over `max_body` is never buffered whole.
    pub async fn fetch(
        &self,
        gates: &HostGates,
        original: &str,
        url: &str,
        mut hops: u32,
        mut ask: Ask<'_>,
        max_body: u64,
    ) -> Result<Response, ClientError> {
        let client = self.client()?;
        let mut at = url.to_owned();
        let mut response = loop {
            let trusted = self.location_trusted || redirect::same_origin(original, &at);
            let request = self.request(client, &at, ask);
            let request = match trusted {
                true => request.headers(self.headers.clone()),
                false => request,
            };
            let _permit = match (gates.is_active(), url::Url::parse(&at)) {
                (true, Ok(u)) => {
                    let authority = format!(
                        "{}:{}",
                        u.host_str().unwrap_or_default(),
                        u.port_or_known_default().unwrap_or(0)
                    );
                    Some(gates.enter(u.scheme() == "https", &authority).await)
                }
                _ => None,
            };
            let response = request.send().await.map_err(|e| transport(e, &at))?;
            let status = response.status().as_u16();
            let location = response
                .headers()
                .get(LOCATION)
                .filter(|_| redirect::is_followed(status))
                .and_then(|v| v.to_str().ok());
            let Some(location) = location else {
                break response;
            };
            if hops >= self.max_redirects {
                return Err(redirect::too_many(self.max_redirects));
            }
            hops += 1;
            at = redirect::resolve(&at, location)?.into();
            ask = redirect::after(status, &self.verb.method, ask);
        };
        let status = response.status().as_u16();
        let validators = conditional::of(response.headers());
        if !response.status().is_success() {
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            return Ok(Response {
                status,
                body: Default::default(),
                retry_after,
                link: None,
                url: None,
                validators,
                charge: None,
            });
        }
        if let Some(len) = response.content_length()
            && len > max_body
        {
            return Err(ClientError::TooLarge(len));
        }
        let mut link = None;
        for value in response.headers().get_all(LINK) {
            if let Ok(value) = value.to_str() {
                super::add_link(&mut link, value);
            }
        }
        let mut body = BytesMut::new();
        let mut charge = Charge::new(&self.budget);
        while let Some(chunk) = response.chunk().await.map_err(|e| transport(e, url))? {
            let len = body.len() + chunk.len();
            if len as u64 > max_body {
                return Err(ClientError::TooLarge(len as u64));
            }
            charge.cover(len).await;
            body.extend_from_slice(&chunk);
        }
        Ok(Response {
            status,
            body: body.freeze(),
            retry_after: None,
            link,
            url: (at != original).then_some(at),
            validators,
            charge: Some(charge),
        })
    }

    /// The request `ask` says for `url`, without the `--header`s.
    fn request(
        &self,
        client: &reqwest::Client,
        url: &str,
        ask: Ask<'_>,
    ) -> reqwest::RequestBuilder {
        let Ask::Own(body) = ask else {
            return self.accept(client.get(url));
        };
        let request = self.accept(client.request(self.verb.method.clone(), url));
        let request = match &self.verb.content_type {
            Some(kind) => request.header(CONTENT_TYPE, kind.clone()),
            None => request,
        };
        let request = match body.validators() {
            Some(conditions) => {
                let mut headers = HeaderMap::new();
                conditional::insert(conditions, &mut headers);
                request.headers(headers)
            }
            None => request,
        };
        if self.verb.framed {
            request.body(body.bytes().to_vec())
        } else {
            request
        }
    }

    /// `request` with the `Accept` of `--data-json`, if any.
    fn accept(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.verb.accept {
            Some(accept) => request.header(ACCEPT, accept.clone()),
            None => request,
        }
    }
}

/// What a reqwest error for a request to `url` means for another attempt: connect
/// errors, timeouts and cut-off bodies pass; bad URLs and untrusted certificates do not.
fn transport(e: reqwest::Error, url: &str) -> ClientError {
    if let Some(tls) = tls::rustls_error(&e) {
        let host =
            url::Url::parse(url).map_or_else(|_| url.to_owned(), |u| u.authority().to_owned());
        return super::transport::tls_client_error(tls, &host);
    }
    let kind: fn(String) -> ClientError = if e.is_builder() {
        ClientError::BadUrl
    } else if e.is_redirect() {
        ClientError::Redirect
    } else if e.is_connect() {
        ClientError::Connect
    } else if e.is_timeout() {
        ClientError::Timeout
    } else if e.is_body() || e.is_decode() || e.is_request() {
        ClientError::Read
    } else {
        ClientError::Other
    };
    kind(one_line(&e.without_url()))
}
