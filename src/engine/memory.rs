//! The memory engine: a node on its own, the embedded default. There are no other nodes to
//! relay to, so publishing past the local hub is a no-op and interest needs no registration.
//! Guarantee: every message reaches every subscriber of this node whose queue has room.

use super::{Broker, Mode, RedisState};
use crate::hub::Publication;

#[derive(Default)]
pub struct MemoryBroker;

impl Broker for MemoryBroker {
    fn publish(&self, _publication: &Publication, _delivered_here: bool) {}

    fn interest(&self, _destination: &str, _interested: bool) {}

    fn mode(&self) -> Mode {
        Mode::Local
    }

    fn redis_state(&self) -> RedisState {
        RedisState::Disabled
    }
}
