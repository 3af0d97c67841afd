"""Interop test: stomp.py's WebSocket connection (stomp.WSStompConnection) against the REAL stomp-edge.

Each test starts the binary ($STOMP_EDGE_BIN, default target/debug/stomp-edge) on 127.0.0.1:0,
reads the port from its `listening on ADDR:PORT` log line, and exchanges messages through it.
Run with the venv scripts/test.sh builds:
    STOMP_EDGE_BIN=target/debug/stomp-edge target/test-venv/bin/python -m unittest discover -s tests/py -v
Every wait is bounded; a watchdog ends the process if a test hangs anyway.
"""

import faulthandler
import os
import queue
import re
import subprocess
import tempfile
import threading
import time
import unittest
import uuid

import stomp

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LISTEN_RE = re.compile(r"listening on (\d+\.\d+\.\d+\.\d+):(\d+)")
ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
START_TIMEOUT_S = 10
WAIT_S = 5
TEST_WATCHDOG_S = 60


def server_binary():
    return os.path.join(REPO_ROOT, os.environ.get("STOMP_EDGE_BIN", "target/debug/stomp-edge"))


class Server:
    """The real server binary on a free loopback port, its output captured."""

    def __init__(self, args=(), config=None):
        self.tmp = tempfile.TemporaryDirectory(prefix="stomp-edge-py-")
        argv = [server_binary(), "--listen", "127.0.0.1:0"]
        if config is not None:
            path = os.path.join(self.tmp.name, "stomp-edge.toml")
            with open(path, "w", encoding="utf-8") as f:
                f.write(config)
            argv += ["--config", path]
        argv += list(args)
        # STOMP_EDGE_* configure the server; keep the harness's own variables away from it.
        env = {k: v for k, v in os.environ.items() if not k.startswith("STOMP_EDGE_")}
        self.output = []
        self.addr = None
        self._found = threading.Event()
        try:
            self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as e:
            self.tmp.cleanup()
            raise AssertionError(f"cannot start {argv[0]}: {e}") from e
        self._readers = [threading.Thread(target=self._read, args=(s,), daemon=True)
                         for s in (self.proc.stderr, self.proc.stdout)]
        for t in self._readers:
            t.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._found.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                # give the readers a moment to collect the last output
                for t in self._readers:
                    t.join(0.5)
                self.stop()
                raise AssertionError(
                    f"stomp-edge did not log 'listening on' within {START_TIMEOUT_S}s "
                    f"(exit code {self.proc.returncode}); output:\n{self.text()}")

    def _read(self, stream):
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace")
            self.output.append(line)
            if self.addr is None:
                m = LISTEN_RE.search(ANSI_RE.sub("", line))
                if m:
                    self.addr = (m.group(1), int(m.group(2)))
                    self._found.set()

    def text(self):
        return "".join(self.output)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(3)
        for s in (self.proc.stdout, self.proc.stderr):
            s.close()
        self.tmp.cleanup()


class Recorder(stomp.ConnectionListener):
    """Collects what stomp.py reports, so the test can wait on it with a timeout."""

    def __init__(self):
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.connected_frame = None
        self.messages = queue.Queue()
        self.receipts = queue.Queue()
        self.errors = []

    def on_connected(self, frame):
        self.connected_frame = frame
        self.connected.set()

    def on_message(self, frame):
        self.messages.put(frame)

    def on_receipt(self, frame):
        self.receipts.put(frame.headers.get("receipt-id"))

    def on_error(self, frame):
        self.errors.append(frame)

    def on_disconnected(self):
        self.disconnected.set()

    def wait_receipt(self, receipt_id):
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            try:
                if self.receipts.get(timeout=max(0.01, deadline - time.monotonic())) == receipt_id:
                    return
            except queue.Empty:
                break
        raise AssertionError(f"no RECEIPT {receipt_id} within {WAIT_S}s")


class StompPyInteropTest(unittest.TestCase):
    def setUp(self):
        faulthandler.dump_traceback_later(TEST_WATCHDOG_S, exit=True)
        self.server = Server()
        self.addCleanup(self.server.stop)

    def tearDown(self):
        faulthandler.cancel_dump_traceback_later()

    def connect(self, **conn_kwargs):
        conn = stomp.WSStompConnection([self.server.addr], ws_path="/ws", timeout=WAIT_S,
                                       reconnect_attempts_max=1, heartbeats=(0, 0), **conn_kwargs)
        rec = Recorder()
        conn.set_listener("recorder", rec)
        self.addCleanup(self._safe_disconnect, conn)
        return conn, rec

    @staticmethod
    def _safe_disconnect(conn):
        try:
            if conn.is_connected():
                conn.disconnect()
        except Exception:  # already gone: nothing to clean up
            pass

    def exchange(self, conn, rec, with_connect_command):
        conn.connect(wait=False, with_connect_command=with_connect_command)
        self.assertTrue(rec.connected.wait(WAIT_S),
                        f"no CONNECTED within {WAIT_S}s; errors={[e.headers for e in rec.errors]}; "
                        f"server output:\n{self.server.text()}")
        headers = rec.connected_frame.headers
        self.assertEqual(headers.get("version"), "1.2")
        self.assertTrue(headers.get("server", "").startswith("stomp-edge"), headers)

        sub_receipt = f"sub-{uuid.uuid4()}"
        conn.subscribe(destination="/topic/py", id="py-1", ack="auto", headers={"receipt": sub_receipt})
        rec.wait_receipt(sub_receipt)

        body = "hello from stomp.py 안녕하세요 🐍"
        conn.send(destination="/topic/py", body=body, content_type="text/plain",
                  headers={"x-py-trace": "abc-123"})
        try:
            msg = rec.messages.get(timeout=WAIT_S)
        except queue.Empty:
            self.fail(f"no MESSAGE on /topic/py within {WAIT_S}s; errors={[e.headers for e in rec.errors]}")
        self.assertEqual(msg.body, body)
        self.assertEqual(msg.headers.get("x-py-trace"), "abc-123")
        self.assertEqual(msg.headers.get("destination"), "/topic/py")
        self.assertEqual(msg.headers.get("subscription"), "py-1")
        self.assertTrue(msg.headers.get("message-id"))
        self.assertEqual(msg.headers.get("content-type"), "text/plain")
        self.assertEqual(int(msg.headers.get("content-length", "-1")), len(body.encode("utf-8")))

        # With no receipt argument stomp.py still sends DISCONNECT with a generated receipt and closes
        # the socket when that RECEIPT arrives, but does not block on it (receipt=... would, unbounded).
        conn.disconnect()
        self.assertTrue(rec.disconnected.wait(WAIT_S),
                        f"DISCONNECT receipt and close within {WAIT_S}s; server output:\n{self.server.text()}")
        try:
            rec.receipts.get(timeout=WAIT_S)
        except queue.Empty:
            self.fail("no RECEIPT for DISCONNECT")
        self.assertEqual(rec.errors, [], "no ERROR frames")
        self.assertIsNone(self.server.proc.poll(), "server still running")

    def test_text_frames_with_stomp_command(self):
        conn, rec = self.connect()
        self.exchange(conn, rec, with_connect_command=False)

    def test_binary_frames_with_connect_command(self):
        conn, rec = self.connect(binary_mode=True)
        self.exchange(conn, rec, with_connect_command=True)


if __name__ == "__main__":
    unittest.main()
