//! The chat application of the original design, mounted at `/app` (Spring's
//! `@MessageMapping("/room/{roomId}/join|message|leave")`): validates requests, keeps each
//! session in at most one room through its `Membership` store, and publishes every change on
//! `/topic/room/{roomId}` as one JSON event built once per message. Those topics are the
//! application's alone: clients cannot send there (`stomp.server_owned_prefixes`), and each
//! event is a typed publication (kind and room) so no engine ever reads the JSON.
//!
//! Join and leave may wait on the cluster's membership, so each session's chat operations run
//! in order on a small per-session queue; a chat message with nothing queued before it is
//! handled at once, on the path of the SEND.

pub mod membership;
pub mod room;

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::{Rc, Weak};

use crate::app::{AppError, Application, RoomApi, SessionHandle};
use crate::config::Config;
use crate::engine::LocalBoxFuture;
use crate::hub::{Kind, Publication};
use crate::node::Node;
use crate::observability::metrics::MetricLines;
use membership::{LocalDelivery, Member, Membership};
use room::{EventType, RoomEvent, RoomId, Username};

/// Prefix of the chat destinations.
const ROOM_PREFIX: &str = "/app/room/";
/// Most chat operations one session may have waiting (joins and leaves in flight).
const MAX_QUEUED_OPS: usize = 32;

/// A queued chat operation of one session.
enum Op {
    Join(RoomId, Username),
    Leave(RoomId, String),
    /// A chat message that arrived while a join or leave was in flight (room, text, destination).
    Message(RoomId, String, String),
    /// The session ended: leave whatever room it is in.
    End,
}

/// Chat state of one session.
struct ChatSession {
    handle: Rc<SessionHandle>,
    /// The room this session is in, and its name there.
    room: RefCell<Option<(RoomId, Username)>>,
    /// Operations waiting for the one running before them.
    queue: RefCell<VecDeque<Op>>,
    running: Cell<bool>,
}

pub struct ChatApp {
    /// This app itself, for the per-session runner tasks it spawns.
    me: Weak<ChatApp>,
    node: Weak<Node>,
    membership: Rc<dyn Membership>,
    /// The chat settings and whether names are logins (`auth.users` set and
    /// `chat.free_usernames` off), replaced on reload.
    config: RefCell<Rc<Config>>,
    /// Sessions that have used the chat, by connection id.
    sessions: RefCell<HashMap<u64, Rc<ChatSession>>>,
    /// Other nodes' LEAVEs not delivered because the member is still here (`admits_remote`).
    stale_leaves: Cell<u64>,
}

impl ChatApp {
    pub fn new(node: &Rc<Node>, membership: Rc<dyn Membership>) -> Rc<ChatApp> {
        Rc::new_cyclic(|me| ChatApp {
            me: me.clone(),
            node: Rc::downgrade(node),
            membership,
            config: RefCell::new(node.config()),
            sessions: RefCell::new(HashMap::new()),
            stale_leaves: Cell::new(0),
        })
    }

    fn session(&self, handle: &Rc<SessionHandle>) -> Rc<ChatSession> {
        self.sessions
            .borrow_mut()
            .entry(handle.connection)
            .or_insert_with(|| {
                Rc::new(ChatSession {
                    handle: handle.clone(),
                    room: RefCell::new(None),
                    queue: RefCell::new(VecDeque::new()),
                    running: Cell::new(false),
                })
            })
            .clone()
    }

    /// Publishes a room event on `/topic/room/{roomId}`: encoded once, fanned out by the node.
    /// A join or leave goes to the others as the membership store decides (so each change is
    /// announced once, whatever Redis did), and to this node's clients at once, or, when the
    /// store's engine numbers it, in stream-offset order like a CHAT.
    fn broadcast(
        &self,
        session: &ChatSession,
        kind: EventType,
        room: &RoomId,
        sender: &str,
        message: Option<&str>,
        count: usize,
    ) {
        let Some(node) = self.node.upgrade() else { return };
        let event =
            RoomEvent::new(kind, room, sender, message, count).into_publication(node.next_message_id());
        if event.kind.is_membership() {
            if self.membership.announce(&session.handle.session_id, &event) == LocalDelivery::Caller {
                node.publish_local(&event);
            }
        } else {
            node.publish(event);
        }
    }

