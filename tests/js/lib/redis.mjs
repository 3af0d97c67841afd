// A throwaway redis-server for the cluster tests: one RESP command over a short-lived connection,
// and a server without persistence on a given port, up once it answers PING.

import { spawn } from 'node:child_process';
import net from 'node:net';

import { until } from './page.mjs';
import { withTimeout } from './server.mjs';

/** One RESP command over a short-lived connection; resolves with the raw reply text. */
export function redisCommand(port, ...args) {
  const payload = `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`;
  return withTimeout(new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1', () => sock.write(payload));
    sock.once('data', (d) => { resolve(d.toString()); sock.destroy(); });
    sock.once('error', reject);
  }), 2_000, `redis ${args[0]}`);
}

/** A redis-server on `port` (no persistence); resolves once it answers PING. `stop()` kills it. */
export async function startRedis(port) {
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  const exited = new Promise((resolve) => proc.once('close', resolve));
  await until(async () => (await redisCommand(port, 'PING').catch(() => '')).startsWith('+PONG'), `redis-server on ${port}`);
  return {
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
      await exited;
    },
  };
}
