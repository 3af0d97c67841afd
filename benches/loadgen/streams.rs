//! The suite's streams part (issue 11's figures, printed, never asserted):
//! - (s1) fan-out deliveries/s with streams off vs on, on one node (local mode) and, with
//!   `redis-server` on PATH, cross-node (publisher on A, subscribers on B);
//! - (s2) recovery time of 1000 missed messages: SUBSCRIBE `x-stream-offset:first` until its
//!   RECEIPT, one node and cross-node;
//! - (s3) Redis commands per streamed message (the append script: target 1) and Redis memory per
//!   room at the default retention (100 chat-sized messages: `MEMORY USAGE` of its stream and
//!   its counter).
//!
//! The suite's config streams `/topic/bench-s` besides the rooms, with room for 1000 messages.

use super::*;

/// The config lines the suite adds for this part.
pub const STREAMS_CONFIG: &str =
    "[streams]\nprefixes = [\"/topic/room/\", \"/topic/bench-s\"]\nmax_messages = 1000\n";

/// A chat-sized body (about what the chat's JSON events weigh).
fn chat_body(i: usize) -> String {
    format!(
        "{{\"type\":\"CHAT\",\"roomId\":\"bench\",\"sender\":\"alice\",\"message\":\"message number {i} of the bench\",\"timestamp\":1764460800000,\"participantCount\":3}}"
    )
}

/// Publishes `n` messages to `dest` through `pub_url`, waits until a SUBSCRIBE on `sub_url`
/// sees them all kept, then times a recovery from the first: (time, messages recovered).
pub async fn recovery_time(pub_url: &str, sub_url: &str, dest: &str, n: usize) -> Res<(Duration, usize)> {
    let o = Opts::default();
    let (mut p, _) = Conn::open_at(&o, pub_url).await?;
    for i in 0..n {
        let body = chat_body(i);
        p.send(format!("SEND\ndestination:{dest}\ncontent-length:{}\n\n{body}\0", body.len())).await?;
    }
    let (mut c, _) = Conn::open_at(&o, sub_url).await?;
    // Wait (bounded) until the stream holds all of them: a SUBSCRIBE's RECEIPT says the next offset.
    let deadline = Instant::now() + STEP_TIMEOUT;
    for k in 0.. {
        let id = format!("probe{k}");
        c.send(format!("SUBSCRIBE\ndestination:{dest}\nid:{id}\nreceipt:r-{id}\n\n\0")).await?;
        let mut next = 0u64;
        let rid = format!("r-{id}");
        c.wait_for("probe RECEIPT", |fr| {
            let done = fr.command == b"RECEIPT" && fr.header("receipt-id") == Some(rid.as_bytes());
            if done {
                next = fr.header("x-stream-offset").and_then(atoi).unwrap_or(0);
            }
            done
        })
        .await?;
        c.send(format!("UNSUBSCRIBE\nid:{id}\n\n\0")).await?;
        if next > n as u64 {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("only {} of {n} messages kept", next.saturating_sub(1)));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let t0 = Instant::now();
    c.send(format!("SUBSCRIBE\ndestination:{dest}\nid:rec\nreceipt:r-rec\nx-stream-offset:first\n\n\0"))
        .await?;
    let mut got = 0usize;
    c.wait_for("the recovery's RECEIPT", |fr| {
        if fr.command == b"MESSAGE" && fr.header("subscription") == Some(b"rec") {
            got += 1;
        }
        fr.command == b"RECEIPT" && fr.header("receipt-id") == Some(b"r-rec")
    })
    .await?;
    Ok((t0.elapsed(), got))
}

/// Redis commands per streamed message and memory of one room's history at 100 messages.
pub async fn redis_figures(url: &str, redis_port: u16) -> Res<(f64, u64)> {
    let o = Opts::default();
    let (mut p, _) = Conn::open_at(&o, url).await?;
    redis_cmd(redis_port, &["CONFIG", "RESETSTAT"]).await?;
    let n = 100usize;
    for i in 0..n {
        let body = chat_body(i);
        p.send(format!("SEND\ndestination:/topic/bench-s-mem\ncontent-length:{}\n\n{body}\0", body.len()))
            .await?;
    }
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        let len = redis_cmd(redis_port, &["XLEN", "stomp:stream:data:bench-s-mem"]).await?;
        if len.trim().trim_start_matches(':').parse::<usize>().unwrap_or(0) >= n {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("stream length {len}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let calls = parse_commandstats(&redis_cmd(redis_port, &["INFO", "commandstats"]).await?);
    let scripts: u64 = calls.iter().filter(|(c, _)| c == "evalsha").map(|(_, n)| n).sum();
    let mut bytes = 0;
    for key in ["stomp:stream:data:bench-s-mem", "stomp:stream:meta:bench-s-mem"] {
        let v = redis_cmd(redis_port, &["MEMORY", "USAGE", key]).await?;
        bytes += v.trim().trim_start_matches(':').parse::<u64>().unwrap_or(0);
    }
    Ok((scripts as f64 / n as f64, bytes))
}
