// Interop tests: the official @stomp/stompjs 7 client and the legacy stomp.js 2.3.3 (what Spring
// pages use) against the REAL stomp-edge binary, plus raw-byte STOMP for heart-beats and bad input.
// Run: STOMP_EDGE_BIN=target/debug/stomp-edge node --test tests/js/  (scripts/test.sh does this).

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import StompLegacy from 'stompjs';
import WebSocket from 'ws';

import {
  closeClient, connectClient, encodeFrame, nextMessage, rawWs, receiptFor, sleep, startServer,
  subscribe, uniqueId, withTimeout,
} from './lib/server.mjs';

const AUTH_CONFIG = '[auth]\nusers = ["alice:secret"]\n';
const FAST_HEARTBEAT_CONFIG = '[stomp]\nheartbeat_send_ms = 1000\nheartbeat_receive_ms = 1000\n';

/** Asserts that the socket got an ERROR frame (with a `message` header) and was then closed. */
async function expectErrorThenClose(raw, what, { closeWithinMs = 5_000 } = {}) {
  const frame = await raw.nextFrame(closeWithinMs, `ERROR after ${what}`);
  assert.equal(frame.command, 'ERROR', `expected ERROR after ${what}, got ${frame.command}`);
  assert.ok(frame.headers.message && frame.headers.message.length > 0, `ERROR after ${what} has a message header`);
  await raw.waitClosed(closeWithinMs, `the server to close the socket after ERROR (${what})`);
  return frame;
}

/** Starts a server for a describe block and stops it afterwards. */
function serverFor(options = {}) {
  const ctx = { server: null };
  before(async () => { ctx.server = await startServer(options); });
  after(async () => { await ctx.server?.stop(); });
  return ctx;
}

describe('connect and negotiation', () => {
  const ctx = serverFor();

  it('CONNECTED carries version 1.2, a stomp-edge server header, a session and heart-beat', async () => {
    const client = await connectClient(ctx.server.url);
    try {
      const h = client.connectedFrame.headers;
      assert.equal(h.version, '1.2');
      assert.match(h.server ?? '', /^stomp-edge/);
      assert.ok(h.session && h.session.length > 0, 'session header present');
      assert.match(h['heart-beat'] ?? '', /^\d+,\d+$/);
      assert.equal(client.socket.protocol, 'v12.stomp', 'highest offered subprotocol wins');
    } finally {
      await closeClient(client);
    }
  });

  it('gives every connection its own session id', async () => {
    const a = await connectClient(ctx.server.url);
    const b = await connectClient(ctx.server.url);
    try {
      assert.notEqual(a.connectedFrame.headers.session, b.connectedFrame.headers.session);
    } finally {
      await closeClient(a);
      await closeClient(b);
    }
  });

  it('picks the highest offered subprotocol and negotiates the version from CONNECT', async () => {
    const raw = await rawWs(ctx.server.url, { protocols: ['v10.stomp', 'v11.stomp'] });
    try {
      assert.equal(raw.protocol, 'v11.stomp');
      const f = await raw.connect({ 'accept-version': '1.0,1.1' });
      assert.equal(f.command, 'CONNECTED');
      assert.equal(f.headers.version, '1.1');
    } finally {
      await raw.close();
    }
  });

  it('accepts a client that offers no subprotocol', async () => {
    const raw = await rawWs(ctx.server.url, { protocols: [] });
    try {
      assert.equal(raw.protocol, '');
      const f = await raw.connect({ 'accept-version': '1.1,1.2' });
      assert.equal(f.command, 'CONNECTED');
      assert.equal(f.headers.version, '1.2');
    } finally {
      await raw.close();
    }
  });

  it('accepts the STOMP command as well as CONNECT', async () => {
    const raw = await rawWs(ctx.server.url);
    try {
      raw.sendFrame('STOMP', { 'accept-version': '1.2', host: '127.0.0.1' });
      const f = await raw.nextFrame(5_000, 'CONNECTED');
      assert.equal(f.command, 'CONNECTED');
      assert.equal(f.headers.version, '1.2');
    } finally {
      await raw.close();
    }
  });
});

