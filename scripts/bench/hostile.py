#!/usr/bin/env python3
"""Hostile-client benchmark (issue 13): runs each scenario against a fresh stomp-edge (the
binary in $STOMP_EDGE_BIN, normally the release build) on a loopback port and prints, per
scenario, the server's peak RSS (VmHWM), its RSS 10 s after the scenario ended beside the idle
baseline, and the p99 round trip of a well-behaved STOMP client that publishes to itself every
20 ms meanwhile; for the overload scenario also the loss and the publishers' rate. Figures
only: it never fails for a missed target. Python standard library only; loopback only; every
step is bounded in count and time.

    STOMP_EDGE_BIN=target/release/stomp-edge python3 scripts/bench/hostile.py [--quick]

HOSTILE_AFTER_S changes the 10 s wait before "RSS after".
"""

import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time

BIN = os.environ.get("STOMP_EDGE_BIN", "target/release/stomp-edge")
QUICK = "--quick" in sys.argv
AFTER_S = float(os.environ.get("HOSTILE_AFTER_S", "10"))
UPGRADE = (b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


class Server:
    def __init__(self, config=""):
        self.path = f"/tmp/stomp-edge-hostile-{os.getpid()}.toml"
        with open(self.path, "w") as f:
            f.write(config)
        # STOMP_EDGE_* variables are config keys to the server: pass none of ours.
        env = {k: v for k, v in os.environ.items() if not k.startswith("STOMP_EDGE_")}
        self.p = subprocess.Popen([BIN, "--listen", "127.0.0.1:0", "--log-level", "info",
                                   "--config", self.path], stderr=subprocess.PIPE, env=env)
        self.port = None
        deadline = time.time() + 10
        while self.port is None and time.time() < deadline:
            m = re.search(rb"listening on [\d.]+:(\d+)", self.p.stderr.readline())
            if m:
                self.port = int(m.group(1))
        threading.Thread(target=lambda: [None for _ in iter(self.p.stderr.readline, b"")],
                         daemon=True).start()
        if self.port is None:
            raise SystemExit("server did not start")

    def status(self, key):
        with open(f"/proc/{self.p.pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024.0
        return 0.0

    def metric(self, name):
        code, body = http(self.port, b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        for line in body.decode(errors="replace").splitlines():
            if line.startswith(name + " "):
                return int(line.split()[-1])
        return 0

    def stop(self):
        self.p.terminate()
        try:
            self.p.wait(15)
        except subprocess.TimeoutExpired:
            self.p.kill()
        os.unlink(self.path)


def http(port, request, timeout=5):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(request)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    finally:
        s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    m = re.match(rb"HTTP/1.1 (\d+)", head)
    return (int(m.group(1)) if m else 0), body


def ws_frame(opcode, payload):
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 0x80 | 126]) + struct.pack(">H", n)
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + struct.pack(">Q", n)
    return head + b"\0\0\0\0" + payload  # mask key 0: the payload as it is


def upgraded(port, path=b"/ws", timeout=10):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(UPGRADE % path)
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)
        if not chunk:
            raise OSError("closed during upgrade")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise OSError(head.split(b"\r\n")[0].decode())
    return s


class WsReader:
    """Reads STOMP frames out of server WebSocket frames (unmasked, unfragmented)."""

    def __init__(self, sock):
        self.s, self.buf, self.closed = sock, b"", False

    def frames(self):
        if self.closed:
            raise OSError("close frame")
        chunk = self.s.recv(262144)
        if not chunk:
            raise OSError("closed")
        buf = self.buf + chunk
        out, pos = [], 0
        while len(buf) - pos >= 2:
            n, off = buf[pos + 1] & 0x7F, pos + 2
            if n == 126:
                if len(buf) - pos < 4:
                    break
                n, off = struct.unpack(">H", buf[pos + 2:pos + 4])[0], pos + 4
            elif n == 127:
                if len(buf) - pos < 10:
                    break
                n, off = struct.unpack(">Q", buf[pos + 2:pos + 10])[0], pos + 10
            if len(buf) < off + n:
                break
            op = buf[pos] & 0x0F
            if op in (1, 2):
                out.append(buf[off:off + n])
            pos = off + n
            if op == 8:
                self.closed = True
                break
        self.buf = buf[pos:]
        return out


def stomp_client(port, subscribe=None):
    s = upgraded(port)
    s.sendall(ws_frame(1, b"CONNECT\naccept-version:1.2\nheart-beat:0,0\n\n\0"))
    if subscribe:
        s.sendall(ws_frame(1, b"SUBSCRIBE\nid:0\ndestination:%s\n\n\0" % subscribe))
    return s


