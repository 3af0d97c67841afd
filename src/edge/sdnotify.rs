//! sd_notify(3): `READY=1`, `WATCHDOG=1`, `STOPPING=1`, `RELOADING=1` with `MONOTONIC_USEC=` and
//! `STATUS=` sent as datagrams to `$NOTIFY_SOCKET`, without libsystemd. The messages and the
//! monotonic clock come from the `sd-notify` crate (`NotifyState`); the socket is ours, because
//! `sd_notify::notify` opens a blocking socket per message (a full socket buffer would stall
//! the event loop that pets the watchdog) and does not reach abstract (`@name`) sockets. The
//! server builds one [`Notifier`] at start (`None` when systemd did not start it) and calls it
//! from its lifecycle and from a watchdog tick every [`watchdog_interval`].

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;

/// A handle on systemd's notification socket; every method sends one datagram and never fails.
#[derive(Debug)]
pub struct Notifier {
    /// Unbound and non-blocking: a full socket buffer drops a message instead of stalling the
    /// event loop that pets the watchdog.
    socket: UnixDatagram,
    /// Where systemd listens: a file path, or an abstract name (`@name` in the environment).
    addr: SocketAddr,
    /// Set on the first failed send, so a vanished manager is logged once, not at every tick.
    warned: AtomicBool,
}

impl Notifier {
    /// The notifier systemd asked for through `NOTIFY_SOCKET`, or `None` when it is unset or empty
    /// (the server was not started by a `Type=notify` unit).
    pub fn from_env() -> Option<Notifier> {
        let value = std::env::var_os("NOTIFY_SOCKET")?;
        Notifier::with_socket(value.to_str()?)
    }

    /// A notifier for an explicit address in `NOTIFY_SOCKET` syntax: `/path` or `@abstract-name`.
    pub fn with_socket(addr: &str) -> Option<Notifier> {
        let addr = match addr.strip_prefix('@') {
            Some(name) => abstract_addr(name.as_bytes()),
            None if addr.starts_with('/') => SocketAddr::from_pathname(addr),
            None => {
                log::warn!("sd_notify: unsupported NOTIFY_SOCKET {addr:?}, notifications off");
                return None;
            }
        };
        let socket = UnixDatagram::unbound().and_then(|s| s.set_nonblocking(true).map(|()| s));
        match (socket, addr) {
            (Ok(socket), Ok(addr)) => Some(Notifier { socket, addr, warned: AtomicBool::new(false) }),
            (Err(e), _) | (_, Err(e)) => {
                log::warn!("sd_notify: cannot use NOTIFY_SOCKET: {e}, notifications off");
                None
            }
        }
    }

    /// Startup is finished: the listener is bound (send once, and again after each reload).
    pub fn ready(&self) {
        self.notify(&[NotifyState::Ready]);
    }

    /// The event loop is alive; call every [`watchdog_interval`].
    pub fn watchdog(&self) {
        self.notify(&[NotifyState::Watchdog]);
    }

    /// Shutdown has begun (draining); systemd stops expecting watchdog pings.
    pub fn stopping(&self) {
        self.notify(&[NotifyState::Stopping]);
    }

    /// A reload (SIGHUP) has begun; send [`ready`](Self::ready) when it is done. systemd 253+
    /// requires the `MONOTONIC_USEC` of the moment with it.
    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.notify(&[NotifyState::Reloading, now]),
            Err(_) => self.notify(&[NotifyState::Reloading]),
        }
    }

    /// A one-line status shown by `systemctl status` (newlines become spaces).
    pub fn status(&self, text: &str) {
        self.notify(&[NotifyState::Status(&text.replace('\n', " "))]);
    }

    /// Sends the states as one datagram, one `KEY=VALUE` line each.
    pub fn notify(&self, states: &[NotifyState<'_>]) {
        let msg = states.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n");
        self.send(&msg);
    }

    /// Sends `msg` as one datagram; a failure is logged once and otherwise ignored.
    fn send(&self, msg: &str) {
        if let Err(e) = self.socket.send_to_addr(msg.as_bytes(), &self.addr) {
            if !self.warned.swap(true, Ordering::Relaxed) {
                log::warn!("sd_notify: sending to NOTIFY_SOCKET failed: {e} (further errors not logged)");
            }
        }
    }
}

/// How often to pet the watchdog: half of `WATCHDOG_USEC`, or `None` when no watchdog is set or
/// `WATCHDOG_PID` names another process.
pub fn watchdog_interval() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    interval_from(usec.as_deref(), pid.as_deref(), std::process::id())
}

