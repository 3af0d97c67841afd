// Chat rooms under Node with @stomp/stompjs 7 against the REAL stomp-edge binary: the contract's
// JOIN/CHAT/LEAVE JSON on /topic/room/{roomId}, every validation error on /user/queue/errors
// (the session stays open), every leave path (leave frame, switching rooms, DISCONNECT, socket
// close, heart-beat timeout), the configured room limits and the /api/rooms REST shapes.
// Run: STOMP_EDGE_BIN=target/debug/stomp-edge node --test tests/js/chat.test.mjs

import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';

import {
  closeClient, connectClient, rawWs, receiptFor, sleep, startServer, subscribe, uniqueId, withTimeout,
} from './lib/server.mjs';

/** The application error codes this suite expects on /user/queue/errors, in one place. */
const CODES = Object.freeze({
  notJoined: 'not_joined', // message (or leave) from a session that is not in that room
  invalidRoomId: 'invalid_room_id', // roomId not 1-64 chars of [A-Za-z0-9_-]
  invalidUsername: 'invalid_username', // username not 1-32 chars, or with a control character
  invalidMessage: 'invalid_message', // chat message over 4096 bytes of UTF-8
  invalidPayload: 'invalid_payload', // body that is not the expected JSON
  usernameTaken: 'username_taken', // another session in the room has that name
  roomFull: 'room_full', // room at max_participants_per_room
  tooManyRooms: 'too_many_rooms', // node at max_rooms
});

const EVENT_KEYS = ['message', 'participantCount', 'roomId', 'sender', 'timestamp', 'type'];
const ERROR_KEYS = ['code', 'destination', 'message'];
const QUIET_MS = 300; // how long "nothing else arrives" is watched for

const LIMITS_CONFIG = '[chat]\nmax_participants_per_room = 2\nmax_rooms = 2\n';
const HEARTBEAT_CONFIG = '[stomp]\nheartbeat_receive_ms = 1000\n';

// ---------------------------------------------------------------------------------------------
// Helpers

/** Starts a server for a describe block, and closes every chat client a test opened. */
function serverFor(options = {}) {
  const ctx = { server: null, clients: [] };
  before(async () => { ctx.server = await startServer(options); });
  afterEach(async () => {
    await Promise.all(ctx.clients.splice(0).map((c) => closeClient(c.client).catch(() => {})));
  });
  after(async () => { await ctx.server?.stop(); });
  return ctx;
}

/** A connected client already subscribed to its /user/queue/errors, with chat verbs. */
async function chatter(ctx, opts = {}) {
  const client = await connectClient(ctx.server.url, opts);
  const c = {
    client,
    errors: await subscribe(client, '/user/queue/errors'),
    watch: (room) => subscribe(client, `/topic/room/${room}`),
    /** SEND with a receipt, resolved once the server has handled the frame. */
    async send(destination, body, headers = {}) {
      const receipt = uniqueId('chat');
      const got = receiptFor(client, receipt);
      client.publish({ destination, body, headers: { ...headers, receipt } });
      await got;
    },
    join: (room, username) => c.send(`/app/room/${room}/join`, JSON.stringify({ username }), { 'content-type': 'application/json' }),
    say: (room, message) => c.send(`/app/room/${room}/message`, JSON.stringify({ message }), { 'content-type': 'application/json' }),
    leave: (room, body = '{}') => c.send(`/app/room/${room}/leave`, body),
  };
  ctx.clients.push(c);
  return c;
}

/** The next MESSAGE on a /topic/room subscription, as parsed JSON (content-type checked). */
async function nextEvent(sub, what = `event on ${sub.destination}`) {
  const msg = await sub.next(5_000, what);
  assert.match(msg.headers['content-type'] ?? '', /^application\/json\b/, `${what}: content-type`);
  return JSON.parse(msg.body);
}

/** Asserts the contract's event JSON: exactly its keys, and the given values. */
function assertEvent(ev, { type, roomId, sender, participantCount, message }) {
  assert.deepEqual(Object.keys(ev).sort(), EVENT_KEYS, `event keys of ${JSON.stringify(ev)}`);
  assert.equal(ev.type, type);
  assert.equal(ev.roomId, roomId);
  assert.equal(ev.sender, sender);
  assert.ok(Number.isInteger(ev.timestamp), `timestamp is an integer: ${ev.timestamp}`);
  assert.ok(Math.abs(Date.now() - ev.timestamp) < 5_000, `timestamp ${ev.timestamp} is epoch ms of now`);
  assert.equal(ev.participantCount, participantCount);
  if (type === 'CHAT') assert.equal(ev.message, message);
  else assert.ok(ev.message === null || typeof ev.message === 'string', 'JOIN/LEAVE message is a string or null');
}

