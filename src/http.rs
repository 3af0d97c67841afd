//! The HTTP side of the one port: routes for the page, `/healthz`, `/metrics`, `/api/rooms`,
//! `/api/nodes`, the `/ws` upgrade and the SockJS endpoints under `/ws/`. hyper parses the
//! requests; answers are small and built in memory, except SockJS's streaming ones.

use std::convert::Infallible;
use std::rc::Rc;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpStream;

use crate::metrics::{self, METRICS};
use crate::node::Node;
use crate::outbound::Outbound;
use crate::sockjs;
use crate::ws::handshake;

/// Whole answers, or a SockJS receiving request's stream.
pub type Body = Either<Full<Bytes>, sockjs::StreamBody>;

/// The chat page, its files, the legacy stomp.js 2.3.3 page and the SockJS one (Spring-style,
/// sockjs-client 1.6.1 + stomp.js 2.3.3), embedded at build time:
/// (path, content type, text). Nothing is read from disk at run time; no external URL is used.
const ASSETS: &[(&str, &str, &str)] = &[
    ("/", "text/html; charset=utf-8", include_str!("../web/index.html")),
    ("/index.html", "text/html; charset=utf-8", include_str!("../web/index.html")),
    ("/app.js", "text/javascript; charset=utf-8", include_str!("../web/app.js")),
    ("/style.css", "text/css; charset=utf-8", include_str!("../web/style.css")),
    ("/legacy.html", "text/html; charset=utf-8", include_str!("../web/legacy.html")),
    ("/sockjs.html", "text/html; charset=utf-8", include_str!("../web/sockjs.html")),
    (
        "/vendor/sockjs-1.6.1.min.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/vendor/sockjs-1.6.1.min.js"),
    ),
    (
        "/vendor/stomp.umd.min.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/vendor/stomp.umd.min.js"),
    ),
    (
        "/vendor/stomp-2.3.3.min.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/vendor/stomp-2.3.3.min.js"),
    ),
];

fn asset(path: &str) -> Option<(&'static str, &'static str)> {
    ASSETS.iter().find(|(p, _, _)| *p == path).map(|(_, content_type, text)| (*content_type, *text))
}

fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Either::Left(Full::new(body.into())));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, hyper::header::HeaderValue::from_static(content_type));
    response.headers_mut().insert(CACHE_CONTROL, hyper::header::HeaderValue::from_static("no-store"));
    response
}

