"""Interop test: stomp.py's WebSocket connection over wss:// against the REAL stomp-edge with [tls] on.

Each test makes a CA and a board certificate for localhost with openssl, starts the binary with that
certificate, and has stomp.WSStompConnection check it against the CA (set_ssl with ca_certs), so a
wrong certificate would fail the handshake. Run like test_stomp_py.py (run_tests.py finds both).
"""

import faulthandler
import os
import queue
import ssl
import subprocess
import tempfile
import unittest
import uuid

import stomp

from test_stomp_py import TEST_WATCHDOG_S, WAIT_S, Recorder, Server


def make_certificates(directory):
    """A test CA (ca.pem) and a board chain (board.pem, board.key) for localhost and 127.0.0.1."""
    def ssl_cmd(*args):
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    ssl_cmd("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=stomp-edge py test CA")
    ssl_cmd("req", *ec, "-keyout", "board.key", "-out", "board.csr", "-subj", "/CN=localhost")
    with open(os.path.join(directory, "san.ext"), "w", encoding="utf-8") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    ssl_cmd("x509", "-req", "-in", "board.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", "san.ext", "-out", "board.crt")
    with open(os.path.join(directory, "board.pem"), "w", encoding="utf-8") as out:
        for name in ("board.crt", "ca.pem"):
            with open(os.path.join(directory, name), encoding="utf-8") as f:
                out.write(f.read())
    return {name: os.path.join(directory, name) for name in ("ca.pem", "board.pem", "board.key")}


class StompPyTlsTest(unittest.TestCase):
    def setUp(self):
        faulthandler.dump_traceback_later(TEST_WATCHDOG_S, exit=True)
        self.dir = tempfile.TemporaryDirectory(prefix="stomp-edge-py-tls-")
        self.addCleanup(self.dir.cleanup)
        self.files = make_certificates(self.dir.name)
        config = f'[tls]\ncert_file = "{self.files["board.pem"]}"\nkey_file = "{self.files["board.key"]}"\n'
        self.server = Server(config=config)
        self.addCleanup(self.server.stop)

    def tearDown(self):
        faulthandler.cancel_dump_traceback_later()

    def connect(self, ca_certs):
        host = ("localhost", self.server.addr[1])
        conn = stomp.WSStompConnection([host], ws_path="/ws", timeout=WAIT_S, reconnect_attempts_max=1,
                                       heartbeats=(0, 0))
        conn.set_ssl(for_hosts=[host], ca_certs=ca_certs, ssl_version=ssl.PROTOCOL_TLS_CLIENT)
        rec = Recorder()
        conn.set_listener("recorder", rec)
        self.addCleanup(lambda: conn.is_connected() and conn.disconnect())
        return conn, rec

    def test_wss_exchange_with_the_certificate_checked(self):
        conn, rec = self.connect(self.files["ca.pem"])
        conn.connect(wait=False)
        self.assertTrue(rec.connected.wait(WAIT_S), f"no CONNECTED over wss; server output:\n{self.server.text()}")
        receipt = f"sub-{uuid.uuid4()}"
        conn.subscribe(destination="/topic/py-tls", id="1", ack="auto", headers={"receipt": receipt})
        rec.wait_receipt(receipt)
        bodies = [f"secure {i} " + "y" * 2000 for i in range(30)]
        for body in bodies:
            conn.send(destination="/topic/py-tls", body=body)
        got = []
        try:
            for _ in bodies:
                got.append(rec.messages.get(timeout=WAIT_S).body)
        except queue.Empty:
            self.fail(f"{len(got)} of {len(bodies)} messages came back over wss")
        self.assertEqual(got, bodies)
        self.assertEqual(rec.errors, [])

    def test_a_client_without_the_ca_is_refused(self):
        other = tempfile.TemporaryDirectory(prefix="stomp-edge-py-tls-other-")
        self.addCleanup(other.cleanup)
        stranger = make_certificates(other.name)
        conn, _ = self.connect(stranger["ca.pem"])
        with self.assertRaises(stomp.exception.ConnectFailedException):
            conn.connect(wait=True)


if __name__ == "__main__":
    unittest.main()
