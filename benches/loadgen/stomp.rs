//! The STOMP side of one client connection: a lenient frame parser that borrows from the
//! receive buffer (several frames per WebSocket message, frames split across messages,
//! heart-beat EOLs) and `Conn`, which connects, subscribes and joins chat rooms.

use super::*;

pub struct Frame<'a> {
    pub command: &'a [u8],
    pub head: &'a [u8],
    pub body: &'a [u8],
}

impl<'a> Frame<'a> {
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        let name = name.as_bytes();
        self.head.split(|&b| b == b'\n').find_map(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            (line.len() > name.len() && line[name.len()] == b':' && line.starts_with(name))
                .then(|| &line[name.len() + 1..])
        })
    }
    pub fn text(&self) -> String {
        let msg = String::from_utf8_lossy(self.header("message").unwrap_or_default());
        format!("{} {msg} {}", String::from_utf8_lossy(self.command), String::from_utf8_lossy(self.body))
    }
    /// `(publisher, seq, send time)` from the x-pub/x-seq/x-ts-ns headers, else from a
    /// `#Bpub,seq,ts#` marker in the body (chat broadcasts carry only the JSON body).
    pub fn marker(&self) -> Option<(usize, u64, u64)> {
        let (mut p, mut s, mut t) = (None, None, None);
        let mut rest = self.head;
        while !rest.is_empty() {
            let end = find_byte(rest, b'\n').unwrap_or(rest.len());
            let line = &rest[..end];
            rest = &rest[(end + 1).min(rest.len())..];
            if let Some(v) = line.strip_prefix(b"x-pub:") {
                p = atoi(v);
            } else if let Some(v) = line.strip_prefix(b"x-seq:") {
                s = atoi(v);
            } else if let Some(v) = line.strip_prefix(b"x-ts-ns:") {
                t = atoi(v);
            }
            if p.is_some() && s.is_some() && t.is_some() {
                break;
            }
        }
        if let (Some(p), Some(s), Some(t)) = (p, s, t) {
            return Some((p as usize, s, t));
        }
        let mut at = find_byte(self.body, b'#')?;
        while self.body.get(at + 1) != Some(&b'B') {
            at += find_byte(&self.body[at + 1..], b'#')? + 1;
        }
        let mut fields = self.body[at + 2..].splitn(4, |&b| b == b',' || b == b'#');
        let (p, s, t) = (fields.next()?, fields.next()?, fields.next()?);
        Some((atoi(p)? as usize, atoi(s)?, atoi(t)?))
    }
}

pub fn atoi(v: &[u8]) -> Option<u64> {
    let v = v.strip_suffix(b"\r").unwrap_or(v);
    if v.is_empty() || v.len() > 19 {
        return None;
    }
    v.iter().try_fold(0u64, |n, &b| b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0')))
}

pub enum Step<'a> {
    Frame(Frame<'a>, usize),
    Eol(usize),
    Incomplete,
}

pub fn parse_frame(buf: &[u8]) -> Res<Step<'_>> {
    let eols = buf.iter().take_while(|&&b| b == b'\n' || b == b'\r').count();
    if eols > 0 {
        return Ok(Step::Eol(eols));
    }
    let Some(nl) = find_byte(buf, b'\n') else { return Ok(Step::Incomplete) };
    let command = buf[..nl].strip_suffix(b"\r").unwrap_or(&buf[..nl]);
    // One pass over the header lines: find the empty line that ends them, and content-length.
    let mut content_length = None;
    let mut at = nl + 1;
    let (head_end, body_start) = loop {
        match buf.get(at) {
            Some(b'\n') => break (at, at + 1),
            Some(b'\r') if buf.get(at + 1) == Some(&b'\n') => break (at, at + 2),
            None => return Ok(Step::Incomplete),
            _ => {}
        }
        let Some(k) = find_byte(&buf[at..], b'\n') else { return Ok(Step::Incomplete) };
        if content_length.is_none() {
            if let Some(v) = buf[at..at + k].strip_prefix(b"content-length:") {
                content_length = Some(atoi(v).ok_or("bad content-length")? as usize);
            }
        }
        at += k + 1;
    };
    let body_end = match content_length {
        Some(n) => {
            if buf.len() < body_start + n + 1 {
                return Ok(Step::Incomplete);
            }
            if buf[body_start + n] != 0 {
                return Err("frame body not followed by NUL".into());
            }
            body_start + n
        }
        None => match find_byte(&buf[body_start..], 0) {
            Some(k) => body_start + k,
            None => return Ok(Step::Incomplete),
        },
    };
    let frame = Frame { command, head: &buf[nl + 1..head_end], body: &buf[body_start..body_end] };
    Ok(Step::Frame(frame, body_end + 1))
}

