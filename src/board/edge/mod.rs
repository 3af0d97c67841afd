//! Running on the board: systemd integration. `SystemdHooks` turns the server's lifecycle
//! (`server::Hooks`) into sd_notify messages: READY once listening, WATCHDOG from the event
//! loop itself (a stalled loop stops petting and systemd restarts it), RELOADING, STOPPING.

pub mod sdnotify;

use std::net::SocketAddr;
use std::time::Instant;

use crate::transport::server::Hooks;
use sdnotify::Notifier;

pub struct SystemdHooks {
    notifier: Notifier,
    started: Instant,
}

impl SystemdHooks {
    /// `None` when the process was not started by systemd with `NOTIFY_SOCKET`.
    pub fn from_env() -> Option<SystemdHooks> {
        Notifier::from_env().map(|notifier| SystemdHooks { notifier, started: Instant::now() })
    }
}

impl Hooks for SystemdHooks {
    fn ready(&self, addr: SocketAddr) {
        self.notifier.status(&format!("listening on {addr}"));
        self.notifier.ready();
        log::info!("ready in {} ms", self.started.elapsed().as_millis());
    }

    fn reloading(&self) {
        self.notifier.reloading();
    }

    fn reloaded(&self) {
        self.notifier.ready();
    }

    fn stopping(&self) {
        self.notifier.stopping();
    }

    fn tick(&self) {
        self.notifier.watchdog();
    }
}
