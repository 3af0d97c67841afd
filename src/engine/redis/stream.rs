//! Streams in Redis: each relayed destination's bounded history, shared by every node
//! (centrifuge's `broker_redis.go` history). One Lua script per publication does it all in one
//! Redis call: gives it the destination's next offset (a counter beside the stream, with the
//! stream's epoch), appends it with `XADD … MAXLEN`, refreshes the expiry and `PUBLISH`es it.
//!
//! Keys, per destination `/topic/{rest}`: `{prefix}stream:data:{rest}` (a Redis Stream whose
//! entry ids are `0-{offset}`, so `XRANGE` reads by offset) and `{prefix}stream:meta:{rest}` (a
//! hash: `epoch`, `offset`). Both expire together, `ttl_ms` after the last message.
//!
//! The offset rule: offsets are given by Redis when a publication is appended, in the order
//! appends reach it, so every node reads the same history. A publication accepted while Redis
//! is unreachable is delivered at once to the accepting node's subscribers without a position
//! and gets its offset when its node's buffer reaches Redis (in that node's order); the other
//! nodes then receive it with that offset like any other. When the meta hash is gone (expired,
//! Redis flushed or restarted empty) the next append starts a new epoch at offset 1, so an
//! offset never means two messages within one epoch.

use std::rc::Rc;

use redis::Value;

use super::order::Arrival;
use super::Keys;

/// Appends one publication and publishes it. KEYS: data, meta, applied (this process's last
/// applied sequence number, `relay_applied_key`). ARGV: channel, envelope JSON (an object),
/// MAXLEN, ttl ms, seq, the epoch and offset the caller has seen for this destination (empty
/// and 0: none), ttl ms of the applied key, `prev` (the sequence number that must have been
/// applied before this one; 0: none). The published (and kept) text is the envelope with
/// `offset` and `sepoch` put first. Returns {offset, epoch}; {0, ""} for a `seq` this process
/// had applied already (a retry of a call that reached Redis: appended once); {-1, ""} when
/// `prev` was not applied yet (a part of an older call arriving late on an abandoned
/// connection: refused, so each process's publications are appended in its order).
///
/// An epoch whose counter is below an offset the caller has seen under it (a replica promoted
/// without the primary's last writes) cannot vouch for its offsets: it is replaced, so an
/// offset never names two messages within one epoch.
pub const APPEND_LUA: &str = r#"
local seq = tonumber(ARGV[5])
local applied = redis.call('GET', KEYS[3])
if applied then
  applied = tonumber(applied)
  if seq <= applied then
    return {0, ''}
  end
  if applied < tonumber(ARGV[9]) then
    return {-1, ''}
  end
end
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if epoch and epoch == ARGV[6] and tonumber(redis.call('HGET', KEYS[2], 'offset') or '0') < tonumber(ARGV[7]) then
  epoch = false
end
if not epoch then
  local t = redis.call('TIME')
  epoch = t[1] .. '-' .. t[2]
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('HSET', KEYS[2], 'epoch', epoch)
end
local offset = redis.call('HINCRBY', KEYS[2], 'offset', 1)
local msg = '{"offset":' .. offset .. ',"sepoch":"' .. epoch .. '",' .. string.sub(ARGV[2], 2)
redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[3], '0-' .. offset, 'd', msg)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('SET', KEYS[3], seq, 'PX', ARGV[8])
redis.call('PUBLISH', ARGV[1], msg)
return {offset, epoch}
"#;

/// Makes sure a destination's stream has an epoch a reader can vouch for, and returns where
/// it stands. KEYS: data, meta. ARGV: ttl ms, the epoch and offset the caller has seen (empty
/// and 0: none). A missing epoch is created (offset 0), so a SUBSCRIBE's RECEIPT always
/// carries a real one; an epoch whose counter is below the offset the caller saw under it is
/// replaced (see `APPEND_LUA`). Returns {epoch, last offset}.
pub const HEAD_LUA: &str = r#"
local epoch = redis.call('HGET', KEYS[2], 'epoch')
local offset = tonumber(redis.call('HGET', KEYS[2], 'offset') or '0')
if epoch and epoch == ARGV[2] and offset < tonumber(ARGV[3]) then
  epoch = false
