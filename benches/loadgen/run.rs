//! One measured run against a URL: idle connections, subscribers, publishers, the publishing
//! window and drain, the server's RSS/CPU from /proc and counters from /metrics, and the printout.

use super::*;

pub fn rss_bytes(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

pub fn clock_ticks() -> f64 {
    static TCK: OnceLock<f64> = OnceLock::new();
    *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// (utime, stime) of a process in seconds, all threads.
pub fn cpu_secs(pid: &str) -> Option<(f64, f64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest: Vec<&str> = s.rsplit_once(')')?.1.split_whitespace().collect();
    let t = clock_ticks();
    Some((rest.get(11)?.parse::<f64>().ok()? / t, rest.get(12)?.parse::<f64>().ok()? / t))
}

/// CPU seconds the whole machine spent busy (all cores, anything not idle or iowait).
pub fn machine_busy_secs() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    let f: Vec<f64> = s.lines().next()?.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    let total: f64 = f.iter().take(8).sum();
    Some((total - f.get(3)? - f.get(4)?) / clock_ticks())
}

#[derive(Clone, Copy, Default)]
pub struct Metrics {
    pub frames_sent: u64,
    pub socket_writes: u64,
    pub encodings: u64,
}

/// Scrapes `/metrics` next to the WebSocket URL; None when it is not a stomp-edge.
pub async fn scrape_metrics(url: &str) -> Option<Metrics> {
    let (host, port) = url_host_port(url).ok()?;
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect((host.as_str(), port)).await.ok()?;
        let req = format!("GET /metrics HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).await.ok()?;
        Some(body)
    };
    let body = tokio::time::timeout(Duration::from_secs(3), fetch).await.ok()??;
    let get = |name: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok())
            .map(|v| v as u64)
    };
    Some(Metrics {
        frames_sent: get("stomp_edge_frames_sent_total")?,
        socket_writes: get("stomp_edge_socket_writes_total")?,
        encodings: get("stomp_edge_message_encodings_total").unwrap_or(0),
    })
}

/// One command to the Redis at 127.0.0.1:`port` over a fresh connection (the `redis` crate);
/// the reply as text (a status, an integer or a bulk string), an error reply as `Err`.
pub async fn redis_cmd(port: u16, args: &[&str]) -> Res<String> {
    let ask = async {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).map_err(|e| e.to_string())?;
        let mut con = client.get_multiplexed_async_connection().await.map_err(|e| e.to_string())?;
        let (name, rest) = args.split_first().ok_or("no redis command")?;
        redis::cmd(name).arg(rest).query_async::<String>(&mut con).await.map_err(|e| format!("redis: {e}"))
    };
    tokio::time::timeout(Duration::from_secs(3), ask)
        .await
        .map_err(|_| "redis command timed out".to_string())?
}

/// `INFO commandstats` → (command, calls), without the calls this program made (INFO, CONFIG).
pub fn parse_commandstats(info: &str) -> Vec<(String, u64)> {
    info.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest.strip_prefix("calls=")?.split(',').next()?.parse().ok()?;
            Some((name.to_string(), calls))
        })
        .filter(|(n, _)| !n.starts_with("info") && !n.starts_with("config"))
        .collect()
}

