// Cluster mode as a person sees it: one real redis-server on a free loopback port, two real
// stomp-edge nodes started as the README says (--redis URL, distinct --server-id), and two
// people in headless Chromium, one on each node's page, sharing a room. Then Redis is stopped
// and started again: each page stays connected, local life goes on, and cross-node chat
// resumes without either page reconnecting.
// Run: STOMP_EDGE_BIN=target/debug/stomp-edge node --test tests/js/cluster-browser.test.mjs

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';

import { chromium } from 'playwright-core';

import {
  CHROMIUM, CHROMIUM_ARGS, WAIT_MS, connState, enterName, joinRoom, openPage, seeChat, seeEvents,
  seeParticipants, seeRoomCount, sendChat, until,
} from './lib/page.mjs';
import { startRedis } from './lib/redis.mjs';
import { freePort, startServer } from './lib/server.mjs';

async function health(node) {
  return (await fetch(`${node.http}/healthz`)).json();
}

async function waitMode(node, mode) {
  await until(async () => (await health(node)).mode === mode, `${node.http} in ${mode} mode`);
}

let browser = null;
let redis = null;
let redisPort = 0;
const nodes = [];
const requests = [];

before(async () => {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install chromium (scripts/test.sh does)`);
  redisPort = await freePort();
  redis = await startRedis(redisPort);
  const url = `redis://127.0.0.1:${redisPort}`;
  // Quick heart-beats and back-off so the test's waits stay short.
  const config = '[cluster]\nheartbeat_ms = 500\nregistry_ttl_ms = 3000\ncommand_timeout_ms = 1000\nreconnect_min_ms = 50\nreconnect_max_ms = 500\n';
  for (const id of ['board-a', 'board-b']) {
    const node = await startServer({ args: ['--redis', url, '--server-id', id], config });
    nodes.push(node);
    await waitMode(node, 'cluster');
  }
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: WAIT_MS });
});

after(async () => {
  await browser?.close();
  for (const node of nodes) await node.stop();
  await redis?.stop();
});

describe('two boards, one Redis, two browsers', () => {
  it('share a room, and survive Redis going away and coming back', async () => {
    const [a, b] = nodes;
    const alice = await openPage(browser, requests, `${a.http}/`);
    const bob = await openPage(browser, requests, `${b.http}/`);
    try {
      await enterName(alice.page, 'alice');
      await enterName(bob.page, 'bob');
      await joinRoom(alice.page, 'lobby');
      await joinRoom(bob.page, 'lobby');
      // Each sees the other's JOIN, the same participants and the cluster-wide count.
      await seeEvents(alice.page, 'JOIN', 'bob');
      await seeParticipants(alice.page, ['alice', 'bob']);
      await seeParticipants(bob.page, ['alice', 'bob']);
      await seeRoomCount(alice.page, 'lobby', 2);
      await seeRoomCount(bob.page, 'lobby', 2);
      await sendChat(alice.page, 'hello from board A');
      await seeChat(bob.page, 'alice', 'hello from board A');
      await sendChat(bob.page, 'hello from board B');
      await seeChat(alice.page, 'bob', 'hello from board B');

      // Redis goes away: each board goes on alone, the pages stay connected.
      await redis.stop();
      await waitMode(a, 'local');
      await waitMode(b, 'local');
      await sendChat(alice.page, 'alone on A');
      await seeChat(alice.page, 'alice', 'alone on A');
      assert.equal(await connState(alice.page), 'connected');
      assert.equal(await connState(bob.page), 'connected');

      // Redis is back (empty): the boards rejoin by themselves and chat crosses again.
      redis = await startRedis(redisPort);
      await waitMode(a, 'cluster');
      await waitMode(b, 'cluster');
      await until(async () => {
        const res = await fetch(`${b.http}/api/rooms/lobby`);
        return res.status === 200 && (await res.json()).participants.length === 2;
      }, 'the cluster state rebuilt from both boards');
      await sendChat(bob.page, 'back together');
      await seeChat(alice.page, 'bob', 'back together');
      await sendChat(alice.page, 'welcome back');
      await seeChat(bob.page, 'alice', 'welcome back');
      // Nobody's page had to reconnect, and no message arrived twice.
      for (const { page } of [alice, bob]) {
        assert.equal(await connState(page), 'connected');
        const chats = await page.locator('[data-testid="messages"] [data-type="CHAT"] [data-testid="message-text"]').allTextContents();
        assert.equal(chats.length, new Set(chats).size, `duplicates in ${chats}`);
      }
      assert.deepEqual([...alice.page.problems, ...bob.page.problems], []);
    } finally {
      await alice.context.close();
      await bob.context.close();
    }
  });
});