end
if not epoch then
  local t = redis.call('TIME')
  epoch = t[1] .. '-' .. t[2]
  offset = 0
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('HSET', KEYS[2], 'epoch', epoch, 'offset', 0)
  redis.call('PEXPIRE', KEYS[2], ARGV[1])
end
return {epoch, offset}
"#;

/// The key holding the last sequence number the append script applied for one process of a
/// node (`server_id` and its start time `instance`).
pub fn applied_key(keys: &Keys, server_id: &str, instance: u64) -> String {
    format!("{}relay:applied:{server_id}:{instance}", keys.prefix())
}

/// The part of a destination after `/topic/`.
fn rest(destination: &str) -> &str {
    destination.strip_prefix("/topic/").unwrap_or(destination)
}

/// The Redis Stream of a destination.
pub fn data_key(keys: &Keys, destination: &str) -> String {
    format!("{}stream:data:{}", keys.prefix(), rest(destination))
}

/// The offset counter and epoch of a destination.
pub fn meta_key(keys: &Keys, destination: &str) -> String {
    format!("{}stream:meta:{}", keys.prefix(), rest(destination))
}

/// One append (EVALSHA of `APPEND_LUA`): what `add_append` needs besides the pipeline.
pub struct AppendCall<'a> {
    pub sha: &'a str,
    pub keys: &'a Keys,
    pub applied_key: &'a str,
    pub destination: &'a str,
    pub channel: &'a str,
    pub payload: &'a [u8],
    /// (MAXLEN, key expiry in ms).
    pub bounds: (usize, u64),
    pub seq: u64,
    /// The epoch and offset this node has seen for the destination ("" and 0: none).
    pub seen: (&'a str, u64),
    /// Expiry of the applied key, in ms.
    pub applied_ttl_ms: u64,
    /// The sequence number that must have been applied before this one (0: none).
    pub prev: u64,
}

/// Adds one append to a pipeline.
pub fn add_append(pipe: &mut redis::Pipeline, call: &AppendCall<'_>) {
    pipe.cmd("EVALSHA")
        .arg(call.sha)
        .arg(3)
        .arg(data_key(call.keys, call.destination))
        .arg(meta_key(call.keys, call.destination))
        .arg(call.applied_key)
        .arg(call.channel)
        .arg(call.payload)
        .arg(call.bounds.0)
        .arg(call.bounds.1)
        .arg(call.seq)
        .arg(call.seen.0)
        .arg(call.seen.1)
        .arg(call.applied_ttl_ms)
        .arg(call.prev);
}

/// What Redis answered to one append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Appended now, at this offset of this epoch.
    At(u64, Rc<str>),
    /// This process's sequence number was applied before (a retry): nothing appended.
    Before,
    /// A predecessor was not applied yet: refused, send again in order.
    OutOfOrder,
    /// An error reply (the script could not run, e.g. `NOSCRIPT`, `OOM`), or an unreadable one.
    Refused(String),
}

/// Reads a script reply: `{offset, epoch}`, `{0, ""}` or `{-1, ""}`, or an error.
pub fn parse_reply(value: &Value) -> Appended {
    let items = match value {
        Value::Array(items) => items,
        Value::ServerError(e) => {
            return Appended::Refused(format!("{} {}", e.code(), e.details().unwrap_or_default()))
        }
        other => return Appended::Refused(format!("unexpected reply {other:?}")),
    };
    let offset = match items.first() {
        Some(Value::Int(n)) => *n,
        _ => return Appended::Refused("unexpected reply".into()),
    };
    match (offset, items.get(1).and_then(text)) {
        (0, _) => Appended::Before,
        (n, _) if n < 0 => Appended::OutOfOrder,
        (n, Some(epoch)) => Appended::At(n.unsigned_abs(), Rc::from(epoch)),
        (_, None) => Appended::Refused("unexpected reply".into()),
    }
}

/// Reads a `HEAD_LUA` reply `{epoch, last offset}`.
pub fn parse_head_script(value: &Value) -> Option<Head> {
    let Value::Array(items) = value else { return None };
    let epoch = text(items.first()?)?;
    let last = text(items.get(1)?)?.parse().ok()?;
    Some(Head { epoch: Some(Rc::from(epoch)), last })
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Where a destination's stream stands: its epoch (None: no stream) and last offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub epoch: Option<Rc<str>>,
    pub last: u64,
}

