//! Room membership in cluster mode. Redis holds the cluster's view on the contract's keys,
//! changed only by two Lua scripts so a join or leave is atomic (a crash never leaves half of
//! one). Beside it the engine keeps this node's own members locally: joins and leaves go on
//! while Redis is away, and the resync writes them back, announcing the net change once.

use std::rc::Rc;

use redis::{Script, Value};

use super::RedisEngine;
use crate::chat::room::{now_ms, EventType, RoomEvent, RoomId, Username};
use crate::engine::{JoinError, LocalBoxFuture, Member, Presence};

/// Adds a session to a room. KEYS: participants, info, session, current_room, rooms index,
/// server sessions, active sessions. ARGV: sid, username, server, max participants, max rooms,
/// now, room, force. Returns {count, added} or {-1} name taken, {-2} full, {-3} too many rooms.
/// `force` (the resync) skips the limits and never takes a name from its owner.
const JOIN_LUA: &str = r#"
local owner = redis.call('HGET', KEYS[2], 'user:' .. ARGV[2])
local force = ARGV[8] == '1'
if owner and owner ~= ARGV[1] and not force then return {-1} end
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return {redis.call('SCARD', KEYS[1]), 0} end
if not force then
  if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[4]) then return {-2} end
  if redis.call('EXISTS', KEYS[1]) == 0 and redis.call('SCARD', KEYS[5]) >= tonumber(ARGV[5]) then return {-3} end
end
redis.call('SADD', KEYS[1], ARGV[1])
local seq = redis.call('HINCRBY', KEYS[2], 'seq', 1)
redis.call('HSETNX', KEYS[2], 'createdAt', ARGV[6])
redis.call('HSET', KEYS[2], 'member:' .. ARGV[1], seq .. ':' .. ARGV[2])
if not owner then redis.call('HSET', KEYS[2], 'user:' .. ARGV[2], ARGV[1]) end
redis.call('HSET', KEYS[3], 'server', ARGV[3], 'username', ARGV[2], 'room', ARGV[7])
redis.call('SET', KEYS[4], ARGV[7])
redis.call('SADD', KEYS[5], ARGV[7])
redis.call('SADD', KEYS[6], ARGV[1])
redis.call('SADD', KEYS[7], ARGV[1])
return {redis.call('SCARD', KEYS[1]), 1}
"#;

/// Removes a session from a room. KEYS: participants, info, session, current_room, rooms
/// index. ARGV: sid, room. Returns {username, remaining} or nil if it was not there.
const LEAVE_LUA: &str = r#"
if redis.call('SREM', KEYS[1], ARGV[1]) == 0 then return false end
local m = redis.call('HGET', KEYS[2], 'member:' .. ARGV[1])
local name = ''
if m then name = string.sub(m, (string.find(m, ':') or 0) + 1) end
redis.call('HDEL', KEYS[2], 'member:' .. ARGV[1])
if name ~= '' and redis.call('HGET', KEYS[2], 'user:' .. name) == ARGV[1] then
  redis.call('HDEL', KEYS[2], 'user:' .. name)
end
if redis.call('GET', KEYS[4]) == ARGV[2] then redis.call('DEL', KEYS[4]) end
redis.call('HDEL', KEYS[3], 'room', 'username')
local left = redis.call('SCARD', KEYS[1])
if left == 0 then
  redis.call('DEL', KEYS[2])
  redis.call('SREM', KEYS[5], ARGV[2])
end
return {name, left}
"#;

/// The two scripts, hashed once (sent by SHA, loaded again if Redis lost them).
pub struct Scripts {
    join: Script,
    leave: Script,
}

impl Scripts {
    pub fn new() -> Scripts {
        Scripts { join: Script::new(JOIN_LUA), leave: Script::new(LEAVE_LUA) }
    }
}

/// Most rooms `/api/rooms` lists from Redis.
const ROOM_LIST_LIMIT: usize = 1000;

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(*n),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

