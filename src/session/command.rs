//! A client frame as a typed [`Command`], made once by [`Command::from_frame`] (as mini-redis's
//! `Command::from_frame`): the headers each STOMP 1.2 client command needs are read and checked
//! here, in one place, and the session's handlers match on the result. The checks that need
//! the session's state (connected or not, ids in use, limits) stay with the handlers, which run
//! them in the order the ERRORs have always been answered in.

use std::borrow::Cow;
use std::rc::Rc;

use crate::engine::stream::{Since, EPOCH_HEADER, OFFSET_HEADER};
use crate::hub::{is_transport_header, AckMode};
use crate::protocol::{self, Frame, Version};

use super::destination::Destination;
use super::ProtocolError;

/// A client command with its headers parsed (STOMP 1.2 §Client Frames).
pub enum Command<'a> {
    /// CONNECT or STOMP.
    Connect(Connect<'a>),
    /// SEND.
    Send(Send<'a>),
    /// SUBSCRIBE.
    Subscribe(Subscribe<'a>),
    /// UNSUBSCRIBE.
    Unsubscribe {
        /// The subscription's id (1.0: its destination when the frame has no id).
        id: Cow<'a, str>,
    },
    /// ACK or NACK: checked and accepted alike (topics have no redelivery).
    Ack {
        /// The open transaction it names, if any (it must exist).
        transaction: Option<Cow<'a, str>>,
    },
    /// BEGIN.
    Begin {
        /// The id of the transaction to open.
        transaction: Cow<'a, str>,
    },
    /// COMMIT.
    Commit {
        /// The id of the open transaction whose SENDs go out now.
        transaction: Cow<'a, str>,
    },
    /// ABORT.
    Abort {
        /// The id of the open transaction whose SENDs are dropped.
        transaction: Cow<'a, str>,
    },
    /// DISCONNECT: the session closes once its RECEIPT, if it asked for one, is out.
    Disconnect,
}

/// CONNECT / STOMP.
pub struct Connect<'a> {
    /// The newest version both sides speak (`accept-version`; 1.0 without it).
    pub version: Version,
    /// `login`, checked against `auth.users` (none: anonymous, where the server lets it in).
    pub login: Option<Cow<'a, str>>,
    /// `passcode`, as sent; never logged.
    pub passcode: Option<Cow<'a, str>>,
    /// The client's `heart-beat` as (can send every ms, wants every ms); (0, 0) without it.
    pub heartbeat: (u64, u64),
}

/// SEND.
pub struct Send<'a> {
    /// Where it goes (`Destination::send_route`).
    pub destination: Destination<'a>,
    /// The transaction it is held in until COMMIT, if any.
    pub transaction: Option<Cow<'a, str>>,
    /// The headers the MESSAGE carries on: every header but the transport ones
    /// (`crate::hub::is_transport_header`).
    pub headers: Vec<(String, String)>,
    /// The body, borrowed from the read buffer (copied once, when it is routed or held).
    pub body: &'a [u8],
}

/// SUBSCRIBE.
pub struct Subscribe<'a> {
    /// What it subscribes to (`Destination::subscription`).
    pub destination: Destination<'a>,
    /// The subscription id (1.0: the destination when it has none).
    pub id: Rc<str>,
    /// `ack`: auto, client or client-individual (checked; topics have no redelivery).
    pub ack: AckMode,
    /// Where a streamed subscription starts (`x-stream-offset`, `x-stream-epoch`); its error
    /// is only answered when the destination is streamed.
    pub since: Result<Since, String>,
}

