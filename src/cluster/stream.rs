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

/// Appends one publication and publishes it. KEYS: data, meta. ARGV: channel, envelope JSON
/// (an object), MAXLEN, ttl ms. The published (and kept) text is the envelope with `offset`
/// and `sepoch` put first. Returns {offset, epoch}.
pub const APPEND_LUA: &str = r#"
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if not epoch then
  local t = redis.call('TIME')
  epoch = t[1] .. '-' .. t[2]
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'epoch', epoch)
end
local offset = redis.call('HINCRBY', KEYS[2], 'offset', 1)
local msg = '{"offset":' .. offset .. ',"sepoch":"' .. epoch .. '",' .. string.sub(ARGV[2], 2)
redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[3], '0-' .. offset, 'd', msg)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('PUBLISH', ARGV[1], msg)
return {offset, epoch}
"#;

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

/// Adds one append (EVALSHA of `APPEND_LUA`) to a pipeline.
pub fn add_append(
    pipe: &mut redis::Pipeline,
    sha: &str,
    keys: &Keys,
    destination: &str,
    channel: &str,
    payload: &[u8],
    (max_len, ttl_ms): (usize, u64),
) {
    pipe.cmd("EVALSHA")
        .arg(sha)
        .arg(2)
        .arg(data_key(keys, destination))
        .arg(meta_key(keys, destination))
        .arg(channel)
        .arg(payload)
        .arg(max_len)
        .arg(ttl_ms);
}

/// Reads a script reply `{offset, epoch}`.
pub fn parse_reply(value: &Value) -> Option<(u64, Rc<str>)> {
    let Value::Array(items) = value else { return None };
    let offset = match items.first()? {
        Value::Int(n) => u64::try_from(*n).ok()?,
        _ => return None,
    };
    let epoch = text(items.get(1)?)?;
    Some((offset, Rc::from(epoch)))
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

/// A kept entry as an arrival for the sequencer, or None when it cannot be read.
pub fn arrival(offset: u64, epoch: &Rc<str>, payload: &[u8], me: &str) -> Option<Arrival> {
    let envelope = super::envelope::Envelope::decode(payload).ok()?;
    let delivered_here = envelope.origin == me && envelope.delivered;
    let publication = if delivered_here { None } else { Some(envelope.into_publication().ok()?) };
    Some(Arrival { offset, epoch: epoch.clone(), publication })
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
        assert_eq!(parse_reply(&reply), Some((7, Rc::from("171-5"))));
        assert_eq!(parse_reply(&Value::Nil), None);
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