/// Position of the first `b` in `hay`, eight bytes at a time (the client parses millions of
/// frames a second on a core it shares with the server).
pub fn find_byte(hay: &[u8], b: u8) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let pat = LO * u64::from(b);
    let mut i = 0;
    while i + 8 <= hay.len() {
        let w = u64::from_le_bytes(hay[i..i + 8].try_into().unwrap()) ^ pat;
        let z = w.wrapping_sub(LO) & !w & HI;
        if z != 0 {
            return Some(i + (z.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    hay[i..].iter().position(|&c| c == b).map(|k| i + k)
}

/// Hands every complete frame in `data` to `f` until `f` returns false; returns the bytes used.
pub fn drain_frames(data: &[u8], f: &mut impl FnMut(&Frame<'_>) -> bool) -> Res<usize> {
    let mut at = 0;
    loop {
        match parse_frame(&data[at..])? {
            Step::Frame(frame, n) => {
                at += n;
                if !f(&frame) {
                    return Ok(at);
                }
            }
            Step::Eol(n) => at += n,
            Step::Incomplete => return Ok(at),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// One STOMP connection

pub struct Conn {
    pub ws: Ws,
    /// STOMP bytes received but not yet a whole frame (a frame may span WebSocket messages).
    pub buf: Vec<u8>,
}

impl Conn {
    pub async fn open(o: &Opts) -> Res<(Conn, Duration)> {
        Conn::open_at(o, o.url.as_deref().unwrap_or_default()).await
    }

    /// Connects to `url` with the credentials of `o`.
    pub async fn open_at(o: &Opts, url: &str) -> Res<(Conn, Duration)> {
        let t0 = Instant::now();
        let mut req = url.into_client_request().map_err(|e| format!("bad url: {e}"))?;
        req.headers_mut().insert("Sec-WebSocket-Protocol", "v12.stomp".parse().unwrap());
        // Small client buffers: 10k idle connections must not cost the client gigabytes.
        let cfg = WebSocketConfig::default().read_buffer_size(8192).max_message_size(Some(16 << 20));
        let fut = tokio_tungstenite::connect_async_with_config(req, Some(cfg), true);
        let (ws, _) = tokio::time::timeout(STEP_TIMEOUT, fut)
            .await
            .map_err(|_| "websocket connect timed out".to_string())?
            .map_err(|e| format!("websocket connect: {e}"))?;
        let mut c = Conn { ws, buf: Vec::new() };
        let mut f = String::from("CONNECT\naccept-version:1.2\nheart-beat:0,0\n");
        for (k, v) in [("host", &o.vhost), ("login", &o.login), ("passcode", &o.passcode)] {
            if let Some(v) = v {
                f.push_str(&format!("{k}:{v}\n"));
            }
        }
        f.push_str("\n\0");
        c.send(f).await?;
        c.wait_for("CONNECTED", |fr| fr.command == b"CONNECTED").await?;
        Ok((c, t0.elapsed()))
    }

    pub async fn send(&mut self, frame: String) -> Res<()> {
        self.ws.send(Message::text(frame)).await.map_err(|e| format!("send: {e}"))
    }

    /// Reads until a frame `want`s; an ERROR frame or a message on the errors queue fails.
    /// Frames after the wanted one stay buffered.
    pub async fn wait_for(&mut self, what: &str, mut want: impl FnMut(&Frame<'_>) -> bool) -> Res<()> {
        let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
        loop {
            let mut outcome = None;
            let used = drain_frames(&self.buf, &mut |fr| {
                let dest = fr.header("destination").unwrap_or_default();
                if fr.command == b"ERROR" || (fr.command == b"MESSAGE" && dest == ERRORS_QUEUE.as_bytes()) {
                    outcome = Some(Err(fr.text()));
                } else if want(fr) {
                    outcome = Some(Ok(()));
                }
                outcome.is_none()
            })?;
            self.buf.drain(..used);
            if let Some(o) = outcome {
                return o;
            }
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Err(format!("timed out waiting for {what}")),
                Ok(Some(Ok(Message::Text(t)))) => self.buf.extend_from_slice(t.as_bytes()),
                Ok(Some(Ok(Message::Binary(b)))) => self.buf.extend_from_slice(&b),
                Ok(Some(Ok(Message::Close(_))) | None) => {
                    return Err(format!("closed while waiting for {what}"))
                }
                Ok(Some(Err(e))) => return Err(format!("{e} while waiting for {what}")),
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    pub async fn subscribe(&mut self, dest: &str, id: &str) -> Res<()> {
        self.send(format!("SUBSCRIBE\ndestination:{dest}\nid:{id}\nack:auto\nreceipt:r-{id}\n\n\0")).await?;
        let rid = format!("r-{id}");
        self.wait_for(&format!("RECEIPT for SUBSCRIBE {dest}"), |fr| {
            fr.command == b"RECEIPT" && fr.header("receipt-id") == Some(rid.as_bytes())
        })
        .await
    }

    /// Joins the chat room as `user` and waits for the room's JOIN broadcast naming it.
    /// Leaves the connection subscribed to the room topic (`sub-0`) and the errors queue.
    pub async fn join_chat(&mut self, room: &str, user: &str) -> Res<()> {
        self.subscribe(ERRORS_QUEUE, "sub-err").await?;
        self.subscribe(&format!("/topic/room/{room}"), "sub-0").await?;
        let body = format!("{{\"username\":\"{user}\"}}");
        self.send(format!(
            "SEND\ndestination:/app/room/{room}/join\ncontent-type:application/json\ncontent-length:{}\n\n{body}\0",
            body.len()
        ))
        .await?;
        let quoted = format!("\"{user}\"");
        self.wait_for("the room's JOIN broadcast", |fr| {
            fr.command == b"MESSAGE" && contains(fr.body, b"JOIN") && contains(fr.body, quoted.as_bytes())
        })
        .await
    }
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