describe('messaging with @stomp/stompjs 7', () => {
  const ctx = serverFor();
  let pub;
  let sub;
  before(async () => {
    pub = await connectClient(ctx.server.url);
    sub = await connectClient(ctx.server.url);
  });
  after(async () => {
    await closeClient(pub);
    await closeClient(sub);
  });

  it('subscribes with a receipt, then sends and receives on /topic/test', async () => {
    const s = await subscribe(sub, '/topic/test'); // waits for the RECEIPT
    try {
      pub.publish({ destination: '/topic/test', body: 'hello' });
      const msg = await nextMessage(s);
      assert.equal(msg.body, 'hello');
      assert.equal(msg.headers.destination, '/topic/test');
      assert.equal(msg.headers.subscription, s.id);
      assert.ok(msg.headers['message-id'], 'message-id present');
      assert.equal(msg.headers['content-length'], '5');
    } finally {
      s.unsubscribe();
    }
  });

  it('passes custom headers and content-type through to MESSAGE (with 1.2 escaping)', async () => {
    const dest = `/topic/${uniqueId('headers')}`;
    const s = await subscribe(sub, dest);
    try {
      const headers = {
        'content-type': 'text/plain;charset=utf-8',
        'x-trace': 'abc',
        'x-colon': 'a:b:c',
        'x-backslash': 'c:\\temp',
        'x-newline': 'line1\nline2',
      };
      pub.publish({ destination: dest, body: 'one', headers });
      pub.publish({ destination: dest, body: 'two', headers: { 'x-trace': 'def' } });
      const m1 = await nextMessage(s);
      const m2 = await nextMessage(s);
      for (const [k, v] of Object.entries(headers)) assert.equal(m1.headers[k], v, `header ${k}`);
      assert.equal(m1.headers.destination, dest);
      assert.equal(m1.headers.subscription, s.id);
      assert.equal(m1.headers['content-length'], '3');
      assert.equal(m2.headers['x-trace'], 'def');
      assert.ok(m1.headers['message-id'] && m2.headers['message-id']);
      assert.notEqual(m1.headers['message-id'], m2.headers['message-id'], 'message ids are unique');
    } finally {
      s.unsubscribe();
    }
  });

  it('round-trips a UTF-8 body (Korean and emoji) with a byte content-length', async () => {
    const dest = `/topic/${uniqueId('utf8')}`;
    const s = await subscribe(sub, dest);
    try {
      const body = '안녕하세요, 채팅방에 오신 것을 환영합니다 🎉🚀 — ünïcödé';
      pub.publish({ destination: dest, body, headers: { 'content-type': 'text/plain;charset=utf-8' } });
      const msg = await nextMessage(s);
      assert.equal(msg.body, body);
      assert.equal(Number(msg.headers['content-length']), Buffer.byteLength(body, 'utf8'));
    } finally {
      s.unsubscribe();
    }
  });

  it('round-trips a 64 KiB body', async () => {
    const dest = `/topic/${uniqueId('big')}`;
    const s = await subscribe(sub, dest);
    try {
      const unit = '0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_';
      const body = unit.repeat(65536 / unit.length);
      assert.equal(body.length, 65536);
      pub.publish({ destination: dest, body });
      const msg = await nextMessage(s, 10_000);
      assert.equal(msg.body.length, body.length);
      assert.ok(msg.body === body, '64 KiB body arrives byte for byte');
      assert.equal(msg.headers['content-length'], '65536');
    } finally {
      s.unsubscribe();
    }
  });

  it('delivers 1000 messages from one publisher in order to two subscribers', async () => {
    const dest = `/topic/${uniqueId('order')}`;
    const other = await connectClient(ctx.server.url);
    try {
      const s1 = await subscribe(sub, dest);
      const s2 = await subscribe(other, dest);
      const N = 1000;
      for (let i = 0; i < N; i++) pub.publish({ destination: dest, body: String(i) });
      const collect = async (s, name) => {
        const got = [];
        for (let i = 0; i < N; i++) got.push(Number((await nextMessage(s, 15_000, `${name} message #${i}`)).body));
        return got;
      };
      const [g1, g2] = await withTimeout(Promise.all([collect(s1, 'subscriber 1'), collect(s2, 'subscriber 2')]), 20_000, '1000 messages x 2');
      const expected = Array.from({ length: N }, (_, i) => i);
      assert.deepEqual(g1, expected);
      assert.deepEqual(g2, expected);
      s1.unsubscribe();
    } finally {
      await closeClient(other);
    }
  });

  it('stops delivery after UNSUBSCRIBE', async () => {
    const dest = `/topic/${uniqueId('unsub')}`;
    const marker = `/topic/${uniqueId('marker')}`;
    const s = await subscribe(sub, dest);
    const m = await subscribe(sub, marker);
    try {
      pub.publish({ destination: dest, body: 'before' });
      assert.equal((await nextMessage(s)).body, 'before');
      const rid = uniqueId('unsub');
      const receipt = receiptFor(sub, rid);
      s.unsubscribe({ receipt: rid });
      await receipt;
      const unhandledBefore = sub.unhandled.length;
      pub.publish({ destination: dest, body: 'after' });
      pub.publish({ destination: marker, body: 'marker' });
      assert.equal((await nextMessage(m)).body, 'marker');
      await sleep(200); // a stray delivery on the old subscription would have arrived with or before the marker
      assert.equal(s.messages.length, 1, 'no MESSAGE on the unsubscribed subscription');
      assert.equal(sub.unhandled.length, unhandledBefore, 'no MESSAGE for an unknown subscription');
    } finally {
      m.unsubscribe();
    }
  });

  it('sends a RECEIPT for a SEND that asks for one', async () => {
    const rid = uniqueId('send');
    const receipt = receiptFor(pub, rid);
    pub.publish({ destination: `/topic/${uniqueId('receipt')}`, body: 'x', headers: { receipt: rid } });
    const frame = await receipt;
    assert.equal(frame.headers['receipt-id'], rid);
  });
});

