//! SockJS under `/ws/**`, so pages that connect with `Stomp.over(new SockJS('/ws'))` (the
//! Spring way) work unchanged: `GET /ws/info`, and `/ws/{server}/{session}/{transport}` for the
//! `websocket`, `xhr_streaming`, `xhr` (+ `xhr_send`) and `eventsource` transports. A SockJS
//! session is a STOMP connection like a raw `/ws` one: registered with the node (same limit,
//! metrics, `Session` and bounded `Outbound`); only the framing of its bytes differs.
//!
//! # Layout
//! - `frame`: SockJS frames out (`o`, `h`, `a[...]`, `c[...]`) and client messages in (public
//!   for the fuzz targets).
//! - `stomp`: the STOMP connection inside a session (`Session`, input buffer, clock).
//! - `websocket`: the `websocket` transport's socket task.
//! - `session`: sessions over the HTTP transports, their table, task and reaping.
//! - `body`: the streaming body of a receiving request.
//! - `xhr`: the HTTP transports' requests, and `xhr_send`.
//! - `reply`: CORS, caching, preflights and errors of every SockJS answer.

mod body;
pub mod frame;
mod reply;
mod session;
mod stomp;
pub(crate) mod websocket;
mod xhr;

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::rc::Rc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};

pub use session::ReceiverKind;

use crate::config::Config;
use crate::node::Node;
use crate::observability::metrics::METRICS;
use crate::transport::upgrade::Body;

/// The SockJS settings a session keeps from the configuration it started under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// An `h` frame goes out when nothing else did for this long.
    pub heartbeat: Duration,
    /// An HTTP session with no receiving request for this long is closed.
    pub disconnect_delay: Duration,
    /// A streaming response ends after this many bytes; the client opens the next.
    pub streaming_bytes: usize,
    /// Largest client message (`xhr_send` body, WebSocket message).
    pub max_message_bytes: usize,
}

impl Settings {
    pub fn from_config(config: &Config) -> Settings {
        let c = &config.sockjs;
        Settings {
            heartbeat: Duration::from_millis(c.heartbeat_ms),
            disconnect_delay: Duration::from_millis(c.disconnect_delay_ms),
            streaming_bytes: c.streaming_bytes,
            max_message_bytes: c.max_message_bytes,
        }
    }
}

/// What a path under `/ws/` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route<'a> {
    Info,
    Transport { session: &'a str, transport: &'a str },
    NotFound,
}

/// Server and session ids are one path segment without dots (sockjs-protocol), bounded here.
fn valid_id(segment: &str) -> bool {
    !segment.is_empty() && segment.len() <= 64 && !segment.contains('.')
}

fn route(rest: &str) -> Route<'_> {
    if rest == "info" {
        return Route::Info;
    }
    let mut parts = rest.split('/');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(server), Some(session), Some(transport), None) if valid_id(server) && valid_id(session) => {
            Route::Transport { session, transport }
        }
        _ => Route::NotFound,
    }
}

/// `GET /ws/info`: the WebSocket transport is on, no sticky-session cookie is needed.
fn info(request: &hyper::HeaderMap) -> Response<Body> {
    let entropy = RandomState::new().hash_one(std::time::SystemTime::now()) as u32;
    let body = format!(r#"{{"websocket":true,"cookie_needed":false,"origins":["*:*"],"entropy":{entropy}}}"#);
    reply::full(request, StatusCode::OK, reply::JSON, body)
}

fn not_found(request: &hyper::HeaderMap) -> Response<Body> {
    METRICS.sockjs_rejected.inc("bad_request");
    reply::error(request, StatusCode::NOT_FOUND, "Not found.")
}

fn method_not_allowed(request: &hyper::HeaderMap, allow: &'static str) -> Response<Body> {
    METRICS.sockjs_rejected.inc("bad_request");
    let mut response = reply::error(request, StatusCode::METHOD_NOT_ALLOWED, "Method not allowed.");
    response.headers_mut().insert(hyper::header::ALLOW, hyper::header::HeaderValue::from_static(allow));
    response
}

/// Answers a request under `/ws/`.
pub async fn handle(node: Rc<Node>, request: Request<Incoming>) -> Response<Body> {
    let config = node.config();
    let headers = request.headers();
    if !config.sockjs.enabled {
        return reply::error(headers, StatusCode::NOT_FOUND, "Not found.");
    }
    if !crate::auth::access::origin_allowed_on(
        headers,
        &config.websocket.allowed_origins,
        config.tls.own_scheme(),
    ) {
        METRICS.connections_rejected.inc("origin");
        METRICS.sockjs_rejected.inc("origin");
        // A refusal grants nothing: no CORS headers.
        return reply::refusal(StatusCode::FORBIDDEN, "origin not allowed");
    }
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    // The real client's address (`crate::transport::forwarded`), for login throttling.
    let peer = request.extensions().get::<crate::transport::forwarded::Client>().map(|c| c.0);
    let (session, transport) = match route(path.strip_prefix("/ws/").unwrap_or("")) {
        Route::Info => {
            METRICS.sockjs_requests.inc("info");
            return match method {
                Method::GET => info(headers),
                Method::OPTIONS => reply::preflight(headers, "OPTIONS, GET"),
                _ => method_not_allowed(headers, "OPTIONS, GET"),
            };
        }
        Route::NotFound => return not_found(headers),
        Route::Transport { session, transport } => (session, transport),
    };
    METRICS.sockjs_requests.inc(transport);
    let receiving = match transport {
        "xhr" => Some(ReceiverKind::Polling),
        "xhr_streaming" => Some(ReceiverKind::Streaming),
        "eventsource" => Some(ReceiverKind::EventSource),
        _ => None,
    };
    match (transport, &method, receiving) {
        ("websocket", &Method::GET, _) => {
            crate::transport::upgrade::upgrade(node, request, websocket::SockJsWs)
        }
        ("websocket", _, _) => method_not_allowed(headers, "GET"),
        ("eventsource", &Method::GET, Some(kind)) => xhr::receive(&node, headers, session, kind, peer),
        ("eventsource", _, _) => method_not_allowed(headers, "GET"),
        (_, &Method::OPTIONS, _) if receiving.is_some() || transport == "xhr_send" => {
            reply::preflight(headers, "OPTIONS, POST")
        }
        ("xhr_send", &Method::POST, _) => xhr::send(&node, request, session).await,
        (_, &Method::POST, Some(kind)) => xhr::receive(&node, headers, session, kind, peer),
        ("xhr_send", _, _) | (_, _, Some(_)) => method_not_allowed(headers, "OPTIONS, POST"),
        _ => not_found(headers),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("info"), Route::Info);
        assert_eq!(route("123/abcd/xhr"), Route::Transport { session: "abcd", transport: "xhr" });
        assert_eq!(route("123/abcd/websocket"), Route::Transport { session: "abcd", transport: "websocket" });
        assert_eq!(route("123/ab.cd/xhr"), Route::NotFound);
        assert_eq!(route("123//xhr"), Route::NotFound);
        assert_eq!(route("123/abcd/xhr/more"), Route::NotFound);
        assert_eq!(route("iframe.html"), Route::NotFound);
        assert_eq!(route(&format!("1/{}/xhr", "x".repeat(65))), Route::NotFound);
    }
}
