// A child process for tls.test.mjs: @stomp/stompjs 7 over sockjs-client 1.6.1 with one forced
// transport against an https:// board. Run with NODE_EXTRA_CA_CERTS naming the test CA, so
// sockjs-client's own Node transports (faye-websocket, the http module, eventsource) check the
// board's certificate against it like any other CA. Prints `ok N` after N messages came back
// through the board, or exits non-zero with the reason.
// Usage: node lib/sockjs-tls-client.mjs https://localhost:PORT TRANSPORT

import { Client } from '@stomp/stompjs';
import SockJS from 'sockjs-client';

const [base, transport] = process.argv.slice(2);
const COUNT = 20;
const fail = (why) => { console.error(`${transport}: ${why}`); process.exit(1); };
setTimeout(() => fail('timed out'), 10_000).unref();

const got = [];
const client = new Client({
  webSocketFactory: () => new SockJS(`${base}/ws`, null, { transports: [transport], timeout: 5_000 }),
  reconnectDelay: 0,
  debug: () => {},
});
client.onStompError = (frame) => fail(`STOMP ERROR ${frame.headers.message}`);
client.onWebSocketClose = (evt) => { if (got.length < COUNT) fail(`closed (${evt?.code} ${evt?.reason})`); };
client.onConnect = () => {
  const destination = `/topic/tls-sockjs-${transport}`;
  client.subscribe(destination, (message) => {
    got.push(message.body);
    if (got.length === COUNT) {
      const inOrder = got.every((body, i) => body === `m${i}`);
      if (!inOrder) fail(`out of order: ${got.join(',')}`);
      console.log(`ok ${got.length}`);
      client.deactivate().then(() => process.exit(0));
    }
  }, { receipt: 'sub' });
  client.watchForReceipt('sub', () => {
    for (let i = 0; i < COUNT; i++) client.publish({ destination, body: `m${i}` });
  });
};
client.activate();