/// Connects one subscriber to `url` and one publisher to the publish node, and sends probes
/// until one crosses: the subscribing node's Redis SUBSCRIBE follows the client's SUBSCRIBE
/// asynchronously, so without this the first messages of a cross-node run could be lost.
/// Both then unsubscribe from the destination (nobody reads them during the window) and stay
/// connected until the run ends (in chat mode their leaving would be a membership change).
async fn warm_up(o: &Opts) -> Res<(Conn, Conn, Duration)> {
    let t0 = Instant::now();
    let (mut s, _) = Conn::open(o).await?;
    if o.chat {
        s.join_chat(&o.room, "warmup-s").await?;
    } else {
        s.subscribe(&o.destination, "sub-0").await?;
    }
    let (mut p, _) = Conn::open_at(o, o.publish_url()).await?;
    let (dest, ctype, body) = if o.chat {
        p.join_chat(&o.room, "warmup-p").await?;
        (format!("/app/room/{}/message", o.room), "application/json", "{\"message\":\"loadgen-warmup\"}")
    } else {
        (o.destination.clone(), "text/plain", "loadgen-warmup")
    };
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        let frame = format!(
            "SEND\ndestination:{dest}\ncontent-type:{ctype}\ncontent-length:{}\n\n{body}\0",
            body.len()
        );
        p.send(frame).await?;
        let crossed = s.wait_for("the warm-up message", |fr| {
            fr.command == b"MESSAGE" && contains(fr.body, b"loadgen-warmup")
        });
        match tokio::time::timeout(Duration::from_millis(200), crossed).await {
            Ok(r) => break r?,
            Err(_) if Instant::now() < deadline => {}
            Err(_) => return Err("warm-up: no message crossed from the publish node in 10 s".into()),
        }
    }
    for (c, what) in [(&mut s, "s"), (&mut p, "p")] {
        if what == "s" || o.chat {
            c.send(format!("UNSUBSCRIBE\nid:sub-0\nreceipt:r-unsub-{what}\n\n\0")).await?;
            let rid = format!("r-unsub-{what}");
            c.wait_for("RECEIPT for UNSUBSCRIBE", |fr| {
                fr.command == b"RECEIPT" && fr.header("receipt-id") == Some(rid.as_bytes())
            })
            .await?;
        }
    }
    Ok((s, p, t0.elapsed()))
}

// ---------------------------------------------------------------------------------------------
// One run

#[derive(Default)]
pub struct Report {
    pub chat_unavailable: Option<String>,
    pub connect_failures: usize,
    pub first_error: Option<String>,
    pub connect_ms: Vec<f64>,
    pub rss_before_idle: Option<u64>,
    pub rss_after_idle: Option<u64>,
    pub rss_after_all: Option<u64>,
    pub idle: usize,
    pub published: u64,
    pub publish_secs: f64,
    pub deliveries: u64,
    pub expected: u64,
    pub delivery_secs: f64,
    pub lat_ns: Vec<u32>,
    pub lat_max_ns: u64,
    pub lost: i64,
    pub reordered: u64,
    pub errors: u64,
    pub stalled: bool,
    pub window_secs: f64,
    pub server_cpu: Option<(f64, f64)>,
    /// CPU of the publishers' node when it is another one (`--publish-server-pid`).
    pub publish_server_cpu: Option<(f64, f64)>,
    /// Time until the first message crossed from the publish node (cross-node runs).
    pub warm_up: Option<Duration>,
    /// Redis commands during the window (`--redis-stats`), from `INFO commandstats`.
    pub redis_calls: Option<Vec<(String, u64)>>,
    pub client_cpu: Option<(f64, f64)>,
    /// CPU seconds used on this machine by processes other than the server and this client
    /// during the window (a concurrent build makes every figure noisier).
    pub other_cpu: Option<f64>,
    pub metrics: Option<Metrics>,
}

impl Report {
    pub fn pct(&self, q: f64) -> Option<f64> {
        pct(&self.lat_ns, q).map(|ns| ns as f64 / 1e6)
    }
    pub fn server_cpu_pct(&self) -> Option<f64> {
        self.server_cpu.map(|(u, s)| 100.0 * (u + s) / self.window_secs)
    }
    pub fn deliveries_per_sec(&self) -> f64 {
        self.deliveries as f64 / self.delivery_secs.max(1e-9)
    }
    /// Redis calls per published message: (PUBLISH, EVAL/EVALSHA, all others, the others).
    pub fn redis_per_message(&self) -> Option<(f64, f64, f64, String)> {
        let calls = self.redis_calls.as_ref()?;
        let per = |n: u64| n as f64 / self.published.max(1) as f64;
        let sum = |f: &dyn Fn(&str) -> bool| calls.iter().filter(|(n, _)| f(n)).map(|(_, c)| c).sum::<u64>();
        let is_eval = |n: &str| n.starts_with("eval") || n.starts_with("fcall");
        let others: Vec<String> = calls
            .iter()
            .filter(|(n, _)| n != "publish" && !is_eval(n))
            .map(|(n, c)| format!("{n} {c}"))
            .collect();
        Some((
            per(sum(&|n| n == "publish")),
            per(sum(&is_eval)),
            per(sum(&|n| n != "publish" && !is_eval(n))),
            if others.is_empty() { "none".into() } else { others.join(", ") },
        ))
    }
    pub fn coalescing(&self) -> Option<f64> {
        self.metrics.filter(|m| m.socket_writes > 0).map(|m| m.frames_sent as f64 / m.socket_writes as f64)
    }
}

