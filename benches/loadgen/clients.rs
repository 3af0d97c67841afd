//! The three kinds of client task: idle and measuring subscribers (`subscriber_loop`, which
//! counts deliveries, latency, gaps and reordering) and publishers (`publisher_loop`, paced by
//! a rate or by a window of messages not yet delivered). `run::open_all` connects them.

use super::*;

/// What one subscriber saw; merged by the run at the end.
#[derive(Default)]
pub struct SubStats {
    pub deliveries: u64,
    /// Latency of every delivery in ns (saturating at ~4.3 s).
    pub lat: Vec<u32>,
    pub lat_max: u64,
    /// Next sequence number expected from each publisher.
    pub next: Vec<u64>,
    /// Gaps seen so far (a late arrival inside a gap takes one back and counts as reordered).
    pub gaps: i64,
    pub reordered: u64,
    pub last_rx_ns: u64,
    pub errors: u64,
    pub first_error: Option<String>,
}

/// Counters the publishers read for flow control and the run reads to know when all arrived.
pub struct Shared {
    /// Deliveries counted by all subscribers, per publisher.
    pub delivered: Vec<AtomicU64>,
    pub subscribers: u64,
}

pub async fn subscriber_loop(
    mut conn: Conn,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> SubStats {
    let pubs = shared.delivered.len();
    let mut st = SubStats { next: vec![0; pubs], ..SubStats::default() };
    let mut pending = vec![0u64; pubs];
    let stopped = stop.changed();
    tokio::pin!(stopped);
    loop {
        let msg = tokio::select! {
            biased;
            m = conn.ws.next() => m,
            _ = &mut stopped => break,
        };
        // Frames that arrived in one WebSocket message were received at the same moment.
        let now = now_ns();
        let data: &[u8] = match &msg {
            Some(Ok(Message::Text(t))) => t.as_bytes(),
            Some(Ok(Message::Binary(b))) => b,
            Some(Ok(Message::Close(_))) | None => break,
            Some(Err(e)) => {
                st.errors += 1;
                st.first_error.get_or_insert_with(|| format!("receive: {e}"));
                break;
            }
            Some(Ok(_)) => continue,
        };
        let mut on_frame = |fr: &Frame<'_>| {
            if fr.command != b"MESSAGE" {
                if fr.command == b"ERROR" {
                    st.errors += 1;
                    st.first_error.get_or_insert_with(|| fr.text());
                }
                return true;
            }
            let Some((p, seq, ts)) = fr.marker() else { return true };
            if p >= pubs {
                return true;
            }
            st.deliveries += 1;
            pending[p] += 1;
            let lat = now.saturating_sub(ts);
            st.lat.push(lat.min(u64::from(u32::MAX)) as u32);
            st.lat_max = st.lat_max.max(lat);
            st.last_rx_ns = now;
            let next = &mut st.next[p];
            if seq >= *next {
                st.gaps += (seq - *next) as i64;
                *next = seq + 1;
            } else {
                st.reordered += 1;
                st.gaps -= 1;
            }
            true
        };
        let r = if conn.buf.is_empty() {
            drain_frames(data, &mut on_frame).map(|used| conn.buf.extend_from_slice(&data[used..]))
        } else {
            conn.buf.extend_from_slice(data);
            drain_frames(&conn.buf, &mut on_frame).map(|used| drop(conn.buf.drain(..used)))
        };
        if let Err(e) = r {
            st.errors += 1;
            st.first_error.get_or_insert(e);
            break;
        }
        for (p, n) in pending.iter_mut().enumerate().filter(|(_, n)| **n > 0) {
            shared.delivered[p].fetch_add(std::mem::take(n), Relaxed);
        }
    }
    st
}

#[derive(Default)]
pub struct PubStats {
    pub sent: u64,
    pub stalled: bool,
    pub error: Option<String>,
    /// The connection, still open: the run closes it after its last reading, so a chat
    /// publisher's leave (a membership change) does not fall into the measured window.
    pub sink: Option<futures_util::stream::SplitSink<Ws, Message>>,
}

