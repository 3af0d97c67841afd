//! The `/status` page's view of the other boards: `GET /api/status?node=ID` on this board
//! fetches `/api/status` from board ID's advertised URL (taken from the registry, never from
//! the request, so it cannot be pointed anywhere else), passing the visitor's credentials
//! on. The browser thus talks to one board only: no cross-origin request, one login.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{HeaderValue, AUTHORIZATION, HOST};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// A whole fetch (connect, request, answer) gives up after this long; the page then shows
/// the board as not answering.
pub const TIMEOUT: Duration = Duration::from_millis(2000);
/// Largest answer taken from another board.
const MAX_BODY_BYTES: usize = 512 * 1024;

/// Fetches `{url}/api/status`; returns the answer's status and body.
pub async fn fetch(url: &str, authorization: Option<HeaderValue>) -> Result<(StatusCode, Bytes), String> {
    tokio::time::timeout(TIMEOUT, fetch_inner(url, authorization))
        .await
        .map_err(|_| format!("no answer within {} ms", TIMEOUT.as_millis()))?
}

async fn fetch_inner(url: &str, authorization: Option<HeaderValue>) -> Result<(StatusCode, Bytes), String> {
    let authority = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("cannot reach {url}: only http:// board URLs are fetched"))?;
    let address = if authority.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let stream =
        TcpStream::connect(&address).await.map_err(|e| format!("cannot connect to {address}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("{address}: {e}"))?;
    tokio::task::spawn_local(async move {
        let _ = connection.await;
    });
    let mut request = Request::get("/api/status")
        .header(HOST, authority)
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("{address}: {e}"))?;
    if let Some(value) = authorization {
        request.headers_mut().insert(AUTHORIZATION, value);
    }
    let response = sender.send_request(request).await.map_err(|e| format!("{address}: {e}"))?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|e| format!("{address}: {e}"))?
        .to_bytes();
    Ok((status, body))
}