    /// Queues an operation and starts the session's runner if it is idle. Past
    /// `MAX_QUEUED_OPS` the operation is refused with `unavailable` (a session's end always
    /// gets in, so it always leaves its room).
    fn enqueue(&self, session: &Rc<ChatSession>, op: Op) {
        if session.queue.borrow().len() >= MAX_QUEUED_OPS && !matches!(op, Op::End) {
            let destination = match &op {
                Op::Join(room, _) => format!("{ROOM_PREFIX}{room}/join"),
                Op::Leave(_, d) | Op::Message(_, _, d) => d.clone(),
                Op::End => String::new(),
            };
            session.handle.send_error(&AppError::new(
                "unavailable",
                "too many requests in flight, slow down",
                &destination,
            ));
            return;
        }
        session.queue.borrow_mut().push_back(op);
        if session.running.replace(true) {
            return;
        }
        let Some(app) = self.me.upgrade() else { return };
        let session = session.clone();
        tokio::task::spawn_local(async move {
            loop {
                let op = session.queue.borrow_mut().pop_front();
                let Some(op) = op else { break };
                app.run_op(&session, op).await;
            }
            session.running.set(false);
        });
    }

    async fn run_op(&self, session: &Rc<ChatSession>, op: Op) {
        match op {
            Op::Join(room, name) => {
                let current = session.room.borrow().clone();
                if current.as_ref().is_some_and(|(r, n)| *r == room && *n == name) {
                    return; // already there under that name
                }
                let member = Member { session_id: session.handle.session_id.clone(), username: name.clone() };
                // One atomic step: the old room (or name) is left only if the new one is free.
                match self.membership.join(&room, member).await {
                    Ok(joined) => {
                        if let Some(left) = joined.left {
                            self.broadcast(
                                session,
                                EventType::Leave,
                                &left.room,
                                &left.username,
                                None,
                                left.count,
                            );
                        }
                        *session.room.borrow_mut() = Some((room.clone(), name.clone()));
                        self.broadcast(session, EventType::Join, &room, &name, None, joined.count);
                    }
                    Err(e) => session.handle.send_error(&AppError::new(
                        e.code(),
                        e.message(),
                        &format!("{ROOM_PREFIX}{room}/join"),
                    )),
                }
            }
            Op::Leave(room, destination) => {
                let current = session.room.borrow().clone();
                match current {
                    Some((r, name)) if r == room => self.leave_room(session, &r, &name).await,
                    _ => session.handle.send_error(&AppError::new(
                        "not_joined",
                        "you are not in this room",
                        &destination,
                    )),
                }
            }
            Op::Message(room, text, destination) => {
                if let Err(e) = self.chat(session, &room, &text, &destination) {
                    session.handle.send_error(&e);
                }
            }
            Op::End => {
                let current = session.room.borrow().clone();
                if let Some((room, name)) = current {
                    self.leave_room(session, &room, &name).await;
                }
                self.sessions.borrow_mut().remove(&session.handle.connection);
            }
        }
    }

    async fn leave_room(&self, session: &ChatSession, room: &RoomId, name: &Username) {
        *session.room.borrow_mut() = None;
        if let Some(left) = self.membership.leave(room, &session.handle.session_id).await {
            self.broadcast(session, EventType::Leave, room, name, None, left.count);
        }
    }
}

/// Splits `/app/room/{roomId}/{action}`.
fn split_destination(destination: &str) -> Option<(&str, &str)> {
    destination.strip_prefix(ROOM_PREFIX)?.rsplit_once('/')
}

