"""The clients of one board in the network-fault bed: run inside that board's network namespace.

`netbed.py` starts one of these per board with `ip netns exec se-<pid>-<board> python clients.py …`.
It opens N real stomp.py 9 WebSocket connections (stomp.WSStompConnection, STOMP 1.2) to the
board at 127.0.0.1:8080, each SUBSCRIBEs to `/topic/room/<room>` (client i to the i-th of
`--rooms`, round robin) (and `/user/queue/errors`) and
JOINs the room through the chat application (`/app/room/<room>/join`), waiting for every RECEIPT.
Once all are ready (it writes `<out>.ready`) it waits for `--go-file`, which holds the
wall-clock time at which every client SENDs numbered chat messages
(`{"message":"<name>:<seq>"}` to `/app/room/<room>/message`, each with a `receipt`) at
`--rate` per second for `--duration` seconds, then all wait until nothing arrived for 3 s (at
most `--drain-max` s). With `--late-at T`, one more client per room (`<board>lateN`) connects
and SUBSCRIBEs T s after the start and only listens; with `--resume-mark M` it resumes
(`x-stream-offset:offset=N`, `x-stream-epoch`) after the newest message the room's first client
had at M s. Meanwhile a poller reads `/healthz` every 250 ms; `/metrics` is read at
the start and the end, and `/api/rooms/<room>` at the end.

Everything seen is written as JSON lines to `--out` (one object per event, key `k`):
  client {c, room, t_sub, epoch, recovered, from}  a client subscribed (RECEIPT's stream
                                    headers; from: [sender, seq] it resumed after, or null)
  send {c, seq, t}                  a SEND written (t: wall clock, s)
  rcpt {c, seq, t}                  its RECEIPT arrived
  msg  {r, type, s, seq, off, ep, t} a MESSAGE on the room (r: receiver, s: sender name)
  notice {r, what, headers, body, t} anything that tells a client of trouble: ERROR, a frame with
                                    x-stream-recovered:false, a MESSAGE on /user/queue/errors
  disc {r, t}                       the connection closed under the client
  health {t, redis, mode}           a /healthz reading (redis "down" also when unreachable)
  metrics {phase, text}             /metrics at "start" and "end"
  api_members {room, members}       /api/rooms/<room> participants at the end
  setup_error {c, what}             a client could not connect/subscribe/join
Bounded: the number of clients, the rate and the time are all given; nothing here retries.
"""

import argparse
import json
import os
import threading
import time
import urllib.request

import stomp

WAIT_S = 10
QUIET_S = 3.0


