//! gRPC-Web, for browsers: the connector's own service and the health
//! service answer gRPC-Web requests (HTTP/1.1 or HTTP/2, `application/
//! grpc-web` and `application/grpc-web-text`, translated by `tonic-web`)
//! besides native gRPC, and answer CORS preflights for the origins allowed.
//!
//! Off by default: [`GrpcWeb`] turns it on. CORS is no access control
//! here: every call is signed with the caller's own key and no cookie or
//! other ambient credential exists, so a page of any origin that holds a
//! key could use the connector through a proxy anyway. The allow-list only
//! decides which web pages browsers let call the connector directly.

use crate::auth::{NONCE_HEADER, PUBLIC_KEY_HEADER, SIGNATURE_HEADER};
use crate::mailbox::REASON_HEADER;
use http::{HeaderName, HeaderValue, Method};
use std::time::Duration;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// How long a browser may cache a preflight's answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// Request headers a gRPC-Web call of the connector's API carries.
const REQUEST_HEADERS: [&str; 7] = [
    "content-type",
    "x-grpc-web",
    "x-user-agent",
    "grpc-timeout",
    PUBLIC_KEY_HEADER,
    NONCE_HEADER,
    SIGNATURE_HEADER,
];

/// Response headers a page must be able to read: the status (a refusal
/// before any message comes in the headers, not the body's trailers) and
/// the refusal reason.
const RESPONSE_HEADERS: [&str; 4] = [
    "grpc-status",
    "grpc-message",
    "grpc-status-details-bin",
    REASON_HEADER,
];

/// Which web pages (origins) may call the connector from a browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// Any origin (`Access-Control-Allow-Origin: *`).
    Any,
    /// These origins exactly (`scheme://host[:port]`, as browsers send
    /// them); none: only pages of the connector's own origin.
    List(Vec<String>),
}

/// gRPC-Web on, with the CORS policy for browsers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcWeb {
    origins: AllowedOrigins,
}

/// An origin that cannot be one.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid CORS origin {origin:?}: give scheme://host[:port] (for example \
     https://wallet.example), or * for any origin"
)]
pub struct OriginError {
    origin: String,
}

impl GrpcWeb {
    /// gRPC-Web for pages of `origins`: each `scheme://host[:port]`
    /// (`http` or `https`, no path; compared in lower case, as browsers
    /// send them), or a single `*` for any origin.
    ///
    /// ```
    /// use confidant_connector::web::GrpcWeb;
    ///
    /// let web = GrpcWeb::new(["https://wallet.example", "http://127.0.0.1:8080"])?;
    /// assert!(GrpcWeb::new(["https://wallet.example/app"]).is_err());
    /// # Ok::<(), confidant_connector::web::OriginError>(())
    /// ```
    pub fn new<I, S>(origins: I) -> Result<Self, OriginError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        // Browsers send origins in lower case; the match is exact.
        let origins: Vec<String> = origins
            .into_iter()
            .map(|origin| origin.into().to_ascii_lowercase())
            .collect();
        if origins.iter().any(|origin| origin == "*") {
            if origins.len() > 1 {
                return Err(OriginError {
                    origin: origins.join(","),
                });
            }
            return Ok(Self::any_origin());
        }
        for origin in &origins {
            if !is_origin(origin) {
                return Err(OriginError {
                    origin: origin.clone(),
                });
            }
        }
        Ok(Self {
            origins: AllowedOrigins::List(origins),
        })
    }

    /// gRPC-Web for pages of any origin.
    pub fn any_origin() -> Self {
        Self {
            origins: AllowedOrigins::Any,
        }
    }

    /// The origins allowed.
    pub fn origins(&self) -> &AllowedOrigins {
        &self.origins
    }

    /// The CORS layer of this policy.
    pub(crate) fn cors(&self) -> CorsLayer {
        let allow_origin = match &self.origins {
            AllowedOrigins::Any => AllowOrigin::any(),
            AllowedOrigins::List(origins) => AllowOrigin::list(
                origins
                    .iter()
                    .filter_map(|origin| HeaderValue::from_str(origin).ok()),
            ),
        };
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods([Method::POST])
            .allow_headers(REQUEST_HEADERS.map(HeaderName::from_static))
            .expose_headers(RESPONSE_HEADERS.map(HeaderName::from_static))
            .max_age(PREFLIGHT_MAX_AGE)
    }
}

/// `scheme://host[:port]` with an http(s) scheme, a host of the characters
/// a host may have, and nothing after it.
fn is_origin(text: &str) -> bool {
    let Some(rest) = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
    else {
        return false;
    };
    let (host, port) = match rest.rsplit_once(':') {
        // An IPv6 literal's colons are inside its brackets.
        Some((host, port)) if !port.contains(']') => (host, Some(port)),
        _ => (rest, None),
    };
    let host_ok = !host.is_empty()
        && host.chars().all(|character| {
            character.is_ascii_alphanumeric() || matches!(character, '.' | '-' | '[' | ']' | ':')
        });
    let port_ok = port.is_none_or(|port| port.parse::<u16>().is_ok_and(|port| port != 0));
    host_ok && port_ok
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn origins_are_scheme_host_and_port_only() {
        for good in [
            "https://wallet.example",
            "http://127.0.0.1:8080",
            "http://[::1]:3000",
            "https://a-b.example:443",
        ] {
            assert!(GrpcWeb::new([good]).is_ok(), "{good}");
        }
        for bad in [
            "wallet.example",
            "https://wallet.example/",
            "https://wallet.example/app",
            "ftp://wallet.example",
            "https://",
            "https://wallet.example:0",
            "https://wallet.example:99999",
            "https://wallet example",
            "null",
        ] {
            assert!(GrpcWeb::new([bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn origins_are_kept_in_lower_case() {
        assert_eq!(
            GrpcWeb::new(["HTTPS://Wallet.Example:8443"])
                .unwrap()
                .origins(),
            &AllowedOrigins::List(vec!["https://wallet.example:8443".to_owned()])
        );
    }

    #[test]
    fn a_star_means_any_origin_and_stands_alone() {
        assert_eq!(GrpcWeb::new(["*"]).unwrap().origins(), &AllowedOrigins::Any);
        assert!(GrpcWeb::new(["*", "https://wallet.example"]).is_err());
        assert_eq!(
            GrpcWeb::new(Vec::<String>::new()).unwrap().origins(),
            &AllowedOrigins::List(Vec::new())
        );
    }
}