pub fn pct<T: Copy + Ord + Into<u64>>(v: &[T], q: f64) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    let mut v = v.to_vec();
    let k = ((v.len() - 1) as f64 * q).round() as usize;
    Some((*v.select_nth_unstable(k).1).into())
}

pub fn diff(a: Option<(f64, f64)>, b: Option<(f64, f64)>) -> Option<(f64, f64)> {
    Some((b?.0 - a?.0, b?.1 - a?.1))
}

#[derive(Clone, Copy, PartialEq)]
pub enum Role {
    Idle,
    Sub,
    Pub,
}

/// Opens `n` connections of one role, CONNECT_CONCURRENCY at a time; each then runs `body`.
/// Returns the task handles once every connection is set up (or failed).
pub async fn open_all<T: Send + 'static, F>(
    n: usize,
    role: Role,
    o: &Arc<Opts>,
    report: &mut Report,
    body: impl Fn(usize, Conn) -> F,
) -> Vec<tokio::task::JoinHandle<Option<T>>>
where
    F: std::future::Future<Output = T> + Send + 'static,
{
    let sem = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let (tx, mut rx) = mpsc::channel::<Res<Duration>>(n.max(1));
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let (sem, tx, o) = (sem.clone(), tx.clone(), o.clone());
        let (conn_tx, conn_rx) = tokio::sync::oneshot::channel::<Conn>();
        handles.push(conn_rx);
        tokio::spawn(async move {
            let permit = sem.acquire_owned().await;
            let r = async {
                let url = match role {
                    Role::Pub => o.publish_url(),
                    Role::Sub if i < o.publish_node_subscribers => o.publish_url(),
                    _ => o.url.as_deref().unwrap_or_default(),
                };
                let (mut c, t) = Conn::open_at(&o, url).await?;
                match role {
                    Role::Idle => c.subscribe(IDLE_DESTINATION, "sub-0").await?,
                    Role::Sub if o.chat => c.join_chat(&o.room, &format!("s{i}")).await?,
                    Role::Sub => c.subscribe(&o.destination, "sub-0").await?,
                    Role::Pub if o.chat => {
                        c.join_chat(&o.room, &format!("p{i}")).await?;
                        c.send("UNSUBSCRIBE\nid:sub-0\nreceipt:r-unsub\n\n\0".into()).await?;
                        c.wait_for("RECEIPT for UNSUBSCRIBE", |fr| fr.command == b"RECEIPT").await?;
                    }
                    Role::Pub => {}
                }
                Ok::<_, String>((c, t))
            }
            .await;
            drop(permit);
            match r {
                Ok((c, t)) => {
                    let _ = conn_tx.send(c); // before the report, so the collector finds it
                    let _ = tx.send(Ok(t)).await;
                }
                Err(e) => drop(tx.send(Err(e)).await),
            }
        });
    }
    drop(tx);
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT + Duration::from_millis(n as u64 * 5);
    for _ in 0..n {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(Ok(t))) => report.connect_ms.push(t.as_secs_f64() * 1e3),
            Ok(Some(Err(e))) => {
                report.connect_failures += 1;
                report.first_error.get_or_insert(e);
            }
            Ok(None) | Err(_) => {
                report.connect_failures += 1;
                report.first_error.get_or_insert("connection setup timed out".into());
            }
        }
    }
    handles
        .into_iter()
        .enumerate()
        .map(|(i, mut rx)| match rx.try_recv() {
            Ok(c) => {
                let fut = body(i, c);
                tokio::spawn(async move { Some(fut.await) })
            }
            // Set-up failed or timed out: nothing to run.
            Err(_) => tokio::spawn(async { None }),
        })
        .collect()
}