class Client(stomp.ConnectionListener):
    """One STOMP connection; the listener methods run on stomp.py's receiver thread."""

    def __init__(self, name, port, room, log):
        self.name, self.room, self.log = name, room, log
        self.receipts = {}
        self.cond = threading.Condition()
        self.last_rx = time.time()
        self.closing = False
        self.last = None  # (offset, epoch, sender, seq) of the newest CHAT with an offset
        self.conn = stomp.WSStompConnection([("127.0.0.1", port)], ws_path="/ws", timeout=WAIT_S,
                                            reconnect_attempts_max=1, heartbeats=(0, 0))
        self.conn.set_listener("bed", self)

    # --- stomp.py callbacks -------------------------------------------------------------------
    def on_message(self, frame):
        now = time.time()
        self.last_rx = now
        h = frame.headers
        if h.get("x-stream-recovered") == "false" or not h.get("destination", "").startswith("/topic/room/"):
            self.log.append({"k": "notice", "r": self.name, "what": "message", "headers": dict(h),
                             "body": frame.body[:500], "t": now})
            if not h.get("destination", "").startswith("/topic/room/"):
                return
        try:
            ev = json.loads(frame.body)
        except ValueError:
            self.log.append({"k": "notice", "r": self.name, "what": "unparsable", "body": frame.body[:200], "t": now})
            return
        seq = None
        text = ev.get("message") or ""
        if ev.get("type") == "CHAT" and ":" in text:
            try:
                seq = int(text.rsplit(":", 1)[1])
            except ValueError:
                seq = None
        if seq is not None and h.get("x-stream-offset"):
            self.last = (int(h["x-stream-offset"]), h.get("x-stream-epoch"), ev.get("sender"), seq)
        self.log.append({"k": "msg", "r": self.name, "type": ev.get("type"), "s": ev.get("sender"), "seq": seq,
                         "off": h.get("x-stream-offset"), "ep": h.get("x-stream-epoch"), "t": now})

    def on_receipt(self, frame):
        now = time.time()
        rid = frame.headers.get("receipt-id", "")
        if frame.headers.get("x-stream-recovered") == "false":
            self.log.append({"k": "notice", "r": self.name, "what": "receipt", "headers": dict(frame.headers),
                             "body": "", "t": now})
        if rid.startswith("m-"):
            self.log.append({"k": "rcpt", "c": self.name, "seq": int(rid.rsplit("-", 1)[1]), "t": now})
        with self.cond:
            self.receipts[rid] = frame.headers
            self.cond.notify_all()

    def on_error(self, frame):
        self.log.append({"k": "notice", "r": self.name, "what": "error", "headers": dict(frame.headers),
                         "body": frame.body[:500], "t": time.time()})

    def on_disconnected(self):
        if not self.closing:
            self.log.append({"k": "disc", "r": self.name, "t": time.time()})

    # --- actions ------------------------------------------------------------------------------
    def wait_receipt(self, rid):
        deadline = time.time() + WAIT_S
        with self.cond:
            while rid not in self.receipts:
                left = deadline - time.time()
                if left <= 0:
                    raise TimeoutError(f"{self.name}: no RECEIPT {rid} within {WAIT_S}s")
                self.cond.wait(left)
            return self.receipts[rid]

    def setup(self, from_first, join=True, resume=None):
        """CONNECT, SUBSCRIBE (waiting for its RECEIPT) and, unless a listener only, JOIN.
        `resume`: a `last` tuple to resume after (x-stream-offset:offset=N+1 and its epoch)."""
        self.conn.connect(wait=True)
        sub = {"receipt": f"sub-{self.name}"}
        if from_first:
            sub["x-stream-offset"] = "first"
        if resume:
            sub["x-stream-offset"] = f"offset={resume[0] + 1}"
            sub["x-stream-epoch"] = resume[1] or ""
        self.conn.subscribe(destination="/user/queue/errors", id="errors", ack="auto")
        self.conn.subscribe(destination=f"/topic/room/{self.room}", id="room", ack="auto", headers=sub)
        receipt = self.wait_receipt(f"sub-{self.name}")
        self.log.append({"k": "client", "c": self.name, "room": self.room, "t_sub": time.time(),
                         "epoch": receipt.get("x-stream-epoch"), "recovered": receipt.get("x-stream-recovered"),
                         "from": list(resume[2:]) if resume else None})
        if join:
            self.conn.send(destination=f"/app/room/{self.room}/join", body=json.dumps({"username": self.name}),
                           content_type="application/json", headers={"receipt": f"join-{self.name}"})
            self.wait_receipt(f"join-{self.name}")

    def send_loop(self, start_at, duration, rate):
        seq = 0
        end = start_at + duration
        while True:
            due = start_at + seq / rate
            if due >= end:
                return
            pause = due - time.time()
            if pause > 0:
                time.sleep(pause)
            seq += 1
            now = time.time()
            self.log.append({"k": "send", "c": self.name, "seq": seq, "t": now})
            try:
                self.conn.send(destination=f"/app/room/{self.room}/message",
                               body=json.dumps({"message": f"{self.name}:{seq}"}),
                               content_type="application/json", headers={"receipt": f"m-{self.name}-{seq}"})
            except Exception as e:  # the connection is gone: logged, the run goes on without it
                self.log.append({"k": "notice", "r": self.name, "what": "send_failed", "body": str(e), "t": now})
                return


def http_get(port, path, timeout=1.0):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as resp:
        return resp.read().decode("utf-8", "replace")


