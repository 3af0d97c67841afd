//! What the session writes back on its own: RECEIPT and ERROR frames, and the goodbye ERROR
//! that tells a client why the server closes it.

use std::time::Duration;

use bytes::Bytes;

use crate::engine::LocalBoxFuture;
use crate::node::Node;
use crate::observability::metrics::{CloseReason, METRICS};
use crate::protocol::{self, FrameWriter, Version};
use crate::transport::outbound::OutFrame;

use super::Session;

/// Extra headers of a RECEIPT (a streamed SUBSCRIBE's `x-stream-*`).
pub(super) type ReceiptHeaders = Vec<(&'static str, String)>;

/// A RECEIPT frame for `receipt`, with a streamed SUBSCRIBE's extra headers.
pub(super) fn receipt_frame(receipt: &str, version: Version, extra: &ReceiptHeaders) -> Bytes {
    let mut out = Vec::with_capacity(32 + receipt.len());
    let mut w = FrameWriter::new(&mut out, protocol::Command::Receipt, version);
    w.header("receipt-id", receipt);
    for (name, value) in extra {
        w.header(name, value);
    }
    w.body(b"");
    Bytes::from(out)
}

/// An ERROR frame: `message` header (one short line) and the whole text as the body, with the
/// refused frame's `receipt-id` when it asked for one.
pub(super) fn error_frame(message: &str, receipt: Option<&str>, version: Version) -> Bytes {
    let mut out = Vec::with_capacity(64 + message.len() * 2);
    let mut w = FrameWriter::new(&mut out, protocol::Command::Error, version);
    // The `message` header is one line: keep it short, the body has the whole text.
    let short: String = message.chars().take(200).map(|c| if c.is_control() { ' ' } else { c }).collect();
    w.header("message", &short);
    if let Some(r) = receipt {
        w.header("receipt-id", r);
    }
    w.header("content-type", "text/plain");
    w.body(message.as_bytes());
    Bytes::from(out)
}

impl Session {
    /// Sends a RECEIPT once `wait` resolves (bounded by the cluster command timeout).
    pub(super) fn send_receipt_after(
        &self,
        wait: LocalBoxFuture<'static, ()>,
        receipt: String,
        extra: ReceiptHeaders,
        node: &Node,
    ) {
        let limit = Duration::from_millis(node.config().cluster.command_timeout_ms);
        let (outbound, version) = (self.outbound.clone(), self.version);
        tokio::task::spawn_local(async move {
            let _ = tokio::time::timeout(limit, wait).await;
            outbound.push_unbounded(OutFrame::stomp(receipt_frame(&receipt, version, &extra)));
            METRICS.receipts_sent.inc();
        });
    }

    /// Queues a RECEIPT now.
    pub(super) fn send_receipt(&self, receipt: &str, extra: &ReceiptHeaders) {
        self.outbound.push_unbounded(OutFrame::stomp(receipt_frame(receipt, self.version, extra)));
        METRICS.receipts_sent.inc();
    }

    /// Queues an ERROR frame (the connection closes after it is flushed).
    pub fn send_error(&self, message: &str, receipt: Option<&str>) {
        self.outbound.push_unbounded(OutFrame::stomp(error_frame(message, receipt, self.version)));
    }

    /// Tells the client why the server closes it, as an ERROR frame, when it is a reason the
    /// client should hear about. A slow consumer's queue is dropped first (all but a front
    /// frame that is partly written, when `keep_front`), and the drop is counted.
    pub fn send_goodbye(&self, reason: CloseReason, connect_timeout: Duration, keep_front: bool) {
        let message = match reason {
            CloseReason::SlowConsumer => {
                let dropped = self.outbound.clear_after_front(keep_front);
                METRICS.messages_dropped.add("slow_consumer", dropped as u64);
                "slow consumer: too many bytes queued for this client, closing".to_string()
            }
            CloseReason::ServerShutdown => "server shutting down".to_string(),
            CloseReason::HeartbeatTimeout => format!(
                "no heart-beat or frame from the client in {} ms",
                self.heartbeat.receive().map_or(0, |d| d.as_millis() * 2)
            ),
            CloseReason::ConnectTimeout => format!("no CONNECT within {} ms", connect_timeout.as_millis()),
            _ => return,
        };
        self.send_error(&message, None);
    }
}