pub async fn run(o: Opts) -> Report {
    let o = Arc::new(o);
    let url = o.url.clone().unwrap_or_default();
    let pid = o.server_pid;
    let mut r = Report { idle: o.idle, ..Report::default() };
    let (stop_tx, stop_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        delivered: (0..o.publishers).map(|_| AtomicU64::new(0)).collect(),
        subscribers: o.subscribers as u64,
    });

    r.rss_before_idle = pid.and_then(rss_bytes);
    let idle = {
        let (shared, stop) = (shared.clone(), stop_rx.clone());
        open_all(o.idle, Role::Idle, &o, &mut r, move |_, c| subscriber_loop(c, shared.clone(), stop.clone()))
            .await
    };
    tokio::time::sleep(Duration::from_millis(200)).await; // let the server settle before reading RSS
    r.rss_after_idle = pid.and_then(rss_bytes);
    let idle_failures = r.connect_failures;

    let subs = {
        let (shared, stop) = (shared.clone(), stop_rx.clone());
        open_all(o.subscribers, Role::Sub, &o, &mut r, move |_, c| {
            subscriber_loop(c, shared.clone(), stop.clone())
        })
        .await
    };
    let (go_tx, go_rx) = watch::channel(None::<(Instant, Instant)>);
    let connected_before_pubs = r.connect_ms.len();
    let rate = o.rate as f64 / o.publishers.max(1) as f64;
    let pubs = {
        let (shared, o2) = (shared.clone(), o.clone());
        open_all(o.publishers, Role::Pub, &o, &mut r, move |i, c| {
            let (shared, o2, mut go) = (shared.clone(), o2.clone(), go_rx.clone());
            async move {
                let when = loop {
                    if let Some(w) = *go.borrow_and_update() {
                        break w;
                    }
                    if go.changed().await.is_err() {
                        return PubStats::default();
                    }
                };
                publisher_loop(i, c, o2, shared, when, rate).await
            }
        })
        .await
    };
    if o.chat && r.connect_failures > idle_failures {
        r.chat_unavailable = r.first_error.clone();
    }
    r.rss_after_all = pid.and_then(rss_bytes);
    let publishers_connected = r.connect_ms.len() - connected_before_pubs;

    let mut probes = None;
    let mut pub_sinks = Vec::new();
    if o.cross_node() && r.chat_unavailable.is_none() && publishers_connected > 0 {
        match warm_up(&o).await {
            Ok((s, p, t)) => {
                r.warm_up = Some(t);
                probes = Some((s, p));
            }
            Err(e) => {
                r.errors += 1;
                r.first_error.get_or_insert(e);
            }
        }
    }
    if r.chat_unavailable.is_none() && publishers_connected > 0 {
        if let Some(port) = o.redis_port {
            if let Err(e) = redis_cmd(port, &["CONFIG", "RESETSTAT"]).await {
                r.first_error.get_or_insert(format!("CONFIG RESETSTAT: {e}"));
            }
        }
        let m0 = scrape_metrics(&url).await;
        let cpu0 = pid.and_then(|p| cpu_secs(&p.to_string()));
        let pub_cpu0 = o.publish_server_pid.and_then(|p| cpu_secs(&p.to_string()));
        let me0 = cpu_secs("self");
        let busy0 = machine_busy_secs();
        let t0 = Instant::now();
        let t0_ns = now_ns();
        go_tx.send_replace(Some((t0, t0 + Duration::from_secs_f64(o.duration))));
        let mut published = vec![0u64; o.publishers];
        for (i, h) in pubs.into_iter().enumerate() {
            if let Ok(Some(mut st)) = h.await {
                pub_sinks.extend(st.sink.take());
                published[i] = st.sent;
                r.stalled |= st.stalled;
                if let Some(e) = st.error {
                    r.errors += 1;
                    r.first_error.get_or_insert(e);
                }
            }
        }
        r.publish_secs = t0.elapsed().as_secs_f64();
        r.published = published.iter().sum();
        r.expected = r.published * o.subscribers as u64;
        // Drain: wait until everything published arrived, or nothing arrived for a second.
        let (mut last, mut since) = (u64::MAX, Instant::now());
        let drain_end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < drain_end {
            let got: u64 = shared.delivered.iter().map(|d| d.load(Relaxed)).sum();
            if got >= r.expected || since.elapsed() > Duration::from_secs(1) {
                break;
            }
            if got != last {
                (last, since) = (got, Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        r.window_secs = t0.elapsed().as_secs_f64();
        r.server_cpu = diff(cpu0, pid.and_then(|p| cpu_secs(&p.to_string())));
        r.publish_server_cpu = diff(pub_cpu0, o.publish_server_pid.and_then(|p| cpu_secs(&p.to_string())));
        r.client_cpu = diff(me0, cpu_secs("self"));
        let busy = machine_busy_secs().zip(busy0).map(|(b, a)| b - a);
        let ours = |c: Option<(f64, f64)>| c.map_or(0.0, |(u, s)| u + s);
        r.other_cpu =
            busy.map(|b| (b - ours(r.server_cpu) - ours(r.publish_server_cpu) - ours(r.client_cpu)).max(0.0));
        if let Some(port) = o.redis_port {
            match redis_cmd(port, &["INFO", "commandstats"]).await {
                Ok(info) => r.redis_calls = Some(parse_commandstats(&info)),
                Err(e) => drop(r.first_error.get_or_insert(format!("INFO commandstats: {e}"))),
            }
        }
        r.metrics = match (m0, scrape_metrics(&url).await) {
            (Some(a), Some(b)) => Some(Metrics {
                frames_sent: b.frames_sent - a.frames_sent,
                socket_writes: b.socket_writes - a.socket_writes,
                encodings: b.encodings - a.encodings,
            }),
            _ => None,
        };
        let _ = stop_tx.send(true);
        let mut last_rx = t0_ns;
        for h in subs {
            if let Ok(Some(st)) = h.await {
                r.deliveries += st.deliveries;
                r.lat_ns.extend_from_slice(&st.lat);
                r.lat_max_ns = r.lat_max_ns.max(st.lat_max);
                r.reordered += st.reordered;
                r.errors += st.errors;
                if let Some(e) = st.first_error {
                    r.first_error.get_or_insert(e);
                }
                let tail: u64 = published.iter().zip(&st.next).map(|(p, n)| p.saturating_sub(*n)).sum();
                r.lost += st.gaps + tail as i64;
                last_rx = last_rx.max(st.last_rx_ns);
            } else {
                r.lost += r.published as i64; // a subscriber that never connected got nothing
            }
        }
        r.delivery_secs = (last_rx - t0_ns) as f64 / 1e9;
    } else {
        drop(go_tx); // publishers waiting for the start signal end
        let _ = stop_tx.send(true);
        for h in subs {
            let _ = h.await;
        }
        for h in pubs {
            let _ = h.await;
        }
    }
    let _ = stop_tx.send(true);
    for h in idle {
        let _ = h.await;
    }
    for mut sink in pub_sinks {
        let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
    }
    drop(probes);
    r
}

// ---------------------------------------------------------------------------------------------
// Printing

pub fn mib(b: u64) -> String {
    format!("{:.2} MiB", b as f64 / (1 << 20) as f64)
}

pub fn print_report(o: &Opts, r: &Report) {
    let url = o.url.as_deref().unwrap_or_default();
    let publish = if o.cross_node() {
        format!(" (publishers and {} subscribers on {})", o.publish_node_subscribers, o.publish_url())
    } else {
        String::new()
    };
    println!(
        "loadgen {url}{publish}: {} subscribers, {} publishers, {} idle, rate {}, {} s, {} B{}",
        o.subscribers,
        o.publishers,
        o.idle,
        if o.rate == 0 { "max".to_string() } else { format!("{}/s", o.rate) },
        o.duration,
        o.size,
        if o.chat { ", chat" } else { "" }
    );
    if let Some(e) = &r.chat_unavailable {
        println!("chat scenario unavailable: {e}");
    }
    let c = pct_f(&r.connect_ms, 0.5).zip(r.connect_ms.iter().cloned().reduce(f64::max));
    if let Some((p50, max)) = c {
        println!(
            "  connect time        p50 {p50:.2} ms, max {max:.2} ms ({} connections, {} failed)",
            r.connect_ms.len(),
            r.connect_failures
        );
    }
    if let Some(e) = &r.first_error {
        println!("  first error         {e}");
    }
    if let Some(t) = r.warm_up {
        println!("  warm-up             first message crossed nodes after {:.1} ms", t.as_secs_f64() * 1e3);
    }
    if let (Some(a), Some(b)) = (r.rss_before_idle, r.rss_after_idle) {
        let per = if r.idle > 0 {
            format!(", {:.2} KiB per connection", (b.saturating_sub(a)) as f64 / 1024.0 / r.idle as f64)
        } else {
            String::new()
        };
        println!(
            "  server RSS          {} before, {} after {} idle (+{}{per})",
            mib(a),
            mib(b),
            r.idle,
            mib(b.saturating_sub(a))
        );
    }
    if let Some(b) = r.rss_after_all {
        println!("  server RSS          {} with all connections open", mib(b));
    }
    if r.publish_secs > 0.0 {
        println!("  published           {} ({:.0}/s)", r.published, r.published as f64 / r.publish_secs);
        println!(
            "  deliveries          {} of {} ({:.0}/s)",
            r.deliveries,
            r.expected,
            r.deliveries_per_sec()
        );
        if let (Some(p50), Some(p99)) = (r.pct(0.5), r.pct(0.99)) {
            println!(
                "  latency             p50 {p50:.3} ms, p99 {p99:.3} ms, max {:.3} ms",
                r.lat_max_ns as f64 / 1e6
            );
        }
        println!(
            "  lost {}, reordered {}, errors {}{}",
            r.lost,
            r.reordered,
            r.errors,
            if r.stalled { " (a publisher stalled: deliveries stopped)" } else { "" }
        );
        if let (Some((u, s)), Some(p)) = (r.server_cpu, r.server_cpu_pct()) {
            println!(
                "  server CPU          {:.3} s (user {u:.3}, sys {s:.3}) over {:.2} s = {p:.1} % of one core",
                u + s,
                r.window_secs
            );
        }
        if let Some((u, s)) = r.publish_server_cpu {
            println!(
                "  publish node CPU    {:.3} s (user {u:.3}, sys {s:.3}) = {:.1} % of one core",
                u + s,
                100.0 * (u + s) / r.window_secs
            );
        }
        if let Some((u, s)) = r.client_cpu {
            println!(
                "  client CPU          {:.3} s = {:.1} % of one core (same 2 cores as the server)",
                u + s,
                100.0 * (u + s) / r.window_secs
            );
        }
        if let Some(o) = r.other_cpu {
            println!(
                "  other processes     {o:.3} s = {:.1} % of one core (noise from the rest of the machine)",
                100.0 * o / r.window_secs
            );
        }
        if let Some((p, e, x, others)) = r.redis_per_message() {
            println!(
                "  redis commands      per published message: publish {p:.3}, eval/evalsha {e:.3}, others {x:.3} ({others})"
            );
        }
        if let Some(m) = r.metrics {
            println!("  server writes       {} frames in {} socket writes = {} frames/write; {} encodings for {} published",
                m.frames_sent, m.socket_writes, r.coalescing().map_or("-".into(), |c| format!("{c:.1}")), m.encodings, r.published);
        }
    }
}

pub fn pct_f(v: &[f64], q: f64) -> Option<f64> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(((v.len().max(1) - 1) as f64 * q).round() as usize).copied()
}