/** Waits for the next event on `sub` and checks it. */
async function expectEvent(sub, expected) {
  const ev = await nextEvent(sub, `${expected.type} of ${expected.sender} on ${sub.destination}`);
  assertEvent(ev, expected);
  return ev;
}

/** Asserts the next message on the client's /user/queue/errors is `{code, message, destination}`. */
async function expectError(c, code, destination) {
  const msg = await c.errors.next(5_000, `${code} error for ${destination}`);
  assert.match(msg.headers['content-type'] ?? '', /^application\/json\b/, 'error content-type');
  const err = JSON.parse(msg.body);
  assert.deepEqual(Object.keys(err).sort(), ERROR_KEYS, `error keys of ${msg.body}`);
  assert.equal(err.code, code, `error code in ${msg.body}`);
  assert.equal(typeof err.message, 'string');
  assert.ok(err.message.length > 0, 'error has a human-readable message');
  assert.equal(err.destination, destination, `error destination in ${msg.body}`);
  assert.equal(c.client.connected, true, 'the session stays open after an application error');
  return err;
}

/** Asserts nothing more arrives on `sub` for a short while. */
async function expectQuiet(sub, what) {
  const before = sub.messages.length;
  await sleep(QUIET_MS);
  assert.equal(sub.messages.length, before, `nothing more on ${sub.destination} (${what}): ${sub.messages.slice(before).map((m) => m.body).join(' | ')}`);
}

async function getJson(ctx, path) {
  const res = await withTimeout(fetch(ctx.server.http + path), 5_000, `GET ${path}`);
  const text = await res.text();
  return { status: res.status, type: res.headers.get('content-type') ?? '', body: text ? JSON.parse(text) : null };
}

async function participantsOf(ctx, room) {
  const r = await getJson(ctx, `/api/rooms/${room}`);
  return r.status === 404 ? null : [...r.body.participants].sort();
}

async function roomCount(ctx, room) {
  const r = await getJson(ctx, '/api/rooms');
  return r.body.find((x) => x.roomId === room)?.participantCount ?? null;
}

/** Retries `check` (bounded) until it stops throwing: REST reads after a broadcast. */
async function eventually(check, ms = 2_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await check();
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await sleep(50);
    }
  }
}

const roomName = (prefix) => uniqueId(prefix).replace(/[^A-Za-z0-9_-]/g, '_').slice(0, 64);

// ---------------------------------------------------------------------------------------------