/// Publishes from `start` until `end`: at `rate` msgs/s, or (rate 0) as fast as the window of
/// messages not yet delivered to every subscriber allows.
pub async fn publisher_loop(
    idx: usize,
    conn: Conn,
    o: Arc<Opts>,
    shared: Arc<Shared>,
    go: (Instant, Instant),
    rate: f64,
) -> PubStats {
    let (start, end) = go;
    let (mut sink, mut stream) = conn.ws.split();
    let error = Arc::new(Mutex::new(None::<String>));
    let reader_error = error.clone();
    // The read half only watches for ERRORs (and answers pings through tungstenite).
    let reader = tokio::spawn(async move {
        let mut buf = Vec::new();
        while let Some(Ok(msg)) = stream.next().await {
            let data: &[u8] = match &msg {
                Message::Text(t) => t.as_bytes(),
                Message::Binary(b) => b,
                _ => continue,
            };
            buf.extend_from_slice(data);
            let used = drain_frames(&buf, &mut |fr| {
                let dest = fr.header("destination").unwrap_or_default();
                if fr.command == b"ERROR" || dest == ERRORS_QUEUE.as_bytes() {
                    reader_error.lock().unwrap().get_or_insert_with(|| fr.text());
                }
                true
            });
            match used {
                Ok(n) => drop(buf.drain(..n)),
                Err(_) => break,
            }
        }
    });
    let pad = "x".repeat(o.size);
    let (dest, ctype) = if o.chat {
        (format!("/app/room/{}/message", o.room), "application/json")
    } else {
        (o.destination.clone(), "text/plain")
    };
    let mut st = PubStats::default();
    let mut seq = 0u64;
    // This publisher's share of --count (0: no limit).
    let pubs = o.publishers.max(1) as u64;
    let quota =
        if o.count == 0 { u64::MAX } else { o.count / pubs + u64::from((idx as u64) < o.count % pubs) };
    let mut last_progress = Instant::now();
    'run: loop {
        let now = Instant::now();
        if now >= end || seq >= quota {
            break;
        }
        let allowed = if rate > 0.0 {
            ((now - start).as_secs_f64() * rate) as u64 + 1
        } else {
            // With no subscribers nothing is delivered: the socket's backpressure paces it.
            let delivered = shared.delivered[idx].load(Relaxed).checked_div(shared.subscribers);
            delivered.map_or(seq + 64, |d| d + o.window)
        };
        let n = allowed.saturating_sub(seq).min(64).min(quota - seq);
        if n == 0 {
            if last_progress.elapsed() > Duration::from_secs(2) {
                st.stalled = true; // deliveries stopped coming: lost messages or a dead server
                break;
            }
            let wake = if rate > 0.0 { start + Duration::from_secs_f64(seq as f64 / rate) } else { now };
            tokio::time::sleep_until(wake.max(now + Duration::from_micros(200)).min(end).into()).await;
            continue;
        }
        last_progress = now;
        for _ in 0..n {
            let ts = now_ns();
            let marker = format!("#B{idx},{seq},{ts}#");
            let fill = &pad[..o.size.saturating_sub(marker.len() + if o.chat { 14 } else { 0 })];
            let body = if o.chat {
                format!("{{\"message\":\"{marker}{fill}\"}}")
            } else {
                format!("{marker}{fill}")
            };
            let frame = format!(
                "SEND\ndestination:{dest}\ncontent-type:{ctype}\nx-pub:{idx}\nx-seq:{seq}\nx-ts-ns:{ts}\ncontent-length:{}\n\n{body}\0",
                body.len()
            );
            if let Err(e) = sink.feed(Message::text(frame)).await {
                st.error = Some(format!("send: {e}"));
                break 'run;
            }
            seq += 1;
        }
        if let Err(e) = sink.flush().await {
            st.error = Some(format!("send: {e}"));
            break;
        }
    }
    st.sent = seq;
    // Give the server a moment to answer the last SENDs with an ERROR, if it will.
    tokio::time::sleep(Duration::from_millis(50)).await;
    reader.abort();
    if st.error.is_none() {
        st.error = error.lock().unwrap().take();
    }
    st.sink = Some(sink);
    st
}
