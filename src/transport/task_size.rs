//! The size of a connection's task, which every idle socket pays for as long as it lives: the
//! plain `/ws` task, SockJS's `websocket` task, and the `/ws` task over TLS (docs/MEMORY.md,
//! docs/TLS.md). Print the figures with `cargo test --lib task_size -- --nocapture`.

use std::rc::Rc;

use bytes::Bytes;
use tokio::net::{TcpListener, TcpStream};

use super::upgrade::Upgraded;
use crate::config::Config;
use crate::engine::memory::MemoryBroker;
use crate::node::Node;
use crate::tls::socket::TlsSocket;

/// Most bytes one connection's future may take, whatever it is waiting on. tokio adds 104 bytes
/// of its own and rounds the task up to 128 (x86_64 and aarch64): a future of up to 408 bytes
/// makes a 512-byte task, one of 409 to 536 a 640-byte one. The task is as large as the largest
/// state of its future, and it lives as long as the connection, so anything declared in an
/// `async fn` on the way (a select!'s readiness futures, a timer, the goodbye's flush, the
/// lingering close's buffer) is paid by every idle socket. 1,784 and 2,152 bytes before
/// issue 23, then 512 and 632 (release); now 408 and 536 in a release build, 416 and 544 in
/// the debug build these tests run in. The idle-connection benchmark prints the whole cost
/// (docs/MEMORY.md).
const MAX_PLAIN_TASK_BYTES: usize = 416;
const MAX_SOCKJS_TASK_BYTES: usize = 544;

fn up<S>(node: &Rc<Node>, stream: S) -> Upgraded<S> {
    let registration = node.register_connection().expect("a free place");
    Upgraded { stream, node: node.clone(), registration, read_buf: Bytes::new(), client: None }
}

async fn socket_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let client = TcpStream::connect(listener.local_addr().expect("address")).await.expect("connect");
    (listener.accept().await.expect("accept").0, client)
}

/// The TLS state is boxed: a TLS connection's task is no larger than a plain one's (whose
/// bound `a_connection_task_stays_small` keeps).
#[tokio::test]
async fn a_tls_connection_task_is_no_larger_than_a_plain_one() {
    let dir = std::env::temp_dir().join(format!("stomp-edge-tls-task-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (cert, key, _) = crate::tls::generate::write_pair(&dir, &["localhost".into()], &[]).expect("pair");
    let certificate = crate::tls::load(&cert.to_string_lossy(), &key.to_string_lossy()).expect("load");
    let _ = std::fs::remove_dir_all(&dir);
    let node = Rc::new(Node::new(Config::embedded(), Rc::new(MemoryBroker)));
    let (plain_stream, _c1) = socket_pair().await;
    let (tls_stream, _c2) = socket_pair().await;
    let tls = rustls::ServerConnection::new(certificate.config).expect("server connection");
    let plain = std::mem::size_of_val(&super::connection::run(up(&node, plain_stream)));
    let tls = std::mem::size_of_val(&super::connection::run(up(&node, TlsSocket::new(tls_stream, tls))));
    println!("connection task: /ws {plain} B plain, {tls} B over TLS");
    assert!(tls <= plain, "/ws task over TLS is {tls} B, plain {plain} B");
}

#[tokio::test]
async fn a_connection_task_stays_small() {
    let node = Rc::new(Node::new(Config::embedded(), Rc::new(MemoryBroker)));
    let (stream, _c1) = socket_pair().await;
    let plain = std::mem::size_of_val(&super::connection::run(up(&node, stream)));
    let (stream, _c2) = socket_pair().await;
    let sockjs = std::mem::size_of_val(&super::sockjs::websocket::run(up(&node, stream)));
    println!("connection task: /ws {plain} B, SockJS websocket {sockjs} B");
    assert!(plain <= MAX_PLAIN_TASK_BYTES, "/ws task is {plain} B");
    assert!(sockjs <= MAX_SOCKJS_TASK_BYTES, "SockJS websocket task is {sockjs} B");
}
