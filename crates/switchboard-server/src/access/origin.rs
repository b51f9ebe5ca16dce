//! Which web pages may open connections here: a browser names the page's
//! origin in `Origin`, and a page of another site is refused unless
//! `--allowed-origins` lists it. Clients that send no `Origin` (not
//! browsers) and pages of the server's own origin are always allowed.

use http::{HeaderMap, HeaderValue, Uri, header};

/// `--allowed-origins`, and how to tell the server's own origin.
#[derive(Debug, Clone)]
pub struct OriginPolicy {
    allowed: Allowed,
    /// `--trust-proxy`: `X-Forwarded-Proto` and `X-Forwarded-Host` say
    /// what the browser connected to.
    trust_proxy: bool,
    /// Whether this port serves TLS: the scheme of a request's own origin.
    tls: bool,
}

#[derive(Debug, Clone)]
enum Allowed {
    Any,
    /// Exact origins, lowercased, with no trailing slash.
    List(Vec<String>),
}

impl OriginPolicy {
    pub fn new(origins: &[String], trust_proxy: bool, tls: bool) -> Self {
        let allowed = if origins.iter().any(|o| o.trim() == "*") {
            Allowed::Any
        } else {
            Allowed::List(
                origins
                    .iter()
                    .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
                    .filter(|o| !o.is_empty())
                    .collect(),
            )
        };
        OriginPolicy {
            allowed,
            trust_proxy,
            tls,
        }
    }

    /// Whether a request with these headers may be served: no `Origin`,
    /// the server's own, or one allowed. `null` (a sandboxed page, a file)
    /// is another origin that no list names.
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return true;
        };
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        match &self.allowed {
            Allowed::Any => true,
            Allowed::List(list) => {
                self.is_same_origin(origin, headers)
                    || list
                        .iter()
                        .any(|allowed| allowed.eq_ignore_ascii_case(origin))
            }
        }
    }

    /// The `Access-Control-Allow-Origin` for a cross-origin request that
    /// may read the answer: its own `Origin`, when allowed.
    pub fn cors_origin(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        let origin = headers.get(header::ORIGIN)?;
        self.allows(headers).then(|| origin.clone())
    }

    /// Whether `origin` is the origin the request was sent to: same
    /// scheme, host and port.
    fn is_same_origin(&self, origin: &str, headers: &HeaderMap) -> bool {
        let Some(origin) = Site::parse(origin) else {
            return false;
        };
        let forwarded = |name: &str| {
            self.trust_proxy
                .then(|| headers.get(name)?.to_str().ok())
                .flatten()
                // A chain of proxies lists the first one's first.
                .map(|v| v.split(',').next().unwrap_or(v).trim())
        };
        let scheme =
            forwarded("x-forwarded-proto").unwrap_or(if self.tls { "https" } else { "http" });
        let Some(host) =
            forwarded("x-forwarded-host").or_else(|| headers.get(header::HOST)?.to_str().ok())
        else {
            return false;
        };
        Site::parse(&format!("{scheme}://{host}")).is_some_and(|own| own == origin)
    }
}

/// Lets a page of `origin` read the response, with credentials.
pub fn allow_cors(headers: &mut HeaderMap, origin: HeaderValue) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
}

/// An origin's scheme, host and port (the scheme's default if not given).
#[derive(Debug, PartialEq, Eq)]
struct Site {
    scheme: String,
    host: String,
    port: u16,
}

impl Site {
    fn parse(origin: &str) -> Option<Site> {
        let uri: Uri = origin.parse().ok()?;
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" | "ws" => 80,
            "https" | "wss" => 443,
            _ => return None,
        };
        Some(Site {
            host: uri.host()?.to_ascii_lowercase(),
            port: uri.port_u16().unwrap_or(default_port),
            scheme,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn no_origin_and_the_same_origin_are_allowed_others_are_not() {
        let policy = OriginPolicy::new(&[], false, false);
        assert!(policy.allows(&headers(&[("host", "chat.example:8080")])));
        assert!(policy.allows(&headers(&[
            ("host", "chat.example:8080"),
            ("origin", "http://Chat.Example:8080")
        ])));
        assert!(policy.allows(&headers(&[
            ("host", "chat.example"),
            ("origin", "http://chat.example:80")
        ])));
        for other in [
            "http://evil.example:8080",
            "https://chat.example:8080",
            "http://chat.example:8081",
            "http://chat.example",
            "null",
            "chat.example:8080",
        ] {
            assert!(
                !policy.allows(&headers(&[
                    ("host", "chat.example:8080"),
                    ("origin", other)
                ])),
                "{other}"
            );
        }
    }

    #[test]
    fn a_listed_origin_or_any_with_a_star() {
        let listed = OriginPolicy::new(&["https://app.example/".into()], false, false);
        let request = |origin| headers(&[("host", "chat.example"), ("origin", origin)]);
        assert!(listed.allows(&request("https://app.example")));
        assert!(!listed.allows(&request("https://app.example:8443")));
        assert!(!listed.allows(&request("null")));
        let any = OriginPolicy::new(&["*".into()], false, false);
        assert!(any.allows(&request("https://anything.example")));
        assert_eq!(
            listed.cors_origin(&request("https://app.example")),
            Some(HeaderValue::from_static("https://app.example"))
        );
        assert_eq!(listed.cors_origin(&request("https://evil.example")), None);
    }

    #[test]
    fn behind_a_trusted_proxy_the_forwarded_scheme_and_host_count() {
        let request = headers(&[
            ("host", "127.0.0.1:8080"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "chat.example"),
            ("origin", "https://chat.example"),
        ]);
        assert!(OriginPolicy::new(&[], true, false).allows(&request));
        assert!(!OriginPolicy::new(&[], false, false).allows(&request));
        let tls = headers(&[("host", "chat.example"), ("origin", "https://chat.example")]);
        assert!(OriginPolicy::new(&[], false, true).allows(&tls));
        assert!(!OriginPolicy::new(&[], false, false).allows(&tls));
    }
}
