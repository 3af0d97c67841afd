//! The memory membership store: rooms held on this node alone. In local mode it is the whole
//! truth; in cluster mode the Redis store keeps one as this node's own members.
//! Bounded: at most `max_rooms` rooms of at most `max_participants` members each.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use super::{JoinError, Joined, Left, Member, Membership};
use crate::chat::room::RoomId;
use crate::engine::LocalBoxFuture;

#[derive(Default)]
struct Table {
    /// Room → members in join order.
    rooms: HashMap<RoomId, Vec<Member>>,
    /// Session → its room (a session is in one room at most).
    rooms_of: HashMap<Rc<str>, RoomId>,
}

impl Table {
    fn remove(&mut self, session_id: &str) -> Option<Left> {
        let room = self.rooms_of.remove(session_id)?;
        let members = self.rooms.get_mut(&room)?;
        let i = members.iter().position(|m| &*m.session_id == session_id)?;
        let member = members.remove(i);
        let count = members.len();
        if count == 0 {
            self.rooms.remove(&room);
        }
        Some(Left { room, username: member.username, count })
    }
}

/// Room membership held on this node alone.
pub struct MemoryMembership {
    table: RefCell<Table>,
    /// The limits, replaced by a reload (`Membership::set_limits`).
    max_rooms: Cell<usize>,
    max_participants: Cell<usize>,
}

impl MemoryMembership {
    pub fn new(max_rooms: usize, max_participants: usize) -> MemoryMembership {
        MemoryMembership {
            table: RefCell::new(Table::default()),
            max_rooms: Cell::new(max_rooms),
            max_participants: Cell::new(max_participants),
        }
    }

    /// `Membership::join` without the future.
    pub fn join_now(&self, room: &RoomId, member: Member) -> Result<Joined, JoinError> {
        let mut t = self.table.borrow_mut();
        let current = t.rooms_of.get(&member.session_id).cloned();
        let members = t.rooms.get(room);
        if let Some(existing) = members.and_then(|m| m.iter().find(|m| m.username == member.username)) {
            // The same session under the same name is already there: nothing to do.
            return if existing.session_id == member.session_id {
                Ok(Joined { count: members.map_or(0, Vec::len), left: None })
            } else {
                Err(JoinError::UsernameTaken)
            };
        }
        let moving_within = current.as_ref() == Some(room);
        let count = members.map_or(0, Vec::len);
        let (max_rooms, max_participants) = (self.max_rooms.get(), self.max_participants.get());
        if !moving_within && count >= max_participants {
            return Err(JoinError::RoomFull { limit: max_participants });
        }
        // A move frees the old room first, so a session may move from the last room it holds.
        let frees_a_room =
            current.as_ref().is_some_and(|c| c != room && t.rooms.get(c).map_or(0, Vec::len) == 1);
        if members.is_none() && t.rooms.len() - usize::from(frees_a_room) >= max_rooms {
            return Err(JoinError::TooManyRooms { limit: max_rooms });
        }
        let left = t.remove(&member.session_id);
        t.rooms_of.insert(member.session_id.clone(), room.clone());
        let members = t.rooms.entry(room.clone()).or_default();
        members.push(member);
        Ok(Joined { count: members.len(), left })
    }

    /// Puts a member in a room without the limits or the name check (Redis decided already),
    /// moving it from its current place; returns what it left.
    pub fn put(&self, room: &RoomId, member: Member) -> Option<Left> {
        let mut t = self.table.borrow_mut();
        let left = t.remove(&member.session_id);
        t.rooms_of.insert(member.session_id.clone(), room.clone());
        t.rooms.entry(room.clone()).or_default().push(member);
        left
    }

    /// `Membership::leave` without the future.
    pub fn leave_now(&self, room: &RoomId, session_id: &str) -> Option<Left> {
        let mut t = self.table.borrow_mut();
        if t.rooms_of.get(session_id) != Some(room) {
            return None;
        }
        t.remove(session_id)
    }

    /// Where a session is: its room and name.
    pub fn place_of(&self, session_id: &str) -> Option<(RoomId, Member)> {
        let t = self.table.borrow();
        let room = t.rooms_of.get(session_id)?;
        let member = t.rooms.get(room)?.iter().find(|m| &*m.session_id == session_id)?;
        Some((room.clone(), member.clone()))
    }

    /// Every (room, member) in the table.
    pub fn all(&self) -> Vec<(RoomId, Member)> {
        let t = self.table.borrow();
        t.rooms.iter().flat_map(|(room, members)| members.iter().map(|m| (room.clone(), m.clone()))).collect()
    }

    pub fn room_count(&self) -> usize {
        self.table.borrow().rooms.len()
    }

    #[cfg(test)]
    pub fn participant_count(&self) -> usize {
        self.table.borrow().rooms_of.len()
    }

    pub fn rooms_now(&self) -> Vec<(String, usize)> {
        let mut list: Vec<(String, usize)> =
            self.table.borrow().rooms.iter().map(|(id, members)| (id.to_string(), members.len())).collect();
        list.sort();
        list
    }