impl Application for ChatApp {
    fn on_send(&self, handle: &Rc<SessionHandle>, destination: &str, body: &[u8]) -> Result<(), AppError> {
        let err = |code: &'static str, message: String| AppError::new(code, message, destination);
        let (room_text, action) = split_destination(destination).ok_or_else(|| {
            err("unknown_destination", "chat destinations are /app/room/{roomId}/join|message|leave".into())
        })?;
        let whole = self.config.borrow().clone();
        let config = &whole.chat;
        let room = room::room_id(room_text, config).map_err(|m| err("invalid_room_id", m))?;
        let session = self.session(handle);
        match action {
            "join" => {
                let request: room::JoinRequest = if body.iter().all(u8::is_ascii_whitespace) {
                    room::JoinRequest::default()
                } else {
                    serde_json::from_slice(body).map_err(|e| {
                        err("invalid_payload", format!("join needs {{\"username\":\"...\"}}: {e}"))
                    })?
                };
                let name = room::chat_name(request.username.as_deref(), handle.login.as_deref(), &whole)
                    .map_err(|(code, m)| err(code, m))?;
                self.enqueue(&session, Op::Join(room, name));
                Ok(())
            }
            "message" => {
                let request: room::MessageRequest = serde_json::from_slice(body).map_err(|e| {
                    err("invalid_payload", format!("message needs {{\"message\":\"...\"}}: {e}"))
                })?;
                if request.message.is_empty() || request.message.len() > config.max_message_bytes {
                    return Err(err(
                        "invalid_message",
                        format!("message must be 1 to {} bytes of UTF-8", config.max_message_bytes),
                    ));
                }
                if session.running.get() {
                    // A join or leave is still in flight: wait for it, keep the order.
                    self.enqueue(&session, Op::Message(room, request.message, destination.to_string()));
                    return Ok(());
                }
                self.chat(&session, &room, &request.message, destination)
            }
            "leave" => {
                self.enqueue(&session, Op::Leave(room, destination.to_string()));
                Ok(())
            }
            _ => Err(err(
                "unknown_destination",
                format!("unknown chat action `{action}`: use join, message or leave"),
            )),
        }
    }

    fn reload(&self, config: &Config) {
        self.membership.set_limits(config.chat.max_rooms, config.chat.max_participants_per_room);
        *self.config.borrow_mut() = Rc::new(config.clone());
    }

    fn metrics(&self) -> (MetricLines, MetricLines) {
        let in_rooms = self.sessions.borrow().values().filter(|s| s.room.borrow().is_some()).count();
        let (mut gauges, counters) = self.membership.metrics();
        gauges.push(("chat_participants_local", in_rooms as u64));
        let mut counters = counters;
        counters.push(("chat_stale_leaves_ignored_total", self.stale_leaves.get()));
        (gauges, counters)
    }

    fn admits_remote(&self, publication: &Publication) -> bool {
        let (Kind::Leave, Some(room)) = (publication.kind, &publication.room) else { return true };
        let Ok(event) = serde_json::from_slice::<RoomEvent>(&publication.body) else { return true };
        let here = self.sessions.borrow().values().any(|s| {
            s.room
                .borrow()
                .as_ref()
                .is_some_and(|(r, name)| r.as_str() == &**room && name.as_str() == event.sender)
        });
        if here {
            self.stale_leaves.set(self.stale_leaves.get() + 1);
            log::debug!("ignoring another node's LEAVE of {} in {room}: still a member here", event.sender);
        }
        !here
    }

    fn on_remote(&self, publication: &Publication) {
        // Another node's join or leave: the room's count changed; the store reads it again.
        if let (Kind::Join | Kind::Leave, Some(room)) = (publication.kind, &publication.room) {
            if let Ok(room) = RoomId::try_from(&**room) {
                self.membership.changed_elsewhere(&room);
            }
        }
    }

    fn rooms(&self) -> Option<&dyn RoomApi> {
        Some(self)
    }

    fn busy(&self) -> bool {
        self.sessions.borrow().values().any(|s| s.running.get())
    }

    fn on_session_end(&self, handle: &Rc<SessionHandle>) {
        let session = self.sessions.borrow().get(&handle.connection).cloned();
        if let Some(session) = session {
            self.enqueue(&session, Op::End);
        }
    }
}

impl ChatApp {
    /// Sends a chat message to the session's room, if it is in that room.
    fn chat(
        &self,
        session: &ChatSession,
        room: &RoomId,
        text: &str,
        destination: &str,
    ) -> Result<(), AppError> {
        let current = session.room.borrow().clone();
        match current {
            Some((r, name)) if r == *room => {
                self.broadcast(
                    session,
                    EventType::Chat,
                    room,
                    &name,
                    Some(text),
                    self.membership.count(room),
                );
                Ok(())
            }
            _ => Err(AppError::new("not_joined", "join the room before sending messages to it", destination)),
        }
    }
}

impl RoomApi for ChatApp {
    fn list(&self) -> LocalBoxFuture<'_, Vec<(String, usize)>> {
        self.membership.rooms()
    }

    fn members<'a>(&'a self, room_id: &'a str) -> LocalBoxFuture<'a, Result<Option<Vec<String>>, String>> {
        Box::pin(async move {
            let config = self.config.borrow().clone();
            let room = room::room_id(room_id, &config.chat)?;
            Ok(self.membership.members(&room).await)
        })
    }
}
