//! SUBSCRIBE and UNSUBSCRIBE: `/topic/**` subscriptions in the hub (with a streamed topic's
//! recovery of kept messages before live ones) and `/user/**` subscriptions on the session's
//! own handle.

use std::rc::Rc;
use std::time::Duration;

use crate::engine::stream::{Recovering, Recovery, Since, EPOCH_HEADER, OFFSET_HEADER, RECOVERED_HEADER};
use crate::engine::LocalBoxFuture;
use crate::hub::{encode_message, finish_recovery, Cursor, Subscriber};
use crate::node::Node;
use crate::observability::metrics::METRICS;
use crate::transport::outbound::{OutFrame, Outbound};

use super::command::Subscribe;
use super::destination::Subscribable;
use super::reply::{receipt_frame, ReceiptHeaders};
use super::{Outcome, ProtocolError, Session};

/// A subscription of this session.
pub(super) struct Subscription {
    pub(super) id: Rc<str>,
    pub(super) destination: Rc<str>,
    /// `/user/**` subscriptions are this session's alone and are not in the hub.
    pub(super) user: bool,
}

/// Whether a recovery read at once fits in half the client's queue (then it is queued in one
/// step; a larger one is paced by the reader, `hub::finish_recovery`).
fn fits(recovery: &Recovery, outbound: &Outbound) -> bool {
    let bytes: usize = recovery.publications.iter().map(|p| p.kept_cost()).sum();
    outbound.queued_bytes() + bytes <= outbound.limit() / 2
}

/// The RECEIPT headers of a streamed SUBSCRIBE. A recovery that could not read the stream
/// (Redis away) knows no epoch: it says `x-stream-recovered:false` and leaves the epoch and
/// offset out rather than send an empty one.
pub(super) fn recovery_headers(recovery: &Recovery) -> ReceiptHeaders {
    let mut headers = vec![(RECOVERED_HEADER, recovery.recovered.to_string())];
    if !recovery.next.epoch.is_empty() {
        headers.push((EPOCH_HEADER, recovery.next.epoch.to_string()));
        headers.push((OFFSET_HEADER, recovery.next.offset.to_string()));
    }
    headers
}

/// How a SUBSCRIBE's RECEIPT goes out when not at once and plain.
#[derive(Default)]
pub(super) struct ReceiptPlan {
    /// Set by a SUBSCRIBE whose cluster subscription is not active yet: its RECEIPT waits.
    pub(super) after: Option<LocalBoxFuture<'static, ()>>,
    /// Set by a streamed SUBSCRIBE: what its RECEIPT says about the recovery.
    pub(super) headers: ReceiptHeaders,
    /// Set by a SUBSCRIBE whose recovery sends the RECEIPT itself, after the kept messages.
    pub(super) sent_later: bool,
}

