//! Chat room vocabulary: validated room ids and user names (fixed-capacity `heapless`
//! strings, no heap), the requests the `/app` destinations carry and the event every room
//! broadcasts, with the contract's JSON shape.

use serde::{Deserialize, Serialize};

use crate::board::clock::now_ms;
use crate::config::{ChatConfig, Config, ROOM_ID_CEILING, USERNAME_BYTES};
use crate::hub::{Kind, Publication};

/// Where each room's events are broadcast: `/topic/room/{roomId}`.
pub const ROOM_TOPIC_PREFIX: &str = "/topic/room/";

/// A room id: 1..=64 characters of `[A-Za-z0-9_-]`, stored inline.
pub type RoomId = heapless::String<ROOM_ID_CEILING>;
/// A user name: 1..=32 characters (so up to 128 bytes of UTF-8), no control characters,
/// stored inline.
pub type Username = heapless::String<USERNAME_BYTES>;

/// Checks a room id against the contract and the configured length.
pub fn room_id(text: &str, config: &ChatConfig) -> Result<RoomId, String> {
    let chars = text.chars().count();
    if chars == 0 || chars > config.max_room_id_chars {
        return Err(format!("room id must be 1 to {} characters", config.max_room_id_chars));
    }
    if !text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err("room id may only contain letters, digits, '_' and '-'".into());
    }
    RoomId::try_from(text).map_err(|_| "room id is too long".into())
}

/// Checks a user name against the contract and the configured length.
pub fn username(text: &str, config: &ChatConfig) -> Result<Username, String> {
    let chars = text.chars().count();
    if chars == 0 || chars > config.max_username_chars || text.trim().is_empty() {
        return Err(format!("username must be 1 to {} characters", config.max_username_chars));
    }
    if text.chars().any(char::is_control) {
        return Err("username may not contain control characters".into());
    }
    if text.chars().any(is_invisible) {
        return Err("username may not contain invisible or formatting characters".into());
    }
    if text.trim() != text {
        return Err("username may not begin or end with white space".into());
    }
    Username::try_from(text).map_err(|_| "username is too long".into())
}

/// Characters that show as nothing (or change the direction of what follows), so that
/// `alice` plus one of them would look exactly like `alice` in every member list: Unicode's
/// format characters (category Cf: soft hyphen, zero-width space/joiners, bidirectional
/// controls, word joiner, BOM, tags) and the blank Hangul fillers (Unicode TR36 spoofing).
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{17B4}'
            | '\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E007F}'
    )
}

/// Body of `SEND /app/room/{roomId}/join`. The name may be left out where names are logins.
#[derive(Debug, Default, Deserialize)]
pub struct JoinRequest {
    #[serde(default)]
    pub username: Option<String>,
}

/// The name a session chats under. With accounts (`auth.users`) and `chat.free_usernames`
/// off, it is the login the session connected with, and a join asking for another name is
/// refused (`forbidden`), so nobody speaks as someone else; otherwise it is the name asked
/// for. Errors: (application error code, message).
pub fn chat_name(
    requested: Option<&str>,
    login: Option<&str>,
    config: &Config,
) -> Result<Username, (&'static str, String)> {
    let names_are_logins = !config.auth.users.is_empty() && !config.chat.free_usernames;
    let name = match (names_are_logins, requested, login) {
        (true, _, None) => return Err(("forbidden", "this session has no login to chat under".into())),
        (true, Some(asked), Some(login)) if asked != login => {
            return Err((
                "forbidden",
                format!("on this server your chat name is your login `{login}`; join with that name or none"),
            ))
        }
        (true, _, Some(login)) => login,
        (false, Some(asked), _) => asked,
        (false, None, _) => return Err(("invalid_payload", "join needs {\"username\":\"...\"}".into())),
    };
    username(name, &config.chat).map_err(|m| ("invalid_username", m))
}

/// Body of `SEND /app/room/{roomId}/message`.
#[derive(Debug, Deserialize)]
pub struct MessageRequest {
    pub message: String,
}

/// What happened in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum EventType {
    Join,
    Chat,
    Leave,
}

/// The JSON broadcast on `/topic/room/{roomId}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomEvent {
    #[serde(rename = "type")]
    pub kind: EventType,
    pub room_id: String,
    pub sender: String,
    pub message: String,
    /// Epoch milliseconds.
    pub timestamp: u64,
    pub participant_count: usize,
}

