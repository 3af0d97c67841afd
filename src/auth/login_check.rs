//! Runs the Argon2 checks of hashed passcodes off the event loop. One run costs ~0.1 s of CPU
//! on x86 (several times that on a board) and its `m` parameter in memory (19 MiB by default):
//! on the event loop it would freeze every other client for that long, per CONNECT. So a
//! CONNECT that needs one queues a [`Job`] here and its session waits (its socket is not read);
//! one worker task runs the jobs one at a time, in arrival order, each on tokio's blocking pool
//! (`spawn_blocking`), so at most one core is ever busy hashing, and wakes the waiting sessions
//! when it is done.
//!
//! Bounded: at most `auth.max_pending_logins` jobs wait (the running one aside); a CONNECT
//! past that is refused at once (`login_checks_rejected_total{reason="queue_full"}`), and one
//! whose run would take the memory budget past its high-water mark too (`reason="memory"`,
//! checked when it comes and again when its run starts). A waiting job's copy of the passcode
//! is on the budget, and the running job's Argon2 memory while it runs. CONNECTs asking the same question
//! (login and passcode) share one job, so 1000 clients of one account reconnecting after a
//! restart take one queue place and one run; a job whose sessions all left is skipped.
//!
//! A client address the login throttle already slows (`crate::auth::login_throttle`: past its free
//! failures) may have only one check waiting at a time; its further CONNECTs needing a run are
//! refused at once, without one (`reason="throttled"`). A guesser thus cannot fill the queue
//! from one address, and cannot make the board hash faster than the queue serves everyone;
//! a right passcode from that address still gets its check on a later try, so the throttle's
//! promise holds (guessing at someone's login never locks them out).

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::rc::{Rc, Weak};
use std::task::{Poll, Waker};

use crate::auth::Verification;
use crate::board::memory::{self, Charge};
use crate::observability::metrics::METRICS;
use crate::transport::outbound::Outbound;

/// Why a CONNECT needing an Argon2 run was refused without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// `auth.max_pending_logins` jobs were already waiting.
    QueueFull,
    /// The run's memory would take the budget past its high-water mark.
    Memory,
    /// The client's address is throttled and already has a check waiting.
    Throttled,
}

impl Busy {
    /// The `login_checks_rejected_total` label.
    pub fn label(self) -> &'static str {
        match self {
            Busy::QueueFull => "queue_full",
            Busy::Memory => "memory",
            Busy::Throttled => "throttled",
        }
    }
}

/// The outcome of a [`Job`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The passcode matches the hash.
    Matched,
    /// It does not.
    Mismatched,
    /// Not checked: the server could not take the run now.
    Busy(Busy),
}

/// Who waits for a [`Job`]'s verdict.
enum Waiter {
    /// A STOMP session, whose connection task waits on its outbound queue.
    Session(Weak<Outbound>),
    /// A task awaiting [`Job::finished`] (an HTTP Basic check).
    Task(Waker),
}

/// One queued Argon2 run and the sessions waiting for it.
pub struct Job {
    verification: Verification,
    /// The throttled address whose waiting check this is (see [`LoginChecks::submit`]).
    throttled: Option<IpAddr>,
    verdict: Cell<Option<Verdict>>,
    /// Woken when the verdict is in.
    waiters: RefCell<Vec<Waiter>>,
    /// What the job holds (its copy of the passcode can be a CONNECT's 8 KiB), on the budget.
    _held: Charge,
}

impl Job {
    /// The outcome, once the run is over.
    pub fn verdict(&self) -> Option<Verdict> {
        self.verdict.get()
    }

    /// What was checked (to remember the outcome: `Authenticator::remember`).
    pub fn verification(&self) -> &Verification {
        &self.verification
    }

    /// Has the session whose queue is `outbound` woken (`Outbound::wake_owner`) when the
    /// verdict is in; at once if it already is.
    pub fn wake_on_verdict(&self, outbound: &Rc<Outbound>) {
        if self.verdict().is_some() {
            outbound.wake_owner();
        } else {
            self.waiters.borrow_mut().push(Waiter::Session(Rc::downgrade(outbound)));
        }
    }

