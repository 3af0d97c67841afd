//! The body of a receiving SockJS request (xhr, xhr_streaming, eventsource): hyper polls it for
//! chunks, which the session's task puts in place one batch at a time, so a slow client holds
//! back its own queue (and becomes a slow consumer) instead of growing a buffer here. Dropping
//! the body (the response ended, or the client went away) frees the session for the next one.

use std::convert::Infallible;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame};

use super::session::HttpSession;
use super::ReceiverKind;

pub struct StreamBody {
    session: Rc<HttpSession>,
    /// Which receiving request of the session this is; a stale one just ends.
    id: u64,
}

impl StreamBody {
    /// Opens a receiving request on `session` whose response starts with the transport's
    /// prelude and `first` (the open frame of a new session). `None` while another one is open.
    pub(super) fn attach(
        session: &Rc<HttpSession>,
        kind: ReceiverKind,
        first: Option<&[u8]>,
    ) -> Option<StreamBody> {
        let id = session.attach(kind, first)?;
        Some(StreamBody { session: session.clone(), id })
    }
}

impl Body for StreamBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.session.poll_chunk(self.id, cx).map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}

impl Drop for StreamBody {
    fn drop(&mut self) {
        self.session.detach(self.id);
    }
}
