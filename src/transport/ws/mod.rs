//! WebSocket (RFC 6455): the upgrade handshake, and the data-path framing without
//! per-connection buffers of its own: `Decoder` de-frames client bytes in place inside the
//! connection's read buffer, and the frame writers build the unmasked server frames.
//!
//! # Layout
//! - `handshake`: the `GET /ws` upgrade checks, Origin guard and subprotocol choice.
//! - `codec`: the in-place [`Decoder`] and the [`Control`] frames it reports.
//! - `frame`: opcodes, [`apply_mask`] and the server frame writers.
//! - `error`: [`WsError`], with the close code and metrics label of each violation.
//! - `utf8`: incremental UTF-8 validation of text messages across frames and reads.

mod codec;
mod error;
mod frame;
pub mod handshake;
mod utf8;

pub use codec::{Control, Decoder};
pub use error::WsError;
pub use frame::{
    apply_mask, close_frame, encode_header, pong_frame, DataKind, MAX_CONTROL_PAYLOAD, OP_BINARY, OP_CLOSE,
    OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT,
};
