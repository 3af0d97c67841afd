// The nginx recipe of docs/SECURITY.md end to end: Debian's nginx (run in the foreground, on a
// free loopback port, with a temporary prefix) terminates TLS with a certificate signed by a CA
// this test makes with openssl, in front of the REAL stomp-edge binary, using
// docs/nginx-stomp-edge.conf itself (only its port, certificate and board address changed).
// Through it, @stomp/stompjs over wss:// and sockjs-client over https:// (websocket,
// xhr-streaming, xhr-polling) with NODE_EXTRA_CA_CERTS, as a user would; and the board, which
// trusts the proxy (http.trusted_proxies), throttles and logs each real client apart: two
// clients of the one proxy are throttled separately, HTTP Basic through the proxy shares the
// STOMP count, a client's forged X-Forwarded-For is not believed, nor an untrusted peer's.

import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { freePort, REPO_ROOT, sleep, startServer, withTimeout } from './lib/server.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const DELAY_MS = 400;

function which(cmd) {
  for (const dir of ['/usr/sbin', '/usr/bin', '/sbin', '/bin', ...(process.env.PATH ?? '').split(':')]) {
    try { execFileSync('test', ['-x', path.join(dir, cmd)]); return path.join(dir, cmd); } catch { /* next */ }
  }
  return null;
}

/** A test CA and a certificate for localhost / 127.0.0.1 signed by it, in `dir`. */
function makeCertificates(dir) {
  const ssl = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=stomp-edge test CA',
    '-keyout', 'ca.key', '-out', 'ca.crt');
  ssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=localhost', '-keyout', 'board.key', '-out', 'board.csr');
  writeFileSync(path.join(dir, 'san.ext'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\n');
  ssl('x509', '-req', '-in', 'board.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2',
    '-extfile', 'san.ext', '-out', 'board.crt');
}

async function waitListening(port, ms = 10_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const ok = await new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => { s.destroy(); resolve(true); });
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listening on ${port} after ${ms} ms`);
    await sleep(50);
  }
}

/** The recipe with the test's port, certificate and board; nginx connects from 127.0.0.9. */
function recipe(dir, port, board) {
  const text = readFileSync(path.join(REPO_ROOT, 'docs/nginx-stomp-edge.conf'), 'utf8');
  const out = text
    .replace('listen 443 ssl;', `listen 127.0.0.1:${port} ssl;`)
    .replace('listen [::]:443 ssl;', '')
    .replace('/etc/nginx/tls/chat.example.lan.crt', path.join(dir, 'board.crt'))
    .replace('/etc/nginx/tls/chat.example.lan.key', path.join(dir, 'board.key'))
    .replace('proxy_pass http://127.0.0.1:8080;', `proxy_pass http://${board};\n        proxy_bind 127.0.0.9;`);
  assert.notEqual(out, text);
  assert.ok(out.includes(`127.0.0.1:${port} ssl`) && out.includes(`proxy_pass http://${board};`), 'the recipe changed shape');
  return out;
}

