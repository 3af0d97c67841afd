//! The HTTP side of the one port: routes for the page, `/healthz`, `/metrics`, `/api/rooms`,
//! `/api/nodes`, the `/ws` upgrade and the SockJS endpoints under `/ws/`. hyper parses the
//! requests; answers are small and built in memory, except SockJS's streaming ones. Each
//! request's real client address is worked out first (`crate::transport::forwarded`); the routes behind
//! HTTP Basic go through [`guard`] (`crate::observability::status::basic`).

use std::convert::Infallible;
use std::net::IpAddr;
use std::rc::Rc;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use serde::Serialize;

use crate::auth::access;
use crate::node::Node;
use crate::observability::metrics::METRICS;
use crate::observability::status::basic;
use crate::transport::sockjs;
use crate::transport::upgrade::{upgrade, Body};

/// The chat page, its files, the legacy stomp.js 2.3.3 page and the SockJS one (Spring-style,
/// sockjs-client 1.6.1 + stomp.js 2.3.3), embedded at build time:
/// (path, content type, text). Nothing is read from disk at run time; no external URL is used.
const ASSETS: &[(&str, &str, &str)] = &[
    ("/", "text/html; charset=utf-8", include_str!("../../web/index.html")),
    ("/index.html", "text/html; charset=utf-8", include_str!("../../web/index.html")),
    ("/app.js", "text/javascript; charset=utf-8", include_str!("../../web/app.js")),
    ("/style.css", "text/css; charset=utf-8", include_str!("../../web/style.css")),
    ("/legacy.html", "text/html; charset=utf-8", include_str!("../../web/legacy.html")),
    ("/sockjs.html", "text/html; charset=utf-8", include_str!("../../web/sockjs.html")),
    (
        "/vendor/sockjs-1.6.1.min.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/vendor/sockjs-1.6.1.min.js"),
    ),
    (
        "/vendor/stomp.umd.min.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/vendor/stomp.umd.min.js"),
    ),
    (
        "/vendor/stomp-2.3.3.min.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/vendor/stomp-2.3.3.min.js"),
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
    /// Cluster mode only, while the node stays out of the cluster: why (its server id is in use
    /// by another live node).
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster_refused: Option<String>,
    /// Cluster mode only: `host:port` of the Redis primary in use (null before the first
    /// connect).
    #[serde(skip_serializing_if = "Option::is_none")]
    redis_primary: Option<Option<String>>,
    /// Cluster mode only: times the primary in use changed (failovers followed).
    #[serde(skip_serializing_if = "Option::is_none")]
    redis_failovers: Option<u64>,
    /// Sentinel URL only: sentinels answering now, of those configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    sentinels_up: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sentinels_configured: Option<usize>,
    /// Sentinel URL only: sentinel queries and subscriptions that failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    sentinel_errors: Option<u64>,
}

