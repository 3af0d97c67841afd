//! The suite's cluster part, run when `redis-server` is on PATH: a Redis on a free loopback
//! port (no persistence) and two nodes of the same binary, A (`n1`, the publishers) and B
//! (`n2`, the subscribers), then
//! - (e) cross-node fan-out at full speed: 1 publisher on A, 100 subscribers on B;
//! - (f) the Redis hop at a fixed rate, 100 msg/s x 100 subscribers = 10k deliveries/s: the
//!   same on node A alone (publisher and subscribers on A) and across (A -> B), and the p99
//!   the hop adds;
//! - (g) Redis commands per chat message: a burst of chat messages in one room whose members
//!   are on both nodes, `CONFIG RESETSTAT` before and `INFO commandstats` after the window.
//!
//! Redis and the nodes are owned by guards, so they are killed when this part ends, whether
//! it ran to the end, failed or panicked.

use super::*;

/// Figures of a single-node scenario, to print beside the cross-node ones.
#[derive(Clone, Copy)]
pub struct Fig {
    pub deliveries_per_sec: f64,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
}

impl Fig {
    pub fn of(r: &Report) -> Fig {
        Fig { deliveries_per_sec: r.deliveries_per_sec(), p50: r.pct(0.5), p99: r.pct(0.99) }
    }
    fn lat(&self) -> String {
        let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.3}"));
        format!("{} ({}) ms", ms(self.p99), ms(self.p50))
    }
}

/// The single-node (local mode) scenarios (b) and (c) of the suite.
#[derive(Default)]
pub struct Single {
    pub fan_out: Option<Fig>,
    pub rate_100: Option<Fig>,
}

/// A `redis-server` child on a free loopback port; killed on drop.
pub struct RedisServer {
    child: Child,
    pub port: u16,
}

impl RedisServer {
    pub fn start(rt: &tokio::runtime::Runtime) -> Res<RedisServer> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start redis-server: {e}"))?;
        let redis = RedisServer { child, port };
        for _ in 0..100 {
            if rt.block_on(redis_cmd(port, &["PING"])).is_ok_and(|p| p == "PONG") {
                return Ok(redis);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("redis-server did not answer PING on port {port} within 5 s"))
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|dir| dir.join(program).is_file()))
}

