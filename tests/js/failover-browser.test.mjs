// Failover between boards, as the original design's session failover asks (no affinity to one
// server): two boards, one Redis, two people in headless Chromium. Bob keeps talking on board
// B; board A, alice's, is killed with SIGKILL. Alice's page moves to board B by itself within a
// few seconds, re-joins under the same name and recovers from its last offset: she ends with
// every message bob sent, each once, in order, and no "could not be recovered" notice.
// Run: STOMP_EDGE_BIN=target/debug/stomp-edge node --test tests/js/failover-browser.test.mjs

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';

import { chromium } from 'playwright-core';

import {
  CHROMIUM, CHROMIUM_ARGS, WAIT_MS, enterName, joinRoom, openPage, seeChat, sendChat, texts, tid, until,
} from './lib/page.mjs';
import { startRedis } from './lib/redis.mjs';
import { freePort, sleep, startServer } from './lib/server.mjs';

let browser = null;
let redis = null;
const nodes = [];
const requests = [];

before(async () => {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install chromium (scripts/test.sh does)`);
  const port = await freePort();
  redis = await startRedis(port);
  const config = '[cluster]\nheartbeat_ms = 500\nregistry_ttl_ms = 3000\ncommand_timeout_ms = 1000\nreconnect_min_ms = 50\nreconnect_max_ms = 500\n';
  for (const id of ['board-a', 'board-b']) {
    nodes.push(await startServer({ args: ['--redis', `redis://127.0.0.1:${port}`, '--server-id', id], config }));
  }
  for (const node of nodes) {
    await until(async () => (await (await fetch(`${node.http}/api/nodes`)).json()).length === 2, `${node.http} sees both boards`);
  }
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: WAIT_MS });
});

after(async () => {
  await browser?.close();
  for (const node of nodes) await node.stop();
  await redis?.stop();
});

describe('failover between boards', () => {
  it('moves the page to a live board, re-joins under the same name and misses nothing', async () => {
    const [a, b] = nodes;
    const alice = await openPage(browser, requests, `${a.http}/`);
    const bob = await openPage(browser, requests, `${b.http}/`);
    try {
      await enterName(alice.page, 'alice');
      await enterName(bob.page, 'bob');
      await joinRoom(alice.page, 'fail');
      await joinRoom(bob.page, 'fail');
      await sendChat(bob.page, 'b0');
      await seeChat(alice.page, 'bob', 'b0');
      await sleep(3500); // alice's page has polled /api/nodes

      a.proc.kill('SIGKILL');
      const sent = ['b0'];
      for (let i = 1; i <= 12; i += 1) {
        await sendChat(bob.page, `b${i}`);
        sent.push(`b${i}`);
        await sleep(400);
      }
      await until(async () => alice.page.url().startsWith(b.http), 'alice moved to board B', 20_000);
      await until(async () => (await alice.page.locator(tid('current-room')).textContent()) === 'fail', 'alice back in the room', 20_000);
      await seeChat(alice.page, 'bob', 'b12');
      const bobs = await texts(alice.page, `${tid('messages')} [data-type="CHAT"][data-sender="bob"] ${tid('message-text')}`);
      assert.deepEqual(bobs, sent, 'every message once, in order');
      assert.equal(await alice.page.locator(`${tid('notice')}[data-kind="lost"]`).count(), 0);
      // Alice is alice again, on board B, and can talk.
      await until(async () => (await alice.page.locator(tid('me')).textContent()) === 'alice', 'same name');
      await until(async () => {
        const res = await fetch(`${b.http}/api/rooms/fail`);
        return res.ok && (await res.json()).participants.includes('alice');
      }, 'alice a participant again', 20_000);
      await sendChat(alice.page, 'back');
      await seeChat(bob.page, 'alice', 'back');
    } finally {
      await alice.context.close();
      await bob.context.close();
    }
  });
});
