//! The Redis membership store (cluster mode). Redis holds the cluster's view on the contract's
//! keys, changed only by two Lua scripts so a join (with the move or rename it implies) or a
//! leave is atomic. Beside it this node keeps its own members in a `MemoryMembership`: that is
//! the truth for its sessions, the whole view while Redis is away, and what the catch-up writes
//! back.
//!
//! Announcements to the other nodes are exact: the store remembers, per session of this node,
//! what the other nodes were last told (`told`). A change that Redis got is relayed at once;
//! one made without Redis is only delivered here, and the catch-up relays the net difference
//! between `told` and the truth, once, after the other nodes have had time to listen again.
//! Room counts come from Redis (script replies, and a count read after another node's join or
//! leave event), never from an event's body.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::{Rc, Weak};

use super::memory::MemoryMembership;
use super::scripts::{JoinReply, Scripts};
use super::{JoinError, Joined, Left, LocalDelivery, Member, Membership};
use crate::chat::room::{EventType, RoomEvent, RoomId, Username};
use crate::engine::redis::link::LinkError;
use crate::engine::redis::{NodeState, RedisEngine, Shard};
use crate::engine::LocalBoxFuture;
use crate::hub::Publication;
use crate::node::Node;
use crate::observability::metrics::{Counter, MetricLines};

/// How long the list of a node's evicted sessions is kept for its return (1 hour, in ms).
const EVICTED_TTL_MS: i64 = 3_600_000;

/// Most rooms `/api/rooms` lists from Redis.
const ROOM_LIST_LIMIT: usize = 1000;

/// Counters of the store, for `/metrics`.
#[derive(Default)]
struct Stats {
    deferred: Counter,
    caught_up: Counter,
    write_errors: Counter,
}

/// Room membership in Redis, with this node's own members kept locally.
pub struct RedisMembership {
    me: Weak<RedisMembership>,
    shard: Rc<Shard>,
    engine: Rc<RedisEngine>,
    /// The node, to publish the LEAVE of a dead node's members to everyone here too.
    node: Weak<Node>,
    /// (max rooms, max participants per room), as configured (reloadable).
    limits: Cell<(usize, usize)>,
    /// This node's own members: the truth for its sessions.
    local: MemoryMembership,
    /// Cluster-wide member counts as last read from Redis.
    counts: RefCell<HashMap<RoomId, usize>>,
    /// Per session of this node: what the other nodes were last told (room and name).
    told: RefCell<HashMap<Rc<str>, (RoomId, Username)>>,
    /// Sessions changed without Redis since the last catch-up: their events are not relayed
    /// now; the catch-up announces their net change.
    unshared: RefCell<HashSet<Rc<str>>>,
    /// Events waiting for the other nodes to listen again after a catch-up; later events
    /// queue behind them so each session's events keep their order.
    held: RefCell<Option<Vec<Publication>>>,
    scripts: Scripts,
    stats: Stats,
}

impl RedisMembership {
    /// The store over `engine`'s shard; registers itself for the engine's catch-ups.
    pub fn new(node: &Rc<Node>, engine: Rc<RedisEngine>) -> Rc<RedisMembership> {
        let config = node.config();
        let store = Rc::new_cyclic(|me| RedisMembership {
            me: me.clone(),
            shard: engine.shard().clone(),
            engine: engine.clone(),
            node: Rc::downgrade(node),
            limits: Cell::new((config.chat.max_rooms, config.chat.max_participants_per_room)),
            local: MemoryMembership::new(config.chat.max_rooms, config.chat.max_participants_per_room),
            counts: RefCell::new(HashMap::new()),
            told: RefCell::new(HashMap::new()),
            unshared: RefCell::new(HashSet::new()),
            held: RefCell::new(None),
            scripts: Scripts::new(),
            stats: Stats::default(),
        });
        let state: Weak<dyn NodeState> = Rc::downgrade(&store) as Weak<RedisMembership>;
        engine.add_state(state);
        store
    }

    async fn join_in_redis(
        &self,
        room: &RoomId,
        member: &Member,
        force: bool,
    ) -> Result<JoinReply, Option<JoinError>> {
        self.scripts.join(&self.shard, room, member, self.limits.get(), force).await
    }

    async fn leave_in_redis(&self, room: &str, sid: &str) -> Result<Option<(String, usize)>, LinkError> {
        self.scripts.leave(&self.shard, room, sid).await
    }

    /// A change of `sid` was made without Redis: remembered, and Redis is stale.
    fn unshared_change(&self, sid: &Rc<str>) {
        self.unshared.borrow_mut().insert(sid.clone());
        self.shard.sync.mark_stale();
    }

    /// Relays an event to the other nodes, behind any held ones.
    fn relay(&self, event: Publication) {
        if let Some(held) = self.held.borrow_mut().as_mut() {
            held.push(event);
            return;
        }
        self.engine.relay(&event);
    }

