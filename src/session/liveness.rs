//! The STOMP clock of one connection, whatever its transport: the CONNECT deadline, the
//! heart-beats the client owes (silence for twice the agreed interval closes it) and the EOLs the
//! server sends when it has written nothing for its interval. The owner keeps one timer, re-armed
//! with the deadline [`Liveness::on_timer`] returns.

use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::observability::metrics::{CloseReason, METRICS};
use crate::session::Session;
use crate::transport::outbound::{FrameKind, OutFrame, Outbound};

#[derive(Debug, Clone)]
pub struct Liveness {
    opened: Instant,
    /// When the client last sent anything (STOMP bytes, or a heart-beat EOL), in milliseconds
    /// after `opened` (8 bytes of every connection's task where an `Instant` takes 16; a
    /// deadline moves by less than a millisecond).
    last_read_ms: u64,
    /// When the server last wrote a STOMP frame or heart-beat to the client, likewise.
    last_write_ms: u64,
    /// The CONNECT deadline after `opened`, in milliseconds (a `Duration` would take 16 bytes of
    /// every connection's task).
    connect_timeout_ms: u32,
    /// Whether the timer was re-armed for the heart-beats agreed at CONNECT.
    heartbeat_armed: bool,
}

impl Liveness {
    pub fn new(connect_timeout: Duration) -> Liveness {
        let connect_timeout_ms = u32::try_from(connect_timeout.as_millis()).unwrap_or(u32::MAX);
        Liveness {
            opened: Instant::now(),
            last_read_ms: 0,
            last_write_ms: 0,
            connect_timeout_ms,
            heartbeat_armed: false,
        }
    }

    /// The client sent something at `now`.
    pub fn read_at(&mut self, now: Instant) {
        self.last_read_ms = self.since_opened(now);
    }

    /// The server wrote a frame or a heart-beat at `now`.
    pub fn written_at(&mut self, now: Instant) {
        self.last_write_ms = self.since_opened(now);
    }

    /// Milliseconds from the connection's opening to `at`: how the connection's other instants
    /// are kept (8 bytes each, not 16).
    pub fn since_opened(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.opened).as_millis()).unwrap_or(u64::MAX)
    }

    fn at(&self, ms: u64) -> Instant {
        self.opened + Duration::from_millis(ms)
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(u64::from(self.connect_timeout_ms))
    }

    /// The first deadline: CONNECT must arrive by then.
    pub fn connect_deadline(&self) -> Instant {
        self.opened + self.connect_timeout()
    }

    /// Call after handling input: true once, right after CONNECT agreed the heart-beats, when the
    /// owner must fire its timer now so that [`on_timer`](Self::on_timer) computes the schedule.
    pub fn just_connected(&mut self, session: &Session) -> bool {
        if !self.heartbeat_armed && session.is_connected() {
            self.heartbeat_armed = true;
            return true;
        }
        false
    }

    /// Sends a heart-beat when one is due, or says why the connection must close; returns when
    /// to call again.
    pub fn on_timer(&mut self, session: &Session, outbound: &Outbound) -> Result<Instant, CloseReason> {
        let now = Instant::now();
        let mut next = now + Duration::from_secs(3600);
        // A CONNECT waiting for its passcode check, or for its failed login's delayed ERROR,
        // came in time; the check queue and the delay are bounded.
        if !session.is_connected() && !session.awaiting_login() && !session.answering_failed_login() {
            let due = self.connect_deadline();
            if now >= due {
                return Err(CloseReason::ConnectTimeout);
            }
            next = next.min(due);
        }
        if let Some(interval) = session.heartbeat.receive() {
            let due = self.at(self.last_read_ms) + interval * 2;
            if now >= due {
                return Err(CloseReason::HeartbeatTimeout);
            }
            next = next.min(due);
        }
        if let Some(interval) = session.heartbeat.send() {
            let mut due = self.at(self.last_write_ms) + interval;
            if now >= due {
                // Frames already waiting to be written will do as the heart-beat.
                if outbound.is_empty() {
                    outbound
                        .push_unbounded(OutFrame { bytes: Bytes::from_static(b"\n"), kind: FrameKind::Text });
                    METRICS.heartbeats_sent.inc();
                }
                due = now + interval;
            }
            next = next.min(due.max(now + Duration::from_millis(1)));
        }
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn connect_deadline_then_close() {
        let out = Rc::new(Outbound::new(1024));
        let session = Session::new(1, Rc::from("s"), out.clone());
        let mut l = Liveness::new(Duration::from_millis(20));
        assert_eq!(l.on_timer(&session, &out), Ok(l.connect_deadline()));
        tokio::time::sleep(Duration::from_millis(25)).await;
        assert_eq!(l.on_timer(&session, &out), Err(CloseReason::ConnectTimeout));
        assert!(!l.just_connected(&session));
    }
}