/// Routes one request.
pub async fn handle(node: Rc<Node>, mut request: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let config = node.config();
    let host = access::check_host(
        request.version(),
        request.uri(),
        request.headers(),
        &config.http.allowed_hosts,
        &node.advertise_url(),
    );
    if let Err(refusal) = host {
        METRICS.http_rejected.inc(refusal.reason());
        return Ok(match refusal {
            access::HostRefusal::Missing => {
                text(StatusCode::BAD_REQUEST, "exactly one Host header is required\n")
            }
            access::HostRefusal::Malformed => text(StatusCode::BAD_REQUEST, "malformed Host header\n"),
            access::HostRefusal::NotAllowed => {
                log::debug!("refused a request for host {:?}", request.headers().get(hyper::header::HOST));
                text(
                    StatusCode::FORBIDDEN,
                    "this board does not answer to that host name (see http.allowed_hosts)\n",
                )
            }
        });
    }
    // The real client's address (behind a trusted proxy: from its forwarding header), for the
    // login throttle, the logs, the sessions and the `/metrics` network rule.
    let client = request.extensions().get::<access::Peer>().map(|peer| {
        let trusted = &config.http.trusted_proxies;
        let (address, ignored) =
            crate::transport::forwarded::client_address(peer.remote.ip(), request.headers(), trusted);
        if let Some(why) = ignored {
            METRICS.forwarded_ignored.inc(why.label());
            log::debug!("forwarding header from proxy {} not believed: {}", peer.remote.ip(), why.label());
        }
        address
    });
    if let Some(address) = client {
        request.extensions_mut().insert(crate::transport::forwarded::Client(address));
    }
    let metrics_open =
        client.is_some_and(|c| crate::transport::forwarded::listed(&config.http.metrics_open_to, c));
    drop(config);
    let path = request.uri().path();
    let response = match path {
        "/ws" | "/ws/" | "/ws/websocket" => {
            METRICS.http_requests.inc("ws");
            upgrade(node, request, crate::transport::connection::Ws)
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
            let refused = if metrics_open { None } else { guard(&node, &request, client, "/metrics").await };
            refused.unwrap_or_else(|| metrics_page(&node))
        }
        "/status" | "/status/" | "/status.js" | "/api/status" | "/api/status/" => {
            METRICS.http_requests.inc(if path.starts_with("/api/") { "api" } else { "page" });
            status_route(&node, &request, client).await
        }
        "/api/nodes" | "/api/nodes/" => {
            METRICS.http_requests.inc("api");
            json(StatusCode::OK, &crate::observability::status::nodes::list(&node).await)
        }
        "/api/rooms" | "/api/rooms/" => {
            METRICS.http_requests.inc("api");
            let app = node.app();
            let rooms = match app.as_ref().and_then(|a| a.rooms()) {
                Some(api) => api.list().await,
                None => Vec::new(),
            };
            let list: Vec<RoomSummary> = rooms
                .into_iter()
                .map(|(room_id, participant_count)| RoomSummary { room_id, participant_count })
                .collect();
            json(StatusCode::OK, &list)
        }
        _ if path.starts_with("/api/rooms/") => {
            METRICS.http_requests.inc("api");
            match guard(&node, &request, client, "/api/rooms/{id}").await {
                Some(refused) => refused,
                None => room_detail(&node, &path["/api/rooms/".len()..]).await,
            }
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

/// The refusal of a request to a route behind HTTP Basic (`/status`, `/api/status`,
/// `/metrics`, `/api/rooms/{id}`) whose credentials do not let it in (`crate::observability::status::basic`):
/// `401` with the challenge, or `503` with `Retry-After` when the passcode check could not be
/// taken now. None: go on. `route` names the route in the failed-login WARN line.
async fn guard(
    node: &Node,
    request: &Request<Incoming>,
    client: Option<IpAddr>,
    route: &str,
) -> Option<Response<Body>> {
    let require_auth = node.config().status.require_auth;
    let authorization = request.headers().get(hyper::header::AUTHORIZATION);
    let (status, body, header) = match basic::allowed(node, require_auth, authorization, client, route).await
    {
        basic::Access::Allowed => return None,
        basic::Access::Refused => (
            StatusCode::UNAUTHORIZED,
            "this needs a login of the board\n",
            (hyper::header::WWW_AUTHENTICATE, basic::CHALLENGE),
        ),
        basic::Access::Busy => (
            StatusCode::SERVICE_UNAVAILABLE,
            "server busy checking logins: retry later\n",
            (hyper::header::RETRY_AFTER, "1"),
        ),
    };
    METRICS.http_requests.inc("unauthorized");
    let mut response = text(status, body);
    response.headers_mut().insert(header.0, hyper::header::HeaderValue::from_static(header.1));
    Some(response)
}

/// `/status`, its script and `/api/status` (`?node=ID`: another board's, fetched by this one),
/// behind HTTP Basic when accounts are configured ([`guard`]).
async fn status_route(node: &Node, request: &Request<Incoming>, client: Option<IpAddr>) -> Response<Body> {
    if !node.config().status.enabled {
        METRICS.http_requests.inc("not_found");
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    let route = if request.uri().path().starts_with("/api/") { "/api/status" } else { "/status" };
    if let Some(refused) = guard(node, request, client, route).await {
        return refused;
    }
    let authorization = request.headers().get(hyper::header::AUTHORIZATION);
    match request.uri().path() {
        "/status" | "/status/" => respond(StatusCode::OK, "text/html; charset=utf-8", STATUS_PAGE),
        "/status.js" => respond(StatusCode::OK, "text/javascript; charset=utf-8", STATUS_SCRIPT),
        _ => {
            let wanted =
                request.uri().query().unwrap_or("").split('&').find_map(|kv| kv.strip_prefix("node="));
            match wanted {
                Some(id) if id != node.server_id() => other_status(node, id, authorization.cloned()).await,
                _ => json(StatusCode::OK, &crate::observability::status::snapshot(node).await),
            }
        }
    }
}

/// Another board's `/api/status`, fetched from its advertised URL in the registry.
async fn other_status(
    node: &Node,
    id: &str,
    authorization: Option<hyper::header::HeaderValue>,
) -> Response<Body> {
    let boards = crate::observability::status::nodes::list(node).await;
    let Some(board) = boards.into_iter().find(|b| b.server_id == id) else {
        return json(
            StatusCode::NOT_FOUND,
            &ApiError { error: "unknown_node", message: "no live board with that id in the registry".into() },
        );
    };
    match crate::observability::status::proxy::fetch(&board.url, authorization).await {
        Ok((status, body)) => {
            let content_type =
                if status.is_success() { "application/json" } else { "text/plain; charset=utf-8" };
            respond(status, content_type, body)
        }
        Err(message) => json(StatusCode::BAD_GATEWAY, &ApiError { error: "unreachable", message }),
    }
}

/// The status page and its script, embedded like the chat page (no external URL).
const STATUS_PAGE: &str = include_str!("../../web/status.html");
const STATUS_SCRIPT: &str = include_str!("../../web/status.js");

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

async fn room_detail(node: &Node, room: &str) -> Response<Body> {
    let app = node.app();
    let found = match app.as_ref().and_then(|a| a.rooms()) {
        Some(api) => api.members(room).await,
        None => Ok(None),
    };
    match found {
        Err(message) => json(StatusCode::BAD_REQUEST, &ApiError { error: "invalid_room_id", message }),
        Ok(Some(participants)) => {
            json(StatusCode::OK, &RoomDetail { room_id: room.to_string(), participants })
        }
        Ok(None) => json(
            StatusCode::NOT_FOUND,
            &ApiError { error: "room_not_found", message: format!("no room {room} right now") },
        ),
    }
}

fn health(node: &Node) -> Response<Body> {
    let draining = node.is_draining();
    let link = node.broker.link_report();
    let sentinels = link.as_ref().and_then(|l| l.sentinels.as_ref());
    let body = Health {
        status: if draining { "draining" } else { "ok" },
        mode: node.broker.mode().as_str(),
        server_id: node.server_id(),
        redis: node.broker.redis_state().as_str(),
        connections: node.connection_count(),
        uptime_seconds: node.uptime_seconds(),
        redis_reconnects: node.broker.redis_counts().map(|(r, _)| r),
        redis_command_errors: node.broker.redis_counts().map(|(_, e)| e),
        cluster_refused: node.broker.refusal(),
        redis_primary: link.as_ref().map(|l| l.primary.clone()),
        redis_failovers: link.as_ref().map(|l| l.failovers),
        sentinels_up: sentinels.map(|(s, _)| s.iter().filter(|(_, up)| *up).count()),
        sentinels_configured: sentinels.map(|(s, _)| s.len()),
        sentinel_errors: sentinels.map(|(_, e)| *e),
    };
    json(if draining { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK }, &body)
}

fn metrics_page(node: &Node) -> Response<Body> {
    let text = crate::observability::status::metrics_text(node);
    respond(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", text)
}
