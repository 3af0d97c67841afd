// The clients of one board in the network-fault bed: run inside that board's network namespace.
//
// `netbed.py` starts one of these per board with `ip netns exec se-<pid>-<board> node clients.mjs …`.
// It opens N real @stomp/stompjs 7 clients over `ws` (tests/js/node_modules, STOMP 1.2) to the
// board at 127.0.0.1:8080; client i SUBSCRIBEs to `/topic/room/<room>` (the i-th of `--rooms`,
// round robin) and `/user/queue/errors`, and JOINs the room through the chat application
// (`/app/room/<room>/join`), waiting for every RECEIPT. Once all are ready (it writes
// `<out>.ready`) it waits for `--go-file`, which holds the wall-clock time (s) at which every
// client SENDs numbered chat messages (`{"message":"<name>:<seq>"}` to `/app/room/<room>/message`,
// each with a `receipt`) at `--rate` per second for `--duration` seconds; then all wait until
// nothing arrived for 3 s (at most `--drain-max` s). With `--late-at T`, one more client per room
// (`<board>lateN`) connects and SUBSCRIBEs T s after the start and only listens; with
// `--resume-mark M` it resumes (`x-stream-offset:offset=N`, `x-stream-epoch`) after the newest
// message the room's first client had at M s. Meanwhile `/healthz` is read every 250 ms;
// `/metrics` at the start and the end, and `/api/rooms/<room>` at the end; then it writes
// `<out>.scraped` and keeps its clients connected until `<go-file>.end` exists (at most 30 s).
//
// Node rather than Python: after a long cut a board sends its clients the whole catch-up at once
// (15,000 MESSAGEs for 5 clients after 60 s), and the bed times own-board deliveries to 1 s;
// stompjs parses that burst in a fraction of the time stomp.py needs on a loaded 2-core machine.
//
// Everything seen is written as JSON lines to `--out` (one object per event, key `k`; t is the
// wall clock in seconds):
//   client {c, room, t_sub, epoch, recovered, from}  a client subscribed (its RECEIPT's stream
//                                     headers; from: [sender, seq] it resumed after, or null)
//   send {c, seq, t}                  a SEND written
//   rcpt {c, seq, t}                  its RECEIPT arrived
//   msg  {r, type, s, seq, off, ep, t} a MESSAGE on the room (r: receiver, s: sender name)
//   notice {r, what, headers, body, t} what tells a client of trouble: an ERROR, a frame with
//                                     x-stream-recovered:false, a MESSAGE on /user/queue/errors
//   disc {r, t}                       the connection closed under the client
//   health {t, redis, mode}           a /healthz reading ("unreachable" when it did not answer in 1 s)
//   metrics {phase, text}             /metrics at "start" and "end"
//   api_members {room, members, t}    /api/rooms/<room> participants at the end
//   setup_error {c, what}             a client could not connect, subscribe or join
// Bounded: the number of clients, the rate and the time are all given; nothing here retries.

import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const jsRequire = createRequire(path.join(HERE, '..', 'js', 'package.json'));
const { Client } = await import(pathToFileURL(jsRequire.resolve('@stomp/stompjs')).href);
const WebSocket = (await import(pathToFileURL(jsRequire.resolve('ws')).href)).default;

const WAIT_MS = 10_000;
const QUIET_S = 3;
const now = () => Date.now() / 1000;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));

const { values: a } = parseArgs({
  options: {
    board: { type: 'string' },
    clients: { type: 'string', default: '5' },
    port: { type: 'string', default: '8080' },
    rooms: { type: 'string', default: 'bed' },
    rate: { type: 'string' },
    'go-file': { type: 'string' },
    duration: { type: 'string' },
    'drain-max': { type: 'string', default: '12' },
    'from-first': { type: 'boolean', default: false },
    'late-at': { type: 'string', default: '0' },
    'resume-mark': { type: 'string', default: '0' },
    out: { type: 'string' },
  },
});
const port = Number(a.port);
const rate = Number(a.rate);
const duration = Number(a.duration);
const rooms = a.rooms.split(',');
const log = [];
let lastRx = now();

async function httpGet(p, ms = 1000) {
  const res = await fetch(`http://127.0.0.1:${port}${p}`, { signal: AbortSignal.timeout(ms) });
  return res.text();
}

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`no ${what} within ${ms} ms`)), ms); }),
  ]).finally(() => clearTimeout(timer));
}

