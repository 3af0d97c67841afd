//! Interop with a real WebSocket client: tokio-tungstenite talks to a tiny server in this file
//! that does the upgrade by hand, then decodes with `Decoder` and answers with our frame writers.
//! Covers data both ways, fragments, ping/pong both ways, and closing from either side.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use stomp_edge::transport::ws::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

/// What the server saw before the connection ended.
#[derive(Debug, Default)]
struct Received {
    data: Vec<u8>,
    controls: Vec<Control>,
    error: Option<WsError>,
}

/// Reads the HTTP upgrade request and answers 101; returns bytes read past the request head.
async fn upgrade(stream: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        assert!(stream.read_buf(&mut buf).await.unwrap() > 0, "EOF in handshake");
    };
    let head = std::str::from_utf8(&buf[..head_end]).unwrap();
    let key = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-key").then(|| value.trim())
        })
        .expect("Sec-WebSocket-Key");
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    );
    stream.write_all(response.as_bytes()).await.unwrap();
    buf.split_off(head_end)
}

/// Accepts one client, sends `greeting` frames, then decodes until close, EOF or error;
/// pings are answered, a client close is echoed unless we closed first, errors close the socket.
async fn serve(listener: TcpListener, limit: usize, greeting: Vec<Bytes>) -> Received {
    let (mut stream, _) = listener.accept().await.unwrap();
    let mut buf = upgrade(&mut stream).await;
    let sent_close = greeting.iter().any(|f| f[0] & 0x0F == OP_CLOSE);
    for frame in greeting {
        stream.write_all(&frame).await.unwrap();
    }
    let (mut decoder, mut data_len, mut received) = (Decoder::new(limit), 0, Received::default());
    loop {
        let mut controls = Vec::new();
        let result = decoder.decode(&mut buf, &mut data_len, &mut |c| controls.push(c));
        for control in controls {
            match &control {
                Control::Ping(payload) => stream.write_all(&pong_frame(payload)).await.unwrap(),
                Control::Pong => {}
                Control::Close { code, reason } if !sent_close => {
                    let frame = close_frame(code.unwrap_or(1000), reason);
                    stream.write_all(&frame).await.unwrap();
                }
                Control::Close { .. } => {}
            }
            received.controls.push(control);
        }
        if let Err(err) = result {
            let frame = close_frame(err.close_code(), err.reason());
            stream.write_all(&frame).await.unwrap();
            received.error = Some(err);
        }
        if decoder.is_closed() || received.error.is_some() {
            received.data = buf[..data_len].to_vec();
            return received;
        }
        if stream.read_buf(&mut buf).await.unwrap() == 0 {
            received.data = buf[..data_len].to_vec();
            return received;
        }
    }
}

async fn start(limit: usize, greeting: Vec<Bytes>) -> (String, tokio::task::JoinHandle<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/stomp", listener.local_addr().unwrap());
    (url, tokio::spawn(serve(listener, limit, greeting)))
}

fn frame(opcode: Data, payload: &'static [u8], fin: bool) -> Message {
    Message::Frame(Frame::message(payload, OpCode::Data(opcode), fin))
}

