//! The WebSocket upgrade on `GET /ws`: checks the request (RFC 6455 §4.2.1), the Origin against
//! `allowed_origins`, picks the STOMP subprotocol, and builds the `101` answer. After the answer
//! hyper hands back the socket and `transport::upgrade` gives it to its socket task
//! (`transport::driver`).

use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Method, StatusCode};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// STOMP subprotocols in order of preference (the highest version offered wins).
pub const SUBPROTOCOLS: [&str; 3] = ["v12.stomp", "v11.stomp", "v10.stomp"];

/// A refused upgrade: the HTTP status, a plain-text explanation, and the metrics label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub status: StatusCode,
    pub message: &'static str,
    pub reason: &'static str,
}

/// What an accepted upgrade answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub accept_key: String,
    pub subprotocol: Option<&'static str>,
}

fn refused(status: StatusCode, message: &'static str, reason: &'static str) -> Refused {
    Refused { status, message, reason }
}

fn header_has_token(headers: &HeaderMap, name: &str, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Checks an upgrade request. `allowed_origins` as in the config: empty means the request's
/// own host (and clients without an Origin header), `*` means everyone.
pub fn check(method: &Method, headers: &HeaderMap, allowed_origins: &[String]) -> Result<Accepted, Refused> {
    check_on(method, headers, allowed_origins, "http")
}

/// [`check`] for a board whose own pages are served with `own_scheme` (`https` with `[tls]`).
pub fn check_on(
    method: &Method,
    headers: &HeaderMap,
    allowed_origins: &[String],
    own_scheme: &str,
) -> Result<Accepted, Refused> {
    if method != Method::GET {
        return Err(refused(StatusCode::METHOD_NOT_ALLOWED, "WebSocket upgrades use GET", "bad_upgrade"));
    }
    if !header_has_token(headers, "upgrade", "websocket")
        || !header_has_token(headers, "connection", "upgrade")
    {
        return Err(refused(
            StatusCode::BAD_REQUEST,
            "Can \"Upgrade\" only to \"WebSocket\": this is the STOMP WebSocket endpoint, connect with a WebSocket client",
            "bad_upgrade",
        ));
    }
    if headers.get("sec-websocket-version").and_then(|v| v.to_str().ok()).map(str::trim) != Some("13") {
        return Err(refused(
            StatusCode::UPGRADE_REQUIRED,
            "only WebSocket version 13 is supported",
            "bad_upgrade",
        ));
    }
    let key = headers
        .get("sec-websocket-key")
        .map(|v| v.as_bytes().trim_ascii())
        .filter(|k| k.len() == 24 && k.ends_with(b"=="))
        .ok_or_else(|| {
            refused(StatusCode::BAD_REQUEST, "missing or malformed Sec-WebSocket-Key", "bad_upgrade")
        })?;
    if !crate::auth::access::origin_allowed_on(headers, allowed_origins, own_scheme) {
        return Err(refused(StatusCode::FORBIDDEN, "origin not allowed", "origin"));
    }
    Ok(Accepted { accept_key: derive_accept_key(key), subprotocol: choose_subprotocol(headers) })
}

/// The highest STOMP version the client offers, if it offers any.
pub fn choose_subprotocol(headers: &HeaderMap) -> Option<&'static str> {
    let offered: Vec<&str> = headers
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    SUBPROTOCOLS.into_iter().find(|p| offered.iter().any(|o| o.eq_ignore_ascii_case(p)))
}

/// The `Sec-WebSocket-Accept` value as a header value.
pub fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    const GOOD: [(&str, &str); 5] = [
        ("host", "board.local:8080"),
        ("upgrade", "websocket"),
        ("connection", "keep-alive, Upgrade"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    #[test]
    fn accepts_and_derives_the_rfc_example_key() {
        let a = check(&Method::GET, &headers(&GOOD), &[]).unwrap();
        assert_eq!(a.accept_key, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(a.subprotocol, None);
    }

    #[test]
    fn highest_stomp_version_wins() {
        let mut h = headers(&GOOD);
        h.append("sec-websocket-protocol", HeaderValue::from_static("v10.stomp, v11.stomp"));
        h.append("sec-websocket-protocol", HeaderValue::from_static("v12.stomp"));
        assert_eq!(check(&Method::GET, &h, &[]).unwrap().subprotocol, Some("v12.stomp"));
        let mut h = headers(&GOOD);
        h.append("sec-websocket-protocol", HeaderValue::from_static("v10.stomp,v11.stomp,mqtt"));
        assert_eq!(choose_subprotocol(&h), Some("v11.stomp"));
        let mut h = headers(&GOOD);
        h.append("sec-websocket-protocol", HeaderValue::from_static("mqtt"));
        assert_eq!(choose_subprotocol(&h), None);
    }

    #[test]
    fn plain_get_and_bad_requests_are_refused_clearly() {
        let e = check(&Method::GET, &headers(&[("host", "x")]), &[]).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let mut h = headers(&GOOD);
        h.insert("sec-websocket-version", HeaderValue::from_static("8"));
        assert_eq!(check(&Method::GET, &h, &[]).unwrap_err().status, StatusCode::UPGRADE_REQUIRED);
        let mut h = headers(&GOOD);
        h.insert("sec-websocket-key", HeaderValue::from_static("short"));
        assert_eq!(check(&Method::GET, &h, &[]).unwrap_err().status, StatusCode::BAD_REQUEST);
        assert_eq!(
            check(&Method::POST, &headers(&GOOD), &[]).unwrap_err().status,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    #[test]
    fn origins() {
        let with_origin = |o: &'static str| {
            let mut h = headers(&GOOD);
            h.insert("origin", HeaderValue::from_static(o));
            h
        };
        // Default: same host only.
        assert!(check(&Method::GET, &with_origin("http://board.local:8080"), &[]).is_ok());
        let e = check(&Method::GET, &with_origin("http://evil.example"), &[]).unwrap_err();
        assert_eq!((e.status, e.reason), (StatusCode::FORBIDDEN, "origin"));
        assert!(check(&Method::GET, &with_origin("null"), &[]).is_err());
        // A list replaces the default; `*` allows all.
        let list = vec!["http://evil.example".to_string()];
        assert!(check(&Method::GET, &with_origin("http://evil.example"), &list).is_ok());
        assert!(check(&Method::GET, &with_origin("http://board.local:8080"), &list).is_err());
        assert!(check(&Method::GET, &with_origin("http://any.example"), &["*".to_string()]).is_ok());
    }
}