    /// Resolves once the verdict is in.
    pub async fn finished(&self) {
        std::future::poll_fn(|cx| {
            if self.verdict().is_some() {
                return Poll::Ready(());
            }
            let mut waiters = self.waiters.borrow_mut();
            let known = waiters.iter().any(|w| matches!(w, Waiter::Task(k) if k.will_wake(cx.waker())));
            if !known {
                waiters.push(Waiter::Task(cx.waker().clone()));
            }
            Poll::Pending
        })
        .await;
    }

    fn finish(&self, verdict: Verdict) {
        self.verdict.set(Some(verdict));
        for waiter in std::mem::take(&mut *self.waiters.borrow_mut()) {
            match waiter {
                Waiter::Session(queue) => {
                    if let Some(outbound) = queue.upgrade() {
                        outbound.wake_owner();
                    }
                }
                Waiter::Task(waker) => waker.wake(),
            }
        }
    }
}

/// The node's queue of Argon2 runs.
#[derive(Default)]
pub struct LoginChecks {
    /// Jobs not started yet, oldest first.
    queue: RefCell<VecDeque<Rc<Job>>>,
    /// Every job still held by a session or the queue, by the fingerprint of its login and
    /// passcode, so that the same question joins the job already asked.
    by_print: RefCell<HashMap<[u8; 32], Weak<Job>>>,
    /// Waiting checks per throttled client address (at most one each).
    throttled: RefCell<HashMap<IpAddr, usize>>,
    /// Whether the worker task is alive.
    worker: Cell<bool>,
}

impl LoginChecks {
    /// Queues `verification`, or joins the job asking the same; the caller holds the job while
    /// it waits ([`Job::wake_on_verdict`], [`Job::finished`]) and drops it to give up. Refused,
    /// and counted, when `max_waiting` jobs already wait, or when `throttled` (the client's
    /// address, which the login throttle slows) already has one waiting.
    pub fn submit(
        self: &Rc<Self>,
        verification: Verification,
        max_waiting: usize,
        throttled: Option<IpAddr>,
    ) -> Result<Rc<Job>, Busy> {
        let print = verification.fingerprint();
        let mut by_print = self.by_print.borrow_mut();
        if let Some(job) = by_print.get(&print).and_then(Weak::upgrade) {
            return Ok(job);
        }
        let refused = if self.queue.borrow().len() >= max_waiting {
            Some(Busy::QueueFull)
        } else if throttled.is_some_and(|a| self.throttled.borrow().contains_key(&a)) {
            Some(Busy::Throttled)
        } else if !memory::admit(verification.memory_bytes()) {
            // The run could not take its memory now: say so at once rather than after the wait.
            METRICS.memory_refused.inc("login_check");
            Some(Busy::Memory)
        } else {
            None
        };
        if let Some(busy) = refused {
            METRICS.login_checks_rejected.inc(busy.label());
            return Err(busy);
        }
        if let Some(address) = throttled {
            *self.throttled.borrow_mut().entry(address).or_default() += 1;
        }
        by_print.retain(|_, job| job.strong_count() > 0);
        let held = Charge::of(std::mem::size_of::<Job>() + verification.held_bytes());
        let job = Rc::new(Job {
            _held: held,
            verification,
            throttled,
            verdict: Cell::new(None),
            waiters: RefCell::new(Vec::new()),
        });
        by_print.insert(print, Rc::downgrade(&job));
        self.queue.borrow_mut().push_back(job.clone());
        METRICS.login_checks_waiting.inc();
        if !self.worker.replace(true) {
            tokio::task::spawn_local(self.clone().work());
        }
        Ok(job)
    }

    /// Jobs waiting for their run (the running one not counted).
    pub fn waiting(&self) -> usize {
        self.queue.borrow().len()
    }