fn interval_from(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    if let Some(pid) = pid.filter(|p| !p.is_empty()) {
        if pid.trim().parse::<u32>().ok()? != own_pid {
            return None;
        }
    }
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    Some(Duration::from_micros(usec / 2))
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_addr(name: &[u8]) -> std::io::Result<SocketAddr> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn abstract_addr(_name: &[u8]) -> std::io::Result<SocketAddr> {
    Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "abstract sockets are Linux-only"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::sync::atomic::AtomicUsize;

    /// `CLOCK_MONOTONIC` in microseconds, as the crate reads it.
    fn monotonic_usec() -> u64 {
        match NotifyState::monotonic_usec_now().unwrap() {
            NotifyState::MonotonicUsec(usec) => usec as u64,
            other => panic!("{other:?}"),
        }
    }

    /// A listening socket in a fresh temp dir, standing in for systemd.
    struct Manager {
        dir: PathBuf,
        sock: UnixDatagram,
        path: PathBuf,
    }

    impl Manager {
        fn new() -> Manager {
            static N: AtomicUsize = AtomicUsize::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("sdnotify-test-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("notify.sock");
            let sock = UnixDatagram::bind(&path).unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            Manager { dir, sock, path }
        }

        fn notifier(&self) -> Notifier {
            Notifier::with_socket(self.path.to_str().unwrap()).expect("notifier")
        }

        fn recv(&self) -> String {
            let mut buf = [0u8; 4096];
            let n = self.sock.recv(&mut buf).expect("a datagram within 5 s");
            String::from_utf8(buf[..n].to_vec()).unwrap()
        }
    }

    impl Drop for Manager {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[test]
    fn sends_the_exact_lifecycle_messages() {
        let m = Manager::new();
        let n = m.notifier();
        n.ready();
        assert_eq!(m.recv(), "READY=1");
        n.watchdog();
        assert_eq!(m.recv(), "WATCHDOG=1");
        n.stopping();
        assert_eq!(m.recv(), "STOPPING=1");
        n.status("serving 3 clients\non 0.0.0.0:8080");
        assert_eq!(m.recv(), "STATUS=serving 3 clients on 0.0.0.0:8080");
    }

    #[test]
    fn reloading_carries_a_current_monotonic_timestamp() {
        let m = Manager::new();
        let before = monotonic_usec();
        m.notifier().reloading();
        let after = monotonic_usec();
        let msg = m.recv();
        let (first, second) = msg.split_once('\n').expect("two lines");
        assert_eq!(first, "RELOADING=1");
        let usec: u64 = second.strip_prefix("MONOTONIC_USEC=").expect("MONOTONIC_USEC").parse().unwrap();
        assert!(before > 0 && before <= usec && usec <= after, "{before} <= {usec} <= {after}");
    }

    #[test]
    fn monotonic_usec_tracks_instant() {
        let a = monotonic_usec();
        std::thread::sleep(Duration::from_millis(20));
        let b = monotonic_usec();
        assert!(b - a >= 20_000 && b - a < 5_000_000, "{a} -> {b}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn abstract_socket_names_work() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("sdnotify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let sock = UnixDatagram::bind_addr(&addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Notifier::with_socket(&format!("@{name}")).unwrap().ready();
        let mut buf = [0u8; 64];
        let n = sock.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }

    #[test]
    fn a_missing_manager_is_not_an_error() {
        let n = Notifier::with_socket("/nonexistent/sdnotify-test/notify.sock").unwrap();
        n.ready();
        n.watchdog(); // second failure: logged nothing, still no panic
        assert!(n.warned.load(Ordering::Relaxed));
    }

    #[test]
    fn unsupported_addresses_give_none() {
        assert!(Notifier::with_socket("").is_none());
        assert!(Notifier::with_socket("vsock:2:1234").is_none());
    }

    #[test]
    fn watchdog_interval_is_half_of_watchdog_usec() {
        assert_eq!(interval_from(Some("10000000"), None, 7), Some(Duration::from_secs(5)));
        assert_eq!(interval_from(Some("10000000"), Some("7"), 7), Some(Duration::from_secs(5)));
        assert_eq!(interval_from(Some("10000000"), Some(""), 7), Some(Duration::from_secs(5)));
        assert_eq!(interval_from(Some("10000000"), Some("8"), 7), None);
        assert_eq!(interval_from(Some("10000000"), Some("x"), 7), None);
        assert_eq!(interval_from(None, None, 7), None);
        assert_eq!(interval_from(Some("0"), None, 7), None);
        assert_eq!(interval_from(Some("soon"), None, 7), None);
    }
}