impl<'a> Command<'a> {
    /// Reads a client frame as a command, for a session speaking `version` (the headers ACK and
    /// UNSUBSCRIBE need depend on it). Errors: a missing or malformed header, or a server
    /// command (`unknown_command`); the session answers them with an ERROR and closes.
    pub fn from_frame(frame: &Frame<'a>, version: Version) -> Result<Command<'a>, ProtocolError> {
        use protocol::Command as C;
        Ok(match frame.command {
            C::Connect | C::Stomp => Command::Connect(Connect::from_frame(frame)?),
            C::Send => Command::Send(Send {
                destination: Destination::new(required(frame, "destination")?),
                transaction: frame.header("transaction"),
                headers: frame
                    .headers()
                    .filter(|(name, _)| !is_transport_header(name))
                    .map(|(n, v)| (n.into_owned(), v.into_owned()))
                    .collect(),
                body: frame.body,
            }),
            C::Subscribe => Command::Subscribe(Subscribe::from_frame(frame, version)?),
            C::Unsubscribe => Command::Unsubscribe {
                id: match frame.header("id") {
                    Some(id) => id,
                    None if version == Version::V1_0 => required(frame, "destination")?,
                    None => {
                        return Err(ProtocolError::new("missing_header", "UNSUBSCRIBE needs an `id` header"))
                    }
                },
            },
            C::Ack | C::Nack => {
                required(frame, if version == Version::V1_2 { "id" } else { "message-id" })?;
                Command::Ack { transaction: frame.header("transaction") }
            }
            C::Begin => Command::Begin { transaction: required(frame, "transaction")? },
            C::Commit => Command::Commit { transaction: required(frame, "transaction")? },
            C::Abort => Command::Abort { transaction: required(frame, "transaction")? },
            C::Disconnect => Command::Disconnect,
            other @ (C::Connected | C::Message | C::Receipt | C::Error) => {
                return Err(ProtocolError::new(
                    "unknown_command",
                    format!("{} is a server frame", other.as_str()),
                ))
            }
        })
    }
}

impl<'a> Connect<'a> {
    fn from_frame(frame: &Frame<'a>) -> Result<Connect<'a>, ProtocolError> {
        let version = match frame.header("accept-version") {
            None => Version::V1_0,
            Some(list) => Version::parse_list(&list).ok_or_else(|| {
                ProtocolError::new(
                    "unsupported_version",
                    format!("no supported version in accept-version:{list}; this server speaks 1.0,1.1,1.2"),
                )
            })?,
        };
        let heartbeat = match frame.header("heart-beat") {
            None => (0, 0),
            Some(text) => parse_heartbeat(&text).ok_or_else(|| {
                // Answered in the version just agreed, as the CONNECTED would have been.
                ProtocolError::new(
                    "bad_header",
                    format!("heart-beat must be two numbers like 10000,10000, not {text:?}"),
                )
                .in_version(version)
            })?,
        };
        Ok(Connect { version, login: frame.header("login"), passcode: frame.header("passcode"), heartbeat })
    }
}

impl<'a> Subscribe<'a> {
    fn from_frame(frame: &Frame<'a>, version: Version) -> Result<Subscribe<'a>, ProtocolError> {
        let destination = required(frame, "destination")?;
        let id: Rc<str> = match frame.header("id") {
            Some(id) if !id.is_empty() => Rc::from(&*id),
            _ if version == Version::V1_0 => Rc::from(&*destination),
            _ => return Err(ProtocolError::new("missing_header", "SUBSCRIBE needs an `id` header")),
        };
        let ack = AckMode::parse(frame.header("ack").as_deref()).ok_or_else(|| {
            ProtocolError::new("bad_header", "ack must be auto, client or client-individual")
        })?;
        let since =
            Since::parse(frame.header(OFFSET_HEADER).as_deref(), frame.header(EPOCH_HEADER).as_deref());
        Ok(Subscribe { destination: Destination::new(destination), id, ack, since })
    }
}

/// A header the command cannot do without: missing or empty is a `missing_header` error.
fn required<'a>(frame: &Frame<'a>, name: &str) -> Result<Cow<'a, str>, ProtocolError> {
    match frame.header(name) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(ProtocolError::new(
            "missing_header",
            format!("{} needs a `{name}` header", frame.command.as_str()),
        )),
    }
}

/// A `heart-beat` header: two whole numbers of ms, `cx,cy` (spaces around them allowed).
pub(super) fn parse_heartbeat(text: &str) -> Option<(u64, u64)> {
    let (a, b) = text.split_once(',')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}
