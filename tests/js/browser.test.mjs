// The chat page and the legacy stomp.js 2.3.3 page in real headless Chromium (Debian's
// /usr/bin/chromium driven by playwright-core) against the REAL stomp-edge binary: two people
// chat in a room, see each other's JOIN/LEAVE and the participant list; the legacy page talks to
// the new page; the page reconnects and re-joins after a server restart; nothing is loaded from
// any other host. Screenshots go to target/test-artifacts/chat-desktop.png and chat-phone.png.
// Run: STOMP_EDGE_BIN=target/debug/stomp-edge node --test tests/js/browser.test.mjs

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { chromium } from 'playwright-core';

import {
  CHROMIUM, CHROMIUM_ARGS, DESKTOP, PHONE, WAIT_MS, connState, enterName, joinRoom, openPage as openPageIn,
  seeChat, seeEvents, seeParticipants, seeRoomCount, sendChat, texts, tid, until,
} from './lib/page.mjs';
import { REPO_ROOT, serverBinary, sleep, startServer, withTimeout } from './lib/server.mjs';

const ARTIFACTS = path.join(REPO_ROOT, 'target', 'test-artifacts');

/**
 * URLs of other hosts that vendored files mention in text only (a licence comment, a warning
 * message), never load. Anything else of the form http(s)://other-host fails the test.
 */
const MENTIONED_NOT_LOADED = {
  '/vendor/stomp.umd.min.js': ['https://stomp-js.github.io/api-docs/latest/classes/Stomp.html#over'],
  '/vendor/stomp-2.3.3.min.js': ['http://www.jmesnil.net/stomp-websocket/doc/', 'http://jmesnil.net/', 'http://fusesource.com'],
};

let browser = null;
/** Every request any page made, to check that none left the server. */
const requests = [];

