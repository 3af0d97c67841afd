//! The transport: how a client's bytes reach its STOMP session and its replies go back, on the
//! board's one port. The listener and accept loop (`server`), the HTTP routes (`http`), the
//! WebSocket upgrade (`upgrade`), WebSocket framing (`ws`) and the SockJS transports
//! (`sockjs`), the socket task that owns an upgraded socket (`driver`, with `connection` for
//! plain `/ws` framing), the per-client outbound queue the hub fills and the socket task
//! drains (`outbound`, woken through `signal`), the [`socket::Socket`] the driver reads and
//! writes (plain TCP, or TLS from `crate::tls`), and the real client address behind a trusted
//! proxy (`forwarded`).

pub(crate) mod connection;
pub(crate) mod driver;
pub mod forwarded;
pub(crate) mod http;
pub(crate) mod outbound;
pub mod server;
pub(crate) mod signal;
pub mod socket;
pub mod sockjs;
#[cfg(test)]
mod task_size;
pub(crate) mod upgrade;
pub mod ws;