describe('chat rooms: join, message, leave', () => {
  const ctx = serverFor();

  it('broadcasts the contract JSON for JOIN, CHAT and LEAVE to every subscriber', async () => {
    const room = roomName('flow');
    const alice = await chatter(ctx);
    const bob = await chatter(ctx);
    const observer = await chatter(ctx); // subscribed only, never joins
    const a = await alice.watch(room);
    const b = await bob.watch(room);
    const o = await observer.watch(room);

    await alice.join(room, 'alice');
    for (const s of [a, b, o]) await expectEvent(s, { type: 'JOIN', roomId: room, sender: 'alice', participantCount: 1 });
    await bob.join(room, 'bob');
    for (const s of [a, b, o]) await expectEvent(s, { type: 'JOIN', roomId: room, sender: 'bob', participantCount: 2 });

    const text = 'hi <b>bob</b> & "friends" — 안녕 👋';
    await alice.say(room, text);
    for (const s of [a, b, o]) await expectEvent(s, { type: 'CHAT', roomId: room, sender: 'alice', participantCount: 2, message: text });
    await bob.say(room, 'hello alice');
    for (const s of [a, b, o]) await expectEvent(s, { type: 'CHAT', roomId: room, sender: 'bob', participantCount: 2, message: 'hello alice' });

    await bob.leave(room);
    for (const s of [a, b, o]) await expectEvent(s, { type: 'LEAVE', roomId: room, sender: 'bob', participantCount: 1 });
    await alice.leave(room, ''); // an empty body is a leave too
    for (const s of [a, o]) await expectEvent(s, { type: 'LEAVE', roomId: room, sender: 'alice', participantCount: 0 });
    await expectQuiet(o, 'after both left');
  });

  it('GET /api/rooms and /api/rooms/{roomId} show rooms and participants; empty rooms disappear', async () => {
    const room = roomName('rest');
    const alice = await chatter(ctx);
    const bob = await chatter(ctx);
    const w = await alice.watch(room);
    await alice.join(room, 'alice');
    await bob.join(room, 'bob');
    await expectEvent(w, { type: 'JOIN', roomId: room, sender: 'alice', participantCount: 1 });
    await expectEvent(w, { type: 'JOIN', roomId: room, sender: 'bob', participantCount: 2 });

    const list = await getJson(ctx, '/api/rooms');
    assert.equal(list.status, 200);
    assert.match(list.type, /^application\/json\b/);
    assert.ok(Array.isArray(list.body), '/api/rooms is an array');
    for (const r of list.body) {
      assert.deepEqual(Object.keys(r).sort(), ['participantCount', 'roomId'], `room entry ${JSON.stringify(r)}`);
    }
    assert.deepEqual(list.body.find((r) => r.roomId === room), { roomId: room, participantCount: 2 });

    const one = await getJson(ctx, `/api/rooms/${room}`);
    assert.equal(one.status, 200);
    assert.match(one.type, /^application\/json\b/);
    assert.deepEqual(Object.keys(one.body).sort(), ['participants', 'roomId']);
    assert.equal(one.body.roomId, room);
    assert.deepEqual([...one.body.participants].sort(), ['alice', 'bob']);

    const missing = await getJson(ctx, `/api/rooms/${roomName('nobody-here')}`);
    assert.equal(missing.status, 404);
    assert.match(missing.type, /^application\/json\b/, '404 is JSON too');
    assert.equal(typeof missing.body, 'object');

    await bob.leave(room);
    await expectEvent(w, { type: 'LEAVE', roomId: room, sender: 'bob', participantCount: 1 });
    await eventually(async () => assert.deepEqual(await participantsOf(ctx, room), ['alice']));
    await eventually(async () => assert.equal(await roomCount(ctx, room), 1));
    await alice.leave(room);
    await expectEvent(w, { type: 'LEAVE', roomId: room, sender: 'alice', participantCount: 0 });
    await eventually(async () => assert.equal(await roomCount(ctx, room), null, 'empty room left /api/rooms'));
    assert.equal((await getJson(ctx, `/api/rooms/${room}`)).status, 404, 'empty room is gone');
  });

  it('one session is in one room: joining B leaves A (LEAVE in A, JOIN in B)', async () => {
    const roomA = roomName('switch-a');
    const roomB = roomName('switch-b');
    const alice = await chatter(ctx);
    const watcher = await chatter(ctx);
    const wa = await watcher.watch(roomA);
    const wb = await watcher.watch(roomB);
    await watcher.join(roomA, 'watcher');
    await expectEvent(wa, { type: 'JOIN', roomId: roomA, sender: 'watcher', participantCount: 1 });

    await alice.join(roomA, 'alice');
    await expectEvent(wa, { type: 'JOIN', roomId: roomA, sender: 'alice', participantCount: 2 });
    await alice.join(roomB, 'alice');
    await expectEvent(wa, { type: 'LEAVE', roomId: roomA, sender: 'alice', participantCount: 1 });
    await expectEvent(wb, { type: 'JOIN', roomId: roomB, sender: 'alice', participantCount: 1 });

    await alice.say(roomB, 'in B now');
    await expectEvent(wb, { type: 'CHAT', roomId: roomB, sender: 'alice', participantCount: 1, message: 'in B now' });
    await expectQuiet(wa, 'a message in B is not broadcast in A');
    assert.deepEqual(await participantsOf(ctx, roomA), ['watcher']);
    assert.deepEqual(await participantsOf(ctx, roomB), ['alice']);

    // Saying something in A, which alice left, is refused.
    await alice.say(roomA, 'still in A?');
    await expectError(alice, CODES.notJoined, `/app/room/${roomA}/message`);
    await expectQuiet(wa, 'no broadcast for a refused message');
  });

  it('after a leave frame the session is out: its messages are refused', async () => {
    const room = roomName('left');
    const alice = await chatter(ctx);
    const w = await alice.watch(room);
    await alice.join(room, 'alice');
    await expectEvent(w, { type: 'JOIN', roomId: room, sender: 'alice', participantCount: 1 });
    await alice.leave(room);
    await expectEvent(w, { type: 'LEAVE', roomId: room, sender: 'alice', participantCount: 0 });
    await alice.say(room, 'anyone?');
    await expectError(alice, CODES.notJoined, `/app/room/${room}/message`);
    await expectQuiet(w, 'no broadcast after leaving');
  });
});

