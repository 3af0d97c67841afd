//! The WebSocket upgrade shared by `GET /ws` and SockJS's `…/websocket` (handshake check,
//! connection registration, `101`, the socket handed over once hyper wrote the answer), and
//! the response `Body` every route of the one port answers with. A module of its own so that
//! `http` and `sockjs` both use them without importing each other.

use std::convert::Infallible;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::node::{Node, Registration};
use crate::observability::metrics::METRICS;
use crate::transport::socket::Socket;
use crate::transport::ws::handshake;

/// Whole answers, or a streamed one (a SockJS receiving request).
pub type Body = Either<Full<Bytes>, Streaming>;

/// A streamed answer's body, boxed so this module need not name who streams (it stays on
/// this thread: hyper serves each connection on the one runtime thread).
pub struct Streaming(Pin<Box<dyn hyper::body::Body<Data = Bytes, Error = Infallible>>>);

impl Streaming {
    pub fn new(body: impl hyper::body::Body<Data = Bytes, Error = Infallible> + 'static) -> Streaming {
        Streaming(Box::pin(body))
    }
}

impl hyper::body::Body for Streaming {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.as_mut().poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.size_hint()
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(Either::Left(Full::new(Bytes::from_static(body.as_bytes()))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
        .headers_mut()
        .insert(hyper::header::CACHE_CONTROL, hyper::header::HeaderValue::from_static("no-store"));
    response
}

/// A socket handed over after a `101`, with the STOMP connection registered for it: a
/// `TcpStream`, or a [`TlsSocket`](crate::tls::socket::TlsSocket) on a TLS port.
pub struct Upgraded<S = TcpStream> {
    pub stream: S,
    pub node: Rc<Node>,
    /// The connection's place in the node (freed when the socket's task drops it).
    pub registration: Registration,
    /// Bytes the client sent after its request, already read by hyper.
    pub read_buf: Bytes,
    /// The client's real address (`crate::transport::forwarded`), when known.
    pub client: Option<std::net::IpAddr>,
}

/// What serves an upgraded socket (the `/ws` framing, SockJS's `websocket`), for a plain
/// and a TLS socket alike.
pub trait Serve: 'static {
    fn serve<S: Socket + 'static>(self, up: Upgraded<S>) -> impl std::future::Future<Output = ()> + 'static;
}

/// Answers a WebSocket upgrade (`GET /ws`, SockJS's `…/websocket`): refuses with a clear
/// status, or registers the connection, answers 101 and hands the socket to `serve` once
/// hyper has written the response.
pub fn upgrade(node: Rc<Node>, mut request: Request<Incoming>, serve: impl Serve) -> Response<Body> {
    let config = node.config();
    let accepted = match handshake::check_on(
        request.method(),
        request.headers(),
        &config.websocket.allowed_origins,
        config.tls.own_scheme(),
    ) {
        Ok(a) => a,
        Err(refused) => {
            METRICS.connections_rejected.inc(refused.reason);
            if refused.reason == "bad_upgrade" {
                METRICS.http_requests.inc("bad_request");
            }
            let mut response = text(refused.status, refused.message);
            if refused.status == StatusCode::UPGRADE_REQUIRED {
                response
                    .headers_mut()
                    .insert("sec-websocket-version", hyper::header::HeaderValue::from_static("13"));
            }
            return response;
        }
    };
    let registration = match node.register_connection() {
        Ok(registered) => registered,
        Err(refusal) => {
            let (label, message) = refusal.describe();
            METRICS.connections_rejected.inc(label);
            return text(StatusCode::SERVICE_UNAVAILABLE, message);
        }
    };
    let client = request.extensions().get::<crate::transport::forwarded::Client>().map(|c| c.0);
    let on_upgrade = hyper::upgrade::on(&mut request);
    let task_node = node.clone();
    tokio::task::spawn_local(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                log::debug!("upgrade failed: {e}");
                return; // the registration is dropped: its place is free again
            }
        };
        // Each kind of socket is served by a task of its own type, sized by its own future: a
        // TLS connection's costs a plain one's nothing.
        match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => {
                let stream = parts.io.into_inner();
                // A task of its own: this one would keep what it captured (the registration,
                // the node, hyper's upgrade handle) beside the connection for its whole life.
                let up = Upgraded { stream, node: task_node, registration, read_buf: parts.read_buf, client };
                tokio::task::spawn_local(serve.serve(up));
            }
            Err(upgraded) => match upgraded.downcast::<TokioIo<tokio_rustls::server::TlsStream<TcpStream>>>()
            {
                Ok(parts) => {
                    let (tcp, tls) = parts.io.into_inner().into_inner();
                    let stream = crate::tls::socket::TlsSocket::new(tcp, tls);
                    let up =
                        Upgraded { stream, node: task_node, registration, read_buf: parts.read_buf, client };
                    tokio::task::spawn_local(serve.serve(up));
                }
                Err(_) => log::error!("upgraded connection is neither a TCP nor a TLS stream"),
            },
        }
    });
    let mut response = Response::new(Either::Left(Full::new(Bytes::new())));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert("upgrade", hyper::header::HeaderValue::from_static("websocket"));
    h.insert("connection", hyper::header::HeaderValue::from_static("Upgrade"));
    h.insert("sec-websocket-accept", handshake::header_value(&accepted.accept_key));
    if let Some(p) = accepted.subprotocol {
        h.insert("sec-websocket-protocol", hyper::header::HeaderValue::from_static(p));
    }
    response
}
