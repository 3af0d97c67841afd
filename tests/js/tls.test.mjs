// TLS on the board's port with real clients, against the REAL stomp-edge binary started with
// `[tls]` and a certificate from a test CA that each run makes with openssl: @stomp/stompjs 7
// over `wss://` (the `ws` package given the CA), sockjs-client 1.6.1 over `https://` on each of
// its transports (a child node process trusting the CA through NODE_EXTRA_CA_CERTS), and
// headless Chromium loading the chat page and /status over HTTPS (the certificate's key
// pinned with --ignore-certificate-errors-spki-list, nothing else ignored).
// Run: STOMP_EDGE_BIN=target/debug/stomp-edge node --test tests/js/tls.test.mjs

import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';

import { Client } from '@stomp/stompjs';
import { chromium } from 'playwright-core';
import WebSocket from 'ws';

import { CHROMIUM, CHROMIUM_ARGS, WAIT_MS, enterName, joinRoom, openPage, seeEvents, sendChat, tid, until } from './lib/page.mjs';
import { startServer, withTimeout } from './lib/server.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));

/** A test CA and a board certificate (chain) for localhost and 127.0.0.1, made by openssl. */
function makeCertificates() {
  const dir = mkdtempSync(path.join(tmpdir(), 'stomp-edge-tls-js-'));
  const ssl = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  ssl('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=stomp-edge js test CA');
  ssl('req', ...ec, '-keyout', 'board.key', '-out', 'board.csr', '-subj', '/CN=localhost');
  writeFileSync(path.join(dir, 'san.ext'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\n');
  ssl('x509', '-req', '-in', 'board.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2',
    '-extfile', 'san.ext', '-out', 'board.crt');
  writeFileSync(path.join(dir, 'board.pem'), readFileSync(path.join(dir, 'board.crt'), 'utf8') + readFileSync(path.join(dir, 'ca.pem'), 'utf8'));
  const fingerprint = ssl('x509', '-noout', '-fingerprint', '-sha256', '-in', 'board.crt').toString().trim().split('=')[1];
  // Base64 SHA-256 of the certificate's SubjectPublicKeyInfo, as Chromium's SPKI list wants it.
  const spkiDer = ssl('pkey', '-in', 'board.key', '-pubout', '-outform', 'DER');
  const spki = execFileSync('openssl', ['dgst', '-sha256', '-binary'], { input: spkiDer });
  return {
    dir,
    ca: path.join(dir, 'ca.pem'),
    cert: path.join(dir, 'board.pem'),
    key: path.join(dir, 'board.key'),
    fingerprint,
    spki: spki.toString('base64'),
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}

let certs;
let server;
let origin; // https://localhost:PORT

before(async () => {
  certs = makeCertificates();
  server = await startServer({ config: `[tls]\ncert_file = "${certs.cert}"\nkey_file = "${certs.key}"\n` });
  origin = `https://localhost:${server.addr.split(':')[1]}`;
});

after(async () => {
  await server?.stop();
  certs?.remove();
});

/** A @stomp/stompjs client over wss:// that trusts `ca`; resolves once CONNECTED. */
function connectWss(ca) {
  const client = new Client({
    webSocketFactory: () => {
      const ws = new WebSocket(`${origin.replace('https', 'wss')}/ws`, ['v12.stomp'], { ca });
      ws.on('error', () => {});
      return ws;
    },
    reconnectDelay: 0,
    debug: () => {},
  });
  const connected = new Promise((resolve, reject) => {
    client.onConnect = () => resolve(client);
    client.onWebSocketError = (e) => reject(new Error(`websocket error: ${e?.message ?? e?.error?.message ?? 'unknown'}`));
    client.onWebSocketClose = (e) => reject(new Error(`closed before CONNECTED (${e?.code})`));
  });
  client.activate();
  return withTimeout(connected, WAIT_MS, 'CONNECTED over wss').catch(async (err) => {
    await client.deactivate({ force: true }).catch(() => {});
    throw err;
  });
}

describe('@stomp/stompjs over wss://', () => {
  it('exchanges messages with the certificate checked against the test CA', async () => {
    const client = await connectWss(readFileSync(certs.ca));
    try {
      const got = [];
      const done = new Promise((resolve) => {
        client.subscribe('/topic/tls-js', (m) => { got.push(m.body); if (got.length === 50) resolve(); }, { receipt: 'sub' });
      });
      await withTimeout(new Promise((resolve) => client.watchForReceipt('sub', resolve)), WAIT_MS, 'RECEIPT');
      // Large enough that several frames share TLS records and some span two.
      for (let i = 0; i < 50; i++) client.publish({ destination: '/topic/tls-js', body: `${i}:${'x'.repeat(3000)}` });
      await withTimeout(done, WAIT_MS, '50 messages back');
      assert.deepEqual(got.map((b) => Number(b.split(':')[0])), [...Array(50).keys()]);
    } finally {
      await client.deactivate();
    }
  });

  it('is refused by a client that does not trust the certificate', async () => {
    await assert.rejects(connectWss(undefined), /websocket error|closed before CONNECTED/);
  });
});

describe('sockjs-client over https://', () => {
  for (const transport of ['websocket', 'xhr-streaming', 'xhr-polling', 'eventsource']) {
    it(`carries STOMP over ${transport}`, async () => {
      const child = spawn(process.execPath, [path.join(HERE, 'lib/sockjs-tls-client.mjs'), origin, transport], {
        env: { ...process.env, NODE_EXTRA_CA_CERTS: certs.ca },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      child.stdout.on('data', (d) => { out += d; });
      child.stderr.on('data', (d) => { out += d; });
      const code = await withTimeout(new Promise((resolve) => child.once('exit', resolve)), 15_000, `sockjs ${transport}`)
        .catch((err) => { child.kill('SIGKILL'); throw err; });
      assert.equal(code, 0, out);
      assert.match(out, /ok 20/);
    });
  }
});

describe('Chromium over HTTPS', () => {
  let browser;
  before(async () => {
    assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install chromium (scripts/test.sh does)`);
    // Only this certificate's key is accepted without a CA; every other check stays on.
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: [...CHROMIUM_ARGS, `--ignore-certificate-errors-spki-list=${certs.spki}`],
      timeout: WAIT_MS,
    });
  });
  after(async () => { await browser?.close(); });

  it('loads the chat page, chats over wss:// and shows the fingerprint on /status', async () => {
    const requests = [];
    const { context, page } = await openPage(browser, requests, `${origin}/`);
    try {
      await enterName(page, 'tess');
      await joinRoom(page, 'secure');
      await sendChat(page, 'hello over tls');
      await seeEvents(page, 'CHAT', 'tess');
      assert.ok(requests.some((u) => u.startsWith(`${origin.replace('https', 'wss')}/ws`)), requests.join('\n'));
      assert.ok(!requests.some((u) => u.startsWith('http:') || u.startsWith('ws:')), requests.join('\n'));
      assert.deepEqual(page.problems, []);

      await page.goto(`${origin}/status`, { timeout: WAIT_MS });
      const shown = await until(async () => page.locator(tid('board-tls-fingerprint')).textContent(), 'the fingerprint');
      assert.equal(shown, certs.fingerprint);
    } finally {
      await context.close();
    }
  });
});