    pub fn members_now(&self, room: &RoomId) -> Option<Vec<String>> {
        self.table.borrow().rooms.get(room).map(|m| m.iter().map(|m| m.username.to_string()).collect())
    }
}

impl Membership for MemoryMembership {
    fn set_limits(&self, max_rooms: usize, max_participants: usize) {
        self.max_rooms.set(max_rooms);
        self.max_participants.set(max_participants);
    }

    fn join<'a>(&'a self, room: &'a RoomId, member: Member) -> LocalBoxFuture<'a, Result<Joined, JoinError>> {
        Box::pin(std::future::ready(self.join_now(room, member)))
    }

    fn leave<'a>(&'a self, room: &'a RoomId, session_id: &'a str) -> LocalBoxFuture<'a, Option<Left>> {
        Box::pin(std::future::ready(self.leave_now(room, session_id)))
    }

    fn count(&self, room: &RoomId) -> usize {
        self.table.borrow().rooms.get(room).map_or(0, Vec::len)
    }

    fn rooms(&self) -> LocalBoxFuture<'_, Vec<(String, usize)>> {
        Box::pin(std::future::ready(self.rooms_now()))
    }

    fn members<'a>(&'a self, room: &'a RoomId) -> LocalBoxFuture<'a, Option<Vec<String>>> {
        Box::pin(std::future::ready(self.members_now(room)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::room::Username;

    fn member(session: &str, name: &str) -> Member {
        Member { session_id: Rc::from(session), username: Username::try_from(name).unwrap() }
    }

    fn room(id: &str) -> RoomId {
        RoomId::try_from(id).unwrap()
    }

    fn left(r: &str, name: &str, count: usize) -> Option<Left> {
        Some(Left { room: room(r), username: Username::try_from(name).unwrap(), count })
    }

    #[test]
    fn limits_uniqueness_and_freeing() {
        let p = MemoryMembership::new(1, 2);
        let r = room("r");
        assert_eq!(p.join_now(&r, member("s1", "alice")), Ok(Joined { count: 1, left: None }));
        assert_eq!(p.join_now(&r, member("s1", "alice")), Ok(Joined { count: 1, left: None }));
        assert_eq!(p.join_now(&r, member("s2", "alice")), Err(JoinError::UsernameTaken));
        assert_eq!(p.join_now(&r, member("s2", "bob")).map(|j| j.count), Ok(2));
        assert_eq!(p.join_now(&r, member("s3", "carol")), Err(JoinError::RoomFull { limit: 2 }));
        assert_eq!(
            p.join_now(&room("other"), member("s3", "carol")),
            Err(JoinError::TooManyRooms { limit: 1 })
        );
        assert_eq!(p.leave_now(&r, "s1"), left("r", "alice", 1));
        assert_eq!(p.leave_now(&r, "s1"), None);
        assert_eq!(p.leave_now(&room("other"), "s2"), None, "s2 is not in that room");
        assert_eq!(p.leave_now(&r, "s2").map(|l| l.count), Some(0));
        assert_eq!((p.room_count(), p.count(&r), p.participant_count()), (0, 0, 0));
        assert_eq!(p.join_now(&room("other"), member("s3", "carol")).map(|j| j.count), Ok(1));
    }

    #[test]
    fn a_rename_in_the_same_room_keeps_one_member() {
        let p = MemoryMembership::new(4, 2);
        let r = room("r");
        p.join_now(&r, member("s1", "alice")).unwrap();
        p.join_now(&r, member("s2", "bob")).unwrap();
        // A full room still lets a member rename.
        assert_eq!(
            p.join_now(&r, member("s1", "alice2")),
            Ok(Joined { count: 2, left: left("r", "alice", 1) })
        );
        assert_eq!(p.members_now(&r), Some(vec!["bob".to_string(), "alice2".to_string()]));
        // Renaming to a taken name changes nothing.
        assert_eq!(p.join_now(&r, member("s1", "bob")), Err(JoinError::UsernameTaken));
        assert_eq!(p.members_now(&r), Some(vec!["bob".to_string(), "alice2".to_string()]));
        // The old name is free again.
        assert_eq!(p.join_now(&r, member("s2", "alice")).map(|j| j.count), Ok(2));
        assert_eq!(p.participant_count(), 2);
    }

    #[test]
    fn a_join_elsewhere_moves_the_session() {
        let p = MemoryMembership::new(1, 4);
        let (a, b) = (room("a"), room("b"));
        p.join_now(&a, member("s1", "alice")).unwrap();
        // The one room allowed is freed by the move, so the move is allowed.
        assert_eq!(p.join_now(&b, member("s1", "al")), Ok(Joined { count: 1, left: left("a", "alice", 0) }));
        assert_eq!((p.members_now(&a), p.members_now(&b)), (None, Some(vec!["al".to_string()])));
        assert_eq!(
            p.place_of("s1").map(|(r, m)| (r, m.username.to_string())),
            Some((b.clone(), "al".into()))
        );
        assert_eq!(p.leave_now(&a, "s1"), None);
        assert_eq!(p.all().len(), 1);
    }
}
