// SockJS at /ws against the REAL stomp-edge binary: the official sockjs-client 1.6.1 (its Node
// transports: faye-websocket for `websocket`, the `http` module for xhr, `eventsource`) carrying
// @stomp/stompjs 7 over each transport, forced with the `transports` option; SockJS clients
// chatting with raw-WebSocket clients; and the protocol byte by byte with fetch and `ws`:
// framing, heart-beats, 2010, streaming limits, reaping, CORS, the Origin guard, bad input with
// its status codes and metrics.
// Run: STOMP_EDGE_BIN=target/debug/stomp-edge node --test tests/js/sockjs.test.mjs

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { Client } from '@stomp/stompjs';
import SockJS from 'sockjs-client';
import WebSocket from 'ws';

import {
  closeClient, connectClient, encodeFrame, rawWs, receiptFor, sleep, startServer, subscribe, uniqueId, withTimeout,
} from './lib/server.mjs';

const TRANSPORTS = ['websocket', 'xhr-streaming', 'xhr-polling', 'eventsource'];
const WAIT_MS = 5_000;
const NUL = '\u0000';

/** Starts a server for a describe block and stops it afterwards. */
function serverFor(options = {}) {
  const ctx = { server: null };
  before(async () => { ctx.server = await startServer(options); });
  after(async () => { await ctx.server?.stop(); });
  return ctx;
}