    /// Reads the member counts of `rooms` from Redis into the cache.
    async fn refresh_counts(&self, rooms: &[RoomId]) -> Result<(), LinkError> {
        if rooms.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for room in rooms {
            pipe.scard(self.shard.keys.participants(room));
        }
        let counts: Vec<usize> =
            self.shard.link.call(|mut c| async move { pipe.query_async(&mut c).await }).await?;
        for (room, n) in rooms.iter().zip(counts) {
            self.set_count(room, n);
        }
        Ok(())
    }

    /// This node's sessions in Redis with the room each is in there.
    async fn rooms_in_redis(&self) -> Result<Vec<(String, Option<String>)>, LinkError> {
        let key = self.shard.keys.server_sessions(&self.shard.server_id);
        let sids: Vec<String> = self
            .shard
            .link
            .call(|mut c| async move { redis::cmd("SMEMBERS").arg(&key).query_async(&mut c).await })
            .await?;
        if sids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for sid in &sids {
            pipe.get(self.shard.keys.current_room(sid));
        }
        let rooms: Vec<Option<String>> =
            self.shard.link.call(|mut c| async move { pipe.query_async(&mut c).await }).await?;
        Ok(sids.into_iter().zip(rooms).collect())
    }

    /// The events that bring the other nodes from what they were told to the truth, per
    /// session: LEAVE of the old place, JOIN of the new one. Updates `told`.
    fn net_changes(&self) -> Vec<(EventType, RoomId, Username)> {
        let sessions: Vec<Rc<str>> = self.unshared.borrow_mut().drain().collect();
        let mut told = self.told.borrow_mut();
        let mut events = Vec::new();
        for sid in sessions {
            let now = self.local.place_of(&sid).map(|(room, m)| (room, m.username));
            let before = told.get(&sid).cloned();
            if before == now {
                continue;
            }
            if let Some((room, name)) = before {
                events.push((EventType::Leave, room, name));
            }
            if let Some((room, name)) = &now {
                events.push((EventType::Join, room.clone(), name.clone()));
            }
            match now {
                Some(place) => told.insert(sid, place),
                None => told.remove(&sid),
            };
        }
        events
    }

    /// Records a room's count as Redis gave it; an empty room is forgotten (the cache stays
    /// as small as the set of rooms with members).
    fn set_count(&self, room: &RoomId, count: usize) {
        let mut counts = self.counts.borrow_mut();
        if count == 0 {
            counts.remove(room);
        } else {
            counts.insert(room.clone(), count);
        }
    }

    fn event(&self, kind: EventType, room: &RoomId, name: &str, count: usize) -> Option<Publication> {
        let node = self.node.upgrade()?;
        Some(RoomEvent::new(kind, room, name, None, count).into_publication(node.next_message_id()))
    }

    async fn catch_up_now(&self) -> Result<(), LinkError> {
        // 0. Sessions of this node that a survivor removed while this node seemed dead: the
        //    others heard them leave, so they will hear them join again.
        let key = self.shard.keys.server_evicted(&self.shard.server_id);
        let (evicted,): (Vec<String>,) =
            self.shard
                .link
                .call(|mut c| async move {
                    redis::pipe().smembers(&key).del(&key).ignore().query_async(&mut c).await
                })
                .await?;
        if !evicted.is_empty() {
            log::warn!(
                "{} sessions of this node were taken for dead meanwhile: announcing them again",
                evicted.len()
            );
            let mut told = self.told.borrow_mut();
            let mut unshared = self.unshared.borrow_mut();
            for sid in evicted {
                if let Some((sid, _)) = told.remove_entry(sid.as_str()) {
                    unshared.insert(sid);
                }
            }
        }
        // 1. Redis in line with this node's truth: what it holds that is no more, then what
        //    is missing or different (the join script moves or renames as needed).
        let mut gone: Vec<(String, String)> = Vec::new();
        for (sid, room) in self.rooms_in_redis().await? {
            if let (Some(room), None) = (room, self.local.place_of(&sid)) {
                gone.push((sid, room));
            }
        }
        // Sessions the other nodes last saw in a room they have left since (their session
        // keys may be gone already).
        for (sid, (room, _)) in self.told.borrow().iter() {
            if self.local.place_of(sid).is_none() && !gone.iter().any(|(s, _)| **s == **sid) {
                gone.push((sid.to_string(), room.to_string()));
            }
        }
        for (sid, room) in &gone {
            self.leave_in_redis(room, sid).await?;
        }
        for (room, member) in self.local.all() {
            match self.join_in_redis(&room, &member, true).await {
                Ok(reply) => {
                    self.set_count(&room, reply.count);
                }
                Err(_) => return Err(LinkError::Down),
            }
        }
        // 2. The other nodes hear the net change of each session once, with counts from
        //    Redis, after they have had time to listen again.
        let changes = self.net_changes();
        if changes.is_empty() {
            return Ok(());
        }
        let mut rooms: Vec<RoomId> = changes.iter().map(|(_, room, _)| room.clone()).collect();
        rooms.sort();
        rooms.dedup();
        if self.refresh_counts(&rooms).await.is_err() {
            log::debug!("counts for the catch-up's announcements not read; using the last known");
        }
        let events: Vec<Publication> = changes
            .iter()
            .filter_map(|(kind, room, name)| {
                // Read from Redis just now (the node is not in sync until this returns).
                let count = self.counts.borrow().get(room).copied().unwrap_or_else(|| self.local.count(room));
                self.event(*kind, room, name, count)
            })
            .collect();
        self.stats.caught_up.add(events.len() as u64);
        let mut held = self.held.borrow_mut();
        match held.as_mut() {
            Some(queue) => queue.extend(events),
            None => {
                *held = Some(events);
                let (Some(me), delay) = (self.me.upgrade(), self.shard.announce_delay()) else {
                    return Ok(());
                };
                tokio::task::spawn_local(async move {
                    tokio::time::sleep(delay).await;
                    let events = me.held.borrow_mut().take().unwrap_or_default();
                    for event in &events {
                        me.engine.relay(event);
                    }
                });
            }
        }
        Ok(())
    }