fn json(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    respond(status, "application/json", serde_json::to_vec(value).unwrap_or_default())
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    respond(status, "text/plain; charset=utf-8", body)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Health {
    status: &'static str,
    mode: &'static str,
    server_id: String,
    redis: &'static str,
    connections: usize,
    uptime_seconds: u64,
    /// Cluster mode only: times the Redis link came back.
    #[serde(skip_serializing_if = "Option::is_none")]
    redis_reconnects: Option<u64>,
    /// Cluster mode only: Redis commands that failed or timed out.
    #[serde(skip_serializing_if = "Option::is_none")]
    redis_command_errors: Option<u64>,
}

/// Routes one request.
pub async fn handle(node: Rc<Node>, request: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = request.uri().path();
    let response = match path {
        "/ws" | "/ws/" | "/ws/websocket" => {
            METRICS.http_requests.inc("ws");
            upgrade(node, request, crate::connection::run)
        }
        _ if path.starts_with("/ws/") => {
            METRICS.http_requests.inc("ws");
            sockjs::handle(node, request).await
        }
        "/healthz" => {
            METRICS.http_requests.inc("healthz");
            health(&node)
        }
        "/metrics" => {
            METRICS.http_requests.inc("metrics");
            metrics_page(&node)
        }
        "/api/nodes" | "/api/nodes/" => {
            METRICS.http_requests.inc("api");
            json(StatusCode::OK, &crate::status::nodes::list(&node).await)
        }
        "/api/rooms" | "/api/rooms/" => {
            METRICS.http_requests.inc("api");
            let rooms = node.presence.rooms().await;
            let list: Vec<RoomSummary> = rooms
                .into_iter()
                .map(|(room_id, participant_count)| RoomSummary { room_id, participant_count })
                .collect();
            json(StatusCode::OK, &list)
        }
        _ if path.starts_with("/api/rooms/") => {
            METRICS.http_requests.inc("api");
            room_detail(&node, &path["/api/rooms/".len()..]).await
        }
        _ => {
            if let Some((content_type, text)) = asset(path) {
                METRICS.http_requests.inc("page");
                return Ok(respond(StatusCode::OK, content_type, text));
            }
            METRICS.http_requests.inc("not_found");
            text(StatusCode::NOT_FOUND, "not found\n")
        }
    };
    Ok(response)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RoomSummary {
    room_id: String,
    participant_count: usize,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RoomDetail {
    room_id: String,
    participants: Vec<String>,
}

#[derive(Serialize)]
struct ApiError {
    error: &'static str,
    message: String,
}

async fn room_detail(node: &Node, room_id: &str) -> Response<Body> {
    let room = match crate::chat::room::room_id(room_id, &node.config().chat) {
        Ok(room) => room,
        Err(message) => {
            return json(StatusCode::BAD_REQUEST, &ApiError { error: "invalid_room_id", message })
        }
    };
    match node.presence.members(&room).await {
        Some(participants) => json(StatusCode::OK, &RoomDetail { room_id: room.to_string(), participants }),
        None => json(
            StatusCode::NOT_FOUND,
            &ApiError { error: "room_not_found", message: format!("no room {room} right now") },
        ),
    }
}

fn health(node: &Node) -> Response<Body> {
    let draining = node.is_draining();
    let body = Health {
        status: if draining { "draining" } else { "ok" },
        mode: node.broker.mode().as_str(),
        server_id: node.server_id(),
        redis: node.broker.redis_state().as_str(),
        connections: node.connection_count(),
        uptime_seconds: node.uptime_seconds(),
        redis_reconnects: node.broker.redis_counts().map(|(r, _)| r),
        redis_command_errors: node.broker.redis_counts().map(|(_, e)| e),
    };
    json(if draining { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK }, &body)
}

fn metrics_page(node: &Node) -> Response<Body> {
    let (gauges, counters) = node.broker.metrics();
    let mut gauges = gauges;
    if let Some(app) = node.app() {
        gauges.extend(app.metrics());
    }
    gauges.push((
        "destinations_current",
        "Destinations with local subscribers.",
        node.hub.destination_count() as u64,
    ));
    gauges.push(("uptime_seconds", "Seconds since start.", node.uptime_seconds()));
    let text = metrics::render(&metrics::Extra { gauges: &gauges, counters: &counters });
    respond(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", text)
}

/// A socket handed over after a `101`, with the STOMP connection registered for it.
pub struct Upgraded {
    pub stream: TcpStream,
    pub node: Rc<Node>,
    pub connection: u64,
    pub session_id: Rc<str>,
    pub outbound: Rc<Outbound>,
    /// Bytes the client sent after its request, already read by hyper.
    pub read_buf: Bytes,
}

/// Answers a WebSocket upgrade (`GET /ws`, SockJS's `…/websocket`): refuses with a clear
/// status, or registers the connection, answers 101 and hands the socket to `serve` once
/// hyper has written the response.
pub fn upgrade<F, Fut>(node: Rc<Node>, mut request: Request<Incoming>, serve: F) -> Response<Body>
where
    F: FnOnce(Upgraded) -> Fut + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let config = node.config();
    let accepted =
        match handshake::check(request.method(), request.headers(), &config.websocket.allowed_origins) {
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
    let (connection, outbound, session_id) = match node.register_connection() {
        Ok(registered) => registered,
        Err(refusal) => {
            let (label, message) = refusal.describe();
            METRICS.connections_rejected.inc(label);
            return text(StatusCode::SERVICE_UNAVAILABLE, message);
        }
    };
    let on_upgrade = hyper::upgrade::on(&mut request);
    let task_node = node.clone();
    tokio::task::spawn_local(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                log::debug!("upgrade failed: {e}");
                task_node.unregister_connection(connection);
                return;
            }
        };
        match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => {
                let stream = parts.io.into_inner();
                serve(Upgraded {
                    stream,
                    node: task_node,
                    connection,
                    session_id,
                    outbound,
                    read_buf: parts.read_buf,
                })
                .await;
            }
            Err(_) => {
                log::error!("upgraded connection is not a TCP stream");
                task_node.unregister_connection(connection);
            }
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