impl RedisEngine {
    /// Runs the join script; Ok((count, added)).
    async fn join_in_redis(
        &self,
        room: &RoomId,
        member: &Member,
        force: bool,
    ) -> Result<(usize, bool), Option<JoinError>> {
        let k = &self.keys;
        let sid = &*member.session_id;
        let mut invocation = self.scripts.join.prepare_invoke();
        invocation
            .key(k.participants(room))
            .key(k.room_info(room))
            .key(k.session(sid))
            .key(k.current_room(sid))
            .key(k.rooms_index())
            .key(k.server_sessions(&self.server_id))
            .key(k.sessions_active())
            .arg(sid)
            .arg(member.username.as_str())
            .arg(&self.server_id)
            .arg(self.local_limits().1)
            .arg(self.local_limits().0)
            .arg(now_ms())
            .arg(room.as_str())
            .arg(if force { "1" } else { "0" });
        let reply: Vec<i64> =
            self.link.call(|mut c| async move { invocation.invoke_async(&mut c).await }).await.map_err(
                |e| {
                    log::debug!("join in redis failed: {e}");
                    None
                },
            )?;
        match reply.as_slice() {
            [-1] => Err(Some(JoinError::UsernameTaken)),
            [-2] => Err(Some(JoinError::RoomFull { limit: self.local_limits().1 })),
            [-3] => Err(Some(JoinError::TooManyRooms { limit: self.local_limits().0 })),
            [count, added] => Ok((*count as usize, *added == 1)),
            _ => Err(None),
        }
    }

    /// Runs the leave script; Ok(Some((name, remaining))) when the session was there.
    pub(super) async fn leave_in_redis(&self, room: &str, sid: &str) -> Result<Option<(String, usize)>, ()> {
        let k = &self.keys;
        let mut invocation = self.scripts.leave.prepare_invoke();
        invocation
            .key(k.participants(room))
            .key(k.room_info(room))
            .key(k.session(sid))
            .key(k.current_room(sid))
            .key(k.rooms_index())
            .arg(sid)
            .arg(room);
        let reply: Value = self
            .link
            .call(|mut c| async move { invocation.invoke_async(&mut c).await })
            .await
            .map_err(|_| ())?;
        match reply {
            Value::Array(items) if items.len() == 2 => {
                Ok(Some((text(&items[0]).unwrap_or_default(), int(&items[1]).unwrap_or(0).max(0) as usize)))
            }
            _ => Ok(None),
        }
    }

    /// (max rooms, max participants) as configured for the chat.
    fn local_limits(&self) -> (usize, usize) {
        self.node().map_or((usize::MAX, usize::MAX), |n| {
            let c = n.config();
            (c.chat.max_rooms, c.chat.max_participants_per_room)
        })
    }

    /// Publishes a room event to the other nodes only (local clients have seen it).
    fn announce(&self, kind: EventType, room: &RoomId, name: &str, count: usize) {
        let Some(node) = self.node() else { return };
        self.enqueue(&RoomEvent::new(kind, room, name, None, count).into_publication(node.next_message_id()));
    }

    /// Writes this node's state back to Redis after Redis missed some of it (a reconnect, a
    /// Redis restart that lost its data, a change made while Redis was away): registers,
    /// removes its sessions that ended meanwhile (their LEAVE announced once), re-adds its
    /// live sessions and members (never taking a name from another live node's member).
    pub(super) async fn resync(&self) {
        let announce = self.was_down.get();
        self.needs_resync.set(false);
        if self.register().await.is_err() {
            self.needs_resync.set(true);
            return;
        }
        let server_sessions = self.keys.server_sessions(&self.server_id);
        let in_redis: Vec<String> = match self
            .link
            .call(
                |mut c| async move { redis::cmd("SMEMBERS").arg(&server_sessions).query_async(&mut c).await },
            )
            .await
        {
            Ok(list) => list,
            Err(_) => {
                self.needs_resync.set(true);
                return;
            }
        };
        let live: Vec<Rc<str>> = self.sessions.borrow().iter().cloned().collect();
        let mut failed = false;
        for sid in in_redis.iter().filter(|sid| !live.iter().any(|l| &**l == sid.as_str())) {
            failed |= self.remove_session(&self.server_id, sid, true).await.is_err();
        }
        for sid in &live {
            failed |= self.write_session(sid).await.is_err();
        }
        let mut joins = Vec::new();
        for (room, member) in self.local.members_of_node() {
            match self.join_in_redis(&room, &member, true).await {
                Ok((count, added)) => {
                    self.counts.borrow_mut().insert(room.clone(), count);
                    if added && announce {
                        joins.push((room, member.username, count));
                    }
                }
                Err(_) => failed = true,
            }
        }
        if !joins.is_empty() {
            // Nodes that lost Redis with this one are re-subscribing too; announce once they
            // have had one back-off cap and a heartbeat to do so.
            let delay =
                std::time::Duration::from_millis(self.config.reconnect_max_ms + self.config.heartbeat_ms);
            if let Some(me) = self.me.upgrade() {
                tokio::task::spawn_local(async move {
                    tokio::time::sleep(delay).await;
                    for (room, name, count) in joins {
                        me.announce(EventType::Join, &room, &name, count);
                    }
                });
            }
        }
        self.stats.resyncs.inc();
        if failed || !self.link.is_up() {
            self.needs_resync.set(true);
        } else {
            self.was_down.set(false);
            log::info!("cluster state written back to redis ({} sessions)", live.len());
        }
    }