/** One STOMP connection of the board, logging what it sees. */
class BedClient {
  constructor(name, room) {
    this.name = name;
    this.room = room;
    this.closing = false;
    this.last = null; // [offset, epoch, sender, seq] of the newest CHAT with an offset
    this.client = new Client({
      webSocketFactory: () => {
        const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`, ['v12.stomp']);
        ws.on('error', () => { /* reported through the close */ });
        return ws;
      },
      reconnectDelay: 0,
      heartbeatIncoming: 0,
      heartbeatOutgoing: 0,
      connectionTimeout: WAIT_MS,
      debug: () => {},
    });
    this.client.onUnhandledReceipt = (frame) => this.onReceipt(frame);
    this.client.onStompError = (frame) => log.push({
      k: 'notice', r: this.name, what: 'error', headers: frame.headers, body: frame.body.slice(0, 500), t: now(),
    });
    this.client.onWebSocketClose = () => {
      if (!this.closing) log.push({ k: 'disc', r: this.name, t: now() });
    };
  }

  onReceipt(frame) {
    const t = now();
    const rid = frame.headers['receipt-id'] ?? '';
    if (frame.headers['x-stream-recovered'] === 'false') {
      log.push({ k: 'notice', r: this.name, what: 'receipt', headers: frame.headers, body: '', t });
    }
    if (rid.startsWith('m-')) log.push({ k: 'rcpt', c: this.name, seq: Number(rid.slice(rid.lastIndexOf('-') + 1)), t });
  }

  onMessage(frame) {
    const t = now();
    lastRx = t;
    const h = frame.headers;
    const inRoom = (h.destination ?? '').startsWith('/topic/room/');
    if (h['x-stream-recovered'] === 'false' || !inRoom) {
      log.push({ k: 'notice', r: this.name, what: 'message', headers: h, body: frame.body.slice(0, 500), t });
      if (!inRoom) return;
    }
    let ev;
    try {
      ev = JSON.parse(frame.body);
    } catch {
      log.push({ k: 'notice', r: this.name, what: 'unparsable', body: frame.body.slice(0, 200), t });
      return;
    }
    const text = typeof ev.message === 'string' ? ev.message : '';
    const cut = text.lastIndexOf(':');
    const seq = ev.type === 'CHAT' && cut >= 0 && /^\d+$/.test(text.slice(cut + 1)) ? Number(text.slice(cut + 1)) : null;
    const off = h['x-stream-offset'] ?? null;
    if (seq !== null && off !== null) this.last = [Number(off), h['x-stream-epoch'] ?? null, ev.sender, seq];
    log.push({ k: 'msg', r: this.name, type: ev.type ?? null, s: ev.sender ?? null, seq, off, ep: h['x-stream-epoch'] ?? null, t });
  }

  receipt(rid) {
    return withTimeout(new Promise((resolve) => this.client.watchForReceipt(rid, resolve)), WAIT_MS, `RECEIPT ${rid}`);
  }

  /** CONNECT, SUBSCRIBE (waiting for its RECEIPT) and, unless a listener only, JOIN. */
  async setup({ fromFirst = false, join = true, resume = null } = {}) {
    await withTimeout(new Promise((resolve, reject) => {
      this.client.onConnect = resolve;
      this.client.onWebSocketError = () => reject(new Error('WebSocket error before CONNECTED'));
      this.client.activate();
    }), WAIT_MS, 'CONNECTED');
    const sub = { id: 'room', receipt: `sub-${this.name}` };
    if (fromFirst) sub['x-stream-offset'] = 'first';
    if (resume) {
      sub['x-stream-offset'] = `offset=${resume[0] + 1}`;
      sub['x-stream-epoch'] = resume[1] ?? '';
    }
    this.client.subscribe('/user/queue/errors', (f) => this.onMessage(f), { id: 'errors' });
    const subReceipt = this.receipt(sub.receipt);
    this.client.subscribe(`/topic/room/${this.room}`, (f) => this.onMessage(f), sub);
    const r = await subReceipt;
    if (r.headers['x-stream-recovered'] === 'false') {
      log.push({ k: 'notice', r: this.name, what: 'receipt', headers: r.headers, body: '', t: now() });
    }
    log.push({
      k: 'client', c: this.name, room: this.room, t_sub: now(), epoch: r.headers['x-stream-epoch'] ?? null,
      recovered: r.headers['x-stream-recovered'] ?? null, from: resume ? resume.slice(2) : null,
    });
    if (join) {
      const joined = this.receipt(`join-${this.name}`);
      this.client.publish({
        destination: `/app/room/${this.room}/join`, body: JSON.stringify({ username: this.name }),
        headers: { 'content-type': 'application/json', receipt: `join-${this.name}` },
      });
      await joined;
    }
  }

  async sendLoop(startAt) {
    const end = startAt + duration;
    for (let seq = 1; startAt + (seq - 1) / rate < end; seq++) {
      await sleep((startAt + (seq - 1) / rate - now()) * 1000);
      log.push({ k: 'send', c: this.name, seq, t: now() });
      try {
        this.client.publish({
          destination: `/app/room/${this.room}/message`, body: JSON.stringify({ message: `${this.name}:${seq}` }),
          headers: { 'content-type': 'application/json', receipt: `m-${this.name}-${seq}` },
        });
      } catch (e) { // the connection is gone: logged, the run goes on without this client
        log.push({ k: 'notice', r: this.name, what: 'send_failed', body: String(e), t: now() });
        return;
      }
    }
  }
}

async function main() {
  const deadline = now() + 20;
  while (now() < deadline) { // the board is up and has its Redis link
    try {
      if (JSON.parse(await httpGet('/healthz')).redis === 'up') break;
    } catch { /* not listening yet */ }
    await sleep(100);
  }
  try {
    log.push({ k: 'metrics', phase: 'start', text: await httpGet('/metrics', 5000) });
  } catch (e) {
    log.push({ k: 'setup_error', c: a.board, what: `/metrics: ${e}` });
  }
  const clients = [];
  for (let i = 0; i < Number(a.clients); i++) clients.push(new BedClient(`${a.board}${i + 1}`, rooms[i % rooms.length]));
  const ready = [];
  for (const c of clients) {
    try {
      await c.setup({ fromFirst: a['from-first'] });
      ready.push(c);
    } catch (e) {
      log.push({ k: 'setup_error', c: c.name, what: String(e) });
    }
  }
  writeFileSync(`${a.out}.ready`, '');
  const goBy = now() + 60;
  while (!existsSync(a['go-file']) && now() < goBy) await sleep(50);
  const startAt = Number(readFileSync(a['go-file'], 'utf8'));

  let polling = true;
  const poller = (async () => {
    while (polling) {
      const t = now();
      try {
        const h = JSON.parse(await httpGet('/healthz'));
        log.push({ k: 'health', t, redis: h.redis ?? null, mode: h.mode ?? null });
      } catch (e) { // unreachable or slow: counted as not up, the reason kept
        log.push({ k: 'health', t, redis: 'unreachable', mode: String(e).slice(0, 80) });
      }
      await sleep(250 - (now() - t) * 1000);
    }
  })();
  const senders = ready.map((c) => c.sendLoop(startAt));
  const lateAt = Number(a['late-at']);
  if (lateAt > 0) {
    const marks = {};
    const mark = Number(a['resume-mark']);
    if (mark > 0) {
      await sleep((startAt + mark - now()) * 1000);
      for (const c of [...ready].reverse()) marks[c.room] = c.last;
    }
    await sleep((startAt + lateAt - now()) * 1000);
    for (const [j, room] of rooms.entries()) {
      const late = new BedClient(`${a.board}late${j + 1}`, room);
      clients.push(late);
      try {
        await late.setup({ join: false, resume: marks[room] ?? null });
      } catch (e) {
        log.push({ k: 'setup_error', c: late.name, what: String(e) });
      }
    }
  }
  await Promise.all(senders);
  const end = now();
  while (now() < end + Number(a['drain-max']) && now() - Math.max(lastRx, end) < QUIET_S) await sleep(200);
  polling = false;
  await poller;
  try {
    log.push({ k: 'metrics', phase: 'end', text: await httpGet('/metrics', 5000) });
    for (const room of rooms) {
      const info = JSON.parse(await httpGet(`/api/rooms/${room}`, 5000));
      log.push({ k: 'api_members', room, members: info.participants ?? null, t: now() });
    }
  } catch (e) {
    log.push({ k: 'setup_error', c: a.board, what: `end scrape: ${e}` });
  }
  // Stay connected until every board has read its /api/rooms: a board that left first would
  // have its clients' LEAVEs in the other board's list.
  writeFileSync(`${a.out}.scraped`, '');
  const endBy = now() + 30;
  while (!existsSync(`${a['go-file']}.end`) && now() < endBy) await sleep(50);
  for (const c of clients) c.closing = true;
  await Promise.all(clients.map((c) => withTimeout(c.client.deactivate(), 3000, 'deactivate').catch(() => {})));
  writeFileSync(a.out, log.map((r) => JSON.stringify(r)).join('\n') + '\n');
}

await main();
process.exit(0);
