// The clients of the nginx recipe test (nginx.test.mjs), run as a child process so that
// NODE_EXTRA_CA_CERTS (the test's own CA) is in force from the start, as a user would run them:
// @stomp/stompjs over wss:// and sockjs-client over https:// through nginx, wrong logins from
// several loopback addresses (each a different real client of the proxy), HTTP Basic through
// the proxy, and one untrusted direct peer with a forged X-Forwarded-For. Prints one JSON object
// of what happened; the test judges it. Every wait is bounded.
//
// argv: PROXY_ORIGIN (https://localhost:PORT) BOARD_ADDR (127.0.0.1:PORT)

import https from 'node:https';

import { Client } from '@stomp/stompjs';
import SockJS from 'sockjs-client';
import WebSocket from 'ws';

const [proxy, board] = process.argv.slice(2);
const wss = proxy.replace(/^https:/, 'wss:');
const WAIT_MS = 10_000;

function bounded(promise, what, ms = WAIT_MS) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** CONNECTs alice with @stomp/stompjs over `factory`, sends one message to itself, returns it. */
async function roundTrip(factory, what) {
  const client = new Client({
    webSocketFactory: factory,
    connectHeaders: { login: 'alice', passcode: 'secret' },
    heartbeatIncoming: 2_000,
    heartbeatOutgoing: 2_000,
    reconnectDelay: 0,
    connectionTimeout: WAIT_MS,
    debug: () => {},
  });
  const connected = new Promise((resolve, reject) => {
    client.onConnect = resolve;
    client.onStompError = (f) => reject(new Error(`${what}: ERROR ${f.headers.message}`));
    client.onWebSocketClose = (e) => reject(new Error(`${what}: closed ${e?.code}`));
  });
  client.activate();
  try {
    await bounded(connected, `${what} CONNECTED`);
    const got = new Promise((resolve) => {
      client.subscribe('/topic/nginx', (m) => resolve(m.body));
    });
    client.publish({ destination: '/topic/nginx', body: `hello over ${what}` });
    return await bounded(got, `${what} MESSAGE`);
  } finally {
    await client.deactivate({ force: true }).catch(() => {});
  }
}

/** One wrong CONNECT over a raw WebSocket; resolves { ms, error } (the ERROR's message). */
function failedLogin(url, login, { localAddress, headers = {} } = {}) {
  return bounded(new Promise((resolve, reject) => {
    const ws = new WebSocket(url, ['v12.stomp'], { localAddress, headers });
    let start = 0;
    ws.on('open', () => {
      start = Date.now();
      ws.send(`CONNECT\naccept-version:1.2\nlogin:${login}\npasscode:guess\nreceipt:r\n\n\0`);
    });
    ws.on('message', (data) => {
      const text = data.toString();
      if (text.startsWith('ERROR')) {
        const ms = Date.now() - start;
        ws.terminate();
        resolve({ ms, error: /message:([^\n]*)/.exec(text)?.[1] ?? text, receipt: text.includes('receipt-id:r') });
      }
    });
    ws.on('error', reject);
  }), `ERROR for ${login}`);
}

/** GET over https with Basic credentials from `localAddress`; resolves { status, ms }. */
function basicGet(path, credentials, localAddress) {
  return bounded(new Promise((resolve, reject) => {
    const start = Date.now();
    const req = https.get(`${proxy}${path}`, {
      localAddress,
      headers: { Authorization: `Basic ${Buffer.from(credentials).toString('base64')}` },
    }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode, ms: Date.now() - start }));
    });
    req.on('error', reject);
  }), `GET ${path}`);
}

const out = {};
out.stompjsWss = await roundTrip(
  () => new WebSocket(`${wss}/ws`, ['v12.stomp'], { localAddress: '127.0.0.2' }),
  'wss',
);
for (const transport of ['websocket', 'xhr-streaming', 'xhr-polling']) {
  out[`sockjs ${transport}`] = await roundTrip(
    () => new SockJS(`${proxy}/ws`, null, { transports: [transport], timeout: WAIT_MS }),
    `sockjs ${transport}`,
  );
}
// Client 127.0.0.3 fails three times (two free, the third slowed); client 127.0.0.4, behind
// the same proxy and with a forged X-Forwarded-For naming 127.0.0.3, is not slowed.
out.c3 = [];
for (const login of ['m1', 'm2', 'm3']) {
  out.c3.push(await failedLogin(`${wss}/ws`, login, { localAddress: '127.0.0.3' }));
}
out.c4 = await failedLogin(`${wss}/ws`, 'm4', { localAddress: '127.0.0.4', headers: { 'X-Forwarded-For': '127.0.0.3' } });
// HTTP Basic through the proxy shares 127.0.0.3's count: slowed at once.
out.basicC3 = await basicGet('/api/status', 'm5:guess', '127.0.0.3');
out.basicRight = await basicGet('/api/status', 'alice:secret', '127.0.0.3');
// An untrusted peer straight to the board: its forged header is not believed.
out.direct = await failedLogin(`ws://${board}/ws`, 'm6', { localAddress: '127.0.0.5', headers: { 'X-Forwarded-For': '203.0.113.1' } });
console.log(JSON.stringify(out));
process.exit(0);
