// Smoke test for a stomp-edge binary running somewhere slow (the aarch64 build under qemu):
// connect with @stomp/stompjs over `ws`, subscribe to /topic/qemu, send, and receive it back.
//
//   node tests/js/qemu-smoke.mjs ws://127.0.0.1:PORT/ws [timeout_ms]
//
// Exits 0 when the message came back, 1 otherwise (with the reason on stderr).
import { Client } from '@stomp/stompjs';
import WebSocket from 'ws';

const url = process.argv[2];
const timeoutMs = Number(process.argv[3] ?? 30000);
if (!url) {
  console.error('usage: node qemu-smoke.mjs ws://HOST:PORT/ws [timeout_ms]');
  process.exit(2);
}

const nonce = `hello from qemu-smoke ${process.pid} ${Date.now()}`;
const started = Date.now();
let done = false;

function finish(code, message) {
  if (done) return;
  done = true;
  (code === 0 ? console.log : console.error)(`qemu-smoke: ${message} (${Date.now() - started} ms)`);
  clearTimeout(timer);
  client.deactivate().finally(() => process.exit(code));
  // deactivate() waits for the socket to close; do not let a stuck close hold the exit.
  setTimeout(() => process.exit(code), 2000).unref();
}

const timer = setTimeout(() => finish(1, `timed out after ${timeoutMs} ms`), timeoutMs);

const client = new Client({
  webSocketFactory: () => new WebSocket(url, ['v12.stomp', 'v11.stomp', 'v10.stomp']),
  connectHeaders: { host: '/' },
  reconnectDelay: 0, // one attempt: a refused connection is a failure, not something to wait out
  heartbeatIncoming: 0,
  heartbeatOutgoing: 0,
  connectionTimeout: timeoutMs,
  onConnect: (frame) => {
    console.log(`qemu-smoke: CONNECTED version=${frame.headers.version} server=${frame.headers.server ?? '?'}`);
    // The RECEIPT for the SUBSCRIBE proves the subscription is in place before the SEND.
    const receipt = 'subscribed-qemu';
    client.watchForReceipt(receipt, () => {
      client.publish({ destination: '/topic/qemu', body: nonce, headers: { 'content-type': 'text/plain' } });
    });
    client.subscribe('/topic/qemu', (message) => {
      if (message.body === nonce) {
        finish(0, `received ${JSON.stringify(message.body)} on ${message.headers.destination}`);
      }
    }, { id: 'sub-qemu', receipt });
  },
  onStompError: (frame) => finish(1, `ERROR frame: ${frame.headers.message ?? ''} ${frame.body}`),
  onWebSocketError: (event) => finish(1, `WebSocket error: ${event?.message ?? event}`),
  onWebSocketClose: (event) => finish(1, `WebSocket closed early: code ${event?.code}`),
});

client.activate();
