//! The default suite: starts the real stomp-edge binary per scenario (footprint, fan-out,
//! latency at 100 msg/s, chat) and prints the figures beside the targets; then the
//! cluster part (`cluster.rs`) when `redis-server` is on PATH.

use super::*;

pub struct Server {
    pub child: Child,
    pub pid: u32,
    pub url: String,
    pub start_to_listen: Duration,
    pub log: Arc<Mutex<VecDeque<String>>>,
    /// Distinct WARN/ERROR lines the server logged, each with how often.
    pub warnings: Arc<Mutex<Vec<(String, u64)>>>,
}

impl Server {
    pub fn start(bin: &PathBuf, config: &PathBuf) -> Res<Server> {
        Server::start_with(bin, config, "bench", None)
    }

    /// A node with its own server id, in cluster mode when `redis` is a URL.
    pub fn start_with(bin: &PathBuf, config: &PathBuf, id: &str, redis: Option<&str>) -> Res<Server> {
        let t0 = Instant::now();
        let mut cmd = Command::new(bin);
        // The server reads STOMP_EDGE_* as overrides and refuses unknown ones (STOMP_EDGE_BIN
        // among them): it gets its settings from the config file alone.
        for (k, _) in std::env::vars_os().filter(|(k, _)| k.to_string_lossy().starts_with("STOMP_EDGE_")) {
            cmd.env_remove(k);
        }
        let mut child = cmd
            .args(["--listen", "127.0.0.1:0", "--server-id", id, "--config"])
            .arg(config)
            .args(redis.map(|url| ["--redis", url]).into_iter().flatten())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = log.clone();
        let warnings = Arc::new(Mutex::new(Vec::<(String, u64)>::new()));
        let warnings2 = warnings.clone();
        // Drains the server's stderr for its whole life (a full pipe would stall the server).
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or_default().to_string();
                    let _ = tx.send((addr, Instant::now()));
                }
                if line.starts_with("WARN") || line.starts_with("ERROR") {
                    let mut w = warnings2.lock().unwrap();
                    if let Some((_, n)) = w.iter_mut().find(|(l, _)| *l == line) {
                        *n += 1;
                    } else if w.len() < 50 {
                        w.push((line.clone(), 1));
                    }
                }
                let mut l = log2.lock().unwrap();
                if l.len() == 20 {
                    l.pop_front();
                }
                l.push_back(line);
            }
        });
        let pid = child.id();
        let mut server =
            Server { child, pid, url: String::new(), start_to_listen: Duration::ZERO, log, warnings };
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok((addr, at)) => {
                server.url = format!("ws://{addr}/ws");
                server.start_to_listen = at - t0;
                Ok(server)
            }
            Err(_) => Err(format!("server did not log `listening on`: {:?}", server.log.lock().unwrap())),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn server_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("STOMP_EDGE_BIN") {
        return p.into();
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or(root.join("target"), PathBuf::from);
    let candidates = [
        PathBuf::from(env!("CARGO_BIN_EXE_stomp-edge")), // built by this `cargo bench`, bench profile
        target.join("release/stomp-edge"),
        target.join("debug/stomp-edge"),
    ];
    candidates.iter().find(|p| p.exists()).cloned().unwrap_or_else(|| candidates[1].clone())
}

pub fn nofile() -> Option<(u64, u64)> {
    let s = std::fs::read_to_string("/proc/self/limits").ok()?;
    let l = s.lines().find(|l| l.starts_with("Max open files"))?;
    let f: Vec<&str> = l["Max open files".len()..].split_whitespace().collect();
    let parse = |v: &str| if v == "unlimited" { Some(u64::MAX) } else { v.parse().ok() };
    Some((parse(f.first()?)?, parse(f.get(1)?)?))
}

/// Raises this process's open-file limit (inherited by the server child) with `prlimit`;
/// returns the soft limit in force afterwards.
pub fn raise_nofile(want: u64) -> u64 {
    let Some((soft, hard)) = nofile() else { return 1024 };
    if soft >= want {
        return soft;
    }
    let me = std::process::id().to_string();
    for (s, h) in [(want, hard.max(want)), (hard.min(want), hard)] {
        let ok = Command::new("prlimit")
            .args(["--pid", &me, &format!("--nofile={s}:{h}")])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|st| st.success());
        if ok {
            break;
        }
    }
    nofile().map_or(soft, |l| l.0)
}

