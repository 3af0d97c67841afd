//! sd_notify(3) through the `sd-notify` crate: `READY=1`, `WATCHDOG=1`, `STOPPING=1`,
//! `RELOADING=1` with `MONOTONIC_USEC=`, and `STATUS=`, each sent as one datagram to
//! `$NOTIFY_SOCKET` by `sd_notify::notify`. The server builds one [`Notifier`] at start (`None`
//! when systemd did not start it) and calls it from its lifecycle and from its once-a-second
//! tick (the watchdog, when the unit sets `WatchdogSec=`).
//!
//! Like libsystemd's `sd_notify`, a send is a blocking datagram to a local socket: it waits
//! only if systemd's receive queue is full. The crate reaches socket paths, which is what
//! systemd gives services (`/run/systemd/notify`); an abstract `@name` is refused at start with
//! a warning.

use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;

/// A handle on systemd's notification socket; every method sends one datagram and never fails.
#[derive(Debug)]
pub struct Notifier {
    /// `WATCHDOG_USEC` when it is meant for this process: watchdog pings are sent only then.
    watchdog: Option<Duration>,
    /// Set on the first failed send, so a vanished manager is logged once, not at every tick.
    warned: AtomicBool,
}

impl Notifier {
    /// The notifier systemd asked for through `NOTIFY_SOCKET`, or `None` when it is unset or
    /// empty (the server was not started by a `Type=notify` unit) or not a socket path.
    pub fn from_env() -> Option<Notifier> {
        let socket = std::env::var_os("NOTIFY_SOCKET").filter(|s| !s.is_empty())?;
        if !socket.as_bytes().starts_with(b"/") {
            log::warn!("sd_notify: NOTIFY_SOCKET {socket:?} is not a socket path, notifications off");
            return None;
        }
        Some(Notifier { watchdog: sd_notify::watchdog_enabled(), warned: AtomicBool::new(false) })
    }

    /// The watchdog timeout systemd set for this process (`WatchdogSec=`), if any.
    pub fn watchdog_timeout(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Startup is finished: the listener is bound (send once, and again after each reload).
    pub fn ready(&self) {
        self.notify(&[NotifyState::Ready]);
    }

    /// The event loop is alive; call at least twice per watchdog timeout (the server's tick is
    /// once a second). Sends nothing when the unit has no watchdog.
    pub fn watchdog(&self) {
        if self.watchdog.is_some() {
            self.notify(&[NotifyState::Watchdog]);
        }
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

    /// Sends the states as one datagram; a failure is logged once and otherwise ignored.
    fn notify(&self, states: &[NotifyState<'_>]) {
        if let Err(e) = sd_notify::notify(states) {
            if !self.warned.swap(true, Ordering::Relaxed) {
                log::warn!("sd_notify: sending to NOTIFY_SOCKET failed: {e} (further errors not logged)");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    /// `CLOCK_MONOTONIC` in microseconds, as the crate reads it.
    fn monotonic_usec() -> u64 {
        match NotifyState::monotonic_usec_now().unwrap() {
            NotifyState::MonotonicUsec(usec) => usec as u64,
            other => panic!("{other:?}"),
        }
    }

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).expect("a datagram within 5 s");
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    /// One test for everything that reads `NOTIFY_SOCKET`, so no other test sees it change.
    #[test]
    fn sends_the_lifecycle_messages_to_the_socket_systemd_names() {
        let dir = std::env::temp_dir().join(format!("sdnotify-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let manager = UnixDatagram::bind(&path).unwrap();
        manager.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        std::env::set_var("NOTIFY_SOCKET", &path);
        std::env::set_var("WATCHDOG_USEC", "2000000");
        std::env::remove_var("WATCHDOG_PID");

        let n = Notifier::from_env().expect("a notifier");
        assert_eq!(n.watchdog_timeout(), Some(Duration::from_secs(2)));
        n.ready();
        assert_eq!(recv(&manager), "READY=1\n");
        n.watchdog();
        assert_eq!(recv(&manager), "WATCHDOG=1\n");
        n.status("serving 3 clients\non 0.0.0.0:8080");
        assert_eq!(recv(&manager), "STATUS=serving 3 clients on 0.0.0.0:8080\n");
        let before = monotonic_usec();
        n.reloading();
        let after = monotonic_usec();
        let msg = recv(&manager);
        let (first, second) = msg.split_once('\n').expect("two lines");
        assert_eq!(first, "RELOADING=1");
        let usec: u64 =
            second.trim_end().strip_prefix("MONOTONIC_USEC=").expect("MONOTONIC_USEC").parse().unwrap();
        assert!(before > 0 && before <= usec && usec <= after, "{before} <= {usec} <= {after}");
        n.stopping();
        assert_eq!(recv(&manager), "STOPPING=1\n");
        assert!(!n.warned.load(Ordering::Relaxed));

        // Without a watchdog for this process, no pings.
        std::env::set_var("WATCHDOG_PID", "1");
        let quiet = Notifier::from_env().expect("a notifier");
        assert_eq!(quiet.watchdog_timeout(), None);
        quiet.watchdog();
        quiet.ready();
        assert_eq!(recv(&manager), "READY=1\n", "a watchdog ping was sent");

        // A manager that went away: logged once, no panic.
        drop(manager);
        let _ = std::fs::remove_dir_all(&dir);
        n.ready();
        n.stopping();
        assert!(n.warned.load(Ordering::Relaxed));

        // Not a socket path: no notifier.
        for value in ["", "@abstract-name", "vsock:2:1234", "relative/path"] {
            std::env::set_var("NOTIFY_SOCKET", value);
            assert!(Notifier::from_env().is_none(), "{value:?}");
        }
        for key in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            std::env::remove_var(key);
        }
    }
}
