//! The HTTP answers of the SockJS endpoints: the CORS headers every one of them carries (pages
//! may reach `/ws` from another origin the `allowed_origins` list lets in), SockJS's no-cache
//! rule, the `OPTIONS` preflights, and the short plain-text errors SockJS servers answer with.

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::header::{HeaderMap, HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Response, StatusCode};

use crate::transport::upgrade::Body;

pub const JSON: &str = "application/json; charset=UTF-8";
pub const JAVASCRIPT: &str = "application/javascript; charset=UTF-8";
pub const EVENT_STREAM: &str = "text/event-stream; charset=UTF-8";
pub const TEXT: &str = "text/plain; charset=UTF-8";

const NO_CACHE: &str = "no-store, no-cache, no-transform, must-revalidate, max-age=0";
/// How long browsers may cache a preflight answer (a year, as SockJS servers say).
const PREFLIGHT_CACHE: &str = "public, max-age=31536000";

/// Adds the CORS headers: the request's Origin echoed (`*` without one) with credentials
/// allowed, and the request headers the preflight asked about.
pub fn cors(request: &HeaderMap, headers: &mut HeaderMap) {
    let origin = request
        .get("origin")
        .filter(|o| o.as_bytes() != b"null")
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("*"));
    headers.insert("access-control-allow-origin", origin);
    headers.insert("access-control-allow-credentials", HeaderValue::from_static("true"));
    headers.insert("vary", HeaderValue::from_static("Origin"));
    if let Some(asked) = request.get("access-control-request-headers") {
        headers.insert("access-control-allow-headers", asked.clone());
    }
}

/// A response with `body`, CORS and no caching.
pub fn with(
    request: &HeaderMap,
    status: StatusCode,
    content_type: &'static str,
    body: Body,
) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static(NO_CACHE));
    cors(request, headers);
    response
}

/// A whole response.
pub fn full(
    request: &HeaderMap,
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    with(request, status, content_type, Either::Left(Full::new(body.into())))
}

/// A plain-text error, as SockJS servers word them ("Payload expected.").
pub fn error(request: &HeaderMap, status: StatusCode, message: &'static str) -> Response<Body> {
    full(request, status, TEXT, message)
}

/// A refusal (the Origin is not allowed): plain text, no caching, and no CORS headers, so the
/// refused page cannot even read why.
pub fn refusal(status: StatusCode, message: &'static str) -> Response<Body> {
    let mut response = Response::new(Either::Left(Full::new(Bytes::from_static(message.as_bytes()))));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(TEXT));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static(NO_CACHE));
    response
}

/// `204` to an `OPTIONS` preflight, allowing `methods` and caching the answer.
pub fn preflight(request: &HeaderMap, methods: &'static str) -> Response<Body> {
    let mut response = full(request, StatusCode::NO_CONTENT, TEXT, Bytes::new());
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static(PREFLIGHT_CACHE));
    headers.insert("access-control-max-age", HeaderValue::from_static("31536000"));
    headers.insert("access-control-allow-methods", HeaderValue::from_static(methods));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cors_echoes_the_origin_or_allows_all() {
        let mut request = HeaderMap::new();
        let mut out = HeaderMap::new();
        cors(&request, &mut out);
        assert_eq!(out["access-control-allow-origin"], "*");
        request.insert("origin", HeaderValue::from_static("http://board.local:8080"));
        request.insert("access-control-request-headers", HeaderValue::from_static("content-type"));
        let r = preflight(&request, "OPTIONS, POST");
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        let h = r.headers();
        assert_eq!(h["access-control-allow-origin"], "http://board.local:8080");
        assert_eq!(h["access-control-allow-credentials"], "true");
        assert_eq!(h["access-control-allow-headers"], "content-type");
        assert_eq!(h["access-control-allow-methods"], "OPTIONS, POST");
        let r = error(&request, StatusCode::INTERNAL_SERVER_ERROR, "Payload expected.");
        assert!(r.headers()[CACHE_CONTROL].to_str().unwrap().contains("no-store"));
    }
}
