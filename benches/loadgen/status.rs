//! The suite's status-page part: what `/status` costs a board with 1000 clients. The server's
//! CPU over a window with the page closed (only the history's 10 s sample runs), then with
//! the page open (its two requests a second, `/api/nodes` and `/api/status`, as a browser
//! makes them), then a burst of requests for the CPU each one takes (the open window alone is
//! below the clock-tick resolution of /proc). With `redis-server` on PATH, also what one other
//! board's status costs (`/api/status?node=ID`, fetched by the asked board from the other).

use super::*;

/// One `GET` over a fresh connection (the page's browser keeps its connection; this is the
/// dearer case). Returns the body.
async fn http_get(host: &str, port: u16, path: &str) -> Res<String> {
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect((host, port)).await.map_err(|e| e.to_string())?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
        let mut text = String::new();
        s.read_to_string(&mut text).await.map_err(|e| e.to_string())?;
        let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP head")?;
        if !head.starts_with("HTTP/1.1 200") {
            return Err(format!("{path}: {}", head.lines().next().unwrap_or("")));
        }
        Ok(body.to_string())
    };
    tokio::time::timeout(Duration::from_secs(5), fetch).await.map_err(|_| format!("{path}: timed out"))?
}

fn cpu_total(pid: u32) -> f64 {
    cpu_secs(&pid.to_string()).map_or(0.0, |(u, s)| u + s)
}

/// Runs the measurement and adds its rows.
pub fn status_suite(
    rt: &tokio::runtime::Runtime,
    quick: bool,
    bin: &PathBuf,
    config: &PathBuf,
    rows: &mut Vec<Row>,
) -> Res<()> {
    let clients = 1000;
    let window = Duration::from_secs(if quick { 5 } else { 20 });
    let burst = if quick { 200 } else { 1000 };
    let s = Server::start(bin, config)?;
    let (host, port) = url_host_port(&s.url)?;
    let o = Arc::new(Opts { url: Some(s.url.clone()), idle: clients, ..Opts::default() });
    rt.block_on(async {
        let mut report = Report::default();
        let (stop_tx, stop_rx) = watch::channel(false);
        let shared = Arc::new(Shared { delivered: Vec::new(), subscribers: 0 });
        let handles = open_all(clients, Role::Idle, &o, &mut report, move |_, c| {
            subscriber_loop(c, shared.clone(), stop_rx.clone())
        })
        .await;
        let result = async {
            if report.connect_failures > 0 {
                return Err(format!("{} of {clients} clients failed to connect", report.connect_failures));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            // Page closed.
            let c0 = cpu_total(s.pid);
            tokio::time::sleep(window).await;
            let closed = cpu_total(s.pid) - c0;
            // Page open: what status.js asks for, once a second.
            let c0 = cpu_total(s.pid);
            let t0 = Instant::now();
            let mut size = 0;
            while t0.elapsed() < window {
                let tick = Instant::now();
                http_get(&host, port, "/api/nodes").await?;
                size = http_get(&host, port, "/api/status").await?.len();
                tokio::time::sleep(Duration::from_secs(1).saturating_sub(tick.elapsed())).await;
            }
            let open = cpu_total(s.pid) - c0;
            // A burst, for the CPU per request.
            let per = |path: &'static str| {
                let (host, pid) = (host.clone(), s.pid);
                async move {
                    let c0 = cpu_total(pid);
                    for _ in 0..burst {
                        http_get(&host, port, path).await?;
                    }
                    Ok::<f64, String>((cpu_total(pid) - c0) / burst as f64)
                }
            };
            let status_each = per("/api/status").await?;
            let nodes_each = per("/api/nodes").await?;
            Ok((closed, open, status_each, nodes_each, size))
        }
        .await;
        let _ = stop_tx.send(true);
        for h in handles {
            let _ = h.await;
        }
        let (closed, open, status_each, nodes_each, size) = result?;
        let pct = |cpu: f64| format!("{:.2} % of a core", 100.0 * cpu / window.as_secs_f64());
        let name = format!("(s) /status {}k", clients / 1000);
        rows.push(Row(name, "server CPU, page closed".into(), pct(closed), "~0".into()));
        rows.push(Row("".into(), "server CPU, page open (1 poll/s)".into(), pct(open), "< 1 %".into()));
        rows.push(Row(
            "".into(),
            format!("CPU per request ({burst} each)"),
            format!("/api/status {:.0} µs, /api/nodes {:.0} µs", status_each * 1e6, nodes_each * 1e6),
            "".into(),
        ));
        rows.push(Row(
            "".into(),
            "page's cost per second, from the burst".into(),
            format!("{:.3} % of a core", 100.0 * (status_each + nodes_each)),
            "< 1 %".into(),
        ));
        rows.push(Row(
            "".into(),
            "/api/status size".into(),
            format!("{:.1} KiB", size as f64 / 1024.0),
            "".into(),
        ));
        Ok::<(), String>(())
    })?;
    drop(s);
    if on_path("redis-server") {
        cross_board(rt, burst, bin, config, rows)?;
    }
    Ok(())
}

/// Two boards and one Redis: the CPU one `/api/status?node=n2` asked of n1 costs n1 (the
/// fetch) and n2 (its snapshot), per request.
fn cross_board(
    rt: &tokio::runtime::Runtime,
    burst: usize,
    bin: &PathBuf,
    config: &PathBuf,
    rows: &mut Vec<Row>,
) -> Res<()> {
    let redis = RedisServer::start(rt)?;
    let a = Server::start_with(bin, config, "n1", Some(&redis.url()))?;
    let b = Server::start_with(bin, config, "n2", Some(&redis.url()))?;
    wait_redis_up(&a, "n1")?;
    wait_redis_up(&b, "n2")?;
    let (host, port) = url_host_port(&a.url)?;
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !http_get(&host, port, "/api/nodes").await?.contains("\"n2\"") {
            if Instant::now() > deadline {
                return Err("n1 never listed n2 in /api/nodes".to_string());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (a0, b0) = (cpu_total(a.pid), cpu_total(b.pid));
        for _ in 0..burst {
            http_get(&host, port, "/api/status?node=n2").await?;
        }
        let per = |cpu: f64| cpu / burst as f64 * 1e6;
        rows.push(Row(
            "(s) 2 boards".into(),
            format!("CPU per /api/status?node=n2 ({burst})"),
            format!(
                "asking board {:.0} µs, other board {:.0} µs",
                per(cpu_total(a.pid) - a0),
                per(cpu_total(b.pid) - b0)
            ),
            "".into(),
        ));
        Ok(())
    })
}
