//! The two Lua scripts that change room membership in Redis, so each join (with the move or
//! rename it implies) and each leave is atomic: a crash never leaves half of one. Sent by SHA
//! and loaded again if Redis lost them (a restart).

use redis::{Script, Value};

use super::{JoinError, Member};
use crate::board::clock::now_ms;
use crate::chat::room::RoomId;
use crate::engine::redis::link::LinkError;
use crate::engine::redis::Shard;

/// Puts a session in a room, leaving its current room (or name) first. KEYS: participants,
/// info, session, current_room, rooms index, server sessions, active sessions. ARGV: sid,
/// username, server, max participants, max rooms, now, room, force, key prefix. Returns
/// {count, changed, left room, left name, left count}, or {-1} name taken, {-2} full, {-3}
/// too many rooms. `force` (the catch-up) skips the limits and never takes a name from its
/// owner.
const JOIN_LUA: &str = r#"
local sid, name, room = ARGV[1], ARGV[2], ARGV[7]
local force = ARGV[8] == '1'
local function name_of(m) return string.sub(m, (string.find(m, ':') or 0) + 1) end
local owner = redis.call('HGET', KEYS[2], 'user:' .. name)
if owner and owner ~= sid and not force then return {-1} end
local current = redis.call('GET', KEYS[4])
local mine = redis.call('HGET', KEYS[2], 'member:' .. sid)
if current == room and mine and name_of(mine) == name then
  return {redis.call('SCARD', KEYS[1]), 0, '', '', 0}
end
if not force then
  local within = current == room and mine
  if not within and redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[4]) then return {-2} end
  if redis.call('EXISTS', KEYS[1]) == 0 and redis.call('SCARD', KEYS[5]) >= tonumber(ARGV[5]) then return {-3} end
end
local left_room, left_name, left_count = '', '', 0
if current then
  local pk = ARGV[9] .. 'rooms:' .. current .. ':participants'
  local ik = ARGV[9] .. 'rooms:' .. current .. ':info'
  if redis.call('SREM', pk, sid) == 1 then
    local m = redis.call('HGET', ik, 'member:' .. sid)
    if m then left_name = name_of(m) end
    redis.call('HDEL', ik, 'member:' .. sid)
    if left_name ~= '' and redis.call('HGET', ik, 'user:' .. left_name) == sid then
      redis.call('HDEL', ik, 'user:' .. left_name)
    end
    left_count = redis.call('SCARD', pk)
    if left_count == 0 then
      redis.call('DEL', ik)
      redis.call('SREM', KEYS[5], current)
    end
    left_room = current
  end
end
owner = redis.call('HGET', KEYS[2], 'user:' .. name)
redis.call('SADD', KEYS[1], sid)
local seq = redis.call('HINCRBY', KEYS[2], 'seq', 1)
redis.call('HSETNX', KEYS[2], 'createdAt', ARGV[6])
redis.call('HSET', KEYS[2], 'member:' .. sid, seq .. ':' .. name)
if not owner then redis.call('HSET', KEYS[2], 'user:' .. name, sid) end
redis.call('HSET', KEYS[3], 'server', ARGV[3], 'username', name, 'room', room)
redis.call('SET', KEYS[4], room)
redis.call('SADD', KEYS[5], room)
redis.call('SADD', KEYS[6], sid)
redis.call('SADD', KEYS[7], sid)
return {redis.call('SCARD', KEYS[1]), 1, left_room, left_name, left_count}
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

/// The keys the join and leave scripts both start with, as their `KEYS[1]`..`KEYS[5]`: the
/// room's participants and info, the session and its current room, the rooms index.
fn room_keys<'i, 'a>(
    invocation: &'i mut redis::ScriptInvocation<'a>,
    k: &crate::engine::redis::Keys,
    room: &str,
    sid: &str,
) -> &'i mut redis::ScriptInvocation<'a> {
    invocation
        .key(k.participants(room))
        .key(k.room_info(room))
        .key(k.session(sid))
        .key(k.current_room(sid))
        .key(k.rooms_index())
}

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

/// The join script's answer.
pub struct JoinReply {
    pub count: usize,
    /// What the session left in Redis to join: (room, name, count there after).
    pub left: Option<(String, String, usize)>,
}

/// The scripts, hashed once.
pub struct Scripts {
    join: Script,
    leave: Script,
}

impl Scripts {
    pub fn new() -> Scripts {
        Scripts { join: Script::new(JOIN_LUA), leave: Script::new(LEAVE_LUA) }
    }

    /// Runs the join script: Ok(reply), Err(Some(refusal)), or Err(None) when Redis did not
    /// answer (the join may or may not have been applied).
    pub async fn join(
        &self,
        shard: &Shard,
        room: &RoomId,
        member: &Member,
        (max_rooms, max_participants): (usize, usize),
        force: bool,
    ) -> Result<JoinReply, Option<JoinError>> {
        let k = &shard.keys;
        let sid = &*member.session_id;
        let mut invocation = self.join.prepare_invoke();
        room_keys(&mut invocation, k, room.as_str(), sid)
            .key(k.server_sessions(&shard.server_id))
            .key(k.sessions_active())
            .arg(sid)
            .arg(member.username.as_str())
            .arg(&shard.server_id)
            .arg(max_participants)
            .arg(max_rooms)
            .arg(now_ms())
            .arg(room.as_str())
            .arg(if force { "1" } else { "0" })
            .arg(k.prefix());
        let reply: Vec<Value> =
            shard.link.call(|mut c| async move { invocation.invoke_async(&mut c).await }).await.map_err(
                |e| {
                    log::debug!("join in redis failed: {e}");
                    None
                },
            )?;
        match reply.as_slice() {
            [code] => Err(Some(match int(code) {
                Some(-1) => JoinError::UsernameTaken,
                Some(-2) => JoinError::RoomFull { limit: max_participants },
                Some(-3) => JoinError::TooManyRooms { limit: max_rooms },
                _ => return Err(None),
            })),
            [count, _changed, left_room, left_name, left_count] => {
                let count = int(count).unwrap_or(0).max(0) as usize;
                let left_room = text(left_room).unwrap_or_default();
                let left = (!left_room.is_empty()).then(|| {
                    (
                        left_room,
                        text(left_name).unwrap_or_default(),
                        int(left_count).unwrap_or(0).max(0) as usize,
                    )
                });
                Ok(JoinReply { count, left })
            }
            _ => Err(None),
        }
    }

    /// Runs the leave script; Ok(Some((name, remaining))) when the session was there.
    pub async fn leave(
        &self,
        shard: &Shard,
        room: &str,
        sid: &str,
    ) -> Result<Option<(String, usize)>, LinkError> {
        let k = &shard.keys;
        let mut invocation = self.leave.prepare_invoke();
        room_keys(&mut invocation, k, room, sid).arg(sid).arg(room);
        let reply: Value =
            shard.link.call(|mut c| async move { invocation.invoke_async(&mut c).await }).await?;
        Ok(match reply {
            Value::Array(items) if items.len() == 2 => {
                Some((text(&items[0]).unwrap_or_default(), int(&items[1]).unwrap_or(0).max(0) as usize))
            }
            _ => None,
        })
    }
}
