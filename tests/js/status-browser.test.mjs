// The /status page as an operator sees it, in headless Chromium: two real boards sharing one
// real redis-server, STOMP accounts configured (the page asks for one by HTTP Basic), clients
// in rooms on both boards. Board a's /status shows both boards and the room counts; board b is
// killed (SIGKILL) and the page marks it down once its registry entry expires. Screenshots go
// to target/test-artifacts/status-desktop.png, status-phone.png and status-board-down.png.
// Run: STOMP_EDGE_BIN=target/debug/stomp-edge node --test tests/js/status-browser.test.mjs

import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { chromium } from 'playwright-core';

import { CHROMIUM, CHROMIUM_ARGS, DESKTOP, PHONE, WAIT_MS, tid, until } from './lib/page.mjs';
import { startRedis } from './lib/redis.mjs';
import { closeClient, connectClient, freePort, rawWs, REPO_ROOT, startServer, subscribe } from './lib/server.mjs';

const ARTIFACTS = path.join(REPO_ROOT, 'target', 'test-artifacts');
const TTL_MS = 3000;
const CONFIG = `[cluster]\nheartbeat_ms = 500\nregistry_ttl_ms = ${TTL_MS}\ncommand_timeout_ms = 1000\n`
  + 'reconnect_min_ms = 50\nreconnect_max_ms = 500\n[auth]\nusers = ["ops:s3cret", "alice:pw", "bob:pw", "carol:pw"]\n';

const AUTH = `Basic ${Buffer.from('ops:s3cret').toString('base64')}`;

async function json(node, p) {
  return (await fetch(`${node.http}${p}`, { headers: { Authorization: AUTH } })).json();
}

/** A STOMP client (with its account) that joined `room` as `name`. */
async function member(node, room, name) {
  const client = await connectClient(node.url, { connectHeaders: { login: name, passcode: 'pw' } });
  const sub = await subscribe(client, `/topic/room/${room}`);
  client.publish({ destination: `/app/room/${room}/join`, body: JSON.stringify({ username: name }) });
  await sub.next(5_000, `${name}'s JOIN`);
  return client;
}

async function openStatus(node, viewport) {
  const context = await browser.newContext({ viewport, deviceScaleFactor: 1, httpCredentials: { username: 'ops', password: 's3cret' } });
  context.setDefaultTimeout(WAIT_MS);
  const page = await context.newPage();
  page.problems = [];
  page.on('pageerror', (err) => page.problems.push(`pageerror: ${err.message}`));
  page.on('console', (msg) => { if (msg.type() !== 'log') page.problems.push(`console ${msg.type()}: ${msg.text()}`); });
  page.on('request', (req) => requests.push(req.url()));
  await page.goto(`${node.http}/status`, { timeout: WAIT_MS });
  return { context, page };
}

const card = (id) => `${tid('board')}[data-server-id="${id}"]`;

async function boardState(page, id) {
  return page.locator(card(id)).getAttribute('data-state', { timeout: 500 });
}

async function roomCount(page, id, room) {
  return page.locator(`${card(id)} ${tid('room')}[data-room-id="${room}"] ${tid('room-count')}`).textContent({ timeout: 500 });
}

async function screenshot(page, name) {
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: path.join(ARTIFACTS, name), fullPage: true, timeout: WAIT_MS });
}

let browser = null;
let redis = null;
const nodes = {};
const clients = [];
const requests = [];

before(async () => {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install chromium (scripts/test.sh does)`);
  const port = await freePort();
  redis = await startRedis(port);
  for (const id of ['a', 'b']) {
    nodes[id] = await startServer({ args: ['--redis', `redis://127.0.0.1:${port}`, '--server-id', id], config: CONFIG });
  }
  for (const node of Object.values(nodes)) {
    await until(async () => (await json(node, '/api/nodes')).length === 2, `${node.http} to see both boards`);
  }
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: WAIT_MS });
});

after(async () => {
  for (const c of clients) await closeClient(c).catch(() => {});
  await browser?.close();
  for (const node of Object.values(nodes)) await node.stop();
  await redis?.stop();
});