describe('chat rooms: validation errors go to /user/queue/errors and the session stays open', () => {
  const ctx = serverFor();

  it('a message before join gets not_joined, no broadcast, and the session can still join', async () => {
    const room = roomName('early');
    const c = await chatter(ctx);
    const w = await c.watch(room);
    await c.say(room, 'too early');
    await expectError(c, CODES.notJoined, `/app/room/${room}/message`);
    await expectQuiet(w, 'a message before join');
    await c.join(room, 'carol');
    await expectEvent(w, { type: 'JOIN', roomId: room, sender: 'carol', participantCount: 1 });
    await c.say(room, 'now it works');
    await expectEvent(w, { type: 'CHAT', roomId: room, sender: 'carol', participantCount: 1, message: 'now it works' });
  });

  it('invalid room ids (empty, 65 characters, bad characters) get invalid_room_id', async () => {
    const c = await chatter(ctx);
    const bad = ['', 'a'.repeat(65), 'a.b', 'a b', 'caf\u00e9', 'a*'];
    for (const id of bad) {
      const destination = `/app/room/${id}/join`;
      await c.send(destination, JSON.stringify({ username: 'dave' }));
      await expectError(c, CODES.invalidRoomId, destination);
    }
    // A message to an invalid room id is refused for the id, too.
    await c.say('a.b', 'hello');
    await expectError(c, CODES.invalidRoomId, '/app/room/a.b/message');
    assert.equal((await getJson(ctx, '/api/rooms')).body.some((r) => !/^[A-Za-z0-9_-]{1,64}$/.test(r.roomId)), false);

    // 64 characters of the whole alphabet is fine, on the same session.
    const longest = ('Az09_-' + 'x'.repeat(64)).slice(0, 64);
    const w = await c.watch(longest);
    await c.join(longest, 'dave');
    await expectEvent(w, { type: 'JOIN', roomId: longest, sender: 'dave', participantCount: 1 });
  });

  it('invalid usernames (empty, 33 characters, control characters) get invalid_username', async () => {
    const room = roomName('names');
    const c = await chatter(ctx);
    const w = await c.watch(room);
    for (const name of ['', 'e'.repeat(33), 'bell\u0007', 'new\nline', 'tab\there', 'del\u007f']) {
      await c.join(room, name);
      await expectError(c, CODES.invalidUsername, `/app/room/${room}/join`);
    }
    await expectQuiet(w, 'refused joins');
    assert.equal(await roomCount(ctx, room), null, 'no room was created by refused joins');

    // 32 characters is fine, counted in characters, not bytes (32 Hangul syllables = 96 bytes).
    const name = '가'.repeat(32);
    await c.join(room, name);
    await expectEvent(w, { type: 'JOIN', roomId: room, sender: name, participantCount: 1 });
    await c.join(room, 'e'.repeat(33)); // re-join with a bad name: refused, still in the room
    await expectError(c, CODES.invalidUsername, `/app/room/${room}/join`);
    assert.deepEqual(await participantsOf(ctx, room), [name]);
  });

  it('a message over 4096 bytes of UTF-8 gets invalid_message; 4096 bytes pass', async () => {
    const room = roomName('size');
    const c = await chatter(ctx);
    const w = await c.watch(room);
    await c.join(room, 'erin');
    await expectEvent(w, { type: 'JOIN', roomId: room, sender: 'erin', participantCount: 1 });

    await c.say(room, 'x'.repeat(4097));
    await expectError(c, CODES.invalidMessage, `/app/room/${room}/message`);
    const multibyte = '가'.repeat(1365) + 'ab'; // 1367 characters but 4097 bytes
    assert.equal(Buffer.byteLength(multibyte), 4097);
    await c.say(room, multibyte);
    await expectError(c, CODES.invalidMessage, `/app/room/${room}/message`);
    await expectQuiet(w, 'oversized messages');

    const exact = '가'.repeat(1365) + 'a'; // 4096 bytes
    assert.equal(Buffer.byteLength(exact), 4096);
    await c.say(room, exact);
    await expectEvent(w, { type: 'CHAT', roomId: room, sender: 'erin', participantCount: 1, message: exact });
  });

  it('a malformed JSON body gets invalid_payload', async () => {
    const room = roomName('json');
    const c = await chatter(ctx);
    const w = await c.watch(room);
    await c.send(`/app/room/${room}/join`, '{"username":');
    await expectError(c, CODES.invalidPayload, `/app/room/${room}/join`);
    await c.send(`/app/room/${room}/join`, 'alice');
    await expectError(c, CODES.invalidPayload, `/app/room/${room}/join`);
    await expectQuiet(w, 'malformed joins');

    await c.join(room, 'frank');
    await expectEvent(w, { type: 'JOIN', roomId: room, sender: 'frank', participantCount: 1 });
    await c.send(`/app/room/${room}/message`, 'not json at all');
    await expectError(c, CODES.invalidPayload, `/app/room/${room}/message`);
    await c.send(`/app/room/${room}/message`, '{"message": "unterminated');
    await expectError(c, CODES.invalidPayload, `/app/room/${room}/message`);
    await expectQuiet(w, 'malformed messages');
    assert.deepEqual(await participantsOf(ctx, room), ['frank'], 'still in the room');
  });

  it('a username already in the room gets username_taken; the same name elsewhere is fine', async () => {
    const room = roomName('taken');
    const other = roomName('taken-other');
    const first = await chatter(ctx);
    const second = await chatter(ctx);
    const w = await first.watch(room);
    await first.join(room, 'grace');
    await expectEvent(w, { type: 'JOIN', roomId: room, sender: 'grace', participantCount: 1 });

    await second.join(room, 'grace');
    await expectError(second, CODES.usernameTaken, `/app/room/${room}/join`);
    await expectQuiet(w, 'a refused duplicate name');
    assert.deepEqual(await participantsOf(ctx, room), ['grace']);

    const wo = await second.watch(other);
    await second.join(other, 'grace');
    await expectEvent(wo, { type: 'JOIN', roomId: other, sender: 'grace', participantCount: 1 });
    await second.leave(other);
    await expectEvent(wo, { type: 'LEAVE', roomId: other, sender: 'grace', participantCount: 0 });
    await second.join(room, 'grace2');
    await expectEvent(w, { type: 'JOIN', roomId: room, sender: 'grace2', participantCount: 2 });
  });
});

