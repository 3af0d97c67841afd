//! The memory engine: a node on its own, the embedded default. There are no other nodes to
//! relay to, so publishing past the local hub is a no-op and interest needs no registration;
//! room presence is a bounded table on this node.
//! Guarantee: every message reaches every subscriber of this node whose queue has room.

use std::cell::RefCell;
use std::collections::HashMap;

use super::{Broker, JoinError, LocalBoxFuture, Member, Mode, Presence, RedisState};
use crate::broker::Publication;
use crate::chat::room::{RoomId, Username};

#[derive(Default)]
pub struct MemoryBroker;

impl Broker for MemoryBroker {
    fn publish(&self, _publication: &Publication) {}

    fn interest(&self, _destination: &str, _interested: bool) {}

    fn mode(&self) -> Mode {
        Mode::Local
    }

    fn redis_state(&self) -> RedisState {
        RedisState::Disabled
    }
}

/// Room membership held on this node alone.
pub struct MemoryPresence {
    /// Room → members in join order. Bounded by `max_rooms` × `max_participants`.
    rooms: RefCell<HashMap<RoomId, Vec<Member>>>,
    max_rooms: usize,
    max_participants: usize,
}

impl MemoryPresence {
    pub fn new(max_rooms: usize, max_participants: usize) -> MemoryPresence {
        MemoryPresence { rooms: RefCell::new(HashMap::new()), max_rooms, max_participants }
    }

    fn join_now(&self, room: &RoomId, member: Member) -> Result<usize, JoinError> {
        let mut rooms = self.rooms.borrow_mut();
        if !rooms.contains_key(room) && rooms.len() >= self.max_rooms {
            return Err(JoinError::TooManyRooms { limit: self.max_rooms });
        }
        let members = rooms.entry(room.clone()).or_default();
        if let Some(existing) = members.iter().find(|m| m.username == member.username) {
            // The same session joining again under the same name is not a clash.
            return if existing.session_id == member.session_id {
                Ok(members.len())
            } else {
                Err(JoinError::UsernameTaken)
            };
        }
        if members.len() >= self.max_participants {
            if members.is_empty() {
                rooms.remove(room);
            }
            return Err(JoinError::RoomFull { limit: self.max_participants });
        }
        members.push(member);
        Ok(members.len())
    }

    fn leave_now(&self, room: &RoomId, session_id: &str) -> Option<(Username, usize)> {
        let mut rooms = self.rooms.borrow_mut();
        let members = rooms.get_mut(room)?;
        let i = members.iter().position(|m| &*m.session_id == session_id)?;
        let member = members.remove(i);
        let left = members.len();
        if left == 0 {
            rooms.remove(room);
        }
        Some((member.username, left))
    }

    /// Adds a member without the limits (its node already decided), if it is not there.
    pub fn join_forced(&self, room: &RoomId, member: Member) {
        let mut rooms = self.rooms.borrow_mut();
        let members = rooms.entry(room.clone()).or_default();
        if !members.iter().any(|m| m.session_id == member.session_id) {
            members.push(member);
        }
    }

    /// Every (room, member) in the table.
    pub fn members_of_node(&self) -> Vec<(RoomId, Member)> {
        let rooms = self.rooms.borrow();
        rooms.iter().flat_map(|(room, members)| members.iter().map(|m| (room.clone(), m.clone()))).collect()
    }

    pub fn room_count(&self) -> usize {
        self.rooms.borrow().len()
    }

    pub fn participant_count(&self) -> usize {
        self.rooms.borrow().values().map(Vec::len).sum()
    }
}

impl Presence for MemoryPresence {
    fn join<'a>(&'a self, room: &'a RoomId, member: Member) -> LocalBoxFuture<'a, Result<usize, JoinError>> {
        Box::pin(std::future::ready(self.join_now(room, member)))
    }

    fn leave<'a>(
        &'a self,
        room: &'a RoomId,
        session_id: &'a str,
    ) -> LocalBoxFuture<'a, Option<(Username, usize)>> {
        Box::pin(std::future::ready(self.leave_now(room, session_id)))
    }

    fn count(&self, room: &RoomId) -> usize {
        self.rooms.borrow().get(room).map_or(0, Vec::len)
    }

    fn rooms(&self) -> LocalBoxFuture<'_, Vec<(String, usize)>> {
        let mut list: Vec<(String, usize)> =
            self.rooms.borrow().iter().map(|(id, members)| (id.to_string(), members.len())).collect();
        list.sort();
        Box::pin(std::future::ready(list))
    }

    fn members<'a>(&'a self, room: &'a RoomId) -> LocalBoxFuture<'a, Option<Vec<String>>> {
        let names = self.rooms.borrow().get(room).map(|m| m.iter().map(|m| m.username.to_string()).collect());
        Box::pin(std::future::ready(names))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    fn member(session: &str, name: &str) -> Member {
        Member { session_id: Rc::from(session), username: Username::try_from(name).unwrap() }
    }

    fn room(id: &str) -> RoomId {
        RoomId::try_from(id).unwrap()
    }

    #[test]
    fn limits_uniqueness_and_freeing() {
        let p = MemoryPresence::new(1, 2);
        let r = room("r");
        assert_eq!(p.join_now(&r, member("s1", "alice")), Ok(1));
        assert_eq!(p.join_now(&r, member("s1", "alice")), Ok(1));
        assert_eq!(p.join_now(&r, member("s2", "alice")), Err(JoinError::UsernameTaken));
        assert_eq!(p.join_now(&r, member("s2", "bob")), Ok(2));
        assert_eq!(p.join_now(&r, member("s3", "carol")), Err(JoinError::RoomFull { limit: 2 }));
        assert_eq!(
            p.join_now(&room("other"), member("s3", "carol")),
            Err(JoinError::TooManyRooms { limit: 1 })
        );
        assert_eq!(p.leave_now(&r, "s1").map(|(n, c)| (n.to_string(), c)), Some(("alice".into(), 1)));
        assert_eq!(p.leave_now(&r, "s1"), None);
        assert_eq!(p.leave_now(&r, "s2").map(|(_, c)| c), Some(0));
        assert_eq!((p.room_count(), p.count(&r)), (0, 0));
        assert_eq!(p.join_now(&room("other"), member("s3", "carol")), Ok(1));
    }
}