pub struct Row(pub String, pub String, pub String, pub String);

pub fn suite(rt: &tokio::runtime::Runtime, quick: bool) -> Res<()> {
    let bin = server_bin();
    let secs = if quick { 2.0 } else { 8.0 };
    let idle_big = if quick { 0 } else { 10_000 };
    let limit = raise_nofile(12_000); // 10k idle + the rest; client and server count apart
    let idle_big = if idle_big > 0 && limit < idle_big as u64 + 500 {
        println!("note: open-file limit {limit} is too low for 10,000 idle connections; skipping that step");
        0
    } else {
        idle_big
    };
    let config = std::env::temp_dir().join(format!("stomp-edge-loadgen-{}.toml", std::process::id()));
    let text = format!("[limits]\nmax_connections = 20000\nmax_outbound_bytes = 4194304\n{STREAMS_CONFIG}");
    std::fs::write(&config, text).map_err(|e| e.to_string())?;
    println!(
        "loadgen suite: server {} ({}), client: tokio 2 worker threads in this process",
        bin.display(),
        if quick { "quick" } else { "full" }
    );
    println!(
        "machine: {} cores shared by client and server (the client's CPU is shown too); loopback only",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut rows = Vec::new();
    let row = |rows: &mut Vec<Row>, s: &str, f: &str, v: String, t: &str| {
        rows.push(Row(s.into(), f.into(), v, t.into()))
    };
    let opts = |url: &str, pid: u32| Opts {
        url: Some(url.into()),
        server_pid: Some(pid),
        duration: secs,
        quick,
        ..Opts::default()
    };
    let t_suite = Instant::now();
    let mut single = Single::default();
    let mut cluster_rows = Vec::new();
    let result = (|| -> Res<()> {
        // (a) footprint
        for (i, n) in [1000usize, idle_big].into_iter().filter(|n| *n > 0).enumerate() {
            let s = Server::start(&bin, &config)?;
            std::thread::sleep(Duration::from_millis(100));
            if i == 0 {
                row(
                    &mut rows,
                    "(a) footprint",
                    "start to listening",
                    format!("{:.1} ms", s.start_to_listen.as_secs_f64() * 1e3),
                    "<= 100 ms",
                );
                row(
                    &mut rows,
                    "",
                    "idle RSS after start",
                    rss_bytes(s.pid).map_or("-".into(), mib),
                    "<= 3 MiB",
                );
            }
            let r = rt.block_on(run(Opts { idle: n, subscribers: 0, publishers: 0, ..opts(&s.url, s.pid) }));
            print_report(&Opts { idle: n, subscribers: 0, publishers: 0, ..opts(&s.url, s.pid) }, &r);
            let added = r.rss_after_idle.unwrap_or(0).saturating_sub(r.rss_before_idle.unwrap_or(0));
            let target = if n == 1000 { "<= 8 MiB" } else { "" };
            row(
                &mut rows,
                "",
                &format!("RSS added by {n} idle subscribed"),
                format!("{} ({:.2} KiB/conn)", mib(added), added as f64 / 1024.0 / n as f64),
                target,
            );
            if n != 1000 {
                row(
                    &mut rows,
                    "",
                    &format!("total RSS with {n} idle"),
                    r.rss_after_idle.map_or("-".into(), mib),
                    "<= 48 MiB",
                );
            }
            let c = pct_f(&r.connect_ms, 0.5).zip(r.connect_ms.iter().cloned().reduce(f64::max));
            row(
                &mut rows,
                "",
                &format!("connect time ({n} conns, {} failed)", r.connect_failures),
                c.map_or("-".into(), |(a, b)| format!("p50 {a:.2} ms, max {b:.2} ms")),
                "",
            );
        }
        // (b), (c), (d)
        let scenarios = [
            ("(b) fan-out max", Opts { subscribers: 100, publishers: 1, rate: 0, ..Opts::default() }),
            ("(c) 100 msg/s", Opts { subscribers: 100, publishers: 1, rate: 100, ..Opts::default() }),
            (
                "(d) chat max",
                Opts { subscribers: 100, publishers: 1, rate: 0, chat: true, ..Opts::default() },
            ),
        ];
        for (name, sc) in scenarios {
            let s = Server::start(&bin, &config)?;
            let o = Opts {
                subscribers: sc.subscribers,
                publishers: sc.publishers,
                rate: sc.rate,
                chat: sc.chat,
                ..opts(&s.url, s.pid)
            };
            let r = rt.block_on(run(o.clone()));
            print_report(&o, &r);
            match name {
                "(b) fan-out max" => single.fan_out = Some(Fig::of(&r)),
                "(c) 100 msg/s" => single.rate_100 = Some(Fig::of(&r)),
                _ => {}
            }
            if let Some(e) = &r.chat_unavailable {
                row(&mut rows, name, "chat scenario unavailable", e.chars().take(60).collect(), "");
                continue;
            }
            let lat = |q| r.pct(q).map_or("-".into(), |v| format!("{v:.3} ms"));
            let cpu = r.server_cpu_pct().map_or("-".into(), |p| format!("{p:.1} % of a core"));
            let client =
                r.client_cpu.map_or("-".into(), |(u, s)| format!("{:.0} %", 100.0 * (u + s) / r.window_secs));
            match name {
                "(c) 100 msg/s" => {
                    row(
                        &mut rows,
                        name,
                        "latency p99 (p50)",
                        format!("{} ({})", lat(0.99), lat(0.5)),
                        "<= 2 ms",
                    );
                    row(&mut rows, "", "server CPU", cpu, "<= 5 %");
                }
                _ => {
                    let target = if sc.chat { "" } else { ">= 300k/s" };
                    row(&mut rows, name, "deliveries/s", format!("{:.0}", r.deliveries_per_sec()), target);
                    row(&mut rows, "", "server CPU", cpu, if sc.chat { "" } else { "<= 1 core" });
                    row(&mut rows, "", "latency p99 (p50)", format!("{} ({})", lat(0.99), lat(0.5)), "");
                }
            }
            row(&mut rows, "", "client CPU (shares the cores)", client, "");
            if let Some(o) = r.other_cpu {
                let v = format!("{:.0} % of a core", 100.0 * o / r.window_secs);
                row(&mut rows, "", "other processes' CPU (noise)", v, "~0");
            }
            row(
                &mut rows,
                "",
                "lost / reordered / errors",
                format!("{} / {} / {}", r.lost, r.reordered, r.errors),
                "0 / 0 / 0",
            );
            if let Some(c) = r.coalescing() {
                row(&mut rows, "", "frames per socket write", format!("{c:.1}"), "");
            }
        }
        // (s1), (s2) on one node: streams off vs on, and a recovery of 1000 messages
        let s = Server::start(&bin, &config)?;
        let mut fan = Vec::new();
        for dest in ["/topic/bench", "/topic/bench-s"] {
            let o = Opts {
                subscribers: 100,
                publishers: 1,
                rate: 0,
                destination: dest.into(),
                ..opts(&s.url, s.pid)
            };
            let r = rt.block_on(run(o.clone()));
            print_report(&o, &r);
            fan.push(format!("{:.0}", r.deliveries_per_sec()));
        }
        row(&mut rows, "(s1) streams", "fan-out deliveries/s off / on", fan.join(" / "), "");
        match rt.block_on(recovery_time(&s.url, &s.url, "/topic/bench-s-rec", 1000)) {
            Ok((t, n)) => row(
                &mut rows,
                "(s2) recovery",
                "1000 missed: time (messages)",
                format!("{:.1} ms ({n})", t.as_secs_f64() * 1e3),
                "",
            ),
            Err(e) => row(&mut rows, "(s2) recovery", "failed", e.chars().take(60).collect(), ""),
        }
        drop(s);
        status_suite(rt, quick, &bin, &config, &mut rows)?;
        cluster_suite(rt, quick, &bin, &config, &single, &mut cluster_rows)
    })();
    let _ = std::fs::remove_file(&config);
    println!();
    println!("{:<16} {:<36} {:<34} target", "scenario", "figure", "value");
    for Row(s, f, v, t) in &rows {
        println!("{s:<16} {f:<36} {v:<34} {t}");
    }
    if !cluster_rows.is_empty() {
        println!();
        println!("cluster: redis-server + 2 nodes (A: n1, publishers; B: n2, subscribers), same 2 cores");
        println!("{:<46} {:<26} {:<30} target", "figure", "single node", "2 nodes, cross-node (A->B)");
        for Row(f, a, b, t) in &cluster_rows {
            println!("{f:<46} {a:<26} {b:<30} {t}");
        }
    }
    println!("(suite took {:.0} s; figures only, no pass/fail)", t_suite.elapsed().as_secs_f64());
    result
}
