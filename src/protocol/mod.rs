//! STOMP 1.0/1.1/1.2 wire format, independent of any transport: `parse` turns the bytes a
//! connection has buffered into borrowed frames and heart-beats, `FrameWriter` writes frames back.
//! The connection layer owns the buffers; nothing here allocates except for escaped headers.
//!
//! # Layout
//! - `frame`: `Version`, `Command`, the zero-copy `Frame` and `Parsed`.
//! - `error`: `Limits` on incoming frames and `ParseError`.
//! - `parse`: the incremental parser.
//! - `encode`: `FrameWriter`, the escaping encoder.
//! - `receipt`: the `receipt` header of a frame the parser refused, for its ERROR.

mod encode;
mod error;
mod frame;
mod parse;
mod receipt;

pub use encode::{FrameWriter, HEARTBEAT};
pub use error::{Limits, ParseError};
pub use frame::{Command, Frame, Parsed, Version, MAX_HEADERS_CAP};
pub use parse::parse;
pub use receipt::pending_receipt;