impl Session {
    /// SUBSCRIBE: a `/user/**` subscription on the session's handle, or a `/topic/**` one in the
    /// hub (a streamed topic's kept messages first, at once or paced by the reader).
    pub(super) fn subscribe(
        &mut self,
        subscribe: Subscribe<'_>,
        receipt: Option<&str>,
        node: &Node,
    ) -> Result<Outcome, ProtocolError> {
        let Subscribe { destination, id, ack, since } = subscribe;
        if self.subscriptions.iter().any(|s| s.id == id) {
            return Err(ProtocolError::new("bad_header", format!("subscription id {id} is already in use")));
        }
        let limit = node.config().limits.max_subscriptions;
        if self.subscriptions.len() >= limit {
            METRICS.subscriptions_rejected.inc("limit");
            return Err(ProtocolError::new(
                "other",
                format!("too many subscriptions: at most {limit} per connection"),
            ));
        }
        let Some(subscribable) = destination.subscription() else {
            METRICS.subscriptions_rejected.inc("bad_destination");
            return Err(ProtocolError::new(
                "bad_header",
                format!("cannot subscribe to {}: use /topic/... or /user/queue/...", destination.as_str()),
            ));
        };
        let user = subscribable == Subscribable::User;
        let history = node.history();
        let streamed = destination.is_streamed(&*history);
        let destination = destination.as_str();
        let since =
            if streamed { since.map_err(|e| ProtocolError::new("bad_header", e))? } else { Since::Next };
        if receipt.is_some() {
            let after = node.broker.ready(destination);
            if after.is_some() || self.receipt.is_some() {
                self.receipt.get_or_insert_with(Box::default).after = after;
            }
        }
        let key = if user {
            let key: Rc<str> = Rc::from(destination);
            if let Some(handle) = &self.handle {
                handle.add_user_subscription(key.clone(), id.clone());
            }
            key
        } else {
            let mut subscriber = Subscriber {
                connection: self.connection,
                subscription_id: id.clone(),
                version: self.version,
                ack,
                outbound: self.outbound.clone(),
                cursor: None,
            };
            if streamed && node.hub.subscriber_count(destination) == 0 && !node.hub.has_room() {
                METRICS.subscriptions_rejected.inc("destination_limit");
                return Err(ProtocolError::new("other", node.hub.full_error().to_string()));
            }
            let mut later = None;
            if streamed {
                let read: Option<LocalBoxFuture<'static, Recovery>> = match history
                    .recover(destination, &since)
                {
                    Recovering::Now(recovery) if fits(&recovery, &self.outbound) => {
                        // Kept messages first, then live: the read and the subscription happen
                        // in one step of this thread, so no publication can fall between them.
                        for p in &recovery.publications {
                            self.outbound.push(OutFrame::stomp(encode_message(p, &id, self.version, ack)));
                        }
                        METRICS.messages_delivered.add(recovery.publications.len() as u64);
                        self.receipt.get_or_insert_with(Box::default).headers = recovery_headers(&recovery);
                        None
                    }
                    // Larger than half the client's queue: paced by the reader, below.
                    Recovering::Now(recovery) => Some(Box::pin(std::future::ready(recovery))),
                    Recovering::Later(read) => Some(read),
                };
                if let Some(read) = read {
                    // The subscription holds live publications until the kept ones are sent;
                    // the cursor drops those sent twice at the seam.
                    subscriber.cursor = Some(Cursor::recovering());
                    later = Some((read, subscriber.clone()));
                }
            }
            let key = node.subscribe(destination, subscriber).map_err(|e| {
                METRICS.subscriptions_rejected.inc("destination_limit");
                ProtocolError::new("other", e.to_string())
            })?;
            if let Some((read, subscriber)) = later {
                let receipt = receipt.map(str::to_string);
                let plan = self.receipt.get_or_insert_with(Box::default);
                plan.sent_later = receipt.is_some();
                plan.after = None;
                let limit = Duration::from_millis(node.config().cluster.command_timeout_ms * 2);
                let version = self.version;
                tokio::task::spawn_local(async move {
                    let recovery = match tokio::time::timeout(limit, read).await {
                        Ok(recovery) => recovery,
                        Err(_) => Recovery::unavailable(Rc::from(""), 0),
                    };
                    finish_recovery(&subscriber, &recovery.publications, &recovery.next).await;
                    if let Some(receipt) = receipt {
                        let frame = receipt_frame(&receipt, version, &recovery_headers(&recovery));
                        subscriber.outbound.push_unbounded(OutFrame::stomp(frame));
                        METRICS.receipts_sent.inc();
                    }
                });
            }
            key
        };
        if self.subscriptions.capacity() == 0 {
            // Most sessions hold one subscription: room for one, not the four a push makes.
            self.subscriptions.reserve_exact(1);
        }
        self.subscriptions.push(Subscription { id, destination: key, user });
        Ok(Outcome::Continue)
    }

    /// UNSUBSCRIBE: an unknown id is not an error (it may have ended already).
    pub(super) fn unsubscribe(&mut self, id: &str, node: &Node) -> Result<Outcome, ProtocolError> {
        if let Some(i) = self.subscriptions.iter().position(|s| *s.id == *id) {
            let s = self.subscriptions.swap_remove(i);
            self.drop_subscription(s, node);
        }
        Ok(Outcome::Continue)
    }

    /// Takes a subscription out of the hub or the session's handle.
    pub(super) fn drop_subscription(&self, s: Subscription, node: &Node) {
        if s.user {
            if let Some(handle) = &self.handle {
                handle.remove_user_subscription(&s.id);
            }
        } else {
            node.unsubscribe(&s.destination, self.connection, &s.id);
        }
    }
}
