//! SEND and transactions: where a SEND goes (`Destination::send_route`: the hub and engine
//! through `Node::publish`, or the `/app` application), and BEGIN/COMMIT/ABORT holding SENDs
//! on the memory budget until COMMIT.

use std::rc::Rc;

use bytes::Bytes;

use crate::app::AppError;
use crate::board::memory::{self, Charge};
use crate::hub::Publication;
use crate::node::Node;
use crate::observability::metrics::METRICS;

use super::command::Send;
use super::destination::{Destination, SendRoute};
use super::{Outcome, ProtocolError, Session};

/// A SEND held in an open transaction until COMMIT.
pub(super) struct HeldSend {
    pub(super) destination: Destination<'static>,
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: Bytes,
}

/// Bytes charged per held SEND on top of its own: the entry, its share of the transaction's
/// vector, the body's shared handle and allocator slack.
pub(super) const HELD_SEND_OVERHEAD: usize = 128;

/// Bytes charged per header of a held SEND on top of its name and value (two `String`s).
pub(super) const HELD_HEADER_OVERHEAD: usize = 48;

impl HeldSend {
    /// What holding it costs the process, in bytes (body, destination, headers, overheads).
    fn cost(&self) -> usize {
        HELD_SEND_OVERHEAD
            + self.destination.as_str().len()
            + self.body.len()
            + self.headers.iter().map(|(n, v)| n.len() + v.len() + HELD_HEADER_OVERHEAD).sum::<usize>()
    }
}

/// An open transaction (STOMP 1.2 BEGIN): its SENDs wait for COMMIT.
pub(super) struct Transaction {
    pub(super) id: String,
    pub(super) sends: Vec<HeldSend>,
    /// Body bytes held (bounded by `stomp.max_transaction_bytes`).
    pub(super) bytes: usize,
    /// Everything held, at its real cost, on the memory budget: given back when the
    /// transaction is dropped (COMMIT, ABORT, or the session's end).
    pub(super) charge: Charge,
}

impl Session {
    /// A SEND: routed now, or held in its transaction (bounded by the `stomp.max_transaction_*`
    /// keys and the memory budget) until COMMIT.
    pub(super) fn send(&mut self, send: Send<'_>, node: &Node) -> Result<Outcome, ProtocolError> {
        let Send { destination, transaction, headers, body } = send;
        let body = Bytes::copy_from_slice(body);
        if let Some(tx) = transaction {
            let limits = node.config();
            let t = self.transaction(&tx)?;
            if t.sends.len() >= limits.stomp.max_transaction_frames
                || t.bytes + body.len() > limits.stomp.max_transaction_bytes
            {
                return Err(ProtocolError::new(
                    "transaction",
                    format!(
                        "transaction {tx} holds more than {} frames or {} bytes",
                        limits.stomp.max_transaction_frames, limits.stomp.max_transaction_bytes
                    ),
                ));
            }
            let held = HeldSend { destination: destination.into_owned(), headers, body };
            let cost = held.cost();
            let shortfall = memory::held_shortfall(cost);
            if shortfall > 0 {
                // Kept history gives way to a client's work before the work is refused.
                node.history().reclaim(shortfall);
            }
            if !memory::admit_held(cost) {
                METRICS.memory_refused.inc("transaction");
                return Err(ProtocolError::new(
                    "transaction",
                    format!(
                        "transaction {tx} refused: the server's memory budget is nearly used up \
                         (this SEND would hold {cost} more bytes); COMMIT smaller transactions"
                    ),
                ));
            }
            let t = self.transaction(&tx)?;
            t.bytes += held.body.len();
            t.charge.set(t.charge.bytes() + cost);
            t.sends.push(held);
            return Ok(Outcome::Continue);
        }
        self.route_send(&destination, headers, body, node);
        Ok(Outcome::Continue)
    }