    /// Removes a session of `server` from Redis: its room (LEAVE announced when `announce`,
    /// to the other nodes only if the session is this node's) and its keys.
    pub(super) async fn remove_session(&self, server: &str, sid: &str, announce: bool) -> Result<(), ()> {
        let key = self.keys.current_room(sid);
        let room: Option<String> = self
            .link
            .call(|mut c| async move { redis::cmd("GET").arg(&key).query_async(&mut c).await })
            .await
            .map_err(|_| ())?;
        if let Some(room_text) = room {
            if let Some((name, left)) = self.leave_in_redis(&room_text, sid).await? {
                if let (true, Ok(room)) = (announce, RoomId::try_from(room_text.as_str())) {
                    self.counts.borrow_mut().insert(room.clone(), left);
                    if server == self.server_id {
                        self.announce(EventType::Leave, &room, &name, left);
                    } else if let Some(node) = self.node() {
                        // A dead node's member: every node's clients must hear it, ours too.
                        let event = RoomEvent::new(EventType::Leave, &room, &name, None, left);
                        node.publish(event.into_publication(node.next_message_id()));
                    }
                }
            }
        }
        let k = &self.keys;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .del(k.session(sid))
            .del(k.current_room(sid))
            .srem(k.sessions_active(), sid)
            .srem(k.server_sessions(server), sid)
            .ignore();
        self.link.call(|mut c| async move { pipe.query_async::<()>(&mut c).await }).await.map_err(|_| ())
    }

    /// Writes one live session's keys (atomically).
    async fn write_session(&self, sid: &str) -> Result<(), ()> {
        let k = &self.keys;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hset_multiple(
                k.session(sid),
                &[("server", self.server_id.as_str()), ("connectedAt", &now_ms().to_string())],
            )
            .sadd(k.sessions_active(), sid)
            .sadd(k.server_sessions(&self.server_id), sid)
            .ignore();
        let result = self.link.call(|mut c| async move { pipe.query_async::<()>(&mut c).await }).await;
        if result.is_err() {
            self.stats.state_write_errors.inc();
            self.needs_resync.set(true);
        }
        result.map_err(|_| ())
    }

    /// Publishes a small JSON on the session connect/disconnect channels of the seed.
    fn session_event(&self, channel: String, sid: &str) {
        let payload =
            serde_json::json!({"sessionId": sid, "serverId": self.server_id, "timestamp": now_ms()})
                .to_string();
        if !self.link.is_up() {
            return;
        }
        let Some(me) = self.me.upgrade() else { return };
        tokio::task::spawn_local(async move {
            let _ = me
                .link
                .call(|mut c| async move {
                    redis::cmd("PUBLISH").arg(&channel).arg(&payload).query_async::<()>(&mut c).await
                })
                .await;
        });
    }
}

