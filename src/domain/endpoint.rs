//! Which Web Push endpoints the relay will ever send to (interface.md §9).
//!
//! A Web Push endpoint is a URL chosen by whoever registers, so it is
//! hostile input: unchecked, it would make the relay POST to any host —
//! an internal admin API, a cloud metadata address, a port scan. An
//! endpoint is admitted only if it is `https`, carries no user info, and
//! its host matches `webpush.allowed_hosts` (exact names, or `*.domain`
//! for subdomains). A host that is an address, or resolves to one, must be
//! public — not loopback, private, link-local, shared, multicast or
//! unspecified — unless the host is listed exactly (tests list their
//! mock's `127.0.0.1` that way). Registration checks the URL
//! (`AllowedHosts::admit`); every send checks it again, and checks the
//! resolved addresses (`provider::webpush`), since DNS can change after
//! registration.

use super::FieldError;
use std::net::IpAddr;

/// `webpush.allowed_hosts`, parsed.
#[derive(Clone, Debug, Default)]
pub struct AllowedHosts {
    /// Hosts listed by name or address (lower case; IPv6 without brackets).
    exact: Vec<String>,
    /// `*.example.com` entries as `.example.com`.
    suffixes: Vec<String>,
}

/// An admitted endpoint's host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointHost {
    /// Lower case; an IPv6 address without brackets.
    pub name: String,
    /// Listed exactly: it may be (or resolve to) a non-public address.
    pub listed_exactly: bool,
}

impl AllowedHosts {
    /// From the configured entries (already checked by `config`).
    pub fn new<S: AsRef<str>>(entries: &[S]) -> Self {
        let mut me = Self::default();
        for e in entries {
            let e = e.as_ref().trim().to_ascii_lowercase();
            match e.strip_prefix("*.") {
                Some(domain) => me.suffixes.push(format!(".{domain}")),
                None => me.exact.push(e.trim_start_matches('[').trim_end_matches(']').to_string()),
            }
        }
        me
    }

    /// Whether `host` (a name, or an address without brackets) is listed
    /// exactly: then it may resolve to a non-public address.
    pub fn lists_exactly(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.');
        self.exact.iter().any(|h| h.eq_ignore_ascii_case(host))
    }

    /// The host of `endpoint` if the relay may send there; otherwise a 400
    /// `invalid_subscription` on `field` that names the host (never the
    /// endpoint's path: that is the subscription's secret part).
    pub fn admit(&self, endpoint: &str, field: &'static str) -> Result<EndpointHost, FieldError> {
        let bad = |m: String| FieldError::new(field, "invalid_subscription", m);
        let url = url::Url::parse(endpoint).map_err(|_| bad("the Web Push endpoint is not a URL".into()))?;
        if url.scheme() != "https" {
            return Err(bad("the Web Push endpoint must be an https:// URL".into()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("the Web Push endpoint must not carry user info".into()));
        }
        let (name, ip) = match url.host() {
            Some(url::Host::Domain(d)) => (d.trim_end_matches('.').to_ascii_lowercase(), None),
            Some(url::Host::Ipv4(a)) => (a.to_string(), Some(IpAddr::V4(a))),
            Some(url::Host::Ipv6(a)) => (a.to_string(), Some(IpAddr::V6(a))),
            None => return Err(bad("the Web Push endpoint has no host".into())),
        };
        let listed_exactly = self.lists_exactly(&name);
        // An address is admitted only when listed as such: never by a wildcard.
        let by_suffix = ip.is_none() && self.suffixes.iter().any(|s| name.ends_with(s.as_str()) && name.len() > s.len());
        if !listed_exactly && !by_suffix {
            return Err(bad(format!("Web Push host {name} is not an allowed push service (webpush.allowed_hosts)")));
        }
        Ok(EndpointHost { name, listed_exactly })
    }
}

/// Whether the relay may reach `ip` for a host not listed exactly: not
/// loopback, private (RFC 1918, IPv6 unique local), link-local, shared
/// (RFC 6598), multicast, broadcast, unspecified, documentation or
/// benchmarking ranges, and not an IPv4-mapped/compatible form of one.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            !(a.is_loopback()
                || a.is_private()
                || a.is_link_local()
                || a.is_multicast()
                || a.is_broadcast()
                || a.is_unspecified()
                || a.is_documentation()
                || o[0] == 0
                || o[0] >= 240
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || (o[0] == 198 && (o[1] & 0xfe) == 18)
                || (o[0] == 192 && o[1] == 0 && o[2] == 0))
        }
        IpAddr::V6(a) => {
            if let Some(v4) = a.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = a.segments();
            !(a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] & 0xffc0) == 0xfec0
                || (s[0] == 0x2001 && s[1] == 0x0db8)
                || (s[0] == 0 && s[1] == 0 && s[2] == 0 && s[3] == 0 && s[4] == 0 && s[5] == 0)
                || (s[0] == 0x64 && s[1] == 0xff9b))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts() -> AllowedHosts {
        AllowedHosts::new(&["fcm.googleapis.com", "*.push.apple.com", "127.0.0.1", "[::1]", "push.internal"])
    }

    #[test]
    fn listed_names_and_subdomains_of_wildcards_are_admitted() {
        let h = hosts();
        assert_eq!(h.admit("https://fcm.googleapis.com/fcm/send/abc", "f").unwrap().name, "fcm.googleapis.com");
        assert!(!h.admit("https://web.push.apple.com/QO…", "f").unwrap().listed_exactly);
        assert!(h.admit("https://push.internal:8443/x", "f").unwrap().listed_exactly);
        assert!(h.admit("https://127.0.0.1:4443/x", "f").unwrap().listed_exactly);
        assert!(h.admit("https://[::1]:4443/x", "f").is_ok());
    }

    #[test]
    fn anything_else_is_refused_naming_the_host_but_not_the_path() {
        let h = hosts();
        for (endpoint, words) in [
            ("http://fcm.googleapis.com/fcm/send/secretpath", "https"),
            ("https://evil.example/fcm/send/secretpath", "evil.example"),
            ("https://push.apple.com/secretpath", "push.apple.com"),
            ("https://evilpush.apple.com.evil.example/secretpath", "evilpush.apple.com.evil.example"),
            ("https://user:pw@fcm.googleapis.com/secretpath", "user info"),
            ("https://10.0.0.1/secretpath", "10.0.0.1"),
            ("https://169.254.169.254/secretpath", "169.254.169.254"),
            ("https://[::ffff:127.0.0.1]/secretpath", "::ffff:127.0.0.1"),
            ("not a url", "not a URL"),
        ] {
            let e = h.admit(endpoint, "subscription").unwrap_err();
            assert_eq!((e.field, e.code), ("subscription", "invalid_subscription"), "{endpoint}");
            assert!(e.message.contains(words), "{endpoint}: {}", e.message);
            assert!(!e.message.contains("secretpath"), "{endpoint}: {}", e.message);
        }
    }

    #[test]
    fn public_means_not_internal() {
        for ip in ["8.8.8.8", "142.250.74.42", "2a00:1450:4001:80b::200a"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:10.0.0.1",
            "::",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
    }
}