before(async () => {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install chromium (scripts/test.sh does)`);
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: WAIT_MS });
});

after(async () => {
  await browser?.close();
});

// ---------------------------------------------------------------------------------------------
// Helpers

const openPage = (url, viewport = DESKTOP) => openPageIn(browser, requests, url, viewport);

async function screenshot(page, name) {
  mkdirSync(ARTIFACTS, { recursive: true });
  const file = path.join(ARTIFACTS, name);
  await page.screenshot({ path: file, timeout: WAIT_MS });
  return file;
}

/** Starts the binary on a given address (for the restart test; startServer picks a free port). */
async function startServerAt(addr) {
  // Like startServer: the harness's STOMP_EDGE_BIN must not reach the server as configuration.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('STOMP_EDGE_')));
  const proc = spawn(serverBinary(), ['--listen', addr], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const exited = new Promise((resolve) => proc.once('close', resolve));
  await withTimeout(new Promise((resolve, reject) => {
    const onData = (chunk) => {
      output += chunk;
      if (/listening on/.test(output.replace(/\x1b\[[0-9;]*[A-Za-z]/g, ''))) resolve();
    };
    proc.stdout.on('data', onData);
    proc.stderr.on('data', onData);
    exited.then((code) => reject(new Error(`server exited (${code}) before listening:\n${output}`)));
  }), WAIT_MS, `restarted server on ${addr}`).catch((err) => { proc.kill('SIGKILL'); throw err; });
  return {
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 3_000);
      await exited;
      clearTimeout(t);
    },
  };
}

async function assetsOf(base, pagePath) {
  const res = await fetch(base + pagePath);
  assert.equal(res.status, 200, `GET ${pagePath}`);
  const html = await res.text();
  const refs = [...html.matchAll(/\b(?:src|href)\s*=\s*"([^"]*)"/g)].map((m) => m[1]);
  return { html, refs };
}

// ---------------------------------------------------------------------------------------------

describe('chat page in Chromium', () => {
  let server = null;
  before(async () => { server = await startServer(); });
  after(async () => { await server?.stop(); });

  it('serves the page and its assets with the right content types, and no other host is referenced', async () => {
    const self = new URL(server.http).host;
    for (const pagePath of ['/', '/legacy.html']) {
      const { html, refs } = await assetsOf(server.http, pagePath);
      const files = [[pagePath, html]];
      for (const ref of refs) {
        if (ref.startsWith('data:') || ref.startsWith('#')) continue;
        const url = new URL(ref, server.http + pagePath);
        assert.equal(url.host, self, `${pagePath} references ${ref} on another host`);
        if (!/\.(js|css)$/.test(url.pathname)) continue; // links to /healthz etc. are not loaded
        const res = await fetch(url);
        assert.equal(res.status, 200, `GET ${url.pathname}`);
        const type = res.headers.get('content-type') ?? '';
        assert.match(type, url.pathname.endsWith('.css') ? /^text\/css/ : /^(text|application)\/javascript/, `content-type of ${url.pathname}`);
        files.push([url.pathname, await res.text()]);
      }
      assert.ok(files.some(([p]) => p.endsWith('.js')), `${pagePath} loads a script`);
      for (const [file, text] of files) {
        const allowed = MENTIONED_NOT_LOADED[file] ?? [];
        for (const [found] of text.matchAll(/\b(?:https?|wss?):\/\/[^\s"'`<>()\\]+/g)) {
          if (allowed.includes(found)) continue;
          assert.fail(`${file} references ${found}`);
        }
      }
    }
    const index = await fetch(server.http + '/');
    assert.match(index.headers.get('content-type') ?? '', /^text\/html/);
  });

  it('two people chat in a room: messages both ways, JOIN and LEAVE notices, participants, room counts', async () => {
    const alice = await openPage(server.http + '/', DESKTOP);
    const bob = await openPage(server.http + '/', PHONE);
    try {
      await enterName(alice.page, 'alice');
      await enterName(bob.page, 'bob');

      // Client-side validation: a bad room id is refused before anything is sent.
      await alice.page.locator(tid('room-input')).fill('a.b');
      await alice.page.locator(tid('join-submit')).click();
      await alice.page.locator(tid('room-input-error')).waitFor({ state: 'visible' });

      await joinRoom(alice.page, 'lobby');
      await seeEvents(alice.page, 'JOIN', 'alice');
      await joinRoom(bob.page, 'lobby');
      await seeEvents(alice.page, 'JOIN', 'bob');
      await seeEvents(bob.page, 'JOIN', 'bob');
      await seeParticipants(alice.page, ['alice', 'bob']);
      await seeParticipants(bob.page, ['alice', 'bob']);
      await seeRoomCount(alice.page, 'lobby', 2);

      await sendChat(alice.page, 'hello bob');
      await seeChat(bob.page, 'alice', 'hello bob');
      await seeChat(alice.page, 'alice', 'hello bob');
      await sendChat(bob.page, 'hi alice, how is the board doing?');
      await seeChat(alice.page, 'bob', 'hi alice, how is the board doing?');

      // User text is shown as text, never as HTML.
      const tricky = '<img src=x onerror="window.pwned=1"> <b>bold?</b>';
      await sendChat(bob.page, tricky);
      await seeChat(alice.page, 'bob', tricky);
      assert.equal(await alice.page.locator(`${tid('messages')} img, ${tid('messages')} b`).count(), 0, 'no HTML from a message');
      assert.equal(await alice.page.evaluate(() => window.pwned), undefined);
      await sendChat(alice.page, 'Looks good on a phone too?');
      await seeChat(bob.page, 'alice', 'Looks good on a phone too?');

      await screenshot(alice.page, 'chat-desktop.png');
      await screenshot(bob.page, 'chat-phone.png');

      // bob leaves with the button: alice sees the LEAVE and the lists shrink.
      await bob.page.locator(tid('leave-button')).click();
      await bob.page.locator(tid('no-room')).waitFor({ state: 'attached' });
      await seeEvents(alice.page, 'LEAVE', 'bob', 1);
      await seeParticipants(alice.page, ['alice']);
      await seeRoomCount(alice.page, 'lobby', 1);

      // bob comes back from the room list, then closes his browser: another LEAVE.
      await bob.page.locator(`${tid('room-item')}[data-room-id="lobby"]`).click();
      await seeEvents(alice.page, 'JOIN', 'bob', 2);
      await seeParticipants(alice.page, ['alice', 'bob']);
      await bob.context.close();
      await seeEvents(alice.page, 'LEAVE', 'bob', 2);
      await seeParticipants(alice.page, ['alice']);
      await seeRoomCount(alice.page, 'lobby', 1);

      assert.deepEqual(alice.page.problems, [], 'no page errors');
    } finally {
      await alice.context.close();
      await bob.context.close().catch(() => {});
    }
  });

  it('shows an error from /user/queue/errors: a name already taken in the room', async () => {
    const first = await openPage(server.http + '/');
    const second = await openPage(server.http + '/');
    try {
      await enterName(first.page, 'nina');
      await enterName(second.page, 'nina');
      await joinRoom(first.page, 'taken');
      await second.page.locator(tid('room-input')).fill('taken');
      await second.page.locator(tid('join-submit')).click();
      await second.page.locator(`${tid('error')}[data-code="username_taken"]`).waitFor({ state: 'visible' });
      assert.equal(await second.page.locator(tid('room-view')).isVisible(), false, 'not shown as joined');
      assert.equal(await connState(second.page), 'connected', 'the session stays open');
    } finally {
      await first.context.close();
      await second.context.close();
    }
  });

  it('the legacy stomp.js 2.3.3 page and the chat page talk to each other', async () => {
    const legacy = await openPage(server.http + '/legacy.html');
    const modern = await openPage(server.http + '/');
    try {
      await legacy.page.locator('#username').fill('oldie');
      await legacy.page.locator('#roomId').fill('legacy-room');
      await legacy.page.locator('#connect').click();
      await until(async () => (await legacy.page.locator('#status').textContent()) === 'Connected', 'legacy page connected');
      await until(async () => (await texts(legacy.page, '#messages li')).some((t) => t.startsWith('oldie joined')), 'legacy page sees its own JOIN');

      await enterName(modern.page, 'newbie');
      await joinRoom(modern.page, 'legacy-room');
      await seeParticipants(modern.page, ['newbie', 'oldie']);
      await until(async () => (await texts(legacy.page, '#messages li')).some((t) => t.startsWith('newbie joined')), 'legacy page sees the JOIN');

      await legacy.page.locator('#message').fill('hello from 2013 — 안녕 👋');
      await legacy.page.locator('#send').click();
      await seeChat(modern.page, 'oldie', 'hello from 2013 — 안녕 👋');

      await sendChat(modern.page, 'hello from today');
      await until(async () => (await texts(legacy.page, '#messages li')).includes('newbie: hello from today'), 'legacy page gets the message');

      await legacy.page.locator('#disconnect').click();
      await seeEvents(modern.page, 'LEAVE', 'oldie');
      await seeParticipants(modern.page, ['newbie']);
      assert.deepEqual(legacy.page.problems, [], 'no errors on the legacy page');
    } finally {
      await legacy.context.close();
      await modern.context.close();
    }
  });
});