impl Presence for RedisEngine {
    fn join<'a>(&'a self, room: &'a RoomId, member: Member) -> LocalBoxFuture<'a, Result<usize, JoinError>> {
        Box::pin(async move {
            if self.link.is_up() && !self.needs_resync.get() {
                match self.join_in_redis(room, &member, false).await {
                    Ok((count, _)) => {
                        self.local.join_forced(room, member);
                        self.counts.borrow_mut().insert(room.clone(), count);
                        return Ok(count);
                    }
                    Err(Some(e)) => return Err(e),
                    Err(None) => {} // Redis failed: go on alone.
                }
            }
            // Redis is away: this node decides alone; the resync writes it back.
            self.needs_resync.set(true);
            let count = self.local.join(room, member).await?;
            self.counts.borrow_mut().insert(room.clone(), count);
            Ok(count)
        })
    }

    fn leave<'a>(
        &'a self,
        room: &'a RoomId,
        session_id: &'a str,
    ) -> LocalBoxFuture<'a, Option<(Username, usize)>> {
        Box::pin(async move {
            let (name, local_left) = self.local.leave(room, session_id).await?;
            let mut left = local_left;
            if self.link.is_up() && !self.needs_resync.get() {
                match self.leave_in_redis(room, session_id).await {
                    Ok(Some((_, remaining))) => left = remaining,
                    Ok(None) => {}
                    Err(()) => self.needs_resync.set(true),
                }
            } else {
                self.needs_resync.set(true);
            }
            self.counts.borrow_mut().insert(room.clone(), left);
            Some((name, left))
        })
    }

    fn count(&self, room: &RoomId) -> usize {
        if self.redis_up() {
            if let Some(n) = self.counts.borrow().get(room) {
                return *n;
            }
        }
        self.local.count(room)
    }

    fn rooms(&self) -> LocalBoxFuture<'_, Vec<(String, usize)>> {
        Box::pin(async move {
            if self.redis_up() {
                let index = self.keys.rooms_index();
                let names: Result<Vec<String>, _> = self
                    .link
                    .call(|mut c| async move { redis::cmd("SMEMBERS").arg(&index).query_async(&mut c).await })
                    .await;
                if let Ok(mut names) = names {
                    names.sort();
                    names.truncate(ROOM_LIST_LIMIT);
                    let mut pipe = redis::pipe();
                    for name in &names {
                        pipe.scard(self.keys.participants(name));
                    }
                    let counts: Result<Vec<usize>, _> =
                        self.link.call(|mut c| async move { pipe.query_async(&mut c).await }).await;
                    if let Ok(counts) = counts {
                        return names.into_iter().zip(counts).filter(|(_, n)| *n > 0).collect();
                    }
                }
            }
            self.local.rooms().await
        })
    }

    fn members<'a>(&'a self, room: &'a RoomId) -> LocalBoxFuture<'a, Option<Vec<String>>> {
        Box::pin(async move {
            if self.redis_up() {
                let info = self.keys.room_info(room);
                let fields: Result<Vec<(String, String)>, _> = self
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
            self.local.members(room).await
        })
    }

    fn session_started(&self, session_id: &Rc<str>) {
        self.sessions.borrow_mut().insert(session_id.clone());
        self.session_event(self.keys.session_connect_channel(), session_id);
        if !self.link.is_up() {
            self.needs_resync.set(true);
            return;
        }
        let (Some(me), sid) = (self.me.upgrade(), session_id.clone()) else { return };
        tokio::task::spawn_local(async move {
            let _ = me.write_session(&sid).await;
        });
    }

    fn session_ended(&self, session_id: &Rc<str>) {
        self.sessions.borrow_mut().remove(session_id);
        self.session_event(self.keys.session_disconnect_channel(), session_id);
        if !self.link.is_up() {
            self.needs_resync.set(true);
            return;
        }
        let (Some(me), sid) = (self.me.upgrade(), session_id.clone()) else { return };
        tokio::task::spawn_local(async move {
            // The chat app's own leave was queued first and runs first on the one connection;
            // this removes whatever is left. If it fails the session stays in this node's set
            // in Redis, and the next resync finds and removes it.
            let server = me.server_id.clone();
            if me.remove_session(&server, &sid, false).await.is_err() {
                me.stats.state_write_errors.inc();
                me.needs_resync.set(true);
            }
        });
    }
}
