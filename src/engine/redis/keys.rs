//! The Redis channel and key names of the contract, with the configured prefix (`stomp:` by
//! default), and the mapping from a STOMP destination to the channel that relays it.

use crate::hub::{Kind, Publication};

/// Names under one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

/// Which relay channels a destination uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/topic/room/{id}`: chat on `broadcast:room:{id}`, joins and leaves on their own channels.
    Room(String),
    Global,
    System,
    /// Any other `/topic/**`: `broadcast:topic:{rest}` (an extension of the seed's channels).
    Topic(String),
}

impl Route {
    pub fn of(destination: &str) -> Option<Route> {
        let rest = destination.strip_prefix("/topic/")?;
        Some(match rest {
            "global" => Route::Global,
            "system" => Route::System,
            _ => match rest.strip_prefix("room/") {
                Some(id) if !id.is_empty() && !id.contains('/') => Route::Room(id.to_string()),
                _ => Route::Topic(rest.to_string()),
            },
        })
    }
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys { prefix: prefix.to_string() }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Every channel a node listens on while it has subscribers of `destination`.
    pub fn channels(&self, destination: &str) -> Vec<String> {
        let p = &self.prefix;
        match Route::of(destination) {
            Some(Route::Room(id)) => vec![
                format!("{p}broadcast:room:{id}"),
                format!("{p}event:join:{id}"),
                format!("{p}event:leave:{id}"),
            ],
            Some(Route::Global) => vec![format!("{p}broadcast:global")],
            Some(Route::System) => vec![format!("{p}system:notifications")],
            Some(Route::Topic(rest)) => vec![format!("{p}broadcast:topic:{rest}")],
            None => Vec::new(),
        }
    }

    /// The channel one publication goes out on: a room's publications by their kind (joins
    /// and leaves on their event channels, the rest on the room's broadcast channel), others
    /// by destination. Only what the publication's typed fields say counts, never its body.
    pub fn publish_channel(&self, publication: &Publication) -> Option<String> {
        let p = &self.prefix;
        let route = Route::of(&publication.destination)?;
        if let (Some(room), Route::Room(_)) = (&publication.room, &route) {
            return Some(match publication.kind {
                Kind::Join => format!("{p}event:join:{room}"),
                Kind::Leave => format!("{p}event:leave:{room}"),
                Kind::Message | Kind::System => format!("{p}broadcast:room:{room}"),
            });
        }
        Some(match route {
            Route::Room(id) => format!("{p}broadcast:room:{id}"),
            Route::Global => format!("{p}broadcast:global"),
            Route::System => format!("{p}system:notifications"),
            Route::Topic(rest) => format!("{p}broadcast:topic:{rest}"),
        })
    }

    pub fn session_connect_channel(&self) -> String {
        format!("{}session:connect", self.prefix)
    }
    pub fn session_disconnect_channel(&self) -> String {
        format!("{}session:disconnect", self.prefix)
    }
    pub fn session(&self, sid: &str) -> String {
        format!("{}sessions:{sid}", self.prefix)
    }
    pub fn sessions_active(&self) -> String {
        format!("{}sessions:active", self.prefix)
    }
    pub fn participants(&self, room: &str) -> String {
        format!("{}rooms:{room}:participants", self.prefix)
    }
    pub fn room_info(&self, room: &str) -> String {
        format!("{}rooms:{room}:info", self.prefix)
    }
    /// The set of rooms that have participants (lets `/api/rooms` avoid a key scan).
    pub fn rooms_index(&self) -> String {
        format!("{}rooms:index", self.prefix)
    }
    pub fn current_room(&self, sid: &str) -> String {
        format!("{}users:{sid}:current_room", self.prefix)
    }
    pub fn server_sessions(&self, server: &str) -> String {
        format!("{}servers:{server}:sessions", self.prefix)
    }
    /// A live node's registry entry: a key with a TTL the node keeps refreshing.
    pub fn server_alive(&self, server: &str) -> String {
        format!("{}servers:{server}:alive", self.prefix)
    }
    /// Every node that has registered and not been cleaned up.
    pub fn servers_known(&self) -> String {
        format!("{}servers:known", self.prefix)
    }
    /// Sessions of `server` that a survivor removed (their LEAVE announced) while it seemed
    /// dead: if it comes back, it announces them again (a set, with a TTL).
    pub fn server_evicted(&self, server: &str) -> String {
        format!("{}servers:{server}:evicted", self.prefix)
    }
    /// The lock that makes one survivor, and only one, clean up a dead node.
    pub fn server_cleanup(&self, server: &str) -> String {
        format!("{}servers:{server}:cleanup", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    fn publication(destination: &str, kind: Kind, room: Option<&str>, body: &'static str) -> Publication {
        let mut p = Publication::message(
            Rc::from(destination),
            Rc::from("n1-1"),
            Vec::new(),
            bytes::Bytes::from_static(body.as_bytes()),
        );
        p.kind = kind;
        p.room = room.map(Rc::from);
        p
    }

    #[test]
    fn contract_channels() {
        let k = Keys::new("stomp:");
        let channel = |d, kind, room| k.publish_channel(&publication(d, kind, room, "")).unwrap_or_default();
        assert_eq!(
            k.channels("/topic/room/lobby"),
            vec!["stomp:broadcast:room:lobby", "stomp:event:join:lobby", "stomp:event:leave:lobby"]
        );
        assert_eq!(channel("/topic/room/lobby", Kind::Join, Some("lobby")), "stomp:event:join:lobby");
        assert_eq!(channel("/topic/room/lobby", Kind::Leave, Some("lobby")), "stomp:event:leave:lobby");
        assert_eq!(channel("/topic/room/lobby", Kind::Message, Some("lobby")), "stomp:broadcast:room:lobby");
        assert_eq!(channel("/topic/global", Kind::Message, None), "stomp:broadcast:global");
        assert_eq!(channel("/topic/system", Kind::System, None), "stomp:system:notifications");
        assert_eq!(channel("/topic/a/b", Kind::Message, None), "stomp:broadcast:topic:a/b");
        assert_eq!(channel("/queue/x", Kind::Message, None), "");
    }

    #[test]
    fn the_channel_comes_from_the_kind_never_the_body() {
        let k = Keys::new("stomp:");
        // A body that looks like a join event changes nothing: only the typed fields count.
        let forged = publication("/topic/room/lobby", Kind::Message, None, r#"{"type":"JOIN"}"#);
        assert_eq!(k.publish_channel(&forged).unwrap(), "stomp:broadcast:room:lobby");
        let forged = publication("/topic/room/lobby", Kind::Message, Some("lobby"), r#"{"type":"LEAVE"}"#);
        assert_eq!(k.publish_channel(&forged).unwrap(), "stomp:broadcast:room:lobby");
        assert_eq!(k.participants("r"), "stomp:rooms:r:participants");
        assert_eq!(k.current_room("s"), "stomp:users:s:current_room");
        assert_eq!(k.server_sessions("n1"), "stomp:servers:n1:sessions");
    }
}