    async fn session_lost_now(&self, server: &str, sid: &str) -> Result<(), LinkError> {
        let key = self.shard.keys.current_room(sid);
        let room: Option<String> = self
            .shard
            .link
            .call(|mut c| async move { redis::cmd("GET").arg(&key).query_async(&mut c).await })
            .await?;
        let Some(room_text) = room else { return Ok(()) };
        let Some((name, left)) = self.leave_in_redis(&room_text, sid).await? else { return Ok(()) };
        let Ok(room) = RoomId::try_from(room_text.as_str()) else { return Ok(()) };
        self.set_count(&room, left);
        if server == self.shard.server_id {
            return Ok(()); // this node's own session at shutdown: its LEAVE went out already
        }
        // A dead node's member: every node's clients must hear it, this node's too. Should
        // the node only have been cut off, it learns from this set that everyone was told its
        // member left, and announces it again when it is back.
        if let (Some(node), Some(event)) =
            (self.node.upgrade(), self.event(EventType::Leave, &room, &name, left))
        {
            node.publish(event);
        }
        let evicted = self.shard.keys.server_evicted(server);
        let (sid, ttl) = (sid.to_string(), EVICTED_TTL_MS);
        self.shard
            .link
            .call(|mut c| async move {
                redis::pipe()
                    .sadd(&evicted, &sid)
                    .ignore()
                    .pexpire(&evicted, ttl)
                    .ignore()
                    .query_async::<()>(&mut c)
                    .await
            })
            .await
    }
}

impl NodeState for RedisMembership {
    fn catch_up(&self) -> LocalBoxFuture<'_, Result<(), LinkError>> {
        Box::pin(self.catch_up_now())
    }

    fn session_lost<'a>(
        &'a self,
        server: &'a str,
        session_id: &'a str,
    ) -> LocalBoxFuture<'a, Result<(), LinkError>> {
        Box::pin(self.session_lost_now(server, session_id))
    }
}

impl Membership for RedisMembership {
    fn set_limits(&self, max_rooms: usize, max_participants: usize) {
        self.limits.set((max_rooms, max_participants));
        self.local.set_limits(max_rooms, max_participants);
    }

    fn join<'a>(&'a self, room: &'a RoomId, member: Member) -> LocalBoxFuture<'a, Result<Joined, JoinError>> {
        Box::pin(async move {
            if self.shard.in_sync() {
                match self.join_in_redis(room, &member, false).await {
                    Ok(reply) => {
                        let local = self.local.put(room, member);
                        let left = match (local, reply.left) {
                            (Some(mut l), Some((_, _, n))) => {
                                l.count = n;
                                Some(l)
                            }
                            (l, _) => l,
                        };
                        // The left room first: a rename leaves and joins the same room.
                        if let Some(l) = &left {
                            self.set_count(&l.room, l.count);
                        }
                        self.set_count(room, reply.count);
                        return Ok(Joined { count: reply.count, left });
                    }
                    Err(Some(e)) => return Err(e),
                    Err(None) => {} // Redis failed (maybe after applying it): go on alone.
                }
            }
            // Redis is away: this node decides alone; the catch-up writes it back.
            let sid = member.session_id.clone();
            let joined = self.local.join_now(room, member)?;
            self.unshared_change(&sid);
            Ok(joined)
        })
    }