describe('chat rooms: leave paths', () => {
  const ctx = serverFor();

  /** Joins `name` into a fresh room watched by another session; returns both and the room. */
  async function joined(name) {
    const room = roomName(`leave-${name}`);
    const watcher = await chatter(ctx);
    const w = await watcher.watch(room);
    await watcher.join(room, 'watcher');
    await expectEvent(w, { type: 'JOIN', roomId: room, sender: 'watcher', participantCount: 1 });
    const leaver = await chatter(ctx);
    await leaver.join(room, name);
    await expectEvent(w, { type: 'JOIN', roomId: room, sender: name, participantCount: 2 });
    return { room, w, leaver };
  }

  async function expectLeft({ room, w }, name) {
    await expectEvent(w, { type: 'LEAVE', roomId: room, sender: name, participantCount: 1 });
    await eventually(async () => assert.deepEqual(await participantsOf(ctx, room), ['watcher']));
    await expectQuiet(w, `only one LEAVE for ${name}`);
  }

  it('leave frame', async () => {
    const j = await joined('henry');
    await j.leaver.leave(j.room);
    await expectLeft(j, 'henry');
  });

  it('switching rooms', async () => {
    const j = await joined('iris');
    const elsewhere = roomName('leave-elsewhere');
    await j.leaver.join(elsewhere, 'iris');
    await expectLeft(j, 'iris');
  });

  it('DISCONNECT', async () => {
    const j = await joined('jack');
    await withTimeout(j.leaver.client.deactivate(), 5_000, 'DISCONNECT');
    await expectLeft(j, 'jack');
  });

  it('socket closed without DISCONNECT (clean WebSocket close)', async () => {
    const j = await joined('kate');
    j.leaver.client.socket.close();
    await expectLeft(j, 'kate');
  });

  it('socket dropped (TCP reset, no close frame)', async () => {
    const j = await joined('liam');
    j.leaver.client.socket.terminate();
    await expectLeft(j, 'liam');
  });

  it('the last one out frees the room', async () => {
    const room = roomName('leave-last');
    const c = await chatter(ctx);
    const w = await c.watch(room);
    await c.join(room, 'mia');
    await expectEvent(w, { type: 'JOIN', roomId: room, sender: 'mia', participantCount: 1 });
    const observer = await chatter(ctx);
    const o = await observer.watch(room);
    c.client.socket.terminate();
    await expectEvent(o, { type: 'LEAVE', roomId: room, sender: 'mia', participantCount: 0 });
    await eventually(async () => assert.equal(await roomCount(ctx, room), null));
  });
});