describe('the status page', () => {
  it('asks for a login, then shows both boards, their rooms, and a killed board as down', async () => {
    const { a, b } = nodes;
    // Without a login: the browser's Basic prompt (401 with a challenge).
    const anon = await fetch(`${a.http}/status`);
    assert.equal(anon.status, 401);
    assert.match(anon.headers.get('www-authenticate'), /^Basic /);

    clients.push(await member(a, 'lobby', 'alice'));
    clients.push(await member(b, 'lobby', 'bob'));
    clients.push(await member(b, 'attic', 'carol'));

    const desk = await openStatus(a, DESKTOP);
    const phone = await openStatus(a, PHONE);
    try {
      const { page } = desk;
      await until(async () => (await boardState(page, 'a')) === 'up' && (await boardState(page, 'b')) === 'up', 'both boards up');
      // This board first, marked as such; the other with its connections.
      assert.deepEqual(await page.locator(`${tid('board')} ${tid('board-id')}`).allTextContents(), ['a', 'b']);
      await until(async () => (await page.locator(`${card('b')} ${tid('connections')}`).textContent()) === '2', "b's 2 connections");
      await until(async () => (await page.locator(`${card('a')} ${tid('connections')}`).textContent()) === '1', "a's connection");
      // Room counts are cluster-wide on both cards.
      for (const id of ['a', 'b']) {
        await until(async () => (await roomCount(page, id, 'lobby')) === '2', `lobby with 2 on ${id}'s card`);
        await until(async () => (await roomCount(page, id, 'attic')) === '1', `attic with 1 on ${id}'s card`);
      }
      assert.equal(await page.locator(`${card('a')} ${tid('board-mode')}`).textContent(), 'cluster');
      await until(async () => (await page.locator(tid('summary')).getAttribute('data-state')) === 'ok', 'a healthy summary');
      assert.match(await page.locator(tid('summary')).textContent(), /All 2 boards healthy/);
      // The phone view has the same boards, one above the other.
      await until(async () => (await boardState(phone.page, 'b')) === 'up', 'board b on the phone');
      await until(async () => (await roomCount(phone.page, 'b', 'lobby')) === '2', 'lobby on the phone');
      const [boxA, boxB] = await Promise.all(['a', 'b'].map((id) => phone.page.locator(card(id)).boundingBox()));
      assert.ok(boxB.y > boxA.y + boxA.height - 1, 'cards stack on a phone');
      assert.ok(boxA.width <= PHONE.width, 'no sideways scrolling on a phone');
      await screenshot(phone.page, 'status-phone.png');

      // Trouble on board a (a client sends a frame it may not: ERROR and close): the page
      // says where, and that it happened within the last minute.
      const rude = await rawWs(a.url);
      rude.send('NONSENSE\n\n\0');
      await rude.closed;
      const row = `${card('a')} ${tid('trouble')} li[data-key="rejected_frames"]`;
      await until(async () => (await page.locator(row).getAttribute('data-level', { timeout: 500 })) === 'bad', 'a rejected frame on a')
        .catch((e) => { throw new Error(`${e.message}; page problems: ${page.problems}`); });
      assert.match(await page.locator(row).textContent(), /Frames rejected.*1\+1 last min/);
      // One rejected frame is one line: its close is not counted a second time.
      assert.equal(await page.locator(`${card('a')} ${tid('trouble')} li`).count(), 1);
      assert.equal(await page.locator(`${card('b')} ${tid('trouble')} li`).count(), 0);
      await until(async () => (await page.locator(tid('summary')).getAttribute('data-state')) === 'warn', 'a warning summary');
      assert.match(await page.locator(tid('summary')).textContent(), /a: Frames rejected \(protocol errors\): 1 in the last minute/);
      await screenshot(page, 'status-desktop.png');

      // Board b dies without a goodbye: no answer at once, down once its registry entry expires.
      b.proc.kill('SIGKILL');
      await b.exited;
      const killed = Date.now();
      await until(async () => (await boardState(page, 'b')) === 'down', 'board b marked down', 4 * TTL_MS + 5_000);
      const tookMs = Date.now() - killed;
      console.log(`board b marked down ${tookMs} ms after SIGKILL (registry TTL ${TTL_MS} ms)`);
      // The TTL, plus a heartbeat and a poll, plus slack for a loaded machine.
      assert.ok(tookMs < 2 * TTL_MS + 2_000, `took ${tookMs} ms`);
      assert.equal(await boardState(page, 'a'), 'up');
      await until(async () => (await page.locator(tid('summary')).getAttribute('data-state')) === 'bad', 'a bad summary');
      assert.match(await page.locator(tid('summary')).textContent(), /b is down/);
      await screenshot(page, 'status-board-down.png');

      // Nothing but board a was asked, and nothing broke in the page.
      const elsewhere = requests.filter((u) => !u.startsWith(a.http) && !u.startsWith('data:'));
      assert.deepEqual(elsewhere, []);
      // (Chromium logs the dead board's status requests as failed loads: expected. They are 502
      // while the registry still lists it, 404 `unknown_node` once its entry has expired, and a
      // poll can fall on either side of that moment.)
      const failedLoad = /^console error: Failed to load resource: the server responded with a status of (502|404)/;
      assert.deepEqual([...page.problems, ...phone.page.problems].filter((p) => !failedLoad.test(p)), []);
    } finally {
      await desk.context.close();
      await phone.context.close();
    }
  });
});
