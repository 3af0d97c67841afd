// Test helpers shared by the Node suites: start the REAL stomp-edge binary on a free loopback port,
// connect @stomp/stompjs 7 clients to it, and speak raw STOMP bytes over a `ws` socket for the
// malformed-frame and heart-beat tests. Every wait here is bounded; nothing waits forever.

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { Client } from '@stomp/stompjs';
import WebSocket from 'ws';

/** Repository root (this file is tests/js/lib/server.mjs). */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

/** The subprotocols a modern STOMP client offers, best first. */
export const STOMP_PROTOCOLS = ['v12.stomp', 'v11.stomp', 'v10.stomp'];

const LISTEN_RE = /listening on (\d+\.\d+\.\d+\.\d+:\d+)/;
const ANSI_RE = /\x1b\[[0-9;]*[A-Za-z]/g;
const START_TIMEOUT_MS = 10_000;
const STOP_GRACE_MS = 3_000;

/** Servers still running; killed if the test process exits without stopping them. */
const live = new Set();
process.on('exit', () => {
  for (const proc of live) {
    try { proc.kill('SIGKILL'); } catch { /* already gone */ }
  }
});

/** Path of the server binary: $STOMP_EDGE_BIN or target/debug/stomp-edge, relative to the repo root. */
export function serverBinary() {
  return path.resolve(REPO_ROOT, process.env.STOMP_EDGE_BIN ?? 'target/debug/stomp-edge');
}

/** Rejects with a clear message if `promise` has not settled after `ms` milliseconds. */
export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A free loopback port (bound, read, released). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/**
 * Starts the real server: `stomp-edge --listen 127.0.0.1:0 [--config FILE] ...args`.
 * `config` is the text of a config file (written to a temp file). Resolves once the server logs
 * `listening on ADDR:PORT`, within 10 s; rejects (with the captured stderr) if it exits first.
 */
export async function startServer({ args = [], config = null, env = {} } = {}) {
  const bin = serverBinary();
  const tmp = mkdtempSync(path.join(tmpdir(), 'stomp-edge-test-'));
  const argv = ['--listen', '127.0.0.1:0'];
  if (typeof config === 'string') {
    const file = path.join(tmp, 'stomp-edge.toml');
    writeFileSync(file, config);
    argv.push('--config', file);
  }
  argv.push(...args);

  // STOMP_EDGE_* variables configure the server; the harness's own (STOMP_EDGE_BIN) must not leak
  // into it, so only those the test passes explicitly are kept.
  const childEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('STOMP_EDGE_')) childEnv[k] = v;
  }
  Object.assign(childEnv, env);

  const proc = spawn(bin, argv, { env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(proc);
  let output = '';
  const exited = new Promise((resolve) => {
    proc.once('exit', (code, signal) => { live.delete(proc); resolve({ code, signal }); });
    proc.once('error', (err) => { live.delete(proc); output += `\n[spawn error] ${err.message}\n`; resolve({ code: null, signal: null, error: err }); });
  });

  let addr = null;
  const listening = new Promise((resolve, reject) => {
    const onData = (chunk) => {
      output += chunk.toString('utf8');
      if (addr === null) {
        const m = LISTEN_RE.exec(output.replace(ANSI_RE, ''));
        if (m) { addr = m[1]; resolve(addr); }
      }
    };
    proc.stderr.on('data', onData);
    proc.stdout.on('data', onData);
    exited.then(({ code, signal }) => {
      if (addr === null) {
        reject(new Error(`stomp-edge (${bin} ${argv.join(' ')}) exited (code ${code}, signal ${signal}) before listening:\n${output}`));
      }
    });
  });

  const cleanupTmp = () => rmSync(tmp, { recursive: true, force: true });
  async function stop() {
    if (proc.exitCode === null && proc.signalCode === null && proc.pid !== undefined) {
      proc.kill('SIGTERM');
      const killer = setTimeout(() => { try { proc.kill('SIGKILL'); } catch { /* gone */ } }, STOP_GRACE_MS);
      await exited;
      clearTimeout(killer);
    } else {
      await exited;
    }
    cleanupTmp();
    return exited;
  }

  try {
    await withTimeout(listening, START_TIMEOUT_MS, `"listening on" from ${bin}\nstderr so far:\n${output}`);
  } catch (err) {
    await stop();
    throw err;
  }

  return {
    addr,
    url: `ws://${addr}/ws`,
    http: `http://${addr}`,
    proc,
    exited,
    stop,
    stderr: () => output,
  };
}

/**
 * Connects a @stomp/stompjs 7 client over `ws` and resolves with it once CONNECTED arrives.
 * Extra properties on the client: `connectedFrame`, `socket` (the `ws` WebSocket), `stompErrors`
 * (ERROR frames after connect), `unhandled` (MESSAGEs for no live subscription) and `closed`
 * (a promise of the WebSocket close event).
 */
export function connectClient(url, opts = {}) {
  const {
    protocols = STOMP_PROTOCOLS,
    timeoutMs = 5_000,
    connectHeaders = {},
    ...config
  } = opts;
  let socket = null;
  const client = new Client({
    webSocketFactory: () => {
      socket = new WebSocket(url, protocols);
      socket.on('error', () => { /* reported through onWebSocketError / close */ });
      return socket;
    },
    connectHeaders,
    reconnectDelay: 0,
    connectionTimeout: timeoutMs,
    debug: () => {},
    ...config,
  });
  client.stompErrors = [];
  client.unhandled = [];
  let resolveClosed;
  client.closed = new Promise((resolve) => { resolveClosed = resolve; });

  const connected = new Promise((resolve, reject) => {
    client.onConnect = (frame) => {
      client.connectedFrame = frame;
      client.socket = socket;
      resolve(client);
    };
    client.onStompError = (frame) => {
      client.stompErrors.push(frame);
      const e = new Error(`STOMP ERROR: ${frame.headers.message ?? '(no message header)'}`);
      e.frame = frame;
      reject(e);
    };
    client.onWebSocketClose = (evt) => {
      resolveClosed(evt);
      reject(new Error(`WebSocket closed before CONNECTED (code ${evt?.code})`));
    };
    client.onUnhandledMessage = (msg) => client.unhandled.push(msg);
  });
  client.activate();
  return withTimeout(connected, timeoutMs + 1_000, `CONNECTED from ${url}`).catch(async (err) => {
    err.client = client;
    await client.deactivate({ force: true }).catch(() => {});
    throw err;
  });
}

/** Closes a client without waiting forever (DISCONNECT with receipt, bounded). */
export async function closeClient(client) {
  if (!client) return;
  await withTimeout(client.deactivate(), 3_000, 'client deactivate').catch(() => client.deactivate({ force: true }));
}

/** Resolves with the RECEIPT frame for `receiptId` (call before sending the frame). */
export function receiptFor(client, receiptId, ms = 5_000) {
  return withTimeout(new Promise((resolve) => client.watchForReceipt(receiptId, resolve)), ms, `RECEIPT ${receiptId}`);
}

let receiptCounter = 0;
export const uniqueId = (prefix) => `${prefix}-${process.pid}-${++receiptCounter}-${Date.now().toString(36)}`;

/**
 * Subscribes and queues every MESSAGE; returns `{ id, messages, next(ms), unsubscribe(headers) }`.
 * With `receipt: true` it also waits for the subscription's RECEIPT.
 */
export async function subscribe(client, destination, { headers = {}, receipt = true } = {}) {
  const messages = [];
  const waiters = [];
  let consumed = 0;
  const hdrs = { ...headers };
  let receiptPromise = null;
  if (receipt) {
    hdrs.receipt = uniqueId('sub');
    receiptPromise = receiptFor(client, hdrs.receipt);
  }
  const stomp = client.subscribe(destination, (msg) => {
    messages.push(msg);
    while (waiters.length && consumed < messages.length) waiters.shift()(messages[consumed++]);
  }, hdrs);
  if (receiptPromise) await receiptPromise;
  return {
    id: stomp.id,
    destination,
    messages,
    next(ms = 5_000, what = `MESSAGE on ${destination}`) {
      if (consumed < messages.length) return Promise.resolve(messages[consumed++]);
      return withTimeout(new Promise((resolve) => waiters.push(resolve)), ms, what);
    },
    unsubscribe: (h = {}) => stomp.unsubscribe(h),
  };
}

/** The next MESSAGE of a subscription made with `subscribe()`. */
export const nextMessage = (sub, ms = 5_000, what) => sub.next(ms, what);

// ---------------------------------------------------------------------------------------------
// Raw STOMP over a `ws` socket.

const NUL = 0;
const LF = 10;
const CR = 13;

function unescapeHeader(s) {
  return s.replace(/\\(.)/g, (_, c) => ({ r: '\r', n: '\n', c: ':', '\\': '\\' })[c] ?? `\\${c}`);
}

/** Encodes a frame; header values are written as given (no escaping), body is a string or Buffer. */
export function encodeFrame(command, headers = {}, body = '') {
  const head = [command, ...Object.entries(headers).map(([k, v]) => `${k}:${v}`)].join('\n');
  return Buffer.concat([Buffer.from(`${head}\n\n`), Buffer.isBuffer(body) ? body : Buffer.from(body), Buffer.from([NUL])]);
}

/**
 * Incremental STOMP frame parser over received bytes. Returns frames
 * `{ command, headers (first wins), headerList, body (Buffer), text, at }` and counts heart-beat EOLs.
 */
class FrameParser {
  constructor() { this.buf = Buffer.alloc(0); this.heartbeats = []; }
  push(chunk) {
    this.buf = Buffer.concat([this.buf, chunk]);
    const frames = [];
    for (;;) {
      // EOLs between frames are heart-beats.
      let i = 0;
      while (i < this.buf.length && (this.buf[i] === LF || (this.buf[i] === CR && this.buf[i + 1] === LF))) {
        if (this.buf[i] === CR) i++;
        i++;
        this.heartbeats.push(Date.now());
      }
      this.buf = this.buf.subarray(i);
      if (this.buf.length === 0) break;
      const headEnd = this.#findHeadEnd();
      if (headEnd === null) break;
      const headText = this.buf.subarray(0, headEnd.start).toString('utf8');
      const lines = headText.split(/\r?\n/);
      const command = lines[0];
      const headerList = [];
      const headers = {};
      for (const line of lines.slice(1)) {
        const c = line.indexOf(':');
        const rawName = c < 0 ? line : line.slice(0, c);
        const rawValue = c < 0 ? '' : line.slice(c + 1);
        const name = command === 'CONNECTED' ? rawName : unescapeHeader(rawName);
        const value = command === 'CONNECTED' ? rawValue : unescapeHeader(rawValue);
        headerList.push([name, value]);
        if (!(name in headers)) headers[name] = value;
      }
      const bodyStart = headEnd.end;
      let bodyEnd;
      if (headers['content-length'] !== undefined && /^\d+$/.test(headers['content-length'])) {
        bodyEnd = bodyStart + Number(headers['content-length']);
        if (this.buf.length < bodyEnd + 1) break;
      } else {
        bodyEnd = this.buf.indexOf(NUL, bodyStart);
        if (bodyEnd < 0) break;
      }
      const body = Buffer.from(this.buf.subarray(bodyStart, bodyEnd));
      const terminator = this.buf[bodyEnd];
      this.buf = this.buf.subarray(bodyEnd + 1);
      frames.push({ command, headers, headerList, body, text: body.toString('utf8'), at: Date.now(), badTerminator: terminator !== NUL });
    }
    return frames;
  }
  #findHeadEnd() {
    for (let i = 0; i < this.buf.length; i++) {
      if (this.buf[i] !== LF) continue;
      if (this.buf[i + 1] === LF) return { start: i, end: i + 2 };
      if (this.buf[i + 1] === CR && this.buf[i + 2] === LF) return { start: i, end: i + 3 };
    }
    return null;
  }
}