describe('DISCONNECT', () => {
  const ctx = serverFor();

  it('answers DISCONNECT with its RECEIPT, then closes', async () => {
    const raw = await rawWs(ctx.server.url);
    try {
      assert.equal((await raw.connect()).command, 'CONNECTED');
      raw.sendFrame('DISCONNECT', { receipt: 'bye-42' });
      const f = await raw.nextFrame(5_000, 'RECEIPT for DISCONNECT');
      assert.equal(f.command, 'RECEIPT');
      assert.equal(f.headers['receipt-id'], 'bye-42');
      await raw.waitClosed(5_000, 'close after the DISCONNECT receipt');
    } finally {
      await raw.close();
    }
  });

  it('a @stomp/stompjs client deactivates cleanly', async () => {
    const client = await connectClient(ctx.server.url);
    await withTimeout(client.deactivate(), 5_000, 'deactivate');
    assert.equal(client.connected, false);
  });
});

describe('heart-beats', () => {
  describe('default server (10000,10000)', () => {
    const ctx = serverFor();

    it('CONNECTED heart-beat for a 1000,1000 request is max(client, server) = 10000,10000', async () => {
      const raw = await rawWs(ctx.server.url);
      try {
        const f = await raw.connect({ 'heart-beat': '1000,1000' });
        assert.equal(f.command, 'CONNECTED');
        assert.equal(f.headers['heart-beat'], '10000,10000');
      } finally {
        await raw.close();
      }
    });

    it('a stompjs client asking for 1000,1000 sees the server honour it', async () => {
      const client = await connectClient(ctx.server.url, { heartbeatIncoming: 1000, heartbeatOutgoing: 1000 });
      try {
        const [sx, sy] = client.connectedFrame.headers['heart-beat'].split(',').map(Number);
        assert.ok(sx > 0, 'server sends heart-beats when the client asks for them');
        assert.ok(sy > 0, 'server expects heart-beats when the client offers them');
      } finally {
        await closeClient(client);
      }
    });
  });

  describe('server configured for 1000,1000', () => {
    const ctx = serverFor({ config: FAST_HEARTBEAT_CONFIG });

    it('CONNECTED heart-beat for a 1000,1000 request is 1000,1000', async () => {
      const raw = await rawWs(ctx.server.url);
      try {
        const f = await raw.connect({ 'heart-beat': '1000,1000' });
        assert.equal(f.headers['heart-beat'], '1000,1000');
      } finally {
        await raw.close();
      }
    });

    it('a stompjs client with heartbeatIncoming/Outgoing 1000 stays connected for 3.5 s', async () => {
      const client = await connectClient(ctx.server.url, { heartbeatIncoming: 1000, heartbeatOutgoing: 1000 });
      let closedEarly = false;
      client.closed.then(() => { closedEarly = true; });
      try {
        assert.equal(client.connectedFrame.headers['heart-beat'], '1000,1000');
        await sleep(3_500);
        assert.equal(closedEarly, false, 'connection survived 3.5 s of heart-beats both ways');
        assert.equal(client.connected, true);
        assert.deepEqual(client.stompErrors, []);
        const s = await subscribe(client, `/topic/${uniqueId('hb')}`);
        client.publish({ destination: s.destination, body: 'still alive' });
        assert.equal((await nextMessage(s)).body, 'still alive');
      } finally {
        await closeClient(client);
      }
    });

    it('sends heart-beats on time to a client that asks (0,1000) and does not close it for its silence', async () => {
      const raw = await rawWs(ctx.server.url);
      try {
        const f = await raw.connect({ 'heart-beat': '0,1000' });
        assert.equal(f.command, 'CONNECTED');
        const [sx] = f.headers['heart-beat'].split(',').map(Number);
        assert.equal(sx, 1000, 'server sends every max(1000, 1000) ms');
        const start = Date.now();
        await sleep(3_500);
        assert.equal(raw.isClosed(), false, 'a client that promised no heart-beats is not closed for silence');
        const beats = raw.heartbeats.filter((t) => t >= start);
        assert.ok(beats.length >= 2, `at least 2 heart-beats in 3.5 s (got ${beats.length})`);
        assert.deepEqual(raw.frames.slice(1).map((x) => x.command), [], 'no frames besides CONNECTED');
      } finally {
        await raw.close();
      }
    });

    it('closes a client that promised 1000 ms heart-beats and went silent, with an ERROR', async () => {
      const raw = await rawWs(ctx.server.url);
      try {
        const f = await raw.connect({ 'heart-beat': '1000,0' });
        assert.equal(f.command, 'CONNECTED');
        const [, sy] = f.headers['heart-beat'].split(',').map(Number);
        assert.equal(sy, 1000);
        const start = Date.now();
        // Negotiated interval 1000 ms: closed after more than 2x that, bounded by 2x + 2.5 s slack.
        const err = await expectErrorThenClose(raw, 'missed heart-beats', { closeWithinMs: 2 * 1000 + 2_500 });
        const elapsed = err.at - start;
        assert.ok(elapsed >= 1_500, `not closed too early (${elapsed} ms)`);
      } finally {
        await raw.close();
      }
    });
  });
});

