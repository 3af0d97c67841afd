//! Real `redis-server` processes for the cluster tests, on free loopback ports, and a small
//! TCP proxy the tests can pause to cut one node off from Redis (a partition).

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Runs `redis-cli -p PORT AUTH… ARGS…` against a server or sentinel; its standard output.
pub fn cli(port: u16, auth: &[String], args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(auth)
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).to_string()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub struct Redis {
    pub port: u16,
    child: Option<Child>,
    /// Extra server arguments (e.g. `--requirepass`), kept for restarts.
    extra: Vec<String>,
    /// Arguments redis-cli needs to log in.
    auth: Vec<String>,
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_with(&[], &[])
    }

    /// A server with extra arguments; `auth` are the redis-cli arguments to log in.
    pub fn start_with(extra: &[&str], auth: &[&str]) -> Redis {
        let mut r = Redis {
            port: free_port(),
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            auth: auth.iter().map(|s| s.to_string()).collect(),
        };
        r.restart();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Its own working directory: a replica writes the RDB it receives there, and a restarted
    /// server would load a `dump.rdb` it finds (never one of another test's).
    fn dir(&self) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("stomp-edge-redis-{}-{}", std::process::id(), self.port))
    }

    /// (Re)starts the server on the same port, with no persistence.
    pub fn restart(&mut self) {
        let dir = self.dir();
        let _ = std::fs::create_dir_all(&dir);
        let child = Command::new("redis-server")
            .arg("--dir")
            .arg(&dir)
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test.sh installs it)");
        self.child = Some(child);
        for _ in 0..100 {
            if self.cli(&["PING"]).trim() == "PONG" {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server did not start on {}: {:?}", self.port, self.cli(&["PING"]));
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the server process (SIGSTOP): it keeps its sockets and data but answers nothing,
    /// like a Redis stuck on a slow disk or a long command.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Lets a paused server go on (SIGCONT): it then handles what waited meanwhile.
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("redis-server is running").id();
        let status =
            Command::new("kill").args([&format!("-{name}"), &pid.to_string()]).status().expect("kill");
        assert!(status.success(), "kill -{name} {pid}");
    }

    pub fn cli(&self, args: &[&str]) -> String {
        cli(self.port, &self.auth, args)
    }

    /// `INFO commandstats` calls of one command.
    pub fn calls(&self, command: &str) -> u64 {
        let info = self.cli(&["INFO", "commandstats"]);
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(self.dir());
    }
}

/// A TCP proxy on a free port to `target`; `pause` stalls every connection (no bytes move,
/// nothing is closed), like a network partition; `resume` lets bytes flow again.
pub struct Proxy {
    pub port: u16,
    paused: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(target: u16) -> Proxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let paused = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (paused.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        if p.load(Ordering::Relaxed) {
                            drop(client); // refused while partitioned
                            continue;
                        }
                        let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", target)) else {
                            continue;
                        };
                        for (mut from, mut to) in
                            [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)]
                        {
                            let (p, s) = (p.clone(), s.clone());
                            std::thread::spawn(move || pump(&mut from, &mut to, &p, &s));
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Proxy { port, paused, stop }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
    pub fn pause(&self) {
        self.paused.store(true, Ordering::Relaxed);
    }
    pub fn resume(&self) {
        self.paused.store(false, Ordering::Relaxed);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn pump(
    from: &mut std::net::TcpStream,
    to: &mut std::net::TcpStream,
    paused: &AtomicBool,
    stop: &AtomicBool,
) {
    use std::io::{Read, Write};
    from.set_read_timeout(Some(Duration::from_millis(20))).ok();
    let mut buf = [0u8; 16384];
    let mut pending: Vec<u8> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        if paused.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        if !pending.is_empty() {
            if to.write_all(&pending).is_err() {
                return;
            }
            pending.clear();
        }
        match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(std::net::Shutdown::Write);
                return;
            }
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}
