#!/usr/bin/env python3
"""What an idle subscribed connection costs the server, by transport (issue 23): raw WebSocket
(`/ws`) against SockJS's WebSocket (`/ws/{server}/{session}/websocket`, frames wrapped as SockJS
JSON arrays).

Starts the server binary BIN (default target/release/stomp-edge) on a loopback port, and for each
transport opens N connections that CONNECT (no heart-beats) and SUBSCRIBE to one topic, then sit
idle; prints the server's RSS before and with them, and per connection; closes them and waits 10 s
before the next transport. Standard library only (asyncio, raw sockets).

    python3 scripts/bench/sockjs-idle.py [N=10000] [BIN]
"""

import asyncio
import base64
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
BIN = sys.argv[2] if len(sys.argv) > 2 else "target/release/stomp-edge"
PORT = int(os.environ.get("SOCKJS_IDLE_PORT", "18124"))
CONNECT = "CONNECT\naccept-version:1.2\nhost:localhost\nheart-beat:0,0\n\n\0"
SUBSCRIBE = "SUBSCRIBE\nid:sub-0\ndestination:/topic/idle-bench\n\n\0"


def ws_frame(text):
    """A masked client text frame (RFC 6455 section 5.2); the mask is zero, which XORs to itself."""
    data = text.encode()
    head = bytes([0x81])
    n = len(data)
    if n < 126:
        head += bytes([0x80 | n])
    else:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    return head + b"\0\0\0\0" + data


async def read_frame(reader):
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(await reader.readexactly(2), "big")
    elif n == 127:
        n = int.from_bytes(await reader.readexactly(8), "big")
    return (await reader.readexactly(n)).decode(errors="replace")


async def one(i, sockjs):
    reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
    path = f"/ws/000/idle{i:06d}/websocket" if sockjs else "/ws"
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{PORT}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                  + ("" if sockjs else "Sec-WebSocket-Protocol: v12.stomp\r\n") + "\r\n").encode())
    head = await reader.readuntil(b"\r\n\r\n")
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        raise RuntimeError(head.split(b"\r\n", 1)[0].decode())
    wrap = (lambda f: json.dumps([f])) if sockjs else (lambda f: f)
    if sockjs and await read_frame(reader) != "o":
        raise RuntimeError("no SockJS open frame")
    writer.write(ws_frame(wrap(CONNECT)))
    await writer.drain()
    got = await read_frame(reader)
    if "CONNECTED" not in got:
        raise RuntimeError(f"no CONNECTED: {got[:80]}")
    writer.write(ws_frame(wrap(SUBSCRIBE)))
    await writer.drain()
    return reader, writer


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


async def crowd(pid, sockjs):
    before = rss_kib(pid)
    conns, failed = [], 0
    for start in range(0, N, 500):
        batch = await asyncio.gather(*(one(i, sockjs) for i in range(start, min(N, start + 500))),
                                     return_exceptions=True)
        for c in batch:
            if isinstance(c, Exception):
                failed += 1
            else:
                conns.append(c)
    await asyncio.sleep(2)
    with_them = rss_kib(pid)
    for _, w in conns:
        w.close()
    name = "SockJS WebSocket" if sockjs else "raw WebSocket /ws"
    per = (with_them - before) / max(1, len(conns))
    print(f"{name:18} {len(conns):6} idle subscribed ({failed} failed): RSS {before / 1024:.2f} -> "
          f"{with_them / 1024:.2f} MiB, {per:.2f} KiB per connection", flush=True)
    await asyncio.sleep(10)


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as cfg:
        cfg.write("[limits]\nmax_connections = 20000\n")
    env = {k: v for k, v in os.environ.items() if k != "STOMP_EDGE_BIN"}
    server = subprocess.Popen([BIN, "--config", cfg.name, "--listen", f"127.0.0.1:{PORT}"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        print(f"server {BIN}, {N} connections per transport; RSS right after start "
              f"{rss_kib(server.pid) / 1024:.2f} MiB")
        asyncio.run(crowd(server.pid, False))
        asyncio.run(crowd(server.pid, True))
    finally:
        server.terminate()
        server.wait()
        os.unlink(cfg.name)


if __name__ == "__main__":
    main()