describe('chat page reconnects after a server restart', () => {
  let first = null;
  let second = null;
  after(async () => {
    await first?.stop();
    await second?.stop();
  });

  it('shows reconnecting, then connected, and re-joins its room on the new server', async () => {
    first = await startServer();
    const { context, page } = await openPage(first.http + '/');
    try {
      await enterName(page, 'phoenix');
      await joinRoom(page, 'restart');
      await seeEvents(page, 'JOIN', 'phoenix');
      await first.stop();
      await until(async () => (await connState(page)) === 'reconnecting', 'reconnecting after the server stopped');

      second = await startServerAt(first.addr);
      await until(async () => (await connState(page)) === 'connected', 'connected to the restarted server');
      await seeEvents(page, 'JOIN', 'phoenix', 2); // re-joined: the new server never saw the first join
      const res = await fetch(`${first.http}/api/rooms/restart`);
      assert.equal(res.status, 200);
      assert.deepEqual((await res.json()).participants, ['phoenix']);
      assert.equal(await page.locator(tid('current-room')).textContent(), 'restart');
    } finally {
      await context.close();
    }
  });
});

describe('no page loaded anything from another host', () => {
  it('every request the browser made went to the stomp-edge server itself', () => {
    assert.ok(requests.length > 0, 'pages made requests');
    const foreign = requests.filter((u) => {
      const url = new URL(u);
      return url.protocol !== 'data:' && url.hostname !== '127.0.0.1';
    });
    assert.deepEqual(foreign, []);
  });
});