impl RoomEvent {
    /// An event stamped now. JOIN and LEAVE carry "alice joined" / "alice left" as message.
    pub fn new(
        kind: EventType,
        room: &RoomId,
        sender: &str,
        message: Option<&str>,
        participant_count: usize,
    ) -> RoomEvent {
        let message = match (message, kind) {
            (Some(text), _) => text.to_string(),
            (None, EventType::Join) => format!("{sender} joined"),
            (None, _) => format!("{sender} left"),
        };
        RoomEvent {
            kind,
            room_id: room.to_string(),
            sender: sender.to_string(),
            message,
            timestamp: now_ms(),
            participant_count,
        }
    }

    /// The event as a publication on `/topic/room/{roomId}`, typed (its kind and room are
    /// what the engine routes by): its JSON is built here, once.
    pub fn into_publication(self, message_id: std::rc::Rc<str>) -> Publication {
        let kind = match self.kind {
            EventType::Join => Kind::Join,
            EventType::Leave => Kind::Leave,
            EventType::Chat => Kind::Message,
        };
        Publication {
            destination: std::rc::Rc::from(format!("{ROOM_TOPIC_PREFIX}{}", self.room_id)),
            message_id,
            headers: vec![("content-type".to_string(), "application/json".to_string())],
            body: serde_json::to_vec(&self).unwrap_or_default().into(),
            kind,
            room: Some(std::rc::Rc::from(self.room_id.as_str())),
            stream: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn usernames_that_would_look_like_another_are_refused() {
        let config = Config::embedded().chat;
        for name in [
            "alice\u{200B}",
            "\u{200D}alice",
            "ali\u{00AD}ce",
            "\u{202E}ecila",
            "alice\u{FEFF}",
            "alice\u{3164}",
            " alice",
            "alice ",
        ] {
            assert!(username(name, &config).is_err(), "{name:?} accepted");
        }
        for name in ["alice", "Zoë", "김철수", "a b", "👍🏽"] {
            assert!(username(name, &config).is_ok(), "{name:?} refused");
        }
    }

    #[test]
    fn room_ids_and_usernames_follow_the_contract() {
        let c = Config::embedded().chat;
        assert!(room_id("lobby_1-A", &c).is_ok());
        assert!(room_id("", &c).is_err());
        assert!(room_id(&"a".repeat(64), &c).is_ok());
        assert!(room_id(&"a".repeat(65), &c).is_err());
        assert!(room_id("a.b", &c).is_err());
        assert!(room_id("방", &c).is_err());
        assert!(username("앨리스 🙂", &c).is_ok());
        assert!(username(&"é".repeat(32), &c).is_ok());
        assert!(username(&"é".repeat(33), &c).is_err());
        assert!(username(&"한".repeat(32), &c).is_ok());
        assert!(username(&"🙂".repeat(32), &c).is_ok());
        assert!(username("", &c).is_err());
        assert!(username("   ", &c).is_err());
        assert!(username("a\u{7}b", &c).is_err());
    }

    #[test]
    fn names_are_logins_where_accounts_are_configured() {
        let mut c = Config::embedded();
        assert_eq!(chat_name(Some("alice"), None, &c).map(|n| n.to_string()), Ok("alice".into()));
        assert_eq!(chat_name(None, None, &c).map_err(|e| e.0), Err("invalid_payload"));
        c.auth.users = vec![("alice".into(), "pw".into())];
        assert_eq!(chat_name(None, Some("alice"), &c).map(|n| n.to_string()), Ok("alice".into()));
        assert_eq!(chat_name(Some("alice"), Some("alice"), &c).map(|n| n.to_string()), Ok("alice".into()));
        assert_eq!(chat_name(Some("admin"), Some("alice"), &c).map_err(|e| e.0), Err("forbidden"));
        c.chat.free_usernames = true;
        assert_eq!(chat_name(Some("admin"), Some("alice"), &c).map(|n| n.to_string()), Ok("admin".into()));
    }

    #[test]
    fn events_are_typed_publications() {
        let room = RoomId::try_from("r").unwrap();
        let p = RoomEvent::new(EventType::Leave, &room, "bob", None, 1).into_publication("n-1".into());
        assert_eq!((p.kind, p.room.as_deref(), &*p.destination), (Kind::Leave, Some("r"), "/topic/room/r"));
        let p = RoomEvent::new(EventType::Chat, &room, "bob", Some("hi"), 1).into_publication("n-2".into());
        assert_eq!((p.kind, p.room.as_deref()), (Kind::Message, Some("r")));
    }

    #[test]
    fn events_serialize_as_the_contract_says() {
        let e = RoomEvent {
            kind: EventType::Join,
            room_id: "r".into(),
            sender: "alice".into(),
            message: "alice joined".into(),
            timestamp: 1764067200000,
            participant_count: 3,
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"type":"JOIN","roomId":"r","sender":"alice","message":"alice joined","timestamp":1764067200000,"participantCount":3}"#
        );
    }
}