/** One Prometheus sample of the server's /metrics, 0 if absent. */
async function metric(server, name, labels = '') {
  const text = await (await fetch(`${server.http}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`stomp_edge_${name}${labels} `));
  return line ? Number(line.split(' ').pop()) : 0;
}

/** Waits (bounded) until `check()` is truthy. */
async function eventually(check, what, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(50);
  }
}

/**
 * Connects @stomp/stompjs over sockjs-client with one forced transport; resolves once CONNECTED.
 * Extra properties as connectClient's: `connectedFrame`, `sock`, `closed`.
 */
function connectSockJs(server, transport, opts = {}) {
  let sock = null;
  const client = new Client({
    webSocketFactory: () => {
      sock = new SockJS(`${server.http}/ws`, null, { transports: [transport], timeout: WAIT_MS });
      return sock;
    },
    reconnectDelay: 0,
    connectionTimeout: WAIT_MS,
    debug: () => {},
    ...opts,
  });
  let resolveClosed;
  client.closed = new Promise((resolve) => { resolveClosed = resolve; });
  const connected = new Promise((resolve, reject) => {
    client.onConnect = (frame) => { client.connectedFrame = frame; client.sock = sock; resolve(client); };
    client.onStompError = (frame) => reject(new Error(`STOMP ERROR: ${frame.headers.message}`));
    client.onWebSocketClose = (evt) => {
      resolveClosed(evt);
      reject(new Error(`SockJS closed before CONNECTED (code ${evt?.code} ${evt?.reason})`));
    };
  });
  client.activate();
  return withTimeout(connected, WAIT_MS + 1_000, `CONNECTED over SockJS ${transport}`).catch(async (err) => {
    await client.deactivate({ force: true }).catch(() => {});
    throw err;
  });
}

// ---------------------------------------------------------------------------------------------
// Raw protocol helpers.

const base = (server) => `${server.http}/ws/000/${uniqueId('s').replace(/\./g, '-')}`;

/** POST to a SockJS URL; resolves { status, text, headers }. */
async function post(url, body = undefined, headers = {}) {
  const res = await withTimeout(fetch(url, { method: 'POST', body, headers }), 30_000, `POST ${url}`);
  return { status: res.status, text: await res.text(), headers: res.headers };
}

const stompFrame = (command, headers = {}, body = '') =>
  `${command}\n${Object.entries(headers).map(([k, v]) => `${k}:${v}`).join('\n')}${Object.keys(headers).length ? '\n' : ''}\n${body}${NUL}`;

/** Decodes the STOMP frames carried by `a[...]` lines of a SockJS response. */
function messagesOf(text) {
  return text.split('\n').filter((l) => l.startsWith('a[')).flatMap((l) => JSON.parse(l.slice(1)));
}

/** An open xhr-polling session: `poll()` returns the next response text. */
async function xhrSession(server) {
  const url = base(server);
  const first = await post(`${url}/xhr`);
  assert.equal(first.status, 200);
  assert.equal(first.text, 'o\n');
  return {
    url,
    poll: () => post(`${url}/xhr`),
    send: (...strings) => post(`${url}/xhr_send`, JSON.stringify(strings), { 'content-type': 'text/plain' }),
  };
}

/** A raw `ws` socket on the SockJS websocket transport; `next()` returns the next SockJS frame. */
async function sockjsWs(server) {
  const ws = new WebSocket(`${base(server).replace('http', 'ws')}/websocket`);
  const frames = [];
  const waiters = [];
  let closeInfo = null;
  ws.on('message', (data) => {
    frames.push(data.toString());
    while (waiters.length && frames.length) waiters.shift()(frames.shift());
  });
  const closed = new Promise((resolve) => ws.on('close', (code, reason) => {
    closeInfo = { code, reason: reason.toString() };
    resolve(closeInfo);
  }));
  ws.on('error', () => {});
  await withTimeout(new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('unexpected-response', (_q, r) => reject(new Error(`HTTP ${r.statusCode}`))); }), WAIT_MS, 'SockJS websocket open');
  return {
    ws,
    closed,
    isClosed: () => closeInfo !== null,
    send: (text) => ws.send(text),
    next(ms = WAIT_MS, what = 'a SockJS frame') {
      if (frames.length) return Promise.resolve(frames.shift());
      return withTimeout(new Promise((resolve) => waiters.push(resolve)), ms, what);
    },
  };
}

// ---------------------------------------------------------------------------------------------

describe('sockjs-client + @stomp/stompjs over each transport', () => {
  const ctx = serverFor();

  for (const transport of TRANSPORTS) {
    it(`${transport}: connect, subscribe, send, receive, disconnect`, async () => {
      const before = await metric(ctx.server, 'sockjs_sessions_total', `{transport="${transport.replace('-polling', '').replace('-', '_')}"}`);
      const client = await connectSockJs(ctx.server, transport);
      try {
        assert.equal(client.sock.transport, transport, 'the forced transport is the one in use');
        assert.equal(client.connectedFrame.headers.version, '1.2');
        assert.match(client.connectedFrame.headers.server ?? '', /^stomp-edge/);
        const dest = `/topic/sockjs-${transport}`;
        const sub = await subscribe(client, dest);
        const body = `hello over ${transport}: 안녕 😀 "quotes" \\ and\nnewlines, 100% sure %41`;
        client.publish({ destination: dest, body, headers: { 'x-custom': 'a:b' } });
        const msg = await sub.next(WAIT_MS);
        assert.equal(msg.body, body);
        assert.equal(msg.headers['x-custom'], 'a:b');
        assert.equal(msg.headers.destination, dest);
        assert.equal(await metric(ctx.server, 'sockjs_sessions_total', `{transport="${transport.replace('-polling', '').replace('-', '_')}"}`), before + 1);
      } finally {
        await closeClient(client);
      }
      await withTimeout(client.closed, WAIT_MS, 'the SockJS close after DISCONNECT');
    });
  }

  it('a SockJS client on each transport and a raw-WebSocket client chat both ways', async () => {
    const raw = await connectClient(ctx.server.url);
    try {
      for (const transport of ['websocket', 'xhr-streaming', 'xhr-polling']) {
        const sj = await connectSockJs(ctx.server, transport);
        try {
          const dest = `/topic/mixed-${transport}`;
          const rawSub = await subscribe(raw, dest);
          const sjSub = await subscribe(sj, dest);
          sj.publish({ destination: dest, body: `from sockjs ${transport}` });
          raw.publish({ destination: dest, body: `from raw ws to ${transport}` });
          const gotRaw = [await rawSub.next(), await rawSub.next()].map((m) => m.body).sort();
          const gotSj = [await sjSub.next(), await sjSub.next()].map((m) => m.body).sort();
          const expected = [`from raw ws to ${transport}`, `from sockjs ${transport}`].sort();
          assert.deepEqual(gotRaw, expected);
          assert.deepEqual(gotSj, expected);
          rawSub.unsubscribe();
        } finally {
          await closeClient(sj);
        }
      }
    } finally {
      await closeClient(raw);
    }
  });

  it('xhr-polling carries 200 messages and a 64 KiB body in order', async () => {
    const client = await connectSockJs(ctx.server, 'xhr-polling');
    try {
      const sub = await subscribe(client, '/topic/sockjs-bulk');
      const big = 'x'.repeat(64 * 1024);
      for (let i = 0; i < 200; i++) client.publish({ destination: '/topic/sockjs-bulk', body: `m${i}` });
      client.publish({ destination: '/topic/sockjs-bulk', body: big });
      for (let i = 0; i < 200; i++) assert.equal((await sub.next(WAIT_MS, `message ${i}`)).body, `m${i}`);
      assert.equal((await sub.next(WAIT_MS, 'the 64 KiB body')).body.length, big.length);
    } finally {
      await closeClient(client);
    }
  });
});

describe('SockJS frames are exact: binary bodies never reach a SockJS client corrupted', () => {
  const ctx = serverFor();
  // The report's input: a raw /ws publisher's binary body that is not UTF-8.
  const BINARY = Buffer.from([0xff, 0xfe, 0x00, 0x01, 0x62, 0x69, 0x6e]);
  // Then text that SockJS must escape (NUL, U+2028, astral) with its exact length.
  const TEXT = 'next \u0000é\u2028😀 "q" \\ %41';

  for (const transport of TRANSPORTS) {
    it(`${transport}: the binary MESSAGE is skipped and counted, the next one arrives byte-exact`, async () => {
      const dest = `/topic/u9-${transport}`;
      const raw = await rawWs(ctx.server.url);
      const sj = await connectSockJs(ctx.server, transport);
      try {
        await raw.connect();
        raw.sendFrame('SUBSCRIBE', { id: 'r', destination: dest, receipt: 'rs' });
        assert.equal((await raw.nextFrame()).command, 'RECEIPT');
        const sub = await subscribe(sj, dest);
        const dropped = await metric(ctx.server, 'messages_dropped_total', '{reason="sockjs_binary"}');
        raw.send(encodeFrame('SEND', { destination: dest, 'content-length': BINARY.length }, BINARY), { binary: true });
        const textBytes = Buffer.from(TEXT);
        raw.send(encodeFrame('SEND', { destination: dest, 'content-length': textBytes.length }, textBytes), { binary: true });
        // The raw subscriber gets both exactly.
        const a = await raw.nextFrame();
        assert.deepEqual([a.headers['content-length'], [...a.body]], ['7', [...BINARY]]);
        const b = await raw.nextFrame();
        assert.deepEqual(b.body, textBytes);
        // The SockJS subscriber's first message is the text one, exact in bytes and length.
        const m = await sub.next(WAIT_MS, 'the text MESSAGE after the binary one');
        assert.equal(m.headers['content-length'], String(textBytes.length));
        assert.deepEqual(Buffer.from(m.binaryBody), textBytes);
        assert.equal(m.body, TEXT);
        assert.equal(await metric(ctx.server, 'messages_dropped_total', '{reason="sockjs_binary"}'), dropped + 1);
        // And the session goes on.
        sj.publish({ destination: dest, body: 'after' });
        assert.equal((await sub.next()).body, 'after');
      } finally {
        await closeClient(sj);
        await raw.close();
      }
    });
  }
});

describe('STOMP heart-beats through SockJS', () => {
  const ctx = serverFor({ config: '[stomp]\nheartbeat_send_ms = 500\nheartbeat_receive_ms = 500\n' });

  for (const transport of ['websocket', 'xhr-polling']) {
    it(`${transport}: 500 ms heart-beats both ways keep the session open for 2.5 s`, async () => {
      const client = await connectSockJs(ctx.server, transport, { heartbeatIncoming: 500, heartbeatOutgoing: 500 });
      let lastByServer = Date.now();
      client.onUnhandledFrame = () => {};
      const heartbeats = [];
      client.sock.addEventListener('message', (e) => { if (e.data === '\n') heartbeats.push(Date.now()); lastByServer = Date.now(); });
      try {
        assert.equal(client.connectedFrame.headers['heart-beat'], '500,500');
        await sleep(2_500);
        assert.ok(client.connected, 'still connected after 2.5 s of heart-beats');
        assert.ok(heartbeats.length >= 2, `the server sent EOL heart-beats as SockJS messages (got ${heartbeats.length})`);
        assert.ok(Date.now() - lastByServer < 1_500);
        const sub = await subscribe(client, '/topic/hb-alive');
        client.publish({ destination: '/topic/hb-alive', body: 'alive' });
        assert.equal((await sub.next()).body, 'alive');
      } finally {
        await closeClient(client);
      }
    });
  }

  it('an xhr session that goes silent is closed for its heart-beat with an ERROR', async () => {
    const s = await xhrSession(ctx.server);
    assert.equal((await s.send(stompFrame('CONNECT', { 'accept-version': '1.2', 'heart-beat': '500,0' }))).status, 204);
    const connected = messagesOf((await s.poll()).text);
    assert.match(connected[0], /^CONNECTED\n/);
    // No heart-beats from us: after 2 x 500 ms the server gives up.
    let text = '';
    const deadline = Date.now() + WAIT_MS;
    while (!text.includes('c[') && Date.now() < deadline) text += (await s.poll()).text;
    assert.ok(messagesOf(text).some((m) => m.startsWith('ERROR\n') && m.includes('heart-beat')), text);
    assert.match(text, /c\[1001,"heartbeat_timeout"\]/);
  });
});

describe('SockJS protocol details', () => {
  const ctx = serverFor({
    config: '[sockjs]\nheartbeat_ms = 400\ndisconnect_delay_ms = 500\nstreaming_bytes = 8192\nmax_message_bytes = 4096\n',
  });

  it('GET /ws/info: websocket, no cookie, origins, entropy; CORS and no-store', async () => {
    const origin = ctx.server.http;
    const res = await fetch(`${ctx.server.http}/ws/info?t=1`, { headers: { origin } });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type'), /^application\/json/);
    assert.match(res.headers.get('cache-control'), /no-store/);
    assert.equal(res.headers.get('access-control-allow-origin'), origin);
    assert.equal(res.headers.get('access-control-allow-credentials'), 'true');
    const info = await res.json();
    assert.equal(info.websocket, true);
    assert.equal(info.cookie_needed, false);
    assert.deepEqual(info.origins, ['*:*']);
    assert.ok(Number.isInteger(info.entropy));
  });

  it('OPTIONS preflights answer 204 with the allowed methods', async () => {
    for (const [path, methods] of [['info', 'OPTIONS, GET'], ['000/abc/xhr', 'OPTIONS, POST'], ['000/abc/xhr_send', 'OPTIONS, POST'], ['000/abc/xhr_streaming', 'OPTIONS, POST']]) {
      const res = await fetch(`${ctx.server.http}/ws/${path}`, {
        method: 'OPTIONS',
        headers: { origin: ctx.server.http, 'access-control-request-headers': 'content-type' },
      });
      assert.equal(res.status, 204, path);
      assert.equal(res.headers.get('access-control-allow-methods'), methods, path);
      assert.equal(res.headers.get('access-control-allow-headers'), 'content-type', path);
      assert.equal(res.headers.get('access-control-allow-origin'), ctx.server.http, path);
    }
  });

  it('xhr polling: o, a second poll gets c[2010], frames split and batched across messages', async () => {
    const s = await xhrSession(ctx.server);
    const held = s.poll();
    await sleep(100);
    const second = await s.poll();
    assert.equal(second.text, 'c[2010,"Another connection still open"]\n');
    // CONNECT split across two messages of one xhr_send and the next one.
    const connect = stompFrame('CONNECT', { 'accept-version': '1.2', 'heart-beat': '0,0' });
    assert.equal((await s.send(connect.slice(0, 5), connect.slice(5, 12))).status, 204);
    assert.equal((await s.send(connect.slice(12))).status, 204);
    const first = await held;
    assert.equal(first.status, 200);
    assert.match(first.headers.get('content-type'), /^application\/javascript/);
    assert.match(messagesOf(first.text)[0], /^CONNECTED\nversion:1.2\n/);
    // Two frames in one message, with heart-beat EOLs around them.
    const sub = stompFrame('SUBSCRIBE', { id: '0', destination: '/topic/p', receipt: 'r1' });
    const send = stompFrame('SEND', { destination: '/topic/p' }, 'batched');
    assert.equal((await s.send(`\n${sub}\n${send}`)).status, 204);
    let frames = [];
    const deadline = Date.now() + WAIT_MS;
    while (frames.length < 2 && Date.now() < deadline) frames = frames.concat(messagesOf((await s.poll()).text));
    assert.match(frames[0], /^RECEIPT\nreceipt-id:r1\n/);
    assert.match(frames[1], /^MESSAGE\n/);
    assert.ok(frames[1].endsWith(`\n\nbatched${NUL}`));
    assert.equal((await s.send(stompFrame('DISCONNECT', { receipt: 'bye' }))).status, 204);
    const last = (await s.poll()).text + (await s.poll()).text;
    assert.match(last, /RECEIPT\\nreceipt-id:bye/);
    assert.match(last, /c\[3000,"Go away!"\]\n$/);
    // A closed session refuses sends like an unknown one.
    assert.equal((await s.send('x')).status, 404);
  });

  it('a held poll gets an h heart-beat frame on the configured interval', async () => {
    const s = await xhrSession(ctx.server);
    const t0 = Date.now();
    const res = await s.poll();
    assert.equal(res.text, 'h\n');
    const took = Date.now() - t0;
    assert.ok(took >= 300 && took < 2_000, `h after ${took} ms (heartbeat_ms = 400)`);
  });

  it('xhr_streaming: 2 KiB prelude, o, frames; the response ends after streaming_bytes and the session goes on', async () => {
    const url = base(ctx.server);
    const res = await fetch(`${url}/xhr_streaming`, { method: 'POST' });
    assert.equal(res.status, 200);
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let text = '';
    const readUntil = async (pred, what) => {
      while (!pred(text)) {
        const { value, done } = await withTimeout(reader.read(), WAIT_MS, what);
        if (done) return true;
        text += decoder.decode(value, { stream: true });
      }
      return false;
    };
    await readUntil((t) => t.includes('o\n'), 'the open frame');
    assert.ok(text.startsWith(`${'h'.repeat(2048)}\no\n`), 'prelude of 2048 h, then o');
    const send = (...m) => post(`${url}/xhr_send`, JSON.stringify(m));
    assert.equal((await send(stompFrame('CONNECT', { 'accept-version': '1.2' }))).status, 204);
    assert.equal((await send(stompFrame('SUBSCRIBE', { id: '0', destination: '/topic/stream' }))).status, 204);
    await readUntil((t) => t.includes('CONNECTED'), 'CONNECTED');
    // 20 x 1 KiB messages exceed streaming_bytes (8 KiB): the response ends, later frames wait.
    for (let i = 0; i < 20; i++) await send(stompFrame('SEND', { destination: '/topic/stream' }, `${i}:${'y'.repeat(1024)}`));
    const ended = await readUntil(() => false, 'the end of the streaming response');
    assert.ok(ended);
    assert.ok(text.length >= 8192 && text.length < 64 * 1024, `response of ${text.length} bytes`);
    const got = messagesOf(text).filter((m) => m.startsWith('MESSAGE'));
    assert.ok(got.length > 0 && got.length < 20, `${got.length} messages in the first response`);
    // The next streaming request carries on where the first stopped.
    const rest = [];
    while (got.length + rest.length < 20) {
      const next = await withTimeout(fetch(`${url}/xhr_streaming`, { method: 'POST' }), WAIT_MS, 'next streaming');
      const r2 = next.body.getReader();
      let t2 = '';
      const deadline = Date.now() + WAIT_MS;
      while (Date.now() < deadline && messagesOf(t2).filter((m) => m.startsWith('MESSAGE')).length + got.length + rest.length < 20) {
        const { value, done } = await withTimeout(r2.read(), WAIT_MS, 'streamed messages');
        if (done) break;
        t2 += decoder.decode(value, { stream: true });
      }
      await r2.cancel().catch(() => {});
      assert.ok(!t2.includes('\no\n'), 'no second open frame');
      rest.push(...messagesOf(t2).filter((m) => m.startsWith('MESSAGE')));
    }
    const indexes = [...got, ...rest].map((m) => Number(m.split('\n\n')[1].split(':')[0]));
    assert.deepEqual(indexes, [...Array(20).keys()]);
  });

  it('eventsource: text/event-stream with data: frames', async () => {
    const res = await fetch(`${base(ctx.server)}/eventsource`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type'), /^text\/event-stream/);
    const reader = res.body.getReader();
    let text = '';
    while (!text.includes('data: h\r\n\r\n')) {
      const { value, done } = await withTimeout(reader.read(), WAIT_MS, 'eventsource frames');
      if (done) break;
      text += new TextDecoder().decode(value);
    }
    await reader.cancel();
    assert.ok(text.startsWith('\r\ndata: o\r\n\r\n'), JSON.stringify(text));
  });

  it('the websocket transport: o, messages as arrays or bare strings, h, c on DISCONNECT', async () => {
    const s = await sockjsWs(ctx.server);
    assert.equal(await s.next(), 'o');
    s.send(JSON.stringify([stompFrame('CONNECT', { 'accept-version': '1.2' }).slice(0, 10)]));
    s.send(JSON.stringify(stompFrame('CONNECT', { 'accept-version': '1.2' }).slice(10)));
    const connected = await s.next();
    assert.match(JSON.parse(connected.slice(1))[0], /^CONNECTED\n/);
    assert.equal(await s.next(2_000, 'an h frame'), 'h');
    s.send(JSON.stringify([stompFrame('SUBSCRIBE', { id: '1', destination: '/topic/w' }), stompFrame('SEND', { destination: '/topic/w' }, 'a'), stompFrame('SEND', { destination: '/topic/w' }, 'b')]));
    const got = [];
    while (got.length < 2) {
      const f = await s.next();
      if (f.startsWith('a[')) got.push(...JSON.parse(f.slice(1)));
    }
    assert.ok(got[0].endsWith(`\n\na${NUL}`) && got[1].endsWith(`\n\nb${NUL}`));
    s.send(JSON.stringify([stompFrame('DISCONNECT', { receipt: 'z' })]));
    let f;
    do { f = await s.next(); } while (f === 'h');
    assert.match(f, /^a\["RECEIPT\\nreceipt-id:z/);
    assert.equal(await s.next(), 'c[3000,"Go away!"]');
    assert.equal((await withTimeout(s.closed, WAIT_MS, 'close')).code, 1000);
  });
});

describe('reaping', () => {
  // Its own server: the reaped counter then counts this test's session alone.
  const ctx = serverFor({ config: '[sockjs]\ndisconnect_delay_ms = 500\n' });

  it('a session nobody polls is reaped: its STOMP session ends, it leaves its room, it is counted', async () => {
    const watcher = await connectClient(ctx.server.url);
    try {
      const room = uniqueId('reap').replace(/[^A-Za-z0-9_-]/g, '_').slice(0, 60);
      const roomSub = await subscribe(watcher, `/topic/room/${room}`);
      const reapedBefore = await metric(ctx.server, 'sockjs_sessions_reaped_total');
      const s = await xhrSession(ctx.server);
      await s.send(stompFrame('CONNECT', { 'accept-version': '1.2' }));
      await s.send(stompFrame('SEND', { destination: `/app/room/${room}/join`, 'content-type': 'application/json' }, '{"username":"ghost"}'));
      const join = JSON.parse((await roomSub.next(WAIT_MS, 'JOIN')).body);
      assert.equal(join.type, 'JOIN');
      assert.equal(join.sender, 'ghost');
      // Stop polling: after disconnect_delay_ms (500) the session is reaped.
      const leave = JSON.parse((await roomSub.next(WAIT_MS, 'LEAVE of the reaped session')).body);
      assert.equal(leave.type, 'LEAVE');
      assert.equal(leave.sender, 'ghost');
      await eventually(async () => (await metric(ctx.server, 'sockjs_sessions_reaped_total')) === reapedBefore + 1, 'the reaped counter');
      assert.equal((await s.send('["x"]')).status, 404);
    } finally {
      await closeClient(watcher);
    }
  });
});

describe('bad SockJS input gets SockJS status codes and is counted', () => {
  const ctx = serverFor({ config: '[sockjs]\nmax_message_bytes = 4096\n' });
  const rejected = (reason) => metric(ctx.server, 'sockjs_rejected_total', `{reason="${reason}"}`);

  it('malformed JSON in xhr_send: 500 "Broken JSON encoding.", the session stays usable', async () => {
    const s = await xhrSession(ctx.server);
    const before = await rejected('broken_json');
    // A bare JSON string is not a SockJS message either (sockjs-node and Spring: 500).
    const bare = JSON.stringify(stompFrame('CONNECT', { 'accept-version': '1.2' }));
    for (const bad of ['[', '["a",]', '{"a":1}', '[1]', 'CONNECT', bare, '"x"', '1', '[["a"]]']) {
      const r = await post(`${s.url}/xhr_send`, bad);
      assert.equal(r.status, 500, bad);
      assert.equal(r.text, 'Broken JSON encoding.', bad);
    }
    assert.equal(await rejected('broken_json'), before + 9);
    assert.equal((await s.send(stompFrame('CONNECT', { 'accept-version': '1.2' }))).status, 204);
    // One CONNECTED and nothing else: the bare string was not taken as a first CONNECT.
    const answer = messagesOf((await s.poll()).text);
    assert.equal(answer.length, 1, JSON.stringify(answer));
    assert.match(answer[0], /^CONNECTED\n/);
  });

  it('an empty xhr_send body: 500 "Payload expected."', async () => {
    const s = await xhrSession(ctx.server);
    const before = await rejected('empty_payload');
    const r = await post(`${s.url}/xhr_send`, '');
    assert.equal(r.status, 500);
    assert.equal(r.text, 'Payload expected.');
    assert.equal(await rejected('empty_payload'), before + 1);
  });

  it('xhr_send to an unknown session: 404', async () => {
    const before = await rejected('unknown_session');
    const r = await post(`${base(ctx.server)}/xhr_send`, '["x"]');
    assert.equal(r.status, 404);
    assert.equal(await rejected('unknown_session'), before + 1);
  });

  it('an oversized xhr_send body: 413, the session stays usable', async () => {
    const s = await xhrSession(ctx.server);
    const before = await rejected('too_large');
    const r = await post(`${s.url}/xhr_send`, JSON.stringify(['x'.repeat(5000)]));
    assert.equal(r.status, 413);
    assert.equal(await rejected('too_large'), before + 1);
    assert.equal((await s.send(stompFrame('CONNECT', { 'accept-version': '1.2' }))).status, 204);
  });

  it('broken JSON on the websocket transport: c[1007] and close, counted', async () => {
    const before = await rejected('broken_json');
    const s = await sockjsWs(ctx.server);
    assert.equal(await s.next(), 'o');
    s.send('{not json');
    assert.equal(await s.next(), 'c[1007,"Broken JSON encoding."]');
    assert.equal((await withTimeout(s.closed, WAIT_MS, 'close')).code, 1007);
    assert.equal(await rejected('broken_json'), before + 1);
  });

  it('unknown paths and transports under /ws/ are 404, wrong methods 405', async () => {
    const before = await rejected('bad_request');
    assert.equal((await fetch(`${ctx.server.http}/ws/iframe.html`)).status, 404);
    assert.equal((await fetch(`${ctx.server.http}/ws/000/abc/jsonp`)).status, 404);
    assert.equal((await fetch(`${ctx.server.http}/ws/000/a.b/xhr`, { method: 'POST' })).status, 404);
    assert.equal((await fetch(`${ctx.server.http}/ws/000/abc/xhr`)).status, 405);
    assert.equal(await rejected('bad_request'), before + 4);
  });
});

describe('the Origin guard applies to SockJS', () => {
  const ctx = serverFor();

  it('a foreign Origin is refused on info, xhr and websocket (403), counted; the page origin passes', async () => {
    const evil = 'http://evil.example';
    const before = await metric(ctx.server, 'sockjs_rejected_total', '{reason="origin"}');
    assert.equal((await fetch(`${ctx.server.http}/ws/info`, { headers: { origin: evil } })).status, 403);
    assert.equal((await fetch(`${base(ctx.server)}/xhr`, { method: 'POST', headers: { origin: evil } })).status, 403);
    const ws = new WebSocket(`${base(ctx.server).replace('http', 'ws')}/websocket`, { origin: evil });
    const status = await withTimeout(new Promise((resolve) => {
      ws.on('unexpected-response', (_req, res) => resolve(res.statusCode));
      ws.on('open', () => resolve(101));
      ws.on('error', () => {});
    }), WAIT_MS, 'the refused upgrade');
    assert.equal(status, 403);
    assert.equal(await metric(ctx.server, 'sockjs_rejected_total', '{reason="origin"}'), before + 3);
    assert.equal((await fetch(`${ctx.server.http}/ws/info`, { headers: { origin: ctx.server.http } })).status, 200);
  });
});

describe('failed logins over SockJS are slowed and logged like any other', () => {
  const ctx = serverFor({ config: "[auth]\nusers = ['alice:secret']\nthrottle_after_failures = 1\nthrottle_delay_ms = 400\n" });

  it('xhr: the second failure from this address waits, each is one WARN line with the address', async () => {
    const tries = [];
    for (let i = 0; i < 2; i++) {
      const s = await xhrSession(ctx.server);
      const started = Date.now();
      assert.equal((await s.send(stompFrame('CONNECT', { 'accept-version': '1.2', login: 'mallory', passcode: 'guess-pw', receipt: `t${i}` }))).status, 204);
      const answer = messagesOf((await s.poll()).text);
      tries.push({ took: Date.now() - started, answer });
    }
    for (const [i, t] of tries.entries()) {
      assert.match(t.answer[0], /^ERROR\n/);
      assert.match(t.answer[0], new RegExp(`receipt-id:t${i}`));
    }
    assert.ok(tries[1].took >= 400, `second failure answered after ${tries[1].took} ms`);
    const warns = ctx.server.stderr().split('\n').filter((l) => l.startsWith('WARN') && l.includes('failed login: login "mallory" from 127.0.0.1 '));
    assert.equal(warns.length, 2, ctx.server.stderr());
    assert.ok(!ctx.server.stderr().includes('guess-pw'), 'the passcode is never logged');
  });
});

describe('SockJS sessions are STOMP connections like any other', () => {
  const ctx = serverFor({ config: '[limits]\nmax_connections = 2\n' });

  it('they count against max_connections and in connections_current', async () => {
    const a = await connectSockJs(ctx.server, 'xhr-streaming');
    const b = await connectClient(ctx.server.url);
    try {
      assert.equal(await metric(ctx.server, 'connections_current'), 2);
      const r = await post(`${base(ctx.server)}/xhr`);
      assert.equal(r.status, 503);
      await assert.rejects(connectSockJs(ctx.server, 'websocket'));
      const receipt = uniqueId('r');
      const p = receiptFor(a, receipt);
      a.publish({ destination: '/topic/limit', body: 'still fine', headers: { receipt } });
      await p;
    } finally {
      await closeClient(a);
      await closeClient(b);
    }
    await eventually(async () => (await metric(ctx.server, 'connections_current')) === 0, 'connections back to 0');
  });
});