#[tokio::test]
async fn conversation_with_client_initiated_close() {
    let mut ping = [0u8; 10];
    let n = encode_header(OP_PING, 3, &mut ping);
    let greeting = vec![Bytes::from([&ping[..n], b"srv"].concat())];
    let (url, server) = start(1 << 20, greeting).await;
    let (mut client, _) = tokio_tungstenite::connect_async(url).await.unwrap();

    let big: String = "stomp-€dge ".repeat(7000); // > 64 KiB: 64-bit length
    client.send(Message::text("CONNECT\n\n\0")).await.unwrap();
    client.send(Message::binary(vec![7u8; 1000])).await.unwrap();
    client.send(Message::text(big.clone())).await.unwrap();
    // A fragmented text message with '€' split across fragments and a ping in between.
    client.send(frame(Data::Text, b"x\xE2", false)).await.unwrap();
    client.send(Message::Ping(Bytes::from_static(b"cli"))).await.unwrap();
    client.send(frame(Data::Continue, b"\x82\xAC", true)).await.unwrap();

    // The server's ping arrives first; tungstenite answers it by itself.
    assert_eq!(client.next().await.unwrap().unwrap(), Message::Ping(Bytes::from_static(b"srv")));
    assert_eq!(client.next().await.unwrap().unwrap(), Message::Pong(Bytes::from_static(b"cli")));
    client
        .send(Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "bye".into() })))
        .await
        .unwrap();
    let reply = client.next().await.unwrap().unwrap();
    assert_eq!(reply, Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "bye".into() })));
    assert!(client.next().await.is_none(), "closing handshake completed");

    let received = server.await.unwrap();
    let mut expected = b"CONNECT\n\n\0".to_vec();
    expected.extend([7u8; 1000]);
    expected.extend(big.as_bytes());
    expected.extend("x€".as_bytes());
    assert_eq!(received.error, None);
    assert!(received.data == expected, "data stream differs");
    let close = Control::Close { code: Some(1000), reason: heapless::String::try_from("bye").unwrap() };
    let ping = Control::Ping(heapless::Vec::from_slice(b"cli").unwrap());
    assert!(received.controls.contains(&ping));
    assert!(received.controls.contains(&Control::Pong));
    assert_eq!(received.controls.last(), Some(&close));
}

#[tokio::test]
async fn server_frames_and_server_initiated_close() {
    let long = vec![b'z'; 300]; // 16-bit length
    let huge = vec![b'h'; 70_000]; // 64-bit length
    let mut greeting = Vec::new();
    for (opcode, payload) in [(OP_TEXT, &b"MESSAGE\n\nhi\0"[..]), (OP_BINARY, &long), (OP_BINARY, &huge)] {
        let mut header = [0u8; 10];
        let n = encode_header(opcode, payload.len(), &mut header);
        greeting.push(Bytes::from([&header[..n], payload].concat()));
    }
    greeting.push(close_frame(4000, "going away"));
    let (url, server) = start(1 << 20, greeting).await;
    let (mut client, _) = tokio_tungstenite::connect_async(url).await.unwrap();

    assert_eq!(client.next().await.unwrap().unwrap(), Message::text("MESSAGE\n\nhi\0"));
    assert_eq!(client.next().await.unwrap().unwrap(), Message::binary(long));
    assert_eq!(client.next().await.unwrap().unwrap(), Message::binary(huge));
    let close = CloseFrame { code: CloseCode::from(4000), reason: "going away".into() };
    assert_eq!(client.next().await.unwrap().unwrap(), Message::Close(Some(close)));
    // Polling again flushes tungstenite's automatic close reply and ends the stream.
    assert!(client.next().await.is_none());
    let received = server.await.unwrap();
    assert_eq!(received.error, None);
    let echoed =
        Control::Close { code: Some(4000), reason: heapless::String::try_from("going away").unwrap() };
    assert_eq!(received.controls, vec![echoed]);
}

#[tokio::test]
async fn violations_close_with_the_matching_code() {
    let cases: [(Message, WsError, CloseCode); 2] = [
        (Message::binary(vec![0u8; 5000]), WsError::MessageTooBig { limit: 1000 }, CloseCode::Size),
        (frame(Data::Text, b"ok\xFF", true), WsError::InvalidUtf8, CloseCode::Invalid),
    ];
    for (message, error, code) in cases {
        let (url, server) = start(1000, Vec::new()).await;
        let (mut client, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        client.send(message).await.unwrap();
        let reason = error.reason();
        let close = CloseFrame { code, reason: reason.into() };
        assert_eq!(client.next().await.unwrap().unwrap(), Message::Close(Some(close)));
        assert_eq!(server.await.unwrap().error, Some(error));
    }
}
