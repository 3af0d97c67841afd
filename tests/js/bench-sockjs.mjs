// Benchmark: SockJS (websocket, xhr-streaming, xhr-polling) beside the raw WebSocket endpoint, on
// loopback against the REAL stomp-edge binary. For each transport it prints
//   - connect time: new client → CONNECTED (median and p90 of CONNECTS sequential connects),
//   - deliveries/s: a raw-WebSocket publisher → SUBSCRIBERS subscribers on that transport, for
//     SECONDS seconds, with at most WINDOW messages in flight (so nobody becomes a slow consumer),
//   - the server's CPU time per 1000 deliveries (from /proc/PID/stat).
// The clients run in this one Node process, so for the HTTP transports the client side
// (sockjs-client's parsing) weighs in the figures as much as the server.
// Bounded: a few seconds per transport, loopback only, exits by itself.
// Run: STOMP_EDGE_BIN=target/release/stomp-edge node tests/js/bench-sockjs.mjs
//      (knobs: SECONDS=3 SUBSCRIBERS=10 CONNECTS=20 WINDOW=200)

import { readFileSync } from 'node:fs';

import { Client } from '@stomp/stompjs';
import SockJS from 'sockjs-client';
import WebSocket from 'ws';

import { STOMP_PROTOCOLS, sleep, startServer, withTimeout } from './lib/server.mjs';

const SECONDS = Number(process.env.SECONDS ?? 3);
const SUBSCRIBERS = Number(process.env.SUBSCRIBERS ?? 10);
const CONNECTS = Number(process.env.CONNECTS ?? 20);
const WINDOW = Number(process.env.WINDOW ?? 200);
const TRANSPORTS = ['raw-websocket', 'websocket', 'xhr-streaming', 'xhr-polling'];

function connect(server, transport) {
  const client = new Client({
    webSocketFactory: () => (transport === 'raw-websocket'
      ? new WebSocket(server.url, STOMP_PROTOCOLS)
      : new SockJS(`${server.http}/ws`, null, { transports: [transport] })),
    reconnectDelay: 0,
    heartbeatIncoming: 0,
    heartbeatOutgoing: 0,
    debug: () => {},
  });
  const connected = new Promise((resolve, reject) => {
    client.onConnect = () => resolve(client);
    client.onStompError = (f) => reject(new Error(f.headers.message));
    client.onWebSocketClose = (e) => reject(new Error(`closed ${e?.code}`));
  });
  client.activate();
  return withTimeout(connected, 10_000, `CONNECTED over ${transport}`);
}

const close = (client) => withTimeout(client.deactivate(), 3_000, 'deactivate').catch(() => client.deactivate({ force: true }));

function cpuMs(pid) {
  // utime and stime, fields 14 and 15, in clock ticks (100 per second on Linux).
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

const percentile = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))];

async function connectTimes(server, transport) {
  const times = [];
  for (let i = 0; i < CONNECTS; i++) {
    const t0 = performance.now();
    const c = await connect(server, transport);
    times.push(performance.now() - t0);
    await close(c);
  }
  times.sort((a, b) => a - b);
  return { median: percentile(times, 0.5), p90: percentile(times, 0.9) };
}

async function deliveries(server, transport) {
  const dest = `/topic/bench-${transport}`;
  const publisher = await connect(server, 'raw-websocket');
  const subscribers = [];
  let received = 0;
  let lastSeen = new Array(SUBSCRIBERS).fill(-1);
  let wake = null;
  for (let i = 0; i < SUBSCRIBERS; i++) {
    const c = await connect(server, transport);
    const receipt = `sub-${i}`;
    const subscribed = new Promise((resolve) => c.watchForReceipt(receipt, resolve));
    c.subscribe(dest, (m) => {
      received++;
      lastSeen[i] = Number(m.body.slice(0, m.body.indexOf(':')));
      if (wake) wake();
    }, { receipt });
    await withTimeout(subscribed, 5_000, 'subscription receipt');
    subscribers.push(c);
  }
  const payload = 'x'.repeat(100);
  const cpu0 = cpuMs(server.proc.pid);
  const t0 = performance.now();
  const end = t0 + SECONDS * 1000;
  let seq = 0;
  while (performance.now() < end) {
    const last = seq + WINDOW - 1;
    for (; seq <= last; seq++) publisher.publish({ destination: dest, body: `${seq}:${payload}` });
    // Wait (bounded) until every subscriber has the window's last message.
    const deadline = performance.now() + 5_000;
    while (lastSeen.some((s) => s < last) && performance.now() < deadline) {
      await new Promise((resolve) => { wake = resolve; setTimeout(resolve, 50); });
      wake = null;
    }
    if (lastSeen.some((s) => s < last)) throw new Error(`${transport}: deliveries stalled at ${lastSeen}`);
  }
  const elapsed = (performance.now() - t0) / 1000;
  const cpu = cpuMs(server.proc.pid) - cpu0;
  for (const c of [publisher, ...subscribers]) await close(c);
  lastSeen = [];
  return { rate: received / elapsed, received, cpuPer1000: (cpu / received) * 1000 };
}

const server = await startServer();
try {
  console.log(`stomp-edge ${process.env.STOMP_EDGE_BIN ?? 'target/debug/stomp-edge'}; ${SUBSCRIBERS} subscribers, ${SECONDS} s, 100-byte bodies, window ${WINDOW}`);
  console.log('transport        connect median  connect p90  deliveries/s  server CPU ms/1000 deliveries');
  for (const transport of TRANSPORTS) {
    const ct = await connectTimes(server, transport);
    await sleep(200);
    const d = await deliveries(server, transport);
    console.log(`${transport.padEnd(16)} ${ct.median.toFixed(1).padStart(9)} ms ${ct.p90.toFixed(1).padStart(9)} ms ${Math.round(d.rate).toString().padStart(13)} ${d.cpuPer1000.toFixed(2).padStart(12)}`);
  }
} finally {
  await server.stop();
}
process.exit(0);