/**
 * Opens a raw WebSocket to the server for byte-level STOMP. Resolves once open with
 * `{ ws, protocol, frames, heartbeats, send(data, {binary}), connect(headers), nextFrame(ms, what),
 *    closed (promise of {code, reason, at}), isClosed(), close() }`.
 */
export async function rawWs(url, { protocols = STOMP_PROTOCOLS, timeoutMs = 5_000 } = {}) {
  const ws = protocols && protocols.length ? new WebSocket(url, protocols) : new WebSocket(url);
  const parser = new FrameParser();
  const frames = [];
  const waiters = [];
  let consumed = 0;
  let closeInfo = null;
  const closed = new Promise((resolve) => {
    ws.on('close', (code, reason) => {
      closeInfo = { code, reason: reason.toString(), at: Date.now() };
      resolve(closeInfo);
      for (const w of waiters.splice(0)) w.reject(new Error(`socket closed (code ${code}) while waiting for ${w.what}`));
    });
  });
  ws.on('message', (data, isBinary) => {
    const buf = Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data);
    for (const f of parser.push(buf)) {
      f.binary = isBinary;
      frames.push(f);
    }
    while (waiters.length && consumed < frames.length) waiters.shift().resolve(frames[consumed++]);
  });
  const opened = new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
    ws.once('unexpected-response', (_req, res) => reject(new Error(`unexpected HTTP ${res.statusCode} on upgrade`)));
  });
  ws.on('error', () => { /* surfaced through `opened` or `closed` */ });
  try {
    await withTimeout(opened, timeoutMs, `WebSocket open ${url}`);
  } catch (err) {
    ws.terminate();
    throw err;
  }

  const raw = {
    ws,
    protocol: ws.protocol,
    frames,
    get heartbeats() { return parser.heartbeats; },
    closed,
    isClosed: () => closeInfo !== null,
    send(data, { binary = false } = {}) { ws.send(data, { binary }); },
    sendFrame(command, headers = {}, body = '') { ws.send(encodeFrame(command, headers, body), { binary: false }); },
    nextFrame(ms = 5_000, what = 'a frame') {
      if (consumed < frames.length) return Promise.resolve(frames[consumed++]);
      if (closeInfo) return Promise.reject(new Error(`socket closed (code ${closeInfo.code}) while waiting for ${what}`));
      return withTimeout(new Promise((resolve, reject) => waiters.push({ resolve, reject, what })), ms, what);
    },
    async connect(headers = {}, ms = 5_000) {
      raw.sendFrame('CONNECT', { 'accept-version': '1.2', host: '127.0.0.1', 'heart-beat': '0,0', ...headers });
      return raw.nextFrame(ms, 'CONNECTED');
    },
    /** Waits (bounded) for the server to close the socket; returns the close info. */
    waitClosed(ms = 5_000, what = 'the server to close the socket') { return withTimeout(closed, ms, what); },
    close() { if (!closeInfo) ws.terminate(); return closed; },
  };
  return raw;
}