    fn leave<'a>(&'a self, room: &'a RoomId, session_id: &'a str) -> LocalBoxFuture<'a, Option<Left>> {
        Box::pin(async move {
            let sid: Rc<str> = self.local.place_of(session_id)?.1.session_id;
            let mut left = self.local.leave_now(room, session_id)?;
            if self.shard.in_sync() {
                match self.leave_in_redis(room, session_id).await {
                    Ok(Some((_, remaining))) => {
                        left.count = remaining;
                        self.set_count(room, remaining);
                        return Some(left);
                    }
                    Ok(None) => log::debug!("session {session_id} was not in {room} in Redis"),
                    Err(e) => {
                        self.stats.write_errors.inc();
                        log::debug!("leave in redis failed: {e}");
                    }
                }
            }
            self.unshared_change(&sid);
            Some(left)
        })
    }

    fn count(&self, room: &RoomId) -> usize {
        if self.shard.in_sync() {
            if let Some(n) = self.counts.borrow().get(room) {
                return *n;
            }
        }
        self.local.count(room)
    }

    fn rooms(&self) -> LocalBoxFuture<'_, Vec<(String, usize)>> {
        Box::pin(async move {
            if self.shard.in_sync() {
                let index = self.shard.keys.rooms_index();
                let names: Result<Vec<String>, _> = self
                    .shard
                    .link
                    .call(|mut c| async move { redis::cmd("SMEMBERS").arg(&index).query_async(&mut c).await })
                    .await;
                if let Ok(mut names) = names {
                    if names.is_empty() {
                        // No room anywhere: an empty pipeline would be a Redis error.
                        return Vec::new();
                    }
                    names.sort();
                    names.truncate(ROOM_LIST_LIMIT);
                    let mut pipe = redis::pipe();
                    for name in &names {
                        pipe.scard(self.shard.keys.participants(name));
                    }
                    let counts: Result<Vec<usize>, _> =
                        self.shard.link.call(|mut c| async move { pipe.query_async(&mut c).await }).await;
                    if let Ok(counts) = counts {
                        return names.into_iter().zip(counts).filter(|(_, n)| *n > 0).collect();
                    }
                }
            }
            self.local.rooms_now()
        })
    }

    fn members<'a>(&'a self, room: &'a RoomId) -> LocalBoxFuture<'a, Option<Vec<String>>> {
        Box::pin(async move {
            if self.shard.in_sync() {
                let info = self.shard.keys.room_info(room);
                let fields: Result<Vec<(String, String)>, _> = self
                    .shard
                    .link
                    .call(|mut c| async move { redis::cmd("HGETALL").arg(&info).query_async(&mut c).await })
                    .await;
                if let Ok(fields) = fields {
                    let mut members: Vec<(u64, String)> = fields
                        .into_iter()
                        .filter(|(k, _)| k.starts_with("member:"))
                        .filter_map(|(_, v)| {
                            let (seq, name) = v.split_once(':')?;
                            Some((seq.parse().ok()?, name.to_string()))
                        })
                        .collect();
                    if members.is_empty() {
                        return None;
                    }
                    members.sort();
                    return Some(members.into_iter().map(|(_, n)| n).collect());
                }
            }
            self.local.members_now(room)
        })
    }

    fn announce(&self, session_id: &str, event: &Publication) -> LocalDelivery {
        if self.unshared.borrow().contains(session_id) {
            // Redis does not have this change: the catch-up announces the net change.
            self.stats.deferred.inc();
            return LocalDelivery::Caller;
        }
        let place = self.local.place_of(session_id);
        {
            let mut told = self.told.borrow_mut();
            match place {
                Some((room, member)) => {
                    told.insert(member.session_id, (room, member.username));
                }
                None => {
                    told.remove(session_id);
                }
            }
        }
        if self.held.borrow().is_none() && self.shard.in_sync() {
            // Numbered by Redis and delivered here in offset order, like a CHAT.
            self.engine.relay_and_deliver(event);
            return LocalDelivery::Engine;
        }
        self.relay(event.clone());
        LocalDelivery::Caller
    }

    fn changed_elsewhere(&self, room: &RoomId) {
        if !self.shard.in_sync() {
            return;
        }
        let (Some(me), room) = (self.me.upgrade(), room.clone()) else { return };
        tokio::task::spawn_local(async move {
            let _ = me.refresh_counts(std::slice::from_ref(&room)).await;
        });
    }

    fn metrics(&self) -> (MetricLines, MetricLines) {
        let gauges = vec![
            ("chat_rooms_local", self.local.room_count() as u64),
            ("chat_sessions_unshared", self.unshared.borrow().len() as u64),
        ];
        let counters = vec![
            ("cluster_relay_deferred_total", self.stats.deferred.get()),
            ("chat_catch_up_events_total", self.stats.caught_up.get()),
            ("chat_membership_write_errors_total", self.stats.write_errors.get()),
        ];
        (gauges, counters)
    }
}