def poll_health(port, log, stop):
    while not stop.is_set():
        t = time.time()
        try:
            h = json.loads(http_get(port, "/healthz"))
            log.append({"k": "health", "t": t, "redis": h.get("redis"), "mode": h.get("mode")})
        except Exception as e:  # unreachable or slow: counted as down, the reason kept
            log.append({"k": "health", "t": t, "redis": "unreachable", "mode": str(e)[:80]})
        stop.wait(0.25)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--board", required=True)
    ap.add_argument("--clients", type=int, default=5)
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--rooms", default="bed", help="comma list: client i uses room i mod len")
    ap.add_argument("--late-at", type=float, default=0,
                    help="seconds after the start: one more listener per room subscribes then (0: none)")
    ap.add_argument("--resume-mark", type=float, default=0,
                    help="with --late-at: the late listeners resume from what the room's first client had "
                         "seen this many seconds after the start (offset and epoch)")
    ap.add_argument("--rate", type=float, required=True, help="messages per second per client")
    ap.add_argument("--go-file", required=True, help="holds the wall-clock time to start sending, once all are ready")
    ap.add_argument("--duration", type=float, required=True)
    ap.add_argument("--drain-max", type=float, default=12.0)
    ap.add_argument("--from-first", action="store_true", help="SUBSCRIBE with x-stream-offset:first")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    log = []  # list.append is atomic under the GIL: every thread logs here
    deadline = time.time() + 20
    while time.time() < deadline:  # the board is up and has its Redis link
        try:
            if json.loads(http_get(a.port, "/healthz")).get("redis") == "up":
                break
        except Exception:  # not listening yet
            pass
        time.sleep(0.1)
    try:
        log.append({"k": "metrics", "phase": "start", "text": http_get(a.port, "/metrics", 5)})
    except Exception as e:
        log.append({"k": "setup_error", "c": a.board, "what": f"/metrics: {e}"})
    rooms = a.rooms.split(",")
    clients = [Client(f"{a.board}{i + 1}", a.port, rooms[i % len(rooms)], log) for i in range(a.clients)]
    ready = []
    for c in clients:
        try:
            c.setup(a.from_first)
            ready.append(c)
        except Exception as e:
            log.append({"k": "setup_error", "c": c.name, "what": repr(e)})
    open(a.out + ".ready", "w").close()
    deadline = time.time() + 60
    while not os.path.exists(a.go_file) and time.time() < deadline:
        time.sleep(0.05)
    with open(a.go_file, encoding="utf-8") as f:
        start_at = float(f.read())
    stop = threading.Event()
    poller = threading.Thread(target=poll_health, args=(a.port, log, stop), daemon=True)
    poller.start()
    senders = [threading.Thread(target=c.send_loop, args=(start_at, a.duration, a.rate), daemon=True)
               for c in ready]
    for s in senders:
        s.start()
    if a.late_at > 0:
        marks = {}
        if a.resume_mark > 0:
            time.sleep(max(0.0, start_at + a.resume_mark - time.time()))
            for c in reversed(ready):
                marks[c.room] = c.last
        time.sleep(max(0.0, start_at + a.late_at - time.time()))
        for j, room in enumerate(rooms):
            late = Client(f"{a.board}late{j + 1}", a.port, room, log)
            clients.append(late)
            try:
                late.setup(False, join=False, resume=marks.get(room))
            except Exception as e:
                log.append({"k": "setup_error", "c": late.name, "what": repr(e)})
    for s in senders:
        s.join(start_at + a.duration + 30 - time.time())
    end = time.time()
    while time.time() < end + a.drain_max:
        if time.time() - max([c.last_rx for c in clients] + [end]) >= QUIET_S:
            break
        time.sleep(0.2)
    stop.set()
    poller.join(2)
    try:
        log.append({"k": "metrics", "phase": "end", "text": http_get(a.port, "/metrics", 5)})
        for room in rooms:
            info = json.loads(http_get(a.port, f"/api/rooms/{room}", 5))
            log.append({"k": "api_members", "room": room, "members": info.get("participants")})
    except Exception as e:
        log.append({"k": "setup_error", "c": a.board, "what": f"end scrape: {e}"})
    for c in clients:
        c.closing = True
        try:
            c.conn.disconnect()
        except Exception:  # already closed: nothing left to do
            pass
    with open(a.out, "w", encoding="utf-8") as f:
        for rec in list(log):
            f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