/// Reads the head of a stream from an `HMGET meta epoch offset` reply.
pub fn parse_head(value: &Value) -> Head {
    let Value::Array(items) = value else { return Head { epoch: None, last: 0 } };
    let epoch = items.first().and_then(text).map(Rc::from);
    let last = items.get(1).and_then(text).and_then(|t| t.parse().ok()).unwrap_or(0);
    match epoch {
        Some(epoch) => Head { epoch: Some(epoch), last },
        None => Head { epoch: None, last: 0 },
    }
}

/// The kept envelopes of an `XRANGE` reply, as (offset, envelope bytes), in offset order.
pub fn parse_range(value: &Value) -> Vec<(u64, Vec<u8>)> {
    let Value::Array(entries) = value else { return Vec::new() };
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let Value::Array(parts) = entry else { continue };
        let (Some(id), Some(Value::Array(fields))) = (parts.first().and_then(text), parts.get(1)) else {
            continue;
        };
        let Some(offset) = id.strip_prefix("0-").and_then(|o| o.parse::<u64>().ok()) else { continue };
        let mut fields = fields.iter();
        while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
            if text(name).as_deref() == Some("d") {
                if let Value::BulkString(bytes) = value {
                    out.push((offset, bytes.clone()));
                }
            }
        }
    }
    out
}

/// Adds the reads of a destination's head and of its entries from `from` on (at most
/// `count`) to a pipeline: two replies, for `parse_head` and `parse_range`.
pub fn add_read(pipe: &mut redis::Pipeline, keys: &Keys, destination: &str, from: u64, count: usize) {
    pipe.cmd("HMGET").arg(meta_key(keys, destination)).arg("epoch").arg("offset");
    pipe.cmd("XRANGE")
        .arg(data_key(keys, destination))
        .arg(format!("0-{}", from.max(1)))
        .arg("+")
        .arg("COUNT")
        .arg(count.max(1));
}

/// A kept entry as an arrival for the sequencer, or None when it cannot be read. An entry
/// this very process appended (`me`, `instance`) carries no publication: the outbox delivers
/// its own publications here itself.
pub fn arrival(offset: u64, epoch: &Rc<str>, payload: &[u8], me: &str, instance: u64) -> Option<Arrival> {
    let envelope = super::envelope::Envelope::decode(payload).ok()?;
    let own = envelope.origin == me && envelope.epoch == instance;
    let dropped_before = if own { 0 } else { envelope.dropped };
    let publication = if own { None } else { Some(envelope.into_publication().ok()?) };
    Some(Arrival { offset, epoch: epoch.clone(), publication, deliver_by: None, dropped_before })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_collide_between_data_and_meta() {
        let k = Keys::new("stomp:");
        assert_eq!(data_key(&k, "/topic/room/lobby"), "stomp:stream:data:room/lobby");
        assert_eq!(meta_key(&k, "/topic/room/lobby"), "stomp:stream:meta:room/lobby");
        assert_ne!(data_key(&k, "/topic/meta:x"), meta_key(&k, "/topic/x"));
    }

    #[test]
    fn replies_are_read() {
        let reply = Value::Array(vec![Value::Int(7), Value::BulkString(b"171-5".to_vec())]);
        assert_eq!(parse_reply(&reply), Appended::At(7, Rc::from("171-5")));
        let before = Value::Array(vec![Value::Int(0), Value::BulkString(Vec::new())]);
        assert_eq!(parse_reply(&before), Appended::Before);
        let late = Value::Array(vec![Value::Int(-1), Value::BulkString(Vec::new())]);
        assert_eq!(parse_reply(&late), Appended::OutOfOrder);
        assert!(matches!(parse_reply(&Value::Nil), Appended::Refused(_)));
        let head = Value::Array(vec![Value::BulkString(b"e".to_vec()), Value::BulkString(b"12".to_vec())]);
        assert_eq!(parse_head(&head), Head { epoch: Some(Rc::from("e")), last: 12 });
        assert_eq!(parse_head(&Value::Array(vec![Value::Nil, Value::Nil])), Head { epoch: None, last: 0 });
        let range = Value::Array(vec![Value::Array(vec![
            Value::BulkString(b"0-3".to_vec()),
            Value::Array(vec![Value::BulkString(b"d".to_vec()), Value::BulkString(b"{}".to_vec())]),
        ])]);
        assert_eq!(parse_range(&range), vec![(3, b"{}".to_vec())]);
    }
}
