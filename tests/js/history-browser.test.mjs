// Room history on the chat page, as a person sees it, in headless Chromium against one board
// (local mode): joining late shows the conversation so far under a day separator; a reload
// comes back into the room with everything said meanwhile, each message once; a board restart
// (the history is lost) is said plainly on the page.
// Run: STOMP_EDGE_BIN=target/debug/stomp-edge node --test tests/js/history-browser.test.mjs

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';

import { chromium } from 'playwright-core';

import {
  CHROMIUM, CHROMIUM_ARGS, WAIT_MS, connState, enterName, joinRoom, openPage, seeChat, sendChat, tid, texts, until,
} from './lib/page.mjs';
import { freePort, startServer } from './lib/server.mjs';

let browser = null;
let server = null;
let listen = '';
const requests = [];

const chats = (page) => texts(page, `${tid('messages')} [data-type="CHAT"] ${tid('message-text')}`);

before(async () => {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install chromium (scripts/test.sh does)`);
  listen = `127.0.0.1:${await freePort()}`;
  server = await startServer({ args: ['--listen', listen] });
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: WAIT_MS });
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

describe('room history on the chat page', () => {
  it('shows history on join, recovers a reload once each, and says when a restart lost messages', async () => {
    const alice = await openPage(browser, requests, `${server.http}/`);
    const bob = await openPage(browser, requests, `${server.http}/`);
    try {
      await enterName(alice.page, 'alice');
      await joinRoom(alice.page, 'hist');
      for (const text of ['one', 'two', 'three']) await sendChat(alice.page, text);
      await seeChat(alice.page, 'alice', 'three');

      // Bob comes late and reads the conversation so far, under "Today".
      await enterName(bob.page, 'bob');
      await joinRoom(bob.page, 'hist');
      await seeChat(bob.page, 'alice', 'three');
      assert.deepEqual(await chats(bob.page), ['one', 'two', 'three']);
      const kept = bob.page.locator(`${tid('messages')} [data-history="true"][data-type="CHAT"]`);
      assert.equal(await kept.count(), 3);
      assert.deepEqual(await texts(bob.page, tid('day-separator')), ['Today']);
      // His own JOIN (live) confirmed the join, not alice's from the history.
      await until(async () => (await bob.page.locator(`${tid('messages')} [data-type="JOIN"][data-sender="bob"]`).count()) === 1, 'bob JOIN');

      // Bob's tab goes elsewhere while alice talks, then comes back: same room, all of it once.
      await bob.page.goto('about:blank');
      await sendChat(alice.page, 'while you were away');
      await sendChat(alice.page, 'and this');
      await seeChat(alice.page, 'alice', 'and this');
      await bob.page.goto(`${server.http}/`);
      await until(async () => (await bob.page.locator(tid('current-room')).textContent()) === 'hist', 'bob back in hist');
      await seeChat(bob.page, 'alice', 'and this');
      assert.deepEqual(await chats(bob.page), ['one', 'two', 'three', 'while you were away', 'and this']);
      assert.equal(await bob.page.locator(`${tid('notice')}[data-kind="lost"]`).count(), 0);
      await sendChat(alice.page, 'live again');
      await seeChat(bob.page, 'alice', 'live again');

      // The board restarts: its history is gone, and the page says so once it is back.
      await server.stop();
      await until(async () => (await connState(bob.page)) !== 'connected', 'bob sees the board go');
      server = await startServer({ args: ['--listen', listen] });
      await until(async () => (await connState(bob.page)) === 'connected', 'bob reconnected', 20_000);
      await until(async () => (await bob.page.locator(`${tid('notice')}[data-kind="lost"]`).count()) === 1, 'the lost-messages notice');
      await sendChat(alice.page, 'after the restart');
      await seeChat(bob.page, 'alice', 'after the restart');
      const all = await chats(bob.page);
      assert.equal(all.length, new Set(all).size, `duplicates in ${all}`);
      // While the board was down the pages' reconnect attempts failed: logged as WebSocket errors,
      // or as a refused load when an attempt fell on the closed port. Expected; nothing else is.
      const downtime = (p) => p.includes('WebSocket') || p.includes('net::ERR_CONNECTION_REFUSED');
      assert.deepEqual([...alice.page.problems, ...bob.page.problems].filter((p) => !downtime(p)), []);
    } finally {
      await alice.context.close();
      await bob.context.close();
    }
  });
});