    /// Runs the queued jobs one at a time until none is left.
    async fn work(self: Rc<Self>) {
        loop {
            let next = self.queue.borrow_mut().pop_front();
            let Some(job) = next else { break };
            METRICS.login_checks_waiting.dec();
            if let Some(address) = job.throttled {
                let mut throttled = self.throttled.borrow_mut();
                if let Some(n) = throttled.get_mut(&address) {
                    *n -= 1;
                    if *n == 0 {
                        throttled.remove(&address);
                    }
                }
            }
            if Rc::strong_count(&job) == 1 {
                // Every session that asked has gone: no one needs the answer.
                METRICS.login_checks.inc("abandoned");
                continue;
            }
            METRICS.login_checks_running.set(1);
            let verdict = run(&job.verification).await;
            METRICS.login_checks_running.set(0);
            if let Verdict::Busy(busy) = verdict {
                METRICS.login_checks_rejected.inc(busy.label());
            }
            job.finish(verdict);
        }
        self.worker.set(false);
    }
}

/// One Argon2 run on the blocking pool, its memory charged to the budget meanwhile.
async fn run(verification: &Verification) -> Verdict {
    let bytes = verification.memory_bytes();
    if !memory::admit(bytes) {
        METRICS.memory_refused.inc("login_check");
        return Verdict::Busy(Busy::Memory);
    }
    let _charge = Charge::of(bytes);
    let owned = verification.clone();
    match tokio::task::spawn_blocking(move || owned.run()).await {
        Ok(true) => {
            METRICS.login_checks.inc("matched");
            Verdict::Matched
        }
        Ok(false) => {
            METRICS.login_checks.inc("mismatched");
            Verdict::Mismatched
        }
        Err(e) => {
            log::error!("an Argon2 check failed: {e}");
            METRICS.login_checks.inc("other");
            Verdict::Mismatched
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{hash_passcode, Authenticator, Check};

    fn verification(auth: &Authenticator, login: &str, passcode: &str) -> Verification {
        match auth.check(Some(login), Some(passcode)) {
            Check::Verify(v) => v,
            other => panic!("expected a verification, got {other:?}"),
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn runs_off_the_loop_shares_equal_questions_and_bounds_the_queue() {
        tokio::task::LocalSet::new()
            .run_until(async {
                let hash = hash_passcode("right").unwrap();
                let auth = Authenticator::new(vec![("alice".into(), hash)]);
                let checks = Rc::new(LoginChecks::default());
                let out = Rc::new(Outbound::new(1 << 20));
                let right = checks.submit(verification(&auth, "alice", "right"), 1, None).unwrap();
                // The same question joins the job instead of taking a queue place.
                let again = checks.submit(verification(&auth, "alice", "right"), 1, None).unwrap();
                assert!(Rc::ptr_eq(&right, &again));
                assert_eq!(checks.waiting(), 1);
                assert_eq!(
                    checks.submit(verification(&auth, "alice", "wrong"), 1, None).err(),
                    Some(Busy::QueueFull)
                );
                // A job nobody waits for any more is skipped.
                let abandoned = checks.submit(verification(&auth, "alice", "gone"), 3, None).unwrap();
                drop(abandoned);
                let wrong = checks.submit(verification(&auth, "alice", "wrong"), 3, None).unwrap();
                wrong.wake_on_verdict(&out);
                while wrong.verdict().is_none() {
                    out.notified().await;
                }
                right.finished().await;
                assert_eq!(right.verdict(), Some(Verdict::Matched));
                assert_eq!(wrong.verdict(), Some(Verdict::Mismatched));
                assert!(auth.remember(right.verification(), true));
                assert!(matches!(auth.check(Some("alice"), Some("right")), Check::Allowed));
                assert_eq!(checks.waiting(), 0);
                // A throttled address may have one check waiting, no more.
                let address: IpAddr = "10.0.0.9".parse().unwrap();
                let first = checks.submit(verification(&auth, "alice", "t1"), 9, Some(address)).unwrap();
                assert_eq!(
                    checks.submit(verification(&auth, "alice", "t2"), 9, Some(address)).err(),
                    Some(Busy::Throttled)
                );
                let same = checks.submit(verification(&auth, "alice", "t1"), 9, Some(address)).unwrap();
                assert!(Rc::ptr_eq(&first, &same), "the same question joins");
                let other = checks.submit(verification(&auth, "alice", "t3"), 9, None).unwrap();
                first.finished().await;
                let next = checks.submit(verification(&auth, "alice", "t4"), 9, Some(address)).unwrap();
                drop(other);
                next.finished().await;
                assert!(checks.throttled.borrow().is_empty());
            })
            .await;
    }
}