    /// Sends a SEND where its destination leads: `/topic/**` to the broker, `/app/**` to the
    /// application. Problems here are application errors: the session stays open. Checked
    /// here, on every path a SEND takes (alone or at COMMIT, any version, any transport).
    pub(super) fn route_send(
        &mut self,
        destination: &Destination<'_>,
        headers: Vec<(String, String)>,
        body: Bytes,
        node: &Node,
    ) {
        let Some(handle) = self.handle.clone() else { return };
        let config = node.config();
        let name = destination.as_str();
        let result = match destination.send_route(&config.stomp) {
            SendRoute::ServerOwned(prefix) => {
                METRICS.messages_dropped.inc("server_owned_destination");
                Err(AppError::new(
                    "forbidden",
                    format!("only the server sends to {prefix}**; use the /app destinations"),
                    name,
                ))
            }
            SendRoute::Topic if config.stomp.allow_client_topic_send => {
                node.publish(Publication::message(Rc::from(name), node.next_message_id(), headers, body));
                Ok(())
            }
            SendRoute::Topic => {
                Err(AppError::new("forbidden", "clients may not send to /topic/** on this server", name))
            }
            SendRoute::App => match node.app() {
                Some(app) => app.on_send(&handle, name, &body),
                None => Err(AppError::new("unknown_destination", "no application is mounted at /app", name)),
            },
            SendRoute::Unknown => Err(AppError::new(
                "unknown_destination",
                "destinations start with /topic/ (broadcast) or /app/ (application)",
                name,
            )),
        };
        if let Err(e) = result {
            handle.send_error(&e);
        }
    }

    /// The open transaction `id`; a `transaction` error when there is none.
    pub(super) fn transaction(&mut self, id: &str) -> Result<&mut Transaction, ProtocolError> {
        self.transactions
            .iter_mut()
            .flat_map(|open| open.iter_mut())
            .find(|t| t.id == id)
            .ok_or_else(|| ProtocolError::new("transaction", format!("unknown transaction {id}")))
    }

    /// BEGIN: opens transaction `id` (at most `stomp.max_transactions` at once).
    pub(super) fn begin(&mut self, id: String, node: &Node) -> Result<Outcome, ProtocolError> {
        if self.transactions.iter().flat_map(|open| open.iter()).any(|t| t.id == id) {
            return Err(ProtocolError::new("transaction", format!("transaction {id} is already open")));
        }
        let limit = node.config().stomp.max_transactions;
        if self.transactions.as_ref().map_or(0, |open| open.len()) >= limit {
            return Err(ProtocolError::new(
                "transaction",
                format!("too many open transactions: at most {limit}"),
            ));
        }
        METRICS.transactions.inc("begun");
        let open = self.transactions.get_or_insert_with(Box::default);
        open.push(Transaction { id, sends: Vec::new(), bytes: 0, charge: Charge::new() });
        Ok(Outcome::Continue)
    }

    /// Closes the open transaction `id` and hands it over; a `transaction` error when none.
    pub(super) fn take_transaction(&mut self, id: &str) -> Result<Transaction, ProtocolError> {
        let unknown = || ProtocolError::new("transaction", format!("unknown transaction {id}"));
        let open = self.transactions.as_mut().ok_or_else(unknown)?;
        let i = open.iter().position(|t| t.id == id).ok_or_else(unknown)?;
        let t = open.swap_remove(i);
        if open.is_empty() {
            self.transactions = None;
        }
        Ok(t)
    }

    /// COMMIT: routes the transaction's SENDs in order.
    pub(super) fn commit(&mut self, id: &str, node: &Node) -> Result<Outcome, ProtocolError> {
        let t = self.take_transaction(id)?;
        METRICS.transactions.inc("committed");
        for send in t.sends {
            self.route_send(&send.destination, send.headers, send.body, node);
        }
        Ok(Outcome::Continue)
    }

    /// ABORT: drops the transaction's SENDs (counted as dropped).
    pub(super) fn abort(&mut self, id: &str) -> Result<Outcome, ProtocolError> {
        let t = self.take_transaction(id)?;
        METRICS.transactions.inc("aborted");
        METRICS.messages_dropped.add("transaction_aborted", t.sends.len() as u64);
        Ok(Outcome::Continue)
    }
}
