// A Spring-tutorial SockJS page in real headless Chromium (Debian's /usr/bin/chromium driven by
// playwright-core) against the REAL stomp-edge binary: web/sockjs.html does
// Stomp.over(new SockJS('/ws')) with the vendored sockjs-client 1.6.1 and stomp.js 2.3.3, joins a
// chat room and chats with a raw-WebSocket @stomp/stompjs client under Node; once with the page
// as it is (SockJS picks websocket) and once per HTTP fallback, forced with ?transport=.
// Nothing is loaded from any other host. Screenshots go to target/test-artifacts/.
// Run: STOMP_EDGE_BIN=target/debug/stomp-edge node --test tests/js/sockjs-browser.test.mjs

import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { chromium } from 'playwright-core';

import { CHROMIUM, CHROMIUM_ARGS, WAIT_MS, until } from './lib/page.mjs';
import { REPO_ROOT, closeClient, connectClient, startServer, subscribe, uniqueId } from './lib/server.mjs';

const ARTIFACTS = path.join(REPO_ROOT, 'target', 'test-artifacts');

async function metric(server, name, labels = '') {
  const text = await (await fetch(`${server.http}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`stomp_edge_${name}${labels} `));
  return line ? Number(line.split(' ').pop()) : 0;
}

describe('Spring-style SockJS page in Chromium', () => {
  let server = null;
  let browser = null;

  before(async () => {
    assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install chromium (scripts/test.sh does)`);
    server = await startServer();
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: WAIT_MS });
  });
  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  // '' is the page unmodified: new SockJS('/ws') picks the websocket transport by itself.
  for (const [query, transport, label] of [
    ['', 'websocket', 'websocket'],
    ['?transport=xhr-streaming', 'xhr-streaming', 'xhr_streaming'],
    ['?transport=xhr-polling', 'xhr-polling', 'xhr'],
  ]) {
    it(`chats with a raw-WebSocket client over ${transport}${query ? ' (forced)' : ' (page unmodified)'}`, async () => {
      const room = `sj-${transport}-${uniqueId('r').replace(/[^A-Za-z0-9_-]/g, '')}`.slice(0, 60);
      const sessionsBefore = await metric(server, 'sockjs_sessions_total', `{transport="${label}"}`);
      // The raw-WebSocket side: @stomp/stompjs under Node on /ws, joined to the room.
      const raw = await connectClient(server.url);
      const context = await browser.newContext({ viewport: { width: 1000, height: 700 } });
      context.setDefaultTimeout(WAIT_MS);
      const page = await context.newPage();
      const problems = [];
      const requests = [];
      page.on('pageerror', (err) => problems.push(`pageerror: ${err.message}`));
      page.on('console', (msg) => { if (msg.type() === 'error') problems.push(`console: ${msg.text()}`); });
      page.on('request', (req) => requests.push(req.url()));
      page.on('websocket', (ws) => requests.push(ws.url()));
      try {
        const roomSub = await subscribe(raw, `/topic/room/${room}`);
        raw.publish({ destination: `/app/room/${room}/join`, body: JSON.stringify({ username: 'node-raw' }) });
        assert.equal(JSON.parse((await roomSub.next(WAIT_MS, 'own JOIN')).body).type, 'JOIN');

        await page.goto(`${server.http}/sockjs.html${query}`, { timeout: WAIT_MS });
        await page.locator('#username').fill('spring-page');
        await page.locator('#roomId').fill(room);
        await page.locator('#connect').click();
        await until(async () => (await page.locator('#status').textContent()) === 'Connected', 'the page to connect');
        assert.equal(await page.locator('#transport').textContent(), transport, 'SockJS transport in use');

        const join = JSON.parse((await roomSub.next(WAIT_MS, 'the page JOIN')).body);
        assert.deepEqual([join.type, join.sender, join.participantCount], ['JOIN', 'spring-page', 2]);

        // Page → raw client.
        const fromPage = `hello from Chromium over ${transport} 안녕`;
        await page.locator('#message').fill(fromPage);
        await page.locator('#send').click();
        const chat = JSON.parse((await roomSub.next(WAIT_MS, 'the page CHAT')).body);
        assert.deepEqual([chat.type, chat.sender, chat.message], ['CHAT', 'spring-page', fromPage]);

        // Raw client → page.
        const fromNode = `hello from raw WebSocket to ${transport}`;
        raw.publish({ destination: `/app/room/${room}/message`, body: JSON.stringify({ message: fromNode }) });
        const own = JSON.parse((await roomSub.next(WAIT_MS, 'own CHAT')).body);
        assert.deepEqual([own.type, own.sender], ['CHAT', 'node-raw']);
        await until(async () => (await page.locator('#messages li').allTextContents()).includes(`node-raw: ${fromNode}`), 'the CHAT on the page');
        assert.ok((await page.locator('#messages li').allTextContents()).includes(`spring-page: ${fromPage}`));

        mkdirSync(ARTIFACTS, { recursive: true });
        await page.screenshot({ path: path.join(ARTIFACTS, `sockjs-${transport}.png`), timeout: WAIT_MS });

        await page.locator('#disconnect').click();
        const leave = JSON.parse((await roomSub.next(WAIT_MS, 'the page LEAVE')).body);
        assert.deepEqual([leave.type, leave.sender], ['LEAVE', 'spring-page']);

        assert.equal(await metric(server, 'sockjs_sessions_total', `{transport="${label}"}`), sessionsBefore + 1);
        assert.deepEqual(problems, []);
        const self = new URL(server.http).host;
        const elsewhere = requests.filter((u) => new URL(u).host !== self);
        assert.deepEqual(elsewhere, [], 'every request stays on the server');
        assert.ok(requests.some((u) => u.includes('/ws/info')), 'SockJS asked /ws/info');
      } finally {
        await context.close();
        await closeClient(raw);
      }
    });
  }
});