def probe_main(port):
    """The well-behaved client, in its own process (so the attackers' threads do not slow it):
    a SEND to its own topic every 20 ms, round trip measured; prints the p99 on stdin's end."""
    rtts, done = [], threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    try:
        s = stomp_client(port, b"/topic/probe")
        s.settimeout(5)
        reader = WsReader(s)
        time.sleep(0.1)
        while not done.is_set():
            t0 = time.perf_counter()
            s.sendall(ws_frame(1, b"SEND\ndestination:/topic/probe\n\nx\0"))
            while not any(f.startswith(b"MESSAGE") for f in reader.frames()):
                pass
            rtts.append((time.perf_counter() - t0) * 1000)
            time.sleep(0.02)
    except OSError as e:
        print(f"probe failed: {e}")
        return
    v = sorted(rtts)
    print(f"{v[min(len(v) - 1, int(len(v) * 0.99))]:.1f} ms" if v else "n/a")


class Probe:
    def __init__(self, port):
        self.p = subprocess.Popen([sys.executable, __file__, "--probe", str(port)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def p99(self):
        out, _ = self.p.communicate(timeout=30)
        return out.decode().strip() or "n/a"


def subscribers_main(port, count):
    """`count` subscribers of /topic/load in one process, read with a selector until stdin
    ends; prints the MESSAGE frames received."""
    import selectors
    sel = selectors.DefaultSelector()
    readers = []
    for _ in range(count):
        s = stomp_client(port, b"/topic/load")
        s.setblocking(False)
        r = WsReader(s)
        readers.append(r)
        sel.register(s, selectors.EVENT_READ, r)
    print("ready", flush=True)
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    received, quiet_since = 0, None
    while True:
        ready = sel.select(0.2)
        for key, _ in ready:
            try:
                received += sum(1 for f in key.data.frames() if f.startswith(b"MESSAGE"))
            except (OSError, BlockingIOError):
                sel.unregister(key.fileobj)
        if done.is_set():
            # Told to stop: drain what is still on its way, until 1 s without data.
            quiet_since = quiet_since or time.time()
            if ready:
                quiet_since = time.time()
            elif time.time() - quiet_since > 1:
                break
    print(received, flush=True)


def scenario(name, fn, config=""):
    server = Server(config)
    time.sleep(0.3)
    base = server.status("VmRSS")
    probe = Probe(server.port)
    time.sleep(0.3)
    extra = ""
    try:
        extra = fn(server) or ""
    except OSError as e:
        extra = f"(scenario cut short: {e})"
    p99 = probe.p99()
    peak = server.status("VmHWM")
    time.sleep(AFTER_S)
    after = server.status("VmRSS")
    budget = server.metric("stomp_edge_memory_budget_bytes") / 1048576
    print(f"| {name} | {peak:.1f} MiB | {after:.1f} MiB ({base:.1f} idle) | {budget:.0f} MiB | "
          f"{p99} | {extra} |", flush=True)
    server.stop()


def ping_flood(sockets):
    def fn(server):
        socks = [upgraded(server.port) for _ in range(sockets)]
        batch = ws_frame(9, b"") * 10000
        per = 300 if QUICK else 3000  # x 10,000 pings of 6 bytes each
        for _ in range(per):
            for s in socks:
                s.settimeout(5)
                s.sendall(batch)
        drops = server.metric('stomp_edge_messages_dropped_total{reason="slow_consumer"}')
        for s in socks:
            s.close()
        return f"{per * 10000 * sockets:,} pings, {drops} counted as dropped messages"
    return fn


def unfinished_frames(count):
    def fn(server):
        socks, refused = [], 0
        for _ in range(count):
            try:
                s = upgraded(server.port)
            except OSError:
                refused += 1
                continue
            header = bytes([0x82, 0x80 | 127]) + struct.pack(">Q", 131071) + b"\0\0\0\0"
            try:
                s.sendall(header + b"SEND\ndestination:/topic/x\n\n" + b"A" * 131000)
            except OSError:
                pass
            socks.append(s)
        time.sleep(1)
        closed = server.metric('stomp_edge_protocol_errors_total{reason="frame_too_large"}')
        for s in socks:
            s.close()
        return f"{count} sockets, {closed} refused with ERROR, {refused} upgrades refused"
    return fn


def xhr_send_bodies(count):
    def fn(server):
        socks = []
        for i in range(count):
            code, _ = http(server.port, b"POST /ws/000/s%d/xhr HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n"
                           b"Connection: close\r\n\r\n" % i)
            s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            s.sendall(b"POST /ws/000/s%d/xhr_send HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 262144\r\n\r\n" % i)
            try:
                s.sendall(b"[\"" + b"x" * 262139)  # one byte short of what was announced
            except OSError:
                pass
            socks.append(s)
        time.sleep(1)
        refused = server.metric('stomp_edge_sockjs_rejected_total{reason="memory"}')
        for s in socks:
            s.close()
        return f"{count} bodies of 256 KiB one byte short, {refused} refused (503)"
    return fn


def silent_sockets(count):
    def fn(server):
        socks = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(count)]
        t0 = time.perf_counter()
        code, _ = http(server.port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        took = (time.perf_counter() - t0) * 1000
        evicted = server.metric("stomp_edge_http_idle_evicted_total")
        for s in socks:
            s.close()
        return f"{count} silent sockets; /healthz answered {code} in {took:.0f} ms, {evicted} evicted"
    return fn


def crowd(count):
    def fn(server):
        socks = []
        for i in range(count):
            socks.append(stomp_client(server.port, b"/topic/crowd%d" % (i % 50)))
        time.sleep(1)
        for s in socks:
            s.close()
        return f"{count} subscribed clients came and left"
    return fn


def overload(subscribers, publishers, seconds):
    def fn(server):
        procs = [subprocess.Popen([sys.executable, __file__, "--subscribers", str(server.port),
                                   str(subscribers // 4)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
                 for _ in range(4)]
        for p in procs:
            p.stdout.readline()  # ready
        sent = [0] * publishers

        def publish(i):
            s = stomp_client(server.port)
            s.settimeout(None)  # flow control may hold a send back: that is the point
            batch = ws_frame(1, b"".join(b"SEND\ndestination:/topic/load\n\n" + b"p" * 100 + b"\0"
                                         for _ in range(50)))
            end = time.time() + seconds
            while time.time() < end:
                s.sendall(batch)  # blocks while the server does not read us: flow control
                sent[i] += 50
            s.sendall(ws_frame(1, b"DISCONNECT\nreceipt:bye\n\n\0"))
            reader = WsReader(s)
            s.settimeout(30)
            while not any(f.startswith(b"RECEIPT") for f in reader.frames()):
                pass  # every SEND before it was handled
            s.close()
        cpu0 = cpu_secs(server.p.pid)
        pubs = [threading.Thread(target=publish, args=(i,)) for i in range(publishers)]
        t0 = time.time()
        for t in pubs:
            t.start()
        for t in pubs:
            t.join()
        elapsed = time.time() - t0
        expected = sum(sent) * subscribers
        deadline = time.time() + 20
        while time.time() < deadline and server.metric("stomp_edge_frames_sent_total") < expected:
            time.sleep(0.2)
        time.sleep(0.5)
        cpu = cpu_secs(server.p.pid) - cpu0
        delivered = 0
        for p in procs:
            out, _ = p.communicate(b"", timeout=30)
            delivered += int(out.split()[-1])
        cut = server.metric('stomp_edge_closes_total{reason="slow_consumer"}')
        loss = 100.0 * (expected - delivered) / expected if expected else 0.0
        return (f"{sum(sent):,} messages from {publishers} publishers at {sum(sent) / elapsed:,.0f} msg/s; "
                f"{delivered:,} deliveries, {delivered / max(cpu, 1e-9) / 1e6:.2f} M per server "
                f"CPU-second; loss {loss:.2f} %; {cut} slow consumers cut")
    return fn


def cpu_secs(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    print(f"hostile scenarios against {BIN} ({'quick' if QUICK else 'full'}; RSS after = {AFTER_S:g} s later)")
    print("| scenario | peak RSS | RSS after | budget | probe p99 | what happened |")
    print("|---|---|---|---|---|---|")
    n = 1 if QUICK else 8
    scenario(f"{n} socket(s) sending empty pings, never reading", ping_flood(n))
    scenario("200 sockets, unfinished 128 KiB frame before CONNECT" if QUICK else
             "1000 sockets, unfinished 128 KiB frame before CONNECT", unfinished_frames(200 if QUICK else 1000))
    scenario("xhr_send bodies of 256 KiB cut one byte short", xhr_send_bodies(100 if QUICK else 700))
    scenario("760 silent TCP sockets, max_connections = 500", silent_sockets(760),
             "[limits]\nmax_connections = 500\n")
    scenario("crowd of idle subscribers leaves", crowd(1000 if QUICK else 5000))
    scenario("overload: 4 publishers flat out, 100 subscribers", overload(100, 4, 3 if QUICK else 10))


if __name__ == "__main__":
    if "--probe" in sys.argv:
        probe_main(int(sys.argv[sys.argv.index("--probe") + 1]))
    elif "--subscribers" in sys.argv:
        i = sys.argv.index("--subscribers")
        subscribers_main(int(sys.argv[i + 1]), int(sys.argv[i + 2]))
    else:
        main()