describe('authentication', () => {
  const ctx = serverFor({ config: AUTH_CONFIG });

  it('rejects a wrong passcode with ERROR, then closes the socket', async () => {
    const err = await connectClient(ctx.server.url, { connectHeaders: { login: 'alice', passcode: 'wrong' } })
      .then(() => null, (e) => e);
    assert.ok(err, 'connect with a wrong passcode must fail');
    assert.ok(err.frame, `got an ERROR frame (got: ${err.message})`);
    assert.equal(err.frame.command, 'ERROR');
    assert.ok(err.frame.headers.message, 'ERROR has a message header');

    const raw = await rawWs(ctx.server.url);
    try {
      raw.sendFrame('CONNECT', { 'accept-version': '1.2', host: '127.0.0.1', login: 'alice', passcode: 'wrong' });
      await expectErrorThenClose(raw, 'bad credentials');
    } finally {
      await raw.close();
    }
  });

  it('accepts alice/secret', async () => {
    const client = await connectClient(ctx.server.url, { connectHeaders: { login: 'alice', passcode: 'secret' } });
    try {
      assert.equal(client.connectedFrame.headers.version, '1.2');
      const s = await subscribe(client, `/topic/${uniqueId('auth')}`);
      client.publish({ destination: s.destination, body: 'authed' });
      assert.equal((await nextMessage(s)).body, 'authed');
    } finally {
      await closeClient(client);
    }
  });

  it('rejects a client without login with ERROR, then closes', async () => {
    const raw = await rawWs(ctx.server.url);
    try {
      raw.sendFrame('CONNECT', { 'accept-version': '1.2', host: '127.0.0.1' });
      await expectErrorThenClose(raw, 'CONNECT without login');
    } finally {
      await raw.close();
    }
  });

  it('rejects an unknown user', async () => {
    const raw = await rawWs(ctx.server.url);
    try {
      raw.sendFrame('CONNECT', { 'accept-version': '1.2', host: '127.0.0.1', login: 'mallory', passcode: 'secret' });
      await expectErrorThenClose(raw, 'unknown user');
    } finally {
      await raw.close();
    }
  });
});

