//! A Sentinel-managed Redis for the failover tests: one primary, one replica and three
//! `redis-server --sentinel` processes on free loopback ports, with short timeouts so a
//! failover takes seconds.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::redis::{free_port, Redis};

/// The master name the sentinels monitor.
pub const MASTER: &str = "mymaster";
/// Sentinel `down-after-milliseconds` in these tests.
pub const DOWN_AFTER_MS: u64 = 1000;

/// One `redis-server --sentinel` process; killed when dropped.
pub struct Sentinel {
    pub port: u16,
    child: Option<Child>,
    config: PathBuf,
    /// Arguments redis-cli needs to log in.
    auth: Vec<String>,
}

impl Sentinel {
    fn start(master_port: u16) -> Sentinel {
        Sentinel::start_with(master_port, "", &[])
    }

    /// A sentinel monitoring the primary on `master_port`, with `extra` config lines (e.g.
    /// `requirepass`, `sentinel auth-pass`); `auth` are the redis-cli arguments to log in.
    pub fn start_with(master_port: u16, extra: &str, auth: &[&str]) -> Sentinel {
        let port = free_port();
        let config =
            std::env::temp_dir().join(format!("stomp-edge-sentinel-{}-{port}.conf", std::process::id()));
        // A sentinel rewrites its config file: each gets its own, removed on drop.
        std::fs::write(
            &config,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                 sentinel monitor {MASTER} 127.0.0.1 {master_port} 2\n\
                 sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\n\
                 sentinel failover-timeout {MASTER} 5000\n\
                 sentinel parallel-syncs {MASTER} 1\n{extra}",
                dir = std::env::temp_dir().display()
            ),
        )
        .expect("write sentinel config");
        let child = Command::new("redis-server")
            .arg(&config)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test.sh installs it)");
        let auth = auth.iter().map(|a| a.to_string()).collect();
        let s = Sentinel { port, child: Some(child), config, auth };
        let start = Instant::now();
        while s.cli(&["PING"]).trim() != "PONG" {
            assert!(start.elapsed() < Duration::from_secs(10), "sentinel on {port} did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    pub fn cli(&self, args: &[&str]) -> String {
        super::redis::cli(self.port, &self.auth, args)
    }

    /// The primary this sentinel names now, as `host:port`.
    pub fn primary(&self) -> String {
        self.cli(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER]).lines().collect::<Vec<_>>().join(":")
    }

    /// One field of `SENTINEL MASTER mymaster`.
    fn master_field(&self, field: &str) -> String {
        let out = self.cli(&["SENTINEL", "MASTER", MASTER]);
        let lines: Vec<&str> = out.lines().collect();
        lines.chunks(2).find(|kv| kv[0] == field).and_then(|kv| kv.get(1)).unwrap_or(&"").to_string()
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.config);
    }
}

/// A primary, its replica and three sentinels that agree on both.
pub struct SentinelSet {
    pub primary: Redis,
    pub replica: Redis,
    pub sentinels: Vec<Sentinel>,
}

impl SentinelSet {
    /// Starts everything and waits until each sentinel knows the replica and the two other
    /// sentinels (so a failover can reach its quorum).
    pub fn start() -> SentinelSet {
        let primary = Redis::start();
        let replica = Redis::start_with(&["--replicaof", "127.0.0.1", &primary.port.to_string()], &[]);
        let start = Instant::now();
        while !replica.cli(&["INFO", "replication"]).contains("master_link_status:up") {
            assert!(start.elapsed() < Duration::from_secs(10), "replica never synced");
            std::thread::sleep(Duration::from_millis(50));
        }
        let sentinels: Vec<Sentinel> = (0..3).map(|_| Sentinel::start(primary.port)).collect();
        let start = Instant::now();
        for s in &sentinels {
            while s.master_field("num-slaves") != "1" || s.master_field("num-other-sentinels") != "2" {
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "sentinel {} never saw the replica and the other sentinels",
                    s.port
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        SentinelSet { primary, replica, sentinels }
    }

    /// The Lettuce-style URL naming the sentinels in `order` (indexes into `sentinels`).
    pub fn url(&self, order: &[usize]) -> String {
        let hosts: Vec<String> =
            order.iter().map(|&i| format!("127.0.0.1:{}", self.sentinels[i].port)).collect();
        format!("redis-sentinel://{}#{MASTER}", hosts.join(","))
    }

    /// Waits until every live sentinel names `address` as the primary; returns how long it took.
    pub fn wait_primary(&self, address: &str, limit: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let names: Vec<String> =
                self.sentinels.iter().filter(|s| s.child.is_some()).map(|s| s.primary()).collect();
            if names.iter().all(|n| n == address) {
                return start.elapsed();
            }
            assert!(start.elapsed() < limit, "sentinels name {names:?}, want {address}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