describe('chat rooms: heart-beat timeout leaves the room', () => {
  const ctx = serverFor({ config: HEARTBEAT_CONFIG });

  it('a client that promised 1000 ms heart-beats and went silent leaves with a LEAVE within ~3 s', async () => {
    const room = roomName('hb');
    const watcher = await chatter(ctx);
    const w = await watcher.watch(room);
    const raw = await rawWs(ctx.server.url);
    try {
      const connected = await raw.connect({ 'heart-beat': '1000,0' });
      assert.equal(connected.command, 'CONNECTED');
      assert.equal(Number(connected.headers['heart-beat'].split(',')[1]), 1000, 'server expects 1000 ms heart-beats');
      raw.sendFrame('SEND', { destination: `/app/room/${room}/join`, 'content-type': 'application/json' }, JSON.stringify({ username: 'sleepy' }));
      await expectEvent(w, { type: 'JOIN', roomId: room, sender: 'sleepy', participantCount: 1 });
      const silentSince = Date.now();
      // From here on the raw client sends nothing at all.
      await expectEvent(w, { type: 'LEAVE', roomId: room, sender: 'sleepy', participantCount: 0 });
      const took = Date.now() - silentSince;
      assert.ok(took >= 1_000, `not closed before a missed heart-beat (${took} ms)`);
      assert.ok(took <= 4_000, `LEAVE ${took} ms after the client went silent`);
      await raw.waitClosed(3_000, 'the silent client to be closed');
      await eventually(async () => assert.equal(await roomCount(ctx, room), null));
    } finally {
      await raw.close();
    }
  });
});

describe('chat rooms: configured limits (2 rooms, 2 per room)', () => {
  const ctx = serverFor({ config: LIMITS_CONFIG });

  it('room_full for a third participant, too_many_rooms for a third room; freed rooms can be reused', async () => {
    const r1 = roomName('lim-1');
    const r2 = roomName('lim-2');
    const r3 = roomName('lim-3');
    const [a, b, c, d] = await Promise.all([chatter(ctx), chatter(ctx), chatter(ctx), chatter(ctx)]);
    const w1 = await a.watch(r1);
    const w3 = await d.watch(r3);

    await a.join(r1, 'a');
    await b.join(r1, 'b');
    await expectEvent(w1, { type: 'JOIN', roomId: r1, sender: 'a', participantCount: 1 });
    await expectEvent(w1, { type: 'JOIN', roomId: r1, sender: 'b', participantCount: 2 });
    await c.join(r1, 'c');
    await expectError(c, CODES.roomFull, `/app/room/${r1}/join`);
    await expectQuiet(w1, 'a refused third participant');
    assert.deepEqual(await participantsOf(ctx, r1), ['a', 'b']);

    // The refused session is still open and can go elsewhere: the second room.
    const w2 = await c.watch(r2);
    await c.join(r2, 'c');
    await expectEvent(w2, { type: 'JOIN', roomId: r2, sender: 'c', participantCount: 1 });

    await d.join(r3, 'd');
    await expectError(d, CODES.tooManyRooms, `/app/room/${r3}/join`);
    await expectQuiet(w3, 'a refused third room');
    assert.equal(await roomCount(ctx, r3), null);

    // Emptying the second room frees a slot for a new one.
    await c.leave(r2);
    await expectEvent(w2, { type: 'LEAVE', roomId: r2, sender: 'c', participantCount: 0 });
    await eventually(async () => assert.equal(await roomCount(ctx, r2), null));
    await d.join(r3, 'd');
    await expectEvent(w3, { type: 'JOIN', roomId: r3, sender: 'd', participantCount: 1 });

    // A room with a free place takes a new participant again.
    await b.leave(r1);
    await expectEvent(w1, { type: 'LEAVE', roomId: r1, sender: 'b', participantCount: 1 });
    await c.join(r1, 'c');
    await expectEvent(w1, { type: 'JOIN', roomId: r1, sender: 'c', participantCount: 2 });
  });
});
