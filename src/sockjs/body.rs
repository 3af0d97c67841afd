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

pub struct StreamBody {
    session: Rc<HttpSession>,
    /// Which receiving request of the session this is; a stale one just ends.
    id: u64,
}

impl StreamBody {
    pub(super) fn new(session: Rc<HttpSession>, id: u64) -> StreamBody {
        StreamBody { session, id }
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