describe('malformed frames', () => {
  const ctx = serverFor();

  const connected = async () => {
    const raw = await rawWs(ctx.server.url);
    const f = await raw.connect();
    assert.equal(f.command, 'CONNECTED');
    return raw;
  };

  it('an unknown command as the first frame gets ERROR, then close', async () => {
    const raw = await rawWs(ctx.server.url);
    try {
      raw.send('BOGUS\n\n\0');
      await expectErrorThenClose(raw, 'BOGUS before CONNECT');
    } finally {
      await raw.close();
    }
  });

  it('SEND before CONNECT gets ERROR, then close', async () => {
    const raw = await rawWs(ctx.server.url);
    try {
      raw.send('SEND\ndestination:/topic/x\n\nhi\0');
      await expectErrorThenClose(raw, 'SEND before CONNECT');
    } finally {
      await raw.close();
    }
  });

  it('an unknown command after CONNECT gets ERROR, then close', async () => {
    const raw = await connected();
    try {
      raw.send('BOGUS\n\n\0');
      await expectErrorThenClose(raw, 'BOGUS after CONNECT');
    } finally {
      await raw.close();
    }
  });

  it('a header line without a colon gets ERROR, then close', async () => {
    const raw = await connected();
    try {
      raw.send('SEND\ndestination:/topic/x\nthis-line-has-no-colon\n\nhi\0');
      await expectErrorThenClose(raw, 'header line without colon');
    } finally {
      await raw.close();
    }
  });

  it('SUBSCRIBE without id (1.2) gets ERROR carrying the receipt-id, then close', async () => {
    const raw = await connected();
    try {
      raw.send('SUBSCRIBE\ndestination:/topic/x\nreceipt:r-77\n\n\0');
      const err = await expectErrorThenClose(raw, 'SUBSCRIBE without id');
      assert.equal(err.headers['receipt-id'], 'r-77');
    } finally {
      await raw.close();
    }
  });

  it('a frame over the size limit is refused and the socket closed', async () => {
    const raw = await connected();
    try {
      raw.send(encodeFrame('SEND', { destination: '/topic/x' }, Buffer.alloc(512 * 1024, 0x61)));
      await raw.waitClosed(5_000, 'close after an oversized frame');
      for (const f of raw.frames.slice(1)) {
        assert.equal(f.command, 'ERROR');
        assert.ok(f.headers.message, 'ERROR has a message header');
      }
    } finally {
      await raw.close();
    }
  });

  it('serves other clients normally after all that', async () => {
    const client = await connectClient(ctx.server.url);
    try {
      const s = await subscribe(client, `/topic/${uniqueId('after-bad')}`);
      client.publish({ destination: s.destination, body: 'fine' });
      assert.equal((await nextMessage(s)).body, 'fine');
    } finally {
      await closeClient(client);
    }
  });
});

