//! Which forward proxy each request goes through, decided once for the run from
//! `--proxy`, `--noproxy` and the environment, as curl decides it:
//!
//! - `--proxy URL` is the proxy of every request; otherwise `http_proxy`/`HTTP_PROXY`
//!   for `http://` targets, `https_proxy`/`HTTPS_PROXY` for `https://` ones, and
//!   `all_proxy`/`ALL_PROXY` for both when the scheme's own is not set (the lowercase
//!   name first);
//! - `--noproxy LIST` names the hosts reached directly; otherwise `no_proxy`/`NO_PROXY`.
//!
//! A proxy is an `http://` URL, with `user:password@` when it asks for credentials
//! (they go in `Proxy-Authorization`, and are never shown).

use base64::Engine as _;
use shared::http_url::redact_password;
use shared::proxy::{NoProxy, Proxy, ProxyConfig};

use crate::cli::ProxyArgs;
use crate::error::{UsageError, usage};

/// The run's proxies; `var` reads the environment.
pub fn settings(
    args: &ProxyArgs,
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<ProxyConfig, UsageError> {
    let env = |lower: &str| {
        [lower.to_owned(), lower.to_ascii_uppercase()]
            .into_iter()
            .find_map(|name| {
                var(&name)
                    .filter(|v| !v.trim().is_empty())
                    .map(|v| (name, v))
            })
    };
    let (http, https) = match &args.proxy {
        Some(url) => {
            let proxy = parse(url).map_err(|e| usage("--proxy", e))?;
            (Some(proxy.clone()), Some(proxy))
        }
        None => {
            let all = env("all_proxy");
            let from = |found: Option<(String, String)>| match found.or_else(|| all.clone()) {
                Some((name, url)) => parse(&url)
                    .map(Some)
                    .map_err(|e| usage("--proxy", format!("{name}: {e}"))),
                None => Ok(None),
            };
            (from(env("http_proxy"))?, from(env("https_proxy"))?)
        }
    };
    let no_proxy = match &args.noproxy {
        Some(list) => NoProxy::parse(list),
        None => NoProxy::parse(&env("no_proxy").map(|(_, v)| v).unwrap_or_default()),
    };
    Ok(ProxyConfig {
        http,
        https,
        no_proxy,
    })
}

/// An `http://[user:password@]host[:port]` proxy URL (port 1080 by default, as curl).
fn parse(text: &str) -> Result<Proxy, String> {
    let shown = redact_password(text).into_owned();
    let with_scheme = match text.contains("://") {
        true => text.to_owned(),
        false => format!("http://{text}"),
    };
    let url = url::Url::parse(&with_scheme).map_err(|e| format!("`{shown}`: {e}"))?;
    if url.scheme() != "http" {
        return Err(format!(
            "`{shown}`: only http:// proxies are supported (https:// targets go through them with CONNECT)"
        ));
    }
    let host = url
        .host_str()
        .ok_or_else(|| format!("`{shown}` has no host"))?;
    let port = url.port().unwrap_or(1080);
    let authorization = match (url.username(), url.password()) {
        ("", None) => None,
        (user, password) => {
            let decode = |s: &str| {
                url::form_urlencoded::parse(format!("x={s}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default()
            };
            let pair = format!("{}:{}", decode(user), decode(password.unwrap_or("")));
            let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
            Some(format!("Basic {encoded}"))
        }
    };
    Ok(Proxy {
        authority: format!("{host}:{port}"),
        url: with_scheme.clone(),
        shown: redact_password(&with_scheme).into_owned(),
        authorization,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(args: ProxyArgs, vars: &[(&str, &str)]) -> Result<ProxyConfig, UsageError> {
        let lookup = |name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        };
        settings(&args, &lookup)
    }

    #[test]
    fn the_environment_is_read_as_curl_reads_it() {
        let c = resolve(
            ProxyArgs::default(),
            &[
                ("http_proxy", "http://low:1"),
                ("HTTP_PROXY", "http://up:2"),
                ("ALL_PROXY", "all:3"),
                ("NO_PROXY", "localhost"),
            ],
        )
        .unwrap();
        assert_eq!(c.http.unwrap().authority, "low:1");
        assert_eq!(c.https.unwrap().authority, "all:3");
        assert!(c.no_proxy.matches("localhost"));
        let none = resolve(ProxyArgs::default(), &[]).unwrap();
        assert!(none.is_direct());
    }

    #[test]
    fn flags_win_over_the_environment() {
        let args = ProxyArgs {
            proxy: Some("http://u:p%40ss@proxy:3128".into()),
            noproxy: Some("example.com".into()),
        };
        let c = resolve(args, &[("https_proxy", "http://env:1"), ("no_proxy", "*")]).unwrap();
        let https = c.https.as_ref().unwrap();
        assert_eq!(https.authority, "proxy:3128");
        // base64("u:p@ss")
        assert_eq!(https.authorization.as_deref(), Some("Basic dTpwQHNz"));
        assert_eq!(https.shown, "http://u:***@proxy:3128");
        assert!(c.no_proxy.matches("api.example.com") && !c.no_proxy.matches("other"));
    }

    #[test]
    fn only_http_proxies_are_taken_and_the_error_hides_the_password() {
        let args = ProxyArgs {
            proxy: Some("socks5://u:secret@h:1".into()),
            noproxy: None,
        };
        let err = resolve(args, &[]).unwrap_err().to_string();
        assert!(
            err.contains("only http://") && !err.contains("secret"),
            "{err}"
        );
        let err = resolve(ProxyArgs::default(), &[("HTTPS_PROXY", "https://h:1")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("HTTPS_PROXY"), "{err}");
    }
}
