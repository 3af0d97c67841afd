//! A wake-up flag for one waiting task on this thread, without locks: `notify` from anywhere
//! on the thread, `notified().await` in the task. A notification that comes while the task is
//! busy is kept, so none is lost. `Outbound` and the SockJS sessions wake their tasks with it.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

#[derive(Default)]
pub struct Signal {
    /// The waiting task's waker, stored while it waits.
    waker: Cell<Option<Waker>>,
    woken: Cell<bool>,
}

impl Signal {
    pub fn notify(&self) {
        self.woken.set(true);
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// Resolves once `notify` was called since the last time it resolved.
    pub fn notified(&self) -> Notified<'_> {
        Notified { signal: self }
    }
}

/// Future returned by [`Signal::notified`].
pub struct Notified<'a> {
    signal: &'a Signal,
}

impl Future for Notified<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.woken.replace(false) {
            return Poll::Ready(());
        }
        self.signal.waker.set(Some(cx.waker().clone()));
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn a_notification_before_the_wait_is_kept() {
        let signal = std::rc::Rc::new(Signal::default());
        signal.notify();
        signal.notified().await;
        let s2 = signal.clone();
        tokio::join!(s2.notified(), async {
            tokio::task::yield_now().await;
            signal.notify();
        });
    }
}
