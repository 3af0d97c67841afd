//! The catch-up state machine of a node in cluster mode: whether Redis holds all of this
//! node's state (registry entry, sessions, room members) or missed some of it. One enum,
//! changed only through the transitions below; the supervisor drives it, and a part whose
//! write to Redis failed sends it back to `Stale`.
//!
//! ```text
//!   Down ──link up──▶ Stale ──begin──▶ CatchingUp ──finish(ok)──▶ InSync
//!    ▲                  ▲                 │  │                      │
//!    │                  └───finish(err)───┘  └──mark_stale──▶ Stale │
//!    └──────────────────── link lost (from any state) ◀─────────────┘
//!                          InSync ──mark_stale──▶ Stale
//! ```

use std::cell::Cell;

/// Where this node's Redis state stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncState {
    /// No command link to Redis: changes are made on this node alone and remembered.
    Down,
    /// Linked, but Redis misses some of this node's state: the supervisor catches up next.
    Stale,
    /// This node's state is being written back. A change made meanwhile that Redis did not
    /// get sends it back to `Stale`, so the catch-up runs again.
    CatchingUp,
    /// Redis holds all of this node's state; changes go to Redis as they are made.
    InSync,
}

/// The state, with its transitions.
#[derive(Debug)]
pub struct CatchUp {
    state: Cell<SyncState>,
}

impl Default for CatchUp {
    fn default() -> Self {
        CatchUp { state: Cell::new(SyncState::Down) }
    }
}

impl CatchUp {
    pub fn get(&self) -> SyncState {
        self.state.get()
    }

    pub fn in_sync(&self) -> bool {
        self.get() == SyncState::InSync
    }

    /// The command link was lost (or is not up yet).
    pub fn link_lost(&self) {
        self.state.set(SyncState::Down);
    }

    /// The command link came up: whatever happened meanwhile, Redis may miss some of it.
    pub fn link_up(&self) {
        if self.get() == SyncState::Down {
            self.state.set(SyncState::Stale);
        }
    }

    /// Redis missed a change (a write failed, a change was made without it, the registry
    /// entry was gone). Down stays down: coming up catches up anyway.
    pub fn mark_stale(&self) {
        if matches!(self.get(), SyncState::InSync | SyncState::CatchingUp) {
            self.state.set(SyncState::Stale);
        }
    }

    /// Starts a catch-up; false when there is nothing to catch up (or no link).
    pub fn begin(&self) -> bool {
        if self.get() == SyncState::Stale {
            self.state.set(SyncState::CatchingUp);
            return true;
        }
        false
    }

    /// Ends a catch-up: in sync when it wrote everything and nothing changed meanwhile.
    pub fn finish(&self, ok: bool) {
        if self.get() == SyncState::CatchingUp {
            self.state.set(if ok { SyncState::InSync } else { SyncState::Stale });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SyncState::*;

    #[test]
    fn the_catch_up_cycle() {
        let s = CatchUp::default();
        assert_eq!(s.get(), Down);
        s.mark_stale();
        assert_eq!(s.get(), Down, "down stays down");
        assert!(!s.begin(), "no catch-up without a link");
        s.link_up();
        assert_eq!(s.get(), Stale);
        assert!(s.begin());
        assert_eq!(s.get(), CatchingUp);
        s.finish(true);
        assert!(s.in_sync());
        s.link_up();
        assert_eq!(s.get(), InSync, "an up link does not disturb a synced node");
    }

    #[test]
    fn a_change_during_a_catch_up_makes_it_run_again() {
        let s = CatchUp::default();
        s.link_up();
        assert!(s.begin());
        s.mark_stale();
        s.finish(true);
        assert_eq!(s.get(), Stale, "the change made meanwhile is not in Redis yet");
        assert!(s.begin());
        s.finish(false);
        assert_eq!(s.get(), Stale);
        assert!(s.begin());
        s.link_lost();
        s.finish(true);
        assert_eq!(s.get(), Down, "a link lost during the catch-up wins");
        s.link_up();
        assert!(s.begin());
        s.finish(true);
        s.mark_stale();
        assert_eq!(s.get(), Stale);
        s.link_lost();
        assert_eq!(s.get(), Down);
    }
}