/// `GET path` next to a node's WebSocket URL; the response body.
fn http_get(ws_url: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let (host, port) = url_host_port(ws_url).ok()?;
    let mut s = std::net::TcpStream::connect((host.as_str(), port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    Some(text.split_once("\r\n\r\n")?.1.to_string())
}

/// Waits until the node's `/healthz` says `"redis":"up"`.
pub fn wait_redis_up(node: &Server, name: &str) -> Res<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let health = http_get(&node.url, "/healthz").unwrap_or_default();
        if health.contains("\"redis\":\"up\"") {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("node {name}: /healthz never said redis up: {health}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The node's non-zero `stomp_edge_cluster_*` counters.
fn cluster_counters(node: &Server) -> Vec<(String, u64)> {
    http_get(&node.url, "/metrics")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("stomp_edge_cluster_"))
        .filter_map(|l| {
            let (name, v) = l.split_once(' ')?;
            Some((
                name.trim_start_matches("stomp_edge_cluster_").to_string(),
                v.trim().parse::<f64>().ok()? as u64,
            ))
        })
        .filter(|(_, v)| *v > 0)
        .collect()
}

pub fn cluster_suite(
    rt: &tokio::runtime::Runtime,
    quick: bool,
    bin: &PathBuf,
    config: &PathBuf,
    single: &Single,
    rows: &mut Vec<Row>,
) -> Res<()> {
    println!();
    if !on_path("redis-server") {
        println!("cluster suite skipped: no redis-server");
        return Ok(());
    }
    let secs = if quick { 2.0 } else { 8.0 };
    let (chat_burst, chat_cap) = if quick { (1000u64, 3.0) } else { (2000, 10.0) };
    let redis = RedisServer::start(rt)?;
    let a = Server::start_with(bin, config, "n1", Some(&redis.url()))?;
    let b = Server::start_with(bin, config, "n2", Some(&redis.url()))?;
    wait_redis_up(&a, "n1")?;
    wait_redis_up(&b, "n2")?;
    println!(
        "cluster suite: redis-server on 127.0.0.1:{} (pid {}), node A n1 {} (pid {}), node B n2 {} (pid {})",
        redis.port,
        redis.child.id(),
        a.url,
        a.pid,
        b.url,
        b.pid
    );
    let mut row = |f: &str, one: String, two: String, t: &str| rows.push(Row(f.into(), one, two, t.into()));
    let cross = |destination: &str| Opts {
        url: Some(b.url.clone()),
        publish_url: Some(a.url.clone()),
        server_pid: Some(b.pid),
        publish_server_pid: Some(a.pid),
        subscribers: 100,
        publishers: 1,
        duration: secs,
        destination: destination.into(),
        quick,
        ..Opts::default()
    };
    let lat = |r: &Report| Fig::of(r).lat();
    let cpu = |c: Option<(f64, f64)>, r: &Report| {
        c.map_or("-".into(), |(u, s)| format!("{:.0} %", 100.0 * (u + s) / r.window_secs.max(1e-9)))
    };
    let lost = |r: &Report| format!("{} / {} / {}", r.lost, r.reordered, r.errors);
    let noise = |r: &Report| {
        r.other_cpu.map_or("-".into(), |o| format!("{:.0} % of a core", 100.0 * o / r.window_secs.max(1e-9)))
    };

    // (e) cross-node fan-out at full speed
    let o = cross("/topic/bench-e");
    let e = rt.block_on(run(o.clone()));
    print_report(&o, &e);
    let one = single.fan_out;
    row(
        "(e) fan-out max: deliveries/s",
        one.map_or("-".into(), |f| format!("{:.0}", f.deliveries_per_sec)),
        format!("{:.0}", e.deliveries_per_sec()),
        "",
    );
    row("    latency p99 (p50)", one.map_or("-".into(), |f| f.lat()), lat(&e), "");
    row(
        "    CPU node B (fan-out) / node A (publish)",
        "-".into(),
        format!("{} / {}", cpu(e.server_cpu, &e), cpu(e.publish_server_cpu, &e)),
        "",
    );
    row("    lost / reordered / errors", "-".into(), lost(&e), "0 / 0 / 0");
    row("    other processes' CPU (noise, incl. redis)", "-".into(), noise(&e), "~0");

    // (f) the Redis hop at 100 msg/s x 100 subscribers
    let same = Opts {
        url: Some(a.url.clone()),
        publish_url: None,
        server_pid: Some(a.pid),
        publish_server_pid: None,
        rate: 100,
        ..cross("/topic/bench-f-same")
    };
    let f1 = rt.block_on(run(same.clone()));
    print_report(&same, &f1);
    let o = Opts { rate: 100, ..cross("/topic/bench-f-cross") };
    let f2 = rt.block_on(run(o.clone()));
    print_report(&o, &f2);
    row(
        "(f) 100 msg/s x 100 subs: deliveries/s",
        format!("{:.0}", f1.deliveries_per_sec()),
        format!("{:.0}", f2.deliveries_per_sec()),
        "10k/s",
    );
    row("    latency p99 (p50) [single: A alone]", lat(&f1), lat(&f2), "");
    if let Some(c) = single.rate_100 {
        row("    (local mode, scenario (c), for reference)", c.lat(), "".into(), "");
    }
    let added = f2.pct(0.99).zip(f1.pct(0.99)).map(|(x, y)| x - y);
    let added50 = f2.pct(0.5).zip(f1.pct(0.5)).map(|(x, y)| x - y);
    row(
        "    added by the Redis hop: p99 (p50)",
        "".into(),
        added.map_or("-".into(), |v| format!("{v:+.3} ({:+.3}) ms", added50.unwrap_or(0.0))),
        "p99 <= 1 ms",
    );
    row("    lost / reordered / errors", lost(&f1), lost(&f2), "0 / 0 / 0");
    row("    other processes' CPU (noise, incl. redis)", noise(&f1), noise(&f2), "~0");

    // (g) Redis commands per chat message
    let o = Opts {
        chat: true,
        room: "bench-g".into(),
        subscribers: 49,
        publish_node_subscribers: 24,
        count: chat_burst,
        duration: chat_cap,
        redis_port: Some(redis.port),
        ..cross("")
    };
    let g = rt.block_on(run(o.clone()));
    print_report(&o, &g);
    let members = format!("{} members: 25 on A (sender + 24), 24 on B", o.subscribers + 1);
    match (&g.chat_unavailable, g.redis_per_message()) {
        (Some(e), _) => row("(g) chat unavailable", "".into(), e.chars().take(60).collect(), ""),
        (None, None) => row("(g) redis commands", "".into(), "not read (see above)".into(), ""),
        (None, Some((p, e, x, others))) => {
            row(
                &format!("(g) chat burst: {} messages", g.published),
                "".into(),
                format!("{:.0} deliveries/s", g.deliveries_per_sec()),
                &members,
            );
            row("    EVALSHA per chat message (append+PUBLISH)", "".into(), format!("{e:.3}"), "1");
            row("    PUBLISH per chat message (in the script)", "".into(), format!("{p:.3}"), "1");
            row(
                "    commands run inside the script, per message",
                "".into(),
                format!("{x:.3}"),
                "5 (not calls)",
            );
            row("    those commands, in the window", "".into(), others.chars().take(60).collect(), "");
            row("    lost / reordered / errors", "".into(), lost(&g), "0 / 0 / 0");
        }
    }

    // (s1)-(s3): streams across nodes
    let off = e.deliveries_per_sec();
    let o = cross("/topic/bench-s");
    let on = rt.block_on(run(o.clone()));
    print_report(&o, &on);
    row(
        "(s1) fan-out deliveries/s, streams off / on",
        single.fan_out.map_or("-".into(), |f| format!("{:.0} (off)", f.deliveries_per_sec)),
        format!("{off:.0} / {:.0}", on.deliveries_per_sec()),
        "",
    );
    row("    lost / reordered / errors (streams on)", "".into(), lost(&on), "0 / 0 / 0");
    match rt.block_on(recovery_time(&a.url, &b.url, "/topic/bench-s-rec", 1000)) {
        Ok((t, n)) => row(
            "(s2) recovery of 1000 missed messages",
            "".into(),
            format!("{:.1} ms ({n} messages)", t.as_secs_f64() * 1e3),
            "",
        ),
        Err(e) => row("(s2) recovery failed", "".into(), e.chars().take(60).collect(), ""),
    }
    match rt.block_on(redis_figures(&a.url, redis.port)) {
        Ok((per, bytes)) => {
            row("(s3) Redis calls per streamed message", "".into(), format!("{per:.3}"), "1");
            row("    Redis memory per room, 100 messages", "".into(), format!("{bytes} bytes"), "");
        }
        Err(e) => row("(s3) redis figures failed", "".into(), e.chars().take(60).collect(), ""),
    }

    for (name, node) in [("A n1", &a), ("B n2", &b)] {
        let c = cluster_counters(node);
        let text: Vec<String> = c.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("node {name} cluster counters (non-zero): {}", text.join(" "));
        let get = |k: &str| c.iter().find(|(n, _)| n == k).map_or(0, |(_, v)| *v);
        row(
            &format!("node {name}: gaps/dropped/pubsub remade/errors"),
            "".into(),
            format!(
                "{} / {} / {} / {}",
                get("sequence_gaps_total"),
                get("relay_dropped_total"),
                get("pubsub_reconnects_total"),
                get("publish_errors_total") + get("redis_command_errors_total")
            ),
            "0 / 0 / 0 / 0",
        );
        let warnings = node.warnings.lock().unwrap().clone();
        for (line, n) in &warnings {
            println!("node {name} logged {n}x: {line}");
        }
        let total: u64 = warnings.iter().map(|(_, n)| n).sum();
        let top = warnings.iter().max_by_key(|(_, n)| *n).map_or(String::new(), |(l, _)| {
            let l = l.rsplit("] ").next().unwrap_or(l);
            format!(" ({})", l.chars().take(40).collect::<String>())
        });
        row(&format!("node {name}: WARN/ERROR log lines"), "".into(), format!("{total}{top}"), "0");
    }
    Ok(())
}
