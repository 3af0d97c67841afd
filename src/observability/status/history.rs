//! The last ten minutes of a board, for the status page's sparklines and its "in the last
//! minute" figures: one small sample every 10 s (connections, message totals, and the
//! trouble counters that are not zero), in a ring of 61. Taking a sample reads counters
//! only; it is the one thing the status page costs while nobody looks.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::counters::Series;

/// How often a sample is taken.
pub const INTERVAL: Duration = Duration::from_secs(10);
/// Samples kept: ten minutes, plus the one they start from.
pub const CAPACITY: usize = 61;
/// The window of the "last minute" figures, in ms.
const MINUTE_MS: u64 = 60_000;

/// A board's figures at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Sample {
    /// Epoch ms.
    pub at_ms: u64,
    pub connections: u64,
    /// Messages published on this board plus those relayed in from other boards, so far.
    pub messages_in: u64,
    /// MESSAGE frames queued to subscribers, so far.
    pub messages_out: u64,
    /// The trouble counters that are not zero (most of the time: none), by series.
    pub trouble: Vec<Series>,
}

/// Messages per second in and out, as of the last time they were worked out.
#[derive(Debug, Clone, Copy)]
struct Rates {
    at: Instant,
    messages_in: u64,
    messages_out: u64,
    in_per_second: f64,
    out_per_second: f64,
}

/// The ring of samples, and the memo of the live message rates.
#[derive(Default)]
pub struct History {
    samples: RefCell<VecDeque<Sample>>,
    rates: Cell<Option<Rates>>,
}

impl History {
    pub fn new() -> History {
        History::default()
    }

    /// Adds a sample, forgetting the oldest beyond `CAPACITY`.
    pub fn record(&self, sample: Sample) {
        let mut samples = self.samples.borrow_mut();
        if samples.len() == CAPACITY {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    /// How much `series` (now at `now_value`) grew over the last minute: since the newest
    /// sample at least a minute old, or since start when the board is younger than that.
    pub fn last_minute(&self, series: &str, now_value: u64, now_ms: u64) -> u64 {
        let samples = self.samples.borrow();
        let base = samples
            .iter()
            .rev()
            .find(|s| s.at_ms + MINUTE_MS <= now_ms)
            .map_or(0, |s| s.trouble.iter().find(|(name, _)| name == series).map_or(0, |(_, v)| *v));
        now_value.saturating_sub(base)
    }

    /// Connections at each sample, oldest first.
    pub fn connections(&self) -> Vec<u64> {
        self.samples.borrow().iter().map(|s| s.connections).collect()
    }

    /// Messages per second (in + out) between consecutive samples, oldest first.
    pub fn messages_per_second(&self) -> Vec<f64> {
        let samples = self.samples.borrow();
        samples
            .iter()
            .zip(samples.iter().skip(1))
            .map(|(a, b)| {
                let total = |s: &Sample| s.messages_in + s.messages_out;
                let seconds = (b.at_ms.saturating_sub(a.at_ms)).max(1) as f64 / 1000.0;
                round1(total(b).saturating_sub(total(a)) as f64 / seconds)
            })
            .collect()
    }

    /// Messages per second in and out now, from the totals `messages_in`/`messages_out`:
    /// worked out over the time since the previous call when that is between 0.5 s and 30 s
    /// ago (the page asks once a second), else over the time since the last sample.
    pub fn rates(&self, now: Instant, now_ms: u64, messages_in: u64, messages_out: u64) -> (f64, f64) {
        let from = match self.rates.get() {
            Some(r) if now.duration_since(r.at) < Duration::from_millis(500) => {
                return (r.in_per_second, r.out_per_second)
            }
            Some(r) if now.duration_since(r.at) <= Duration::from_secs(30) => {
                Some((now.duration_since(r.at).as_secs_f64(), r.messages_in, r.messages_out))
            }
            _ => self
                .samples
                .borrow()
                .back()
                .map(|s| (now_ms.saturating_sub(s.at_ms) as f64 / 1000.0, s.messages_in, s.messages_out)),
        };
        let (in_per_second, out_per_second) = match from {
            Some((seconds, i, o)) if seconds >= 0.5 => (
                round1(messages_in.saturating_sub(i) as f64 / seconds),
                round1(messages_out.saturating_sub(o) as f64 / seconds),
            ),
            _ => (0.0, 0.0),
        };
        self.rates.set(Some(Rates { at: now, messages_in, messages_out, in_per_second, out_per_second }));
        (in_per_second, out_per_second)
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_s: u64, connections: u64, messages: u64, gaps: u64) -> Sample {
        Sample {
            at_ms: at_s * 1000,
            connections,
            messages_in: messages,
            messages_out: messages * 2,
            trouble: if gaps > 0 { vec![("gaps".to_string(), gaps)] } else { Vec::new() },
        }
    }

    #[test]
    fn the_ring_keeps_ten_minutes() {
        let h = History::new();
        for i in 0..100 {
            h.record(sample(i * 10, i, 0, 0));
        }
        let c = h.connections();
        assert_eq!(c.len(), CAPACITY);
        assert_eq!((c[0], c[CAPACITY - 1]), (39, 99));
    }

    #[test]
    fn messages_per_second_between_samples() {
        let h = History::new();
        h.record(sample(0, 0, 0, 0));
        h.record(sample(10, 0, 100, 0)); // 100 in + 200 out in 10 s
        h.record(sample(20, 0, 100, 0));
        assert_eq!(h.messages_per_second(), vec![30.0, 0.0]);
    }

    #[test]
    fn last_minute_counts_from_the_sample_a_minute_ago() {
        let h = History::new();
        for (t, gaps) in [(0, 0), (10, 2), (20, 5), (70, 9)] {
            h.record(sample(t, 0, 0, gaps));
        }
        // Now 80 s: the newest sample at least 60 s old is the one at 20 s (5).
        assert_eq!(h.last_minute("gaps", 12, 80_000), 7);
        // Now 30 s: nothing a minute old yet, so everything since start.
        assert_eq!(h.last_minute("gaps", 6, 30_000), 6);
        // A series that was zero then.
        assert_eq!(h.last_minute("other", 3, 80_000), 3);
    }

    #[test]
    fn rates_over_the_time_since_the_last_ask() {
        let h = History::new();
        let t0 = Instant::now();
        h.record(sample(0, 0, 0, 0));
        // First ask 10 s after the sample: 50 in, 100 out → 5/s and 10/s.
        assert_eq!(h.rates(t0, 10_000, 50, 100), (5.0, 10.0));
        // Asked again at once: the same figures (no noise from tiny windows).
        assert_eq!(h.rates(t0 + Duration::from_millis(10), 10_010, 60, 100), (5.0, 10.0));
        // One second later: over that second.
        assert_eq!(h.rates(t0 + Duration::from_secs(1), 11_000, 53, 100), (3.0, 0.0));
    }
}
