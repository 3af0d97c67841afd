//! The HTTP transports' requests: the receiving ones (`xhr`, `xhr_streaming`, `eventsource`),
//! which open a session when its id is new and otherwise become its one open receiver, and
//! `xhr_send`, which hands the client's messages to the session. Bad input gets the status and
//! text sockjs-node and Spring answer with, and is counted in `sockjs_rejected_total`.

use std::rc::Rc;
use std::time::Duration;

use http_body_util::{BodyExt, Either, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::HeaderMap;
use hyper::{Request, Response, StatusCode};

use crate::board::memory;
use crate::node::{Node, Refusal};
use crate::observability::metrics::METRICS;
use crate::transport::upgrade::Body;

use super::body::StreamBody;
use super::frame;
use super::reply;
use super::session::{self, HttpSession, ReceiverKind, SendError};
use super::Settings;

/// How long an `xhr_send` body may take to arrive (a client trickling one holds a connection).
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

fn content_type(kind: ReceiverKind) -> &'static str {
    match kind {
        ReceiverKind::EventSource => reply::EVENT_STREAM,
        ReceiverKind::Polling | ReceiverKind::Streaming => reply::JAVASCRIPT,
    }
}

/// A whole receiving response: the prelude and one SockJS frame.
fn one_frame(request: &HeaderMap, kind: ReceiverKind, sockjs_frame: &[u8]) -> Response<Body> {
    let mut body = kind.prelude().to_vec();
    kind.wrap(sockjs_frame, &mut body);
    reply::full(request, StatusCode::OK, content_type(kind), body)
}

/// Refuses a new session at the connection limit or while draining, like a WebSocket upgrade.
fn refused(request: &HeaderMap, refusal: Refusal) -> Response<Body> {
    let (label, message) = refusal.describe();
    METRICS.connections_rejected.inc(label);
    METRICS.sockjs_rejected.inc(label);
    reply::error(request, StatusCode::SERVICE_UNAVAILABLE, message)
}

/// `POST …/xhr`, `POST …/xhr_streaming`, `GET …/eventsource`.
/// `peer`: the client's address, for login throttling.
pub fn receive(
    node: &Rc<Node>,
    request: &HeaderMap,
    id: &str,
    kind: ReceiverKind,
    peer: Option<std::net::IpAddr>,
) -> Response<Body> {
    let (session, first) = match session::find(node, id) {
        Some(session) => (session, None),
        None => match HttpSession::open(node, id, kind, Settings::from_config(&node.config()), peer) {
            Ok(session) => (session, Some(frame::OPEN)),
            Err(refusal) => return refused(request, refusal),
        },
    };
    if kind == ReceiverKind::Polling {
        if let Some(open) = first {
            // A new polling session: the open frame is the whole first answer.
            return one_frame(request, kind, open);
        }
    }
    match StreamBody::attach(&session, kind, first) {
        Some(body) => reply::with(
            request,
            StatusCode::OK,
            content_type(kind),
            Either::Right(crate::transport::upgrade::Streaming::new(body)),
        ),
        None => {
            let (code, reason) = frame::ANOTHER_CONNECTION;
            one_frame(request, kind, &frame::close_frame(code, reason))
        }
    }
}

fn reject(request: &HeaderMap, status: StatusCode, label: &str, message: &'static str) -> Response<Body> {
    METRICS.sockjs_rejected.inc(label);
    reply::error(request, status, message)
}

/// `POST …/xhr_send`: the body is one SockJS message (`["…", …]`); `204` once the STOMP frames
/// it completes have been handled.
pub async fn send(node: &Rc<Node>, request: Request<Incoming>, id: &str) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let Some(session) = session::find(node, id).filter(|s| !s.is_closed()) else {
        return reject(headers, StatusCode::NOT_FOUND, "unknown_session", "Session not found.");
    };
    let max = node.config().sockjs.max_message_bytes;
    let announced = headers
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if announced.is_some_and(|n| n > max as u64) {
        return reject(headers, StatusCode::PAYLOAD_TOO_LARGE, "too_large", "Payload too large.");
    }
    let Some(_sending) = session.begin_send() else {
        return reject(
            headers,
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "Another xhr_send of this session is in progress.",
        );
    };
    // The body is charged at its announced size (or the most it may be) while it arrives.
    let expected = announced.map_or(max, |n| n as usize);
    if !memory::admit(expected) {
        METRICS.memory_refused.inc("sockjs_body");
        return reject(headers, StatusCode::SERVICE_UNAVAILABLE, "memory", "Server memory budget reached.");
    }
    let _charge = memory::Charge::of(expected);
    let bytes = match tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, max).collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<LengthLimitError>() => {
            return reject(headers, StatusCode::PAYLOAD_TOO_LARGE, "too_large", "Payload too large.");
        }
        Ok(Err(_)) => return reject(headers, StatusCode::BAD_REQUEST, "bad_request", "Broken request body."),
        Err(_) => {
            return reject(headers, StatusCode::REQUEST_TIMEOUT, "bad_request", "Request body too slow.")
        }
    };
    METRICS.bytes_received.add(bytes.len() as u64);
    if bytes.trim_ascii().is_empty() {
        return reject(headers, StatusCode::INTERNAL_SERVER_ERROR, "empty_payload", "Payload expected.");
    }
    drop(node.hub.take_backed_up());
    let received = session.receive(node, &bytes);
    // Flow control: the answer (and so the client's next send) waits while the subscribers
    // this message reached are backed up, as a WebSocket publisher's socket is not read.
    let backed_up = node.hub.take_backed_up();
    if !backed_up.is_empty() {
        METRICS.flow_paused.inc("backed_up");
        let deadline = tokio::time::Instant::now() + crate::transport::outbound::SLOW_CONSUMER_GRACE;
        while backed_up.iter().any(|w| w.upgrade().is_some_and(|o| o.holds_back_publishers()))
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    match received {
        Ok(()) => reply::full(headers, StatusCode::NO_CONTENT, reply::TEXT, bytes::Bytes::new()),
        Err(SendError::Closed) => {
            reject(headers, StatusCode::NOT_FOUND, "unknown_session", "Session not found.")
        }
        Err(SendError::Broken) => {
            reject(headers, StatusCode::INTERNAL_SERVER_ERROR, "broken_json", "Broken JSON encoding.")
        }
    }
}