test('nginx recipe: TLS at the proxy, wss and SockJS through it, real client addresses throttled apart', { timeout: 120_000 }, async (t) => {
  const nginx = which('nginx');
  if (!nginx) {
    // scripts/lib/setup.sh installs Debian's nginx; without it this test cannot run.
    t.skip('nginx is not installed (apt-get install nginx)');
    return;
  }
  const dir = mkdtempSync(path.join(tmpdir(), 'stomp-edge-nginx-'));
  const server = await startServer({
    config: [
      '[auth]', 'users = ["alice:secret"]', 'throttle_after_failures = 2',
      `throttle_delay_ms = ${DELAY_MS}`, 'throttle_max_delay_ms = 5000',
      '[http]', 'trusted_proxies = ["127.0.0.9"]', 'metrics_open_to = ["127.0.0.1"]', '',
    ].join('\n'),
    args: ['--log-level', 'info'],
  });
  let proxy = null;
  try {
    makeCertificates(dir);
    const port = await freePort();
    for (const d of ['body', 'proxy', 'fastcgi', 'uwsgi', 'scgi', 'logs']) mkdirSync(path.join(dir, d));
    writeFileSync(path.join(dir, 'recipe.conf'), recipe(dir, port, server.addr));
    writeFileSync(path.join(dir, 'nginx.conf'), [
      'daemon off;', 'master_process off;', 'worker_processes 1;', `pid ${dir}/nginx.pid;`,
      `error_log ${dir}/logs/error.log info;`, 'events { worker_connections 256; }', 'http {',
      `  access_log ${dir}/logs/access.log;`,
      `  client_body_temp_path ${dir}/body; proxy_temp_path ${dir}/proxy; fastcgi_temp_path ${dir}/fastcgi;`,
      `  uwsgi_temp_path ${dir}/uwsgi; scgi_temp_path ${dir}/scgi;`,
      `  include ${dir}/recipe.conf;`, '}', '',
    ].join('\n'));
    let nginxOut = '';
    proxy = spawn(nginx, ['-e', `${dir}/logs/error.log`, '-p', dir, '-c', `${dir}/nginx.conf`], { stdio: ['ignore', 'pipe', 'pipe'] });
    proxy.stdout.on('data', (c) => { nginxOut += c; });
    proxy.stderr.on('data', (c) => { nginxOut += c; });
    await waitListening(port).catch((e) => { throw new Error(`${e.message}\nnginx said:\n${nginxOut}`); });

    // The clients, with the test CA trusted through NODE_EXTRA_CA_CERTS.
    const child = spawn(process.execPath, [path.join(HERE, 'lib/nginx-clients.mjs'), `https://localhost:${port}`, server.addr], {
      cwd: HERE,
      env: { ...process.env, NODE_EXTRA_CA_CERTS: path.join(dir, 'ca.crt') },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c) => { stdout += c; });
    child.stderr.on('data', (c) => { stderr += c; });
    const code = await withTimeout(new Promise((resolve) => child.on('exit', resolve)), 90_000, 'the clients');
    assert.equal(code, 0, `clients failed:\n${stderr}\nboard:\n${server.stderr()}\nnginx:\n${nginxOut}`);
    const r = JSON.parse(stdout.trim().split('\n').pop());

    // Every transport works through the proxy, over TLS.
    assert.equal(r.stompjsWss, 'hello over wss');
    for (const transport of ['websocket', 'xhr-streaming', 'xhr-polling']) {
      assert.equal(r[`sockjs ${transport}`], `hello over sockjs ${transport}`, transport);
    }
    // Client 127.0.0.3: two free failures, then slowed; each answered "bad credentials".
    for (const f of [...r.c3, r.c4, r.direct]) {
      assert.match(f.error, /bad credentials/);
      assert.ok(f.receipt, 'with its receipt-id');
    }
    assert.ok(r.c3[0].ms < DELAY_MS && r.c3[1].ms < DELAY_MS, JSON.stringify(r.c3));
    assert.ok(r.c3[2].ms >= DELAY_MS, JSON.stringify(r.c3));
    // Client 127.0.0.4 of the same proxy is throttled apart, its forged header not believed.
    assert.ok(r.c4.ms < DELAY_MS, JSON.stringify(r.c4));
    // HTTP Basic through the proxy shares 127.0.0.3's count (its fourth failure: 2 × delay).
    assert.equal(r.basicC3.status, 401);
    assert.ok(r.basicC3.ms >= 2 * DELAY_MS, JSON.stringify(r.basicC3));
    assert.equal(r.basicRight.status, 200);
    // An untrusted peer's X-Forwarded-For is ignored.
    assert.ok(r.direct.ms < DELAY_MS, JSON.stringify(r.direct));

    // The board's log names the real clients, never the proxy, and never the passcode.
    const log = server.stderr();
    const warns = log.split('\n').filter((l) => l.includes('failed login'));
    const count = (s) => warns.filter((l) => l.includes(s)).length;
    assert.equal(count(' from 127.0.0.3 (session'), 3, warns.join('\n'));
    assert.equal(count('login "m4" from 127.0.0.4 '), 1, warns.join('\n'));
    assert.equal(count('login "m5" from 127.0.0.3 (HTTP Basic, /api/status)'), 1, warns.join('\n'));
    assert.equal(count('login "m6" from 127.0.0.5 '), 1, warns.join('\n'));
    assert.equal(count('127.0.0.9'), 0, warns.join('\n'));
    assert.ok(!log.includes('guess'));
    const metrics = await (await fetch(`${server.http}/metrics`)).text();
    assert.match(metrics, /^stomp_edge_login_failures_total 6$/m);
  } finally {
    if (proxy && proxy.exitCode === null) proxy.kill('SIGTERM');
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
