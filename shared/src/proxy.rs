//! Forward proxies: which one a request goes through, if any. The coordinator decides
//! the settings once (`--proxy`, `--noproxy`, the `*_PROXY` variables); every client of
//! every worker asks [`ProxyConfig::for_target`] per request, so that all paths agree.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// The proxies of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyConfig {
    /// The proxy for `http://` targets (requests in absolute form).
    pub http: Option<Proxy>,
    /// The proxy for `https://` targets (a tunnel opened with `CONNECT`).
    pub https: Option<Proxy>,
    /// Hosts reached directly.
    pub no_proxy: NoProxy,
}

impl ProxyConfig {
    /// The proxy a request to `host` (no port; IPv6 with or without brackets) goes
    /// through, if any.
    pub fn for_target(&self, tls: bool, host: &str) -> Option<&Proxy> {
        let proxy = match tls {
            true => self.https.as_ref(),
            false => self.http.as_ref(),
        }?;
        (!self.no_proxy.matches(host)).then_some(proxy)
    }

    /// Whether no request goes through a proxy.
    pub fn is_direct(&self) -> bool {
        self.http.is_none() && self.https.is_none()
    }
}

/// One HTTP proxy.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proxy {
    /// `host:port` to connect to.
    pub authority: String,
    /// The whole URL, credentials included (for clients that take a URL).
    pub url: String,
    /// The URL as it may be shown: its password replaced.
    pub shown: String,
    /// The `Proxy-Authorization` header value, when the URL has credentials.
    pub authorization: Option<String>,
}

/// Never the credentials.
impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("url", &self.shown)
            .field("authorization", &self.authorization.as_ref().map(|_| "***"))
            .finish()
    }
}

/// Hosts that bypass the proxy, as curl reads `NO_PROXY` and `--noproxy`: a
/// comma-separated list of host names (each also covers its subdomains; a leading dot
/// is the same), IP addresses, CIDR ranges (`10.0.0.0/8`), or `*` for every host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoProxy {
    /// Every host bypasses the proxy.
    all: bool,
    /// Lowercase names, without a leading dot.
    names: Vec<String>,
    /// Addresses and the number of leading bits that must match.
    ranges: Vec<(IpAddr, u8)>,
}

impl NoProxy {
    /// Reads a list; entries that are neither names nor addresses are kept as names
    /// (they then match nothing a URL holds).
    pub fn parse(list: &str) -> NoProxy {
        let mut no = NoProxy::default();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if entry == "*" {
                no.all = true;
                continue;
            }
            let bare = entry.trim_start_matches('[').trim_end_matches(']');
            let (addr, bits) = match bare.split_once('/') {
                Some((addr, bits)) => (addr, bits.parse::<u8>().ok()),
                None => (bare, None),
            };
            if let Ok(ip) = addr.parse::<IpAddr>() {
                let max = if ip.is_ipv4() { 32 } else { 128 };
                no.ranges.push((ip, bits.unwrap_or(max).min(max)));
                continue;
            }
            let name = entry.trim_start_matches('.').to_ascii_lowercase();
            no.names.push(name.trim_end_matches('.').to_owned());
        }
        no
    }

    /// Whether `host` bypasses the proxy.
    pub fn matches(&self, host: &str) -> bool {
        if self.all {
            return true;
        }
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return self
                .ranges
                .iter()
                .any(|(net, bits)| in_range(ip, *net, *bits));
        }
        let host = bare.trim_end_matches('.').to_ascii_lowercase();
        self.names.iter().any(|name| {
            host == *name
                || host
                    .strip_suffix(name.as_str())
                    .is_some_and(|rest| rest.ends_with('.'))
        })
    }
}

fn in_range(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    let (ip, net, width) = match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(a.to_bits()), u128::from(b.to_bits()), 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (a.to_bits(), b.to_bits(), 128),
        _ => return false,
    };
    let shift = width - u32::from(bits);
    shift >= width || (ip >> shift) == (net >> shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_proxy_matches_names_their_subdomains_addresses_and_ranges() {
        let no = NoProxy::parse(" example.com, .internal ,10.0.0.0/8, ::1, 192.168.1.7");
        for host in [
            "example.com",
            "API.Example.com",
            "a.b.internal",
            "internal",
            "10.2.3.4",
            "[::1]",
            "192.168.1.7",
        ] {
            assert!(no.matches(host), "{host}");
        }
        for host in [
            "badexample.com",
            "example.com.evil",
            "11.0.0.1",
            "192.168.1.8",
            "::2",
        ] {
            assert!(!no.matches(host), "{host}");
        }
        assert!(NoProxy::parse("*").matches("anything"));
        assert!(!NoProxy::parse("").matches("localhost"));
        assert!(NoProxy::parse("0.0.0.0/0").matches("8.8.8.8"));
    }

    #[test]
    fn each_scheme_has_its_own_proxy_and_no_proxy_wins() {
        let proxy = |name: &str| Proxy {
            authority: format!("{name}:3128"),
            url: format!("http://u:secret@{name}:3128"),
            shown: format!("http://u:***@{name}:3128"),
            authorization: Some("Basic xyz".into()),
        };
        let config = ProxyConfig {
            http: Some(proxy("plain")),
            https: Some(proxy("tunnel")),
            no_proxy: NoProxy::parse("localhost"),
        };
        assert_eq!(
            config.for_target(false, "h").unwrap().authority,
            "plain:3128"
        );
        assert_eq!(
            config.for_target(true, "h").unwrap().authority,
            "tunnel:3128"
        );
        assert!(config.for_target(true, "localhost").is_none());
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("secret") && !shown.contains("xyz"),
            "{shown}"
        );
    }
}
