//! Which `Host` a request may name, and the headers every answer carries.
//!
//! A web page can point a name it controls at 127.0.0.1 (DNS rebinding)
//! and then read a `--no-auth` tally on the reader's machine as if it were
//! the page's own origin. Such a request still names the page's host, so a
//! request is served only if its `Host` is an IP literal, `localhost`, or
//! a name listed in `allowed_hosts`. A request without `Host` (HTTP/1.0)
//! is served: a browser always sends one.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use axum::http::{header, HeaderMap, HeaderName, HeaderValue};

/// Most characters of a refused `Host` quoted back: the value is the
/// caller's choice.
pub const SHOWN_HOST_CHARS_MAX: usize = 100;

/// Headers on every answer: no content-type guessing, no framing by other
/// sites, no referrer sent on from the dashboard.
const SECURITY_HEADERS: [(HeaderName, &str); 3] =
    [(header::X_CONTENT_TYPE_OPTIONS, "nosniff"), (header::X_FRAME_OPTIONS, "DENY"), (header::REFERRER_POLICY, "no-referrer")];

/// The `Host` names a listener serves.
#[derive(Clone, Debug)]
pub enum Hosts {
    /// Any: for a listener a browser has no use for (the metrics of `tally
    /// run`), scraped by whatever name the operator gave the machine.
    Any,
    /// IP literals, `localhost`, and these names (lowercase).
    Listed(Arc<[String]>),
}

impl Hosts {
    /// IP literals, `localhost` and `names` (compared without case).
    pub fn listed(names: &[String]) -> Hosts {
        Hosts::Listed(names.iter().map(|name| name.to_ascii_lowercase()).collect())
    }

    /// Why a request with these headers is not served here, if it is not.
    pub fn refusal(&self, headers: &HeaderMap) -> Option<String> {
        let Hosts::Listed(names) = self else { return None };
        let value = headers.get(header::HOST)?;
        let allowed = value.to_str().ok().and_then(name_of).is_some_and(|name| {
            name.parse::<IpAddr>().is_ok() || name.eq_ignore_ascii_case("localhost") || names.iter().any(|n| n.eq_ignore_ascii_case(name))
        });
        if allowed {
            return None;
        }
        let shown: String = String::from_utf8_lossy(value.as_bytes()).chars().take(SHOWN_HOST_CHARS_MAX).collect();
        Some(format!("{shown:?} is not a name of this server: use an IP address or localhost, or add the name to allowed_hosts"))
    }
}

/// The host of a `Host` value, without its port and, for IPv6, brackets;
/// `None` if the value is not of that form.
fn name_of(value: &str) -> Option<&str> {
    if let Some(rest) = value.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let port_ok = after.is_empty() || after.strip_prefix(':').is_some_and(is_port);
        return (port_ok && inside.parse::<Ipv6Addr>().is_ok()).then_some(inside);
    }
    let name = match value.rsplit_once(':') {
        Some((name, port)) if is_port(port) => name,
        Some(_) => return None,
        None => value,
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    (!name.is_empty() && !name.contains(':')).then_some(name)
}

fn is_port(text: &str) -> bool {
    !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit())
}

/// `headers` with every security header the answer did not set itself.
pub fn add_security_headers(headers: &mut HeaderMap) {
    for (name, value) in SECURITY_HEADERS {
        headers.entry(name).or_insert(HeaderValue::from_static(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(hosts: &Hosts, host: &str) -> bool {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        hosts.refusal(&headers).is_some()
    }

    #[test]
    fn ip_literals_localhost_and_listed_names_are_served_others_refused() {
        let hosts = Hosts::listed(&["Tally.Example.com".to_owned()]);
        for host in
            ["127.0.0.1", "127.0.0.1:8080", "[::1]:8080", "[::1]", "localhost", "LOCALHOST:1", "localhost.", "tally.example.com:443"]
        {
            assert!(!refused(&hosts, host), "{host} is served");
        }
        for host in
            ["evil.example", "evil.example:8080", "localhost.evil.example", "::1", "[::1]x", "127.0.0.1:port", "", ":80", "[nope]:1"]
        {
            assert!(refused(&hosts, host), "{host} is refused");
        }
        assert!(hosts.refusal(&HeaderMap::new()).is_none(), "no Host (HTTP/1.0) is served");
        assert!(!refused(&Hosts::Any, "evil.example"));
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_str(&"x".repeat(500)).unwrap());
        let reason = hosts.refusal(&headers).unwrap();
        assert!(reason.starts_with(&format!("\"{}\" is not a name", "x".repeat(SHOWN_HOST_CHARS_MAX))), "{reason}");
    }

    #[test]
    fn security_headers_are_added_unless_set() {
        let mut headers = HeaderMap::new();
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("SAMEORIGIN"));
        add_security_headers(&mut headers);
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(headers[header::X_FRAME_OPTIONS], "SAMEORIGIN");
        assert_eq!(headers[header::REFERRER_POLICY], "no-referrer");
    }
}