describe('legacy stomp.js 2.3.3 (Spring pages)', () => {
  const ctx = serverFor();

  /** Promise-wraps the callback API of stomp.js 2.3.3 over a `ws` WebSocket. */
  function legacyConnect(ws) {
    const client = StompLegacy.over(ws);
    client.debug = null;
    const errors = [];
    const connected = new Promise((resolve, reject) => {
      client.connect({}, (frame) => resolve(frame), (err) => { errors.push(err); reject(new Error(`legacy connect failed: ${typeof err === 'string' ? err : err?.headers?.message}`)); });
    });
    return { client, errors, connected: withTimeout(connected, 5_000, 'legacy CONNECTED') };
  }

  it('sends CONNECTED and MESSAGE as WebSocket text frames (stomp.js 2.3.3 decodes binary ones byte by byte)', async () => {
    const raw = await rawWs(ctx.server.url, { protocols: [] });
    try {
      const f = await raw.connect({ 'accept-version': '1.1,1.0' });
      assert.equal(f.command, 'CONNECTED');
      assert.equal(f.binary, false, 'CONNECTED is a text frame');
      const dest = `/topic/${uniqueId('textframes')}`;
      raw.sendFrame('SUBSCRIBE', { id: 'sub-0', destination: dest, receipt: 'r-sub' });
      assert.equal((await raw.nextFrame(5_000, 'RECEIPT r-sub')).headers['receipt-id'], 'r-sub');
      raw.sendFrame('SEND', { destination: dest, 'content-type': 'text/plain;charset=utf-8' }, '채팅 👋');
      const m = await raw.nextFrame(5_000, 'MESSAGE');
      assert.equal(m.command, 'MESSAGE');
      assert.equal(m.text, '채팅 👋');
      assert.equal(m.binary, false, 'a UTF-8 MESSAGE is a text frame, so legacy clients decode it as UTF-8');
    } finally {
      await raw.close();
    }
  });

  for (const [label, protocols] of [
    ['new WebSocket(url) with no subprotocol, as Spring pages do', null],
    ['the v10/v11 subprotocols Stomp.client() offers', ['v10.stomp', 'v11.stomp']],
  ]) {
    it(`connects, subscribes, sends and receives: ${label}`, async () => {
      const ws = protocols ? new WebSocket(ctx.server.url, protocols) : new WebSocket(ctx.server.url);
      ws.on('error', () => {});
      const { client, errors, connected } = legacyConnect(ws);
      try {
        const frame = await connected;
        assert.equal(frame.headers.version, '1.1', 'legacy client offers accept-version:1.1,1.0');
        assert.match(frame.headers['heart-beat'] ?? '', /^\d+,\d+$/);
        if (protocols) assert.equal(ws.protocol, 'v11.stomp');

        const dest = `/topic/${uniqueId('legacy')}`;
        const got = [];
        let wake = null;
        client.subscribe(dest, (m) => { got.push(m); wake?.(); });
        // stomp.js 2.3.3 has no receipt helper; a round trip through the broker shows the SUBSCRIBE landed.
        const deadline = Date.now() + 5_000;
        let n = 0;
        while (got.length === 0 && Date.now() < deadline) {
          client.send(dest, { 'x-legacy': 'yes', 'content-type': 'text/plain' }, `probe ${n++}`);
          await new Promise((resolve) => { wake = resolve; setTimeout(resolve, 100); });
        }
        assert.ok(got.length > 0, 'legacy client received its own broadcast');
        got.length = 0;
        const body = 'legacy hello 안녕 🙂';
        client.send(dest, { 'x-legacy': 'yes' }, body);
        const until = Date.now() + 5_000;
        while (!got.some((m) => m.body === body) && Date.now() < until) {
          await new Promise((resolve) => { wake = resolve; setTimeout(resolve, 100); });
        }
        const msg = got.find((m) => m.body === body);
        assert.ok(msg, `legacy client received "${body}" (got ${JSON.stringify(got.map((m) => m.body))})`);
        assert.equal(msg.headers['x-legacy'], 'yes');
        assert.equal(msg.headers.destination, dest);
        assert.ok(msg.headers.subscription, 'subscription header');
        assert.ok(msg.headers['message-id'], 'message-id header');
        assert.deepEqual(errors, []);
      } finally {
        await new Promise((resolve) => client.disconnect(resolve));
        ws.terminate();
      }
    });
  }
});
