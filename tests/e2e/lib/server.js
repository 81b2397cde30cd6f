// Starts the `skylark` binary (all-in-one target) for one spec: free ports, a fresh data
// dir, output captured to tests/e2e/artifacts/, SIGTERM at the end with a clean exit
// asserted. Plus the REST helpers the specs need (signup, createRoom).

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import dgram from 'node:dgram';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const E2E_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const REPO_ROOT = path.resolve(E2E_DIR, '..', '..');
export const ARTIFACTS_DIR = path.join(E2E_DIR, 'artifacts');

const READY_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 15_000;
const HTTP_TIMEOUT_MS = 10_000;

/** Children still running, killed if the test process dies without stopping them. */
const running = new Set();
process.on('exit', () => {
  for (const child of running) {
    try {
      child.kill('SIGKILL');
    } catch {
      /* already gone */
    }
  }
});

/** The binary under test: `$SKYLARK_BIN`, else `${CARGO_TARGET_DIR:-<repo>/target}/debug/skylark`. */
export function skylarkBin() {
  if (process.env.SKYLARK_BIN) return path.resolve(process.env.SKYLARK_BIN);
  const target = process.env.CARGO_TARGET_DIR
    ? path.resolve(REPO_ROOT, process.env.CARGO_TARGET_DIR)
    : path.join(REPO_ROOT, 'target');
  return path.join(target, 'debug', 'skylark');
}

/** A timestamped file name under artifacts/ (created on demand). */
export function artifactPath(name) {
  fs.mkdirSync(ARTIFACTS_DIR, { recursive: true });
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  return path.join(ARTIFACTS_DIR, `${stamp}-${process.pid}-${name}`);
}

// Test ports, the scheme of `tests/common/ports.rs` (the two share claims): a port from
// below the kernel's ephemeral range, so no port-0 bind of the server under test (its
// internal gRPC listeners) can land on it, claimed machine-wide by listening on an
// abstract Unix socket named after it. The claim lasts as long as this process.
const claims = [];

function testPortRange() {
  const FIRST = 20000;
  let ephemeralStart = 32768;
  try {
    const first = Number(fs.readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    if (Number.isInteger(first) && first > 0) ephemeralStart = first;
  } catch {
    // Not Linux-like: keep the kernel default.
  }
  const end = Math.min(ephemeralStart, 32000);
  if (end < FIRST + 1000) {
    throw new Error(`the kernel's ephemeral ports start at ${ephemeralStart}: test ports need ${FIRST}..${FIRST + 1000} outside net.ipv4.ip_local_port_range`);
  }
  return [FIRST, end];
}

async function claim(name) {
  const srv = net.createServer();
  try {
    await new Promise((resolve, reject) => {
      srv.once('error', reject);
      srv.listen({ path: `\0skylark-test-claim/${name}` }, resolve);
    });
  } catch (e) {
    if (e.code === 'EADDRINUSE') return null;
    throw e;
  }
  srv.unref();
  return srv;
}

async function bindable(port) {
  const tcp = await new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '0.0.0.0', () => srv.close(() => resolve(true)));
  });
  if (!tcp) return false;
  return new Promise((resolve) => {
    const sock = dgram.createSocket('udp4');
    sock.once('error', () => resolve(false));
    sock.bind(port, '0.0.0.0', () => sock.close(() => resolve(true)));
  });
}

/** A port free for TCP and UDP that no other test process on this machine holds. */
export async function freePort() {
  const [first, end] = testPortRange();
  const span = end - first;
  const start = (Math.imul(process.pid, 2654435761) >>> 0) % span;
  for (let i = 0; i < span; i++) {
    const port = first + ((start + i) % span);
    const held = await claim(`port-${port}`);
    if (!held) continue;
    if (await bindable(port)) {
      claims.push(held);
      return port;
    }
    held.close();
  }
  throw new Error(`every test port in ${first}..${end} is claimed or in use`);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Starts skylark (the all-in-one, or the target `args` names, e.g. `['turn']`) and waits
 * for `GET /readyz` = 200 (30 s cap).
 * @param {{label?: string, env?: Record<string,string>, args?: string[]}} [opts]
 * @returns {Promise<Skylark>}
 */
export async function startServer(opts = {}) {
  const bin = skylarkBin();
  if (!fs.existsSync(bin)) {
    throw new Error(
      `skylark binary not found at ${bin}: build it (cargo build -p skylark) or set SKYLARK_BIN`,
    );
  }
  const label = opts.label ?? 'skylark';
  const httpPort = await freePort();
  const udpPort = await freePort();
  const rtmp = await freePort();
  const internalPort = await freePort();
  const dataDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'skylark-e2e-'));
  const baseUrl = `http://127.0.0.1:${httpPort}`;
  // E2E_RUST_LOG: a finer log filter for a run (e.g. str0m=debug for phase timings).
  const rustLog = process.env.E2E_RUST_LOG || 'info';
  const env = { ...process.env };
  // Nothing from the caller's shell may steer the server somewhere else.
  for (const k of Object.keys(env)) {
    if (k.startsWith('SKYLARK_') || k === 'DATABASE_URL' || k === 'REDIS_URL' || k.startsWith('OTEL_')) {
      delete env[k];
    }
  }
  Object.assign(env, {
    RUST_LOG: rustLog,
    LOG_FORMAT: 'pretty',
    NO_COLOR: '1',
    SKYLARK_HTTP_ADDR: `127.0.0.1:${httpPort}`,
    SKYLARK_PUBLIC_URL: baseUrl,
    SKYLARK_DATA_DIR: dataDir,
    SKYLARK_RTC_UDP_ADDR: `127.0.0.1:${udpPort}`,
    SKYLARK_RTC_TCP_ADDR: '127.0.0.1:0',
    SKYLARK_RTC_PUBLIC_IP: '127.0.0.1',
    SKYLARK_RTMP_ADDR: `127.0.0.1:${rtmp}`,
    SKYLARK_INTERNAL_ADDR: `127.0.0.1:${internalPort}`,
    // Signup answers 201 with a token at once (no mail round trip) unless a test says otherwise.
    SKYLARK_SIGNUP: 'open',
    // Whatever the machine: rooms spread over two SFU workers.
    SKYLARK_SFU_WORKERS: '2',
    // E2E_SKYLARK_ENV=K=V,K=V: server settings for a bench run (e.g. SKYLARK_SFU_SEND_PATH=str0m).
    ...Object.fromEntries(
      (process.env.E2E_SKYLARK_ENV ?? '').split(',').filter(Boolean).map((kv) => {
        const at = kv.indexOf('=');
        return [kv.slice(0, at), kv.slice(at + 1)];
      }),
    ),
    ...(opts.env ?? {}),
  });

  const logFile = artifactPath(`${label}.log`);
  const log = fs.createWriteStream(logFile);
  const args = opts.args ?? [];
  log.write(`# ${[bin, ...args].join(' ')}\n# ${baseUrl} udp ${udpPort} rtmp ${rtmp} data ${dataDir}\n`);
  const t0 = performance.now();
  const child = spawn(bin, args, { cwd: dataDir, env, stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(child);
  let output = '';
  const collect = (chunk) => {
    output += chunk.toString();
    log.write(chunk);
  };
  child.stdout.on('data', collect);
  child.stderr.on('data', collect);
  let exited = null;
  const exitPromise = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      exited = { code, signal };
      running.delete(child);
      resolve(exited);
    });
    child.on('error', (err) => {
      exited = { code: null, signal: null, error: err };
      running.delete(child);
      resolve(exited);
    });
  });
  const tail = (n = 40) => output.trimEnd().split('\n').slice(-n).join('\n');

  const server = {
    bin,
    baseUrl,
    wsUrl: `ws://127.0.0.1:${httpPort}/ws`,
    /** The internal listener (`/metrics`). */
    internalUrl: `http://127.0.0.1:${internalPort}`,
    httpPort,
    udpPort,
    rtmpPort: rtmp,
    dataDir,
    logFile,
    child,
    /** Everything the server printed so far. */
    output: () => output,
    tail,
    startupMs: 0,
    /** SIGTERM, then assert exit code 0 within 15 s (SIGKILL and throw otherwise). */
    async stop() {
      if (exited) return checkExit(exited);
      child.kill('SIGTERM');
      let timer;
      const res = await Promise.race([
        exitPromise,
        new Promise((r) => (timer = setTimeout(() => r(null), STOP_TIMEOUT_MS))),
      ]);
      clearTimeout(timer);
      if (!res) {
        child.kill('SIGKILL');
        await exitPromise;
        await closeLog();
        throw new Error(`skylark did not exit within ${STOP_TIMEOUT_MS / 1000} s of SIGTERM; log: ${logFile}\n${tail()}`);
      }
      return checkExit(res);
    },
    /** SIGKILL without checks (cleanup after a failure). */
    async kill() {
      if (!exited) {
        child.kill('SIGKILL');
        await exitPromise;
      }
      await closeLog();
    },
    signup: (o) => signup(baseUrl, o),
    createRoom: (token, o) => createRoom(baseUrl, token, o),
  };

  async function closeLog() {
    if (!log.closed && !log.writableEnded) await new Promise((r) => log.end(r));
    await fsp.rm(dataDir, { recursive: true, force: true }).catch(() => {});
  }

  async function checkExit(res) {
    await closeLog();
    if (res.error) throw new Error(`skylark failed to run: ${res.error.message}`);
    if (res.code !== 0) {
      throw new Error(
        `skylark exited with ${res.signal ? `signal ${res.signal}` : `code ${res.code}`} (expected 0 after SIGTERM); log: ${logFile}\n${tail()}`,
      );
    }
    return res;
  }

  // Wait for readiness, failing early if the process dies.
  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    if (exited) {
      await closeLog();
      throw new Error(
        `skylark exited early (${exited.error?.message ?? `code ${exited.code}, signal ${exited.signal}`}); log: ${logFile}\n${tail()}`,
      );
    }
    try {
      const r = await fetch(`${baseUrl}/readyz`, { signal: AbortSignal.timeout(1000) });
      await r.arrayBuffer();
      if (r.status === 200) break;
    } catch {
      /* not listening yet */
    }
    if (Date.now() > deadline) {
      await server.kill();
      throw new Error(`skylark not ready (GET /readyz != 200) within ${READY_TIMEOUT_MS / 1000} s; log: ${logFile}\n${tail()}`);
    }
    await sleep(100);
  }
  server.startupMs = Math.round(performance.now() - t0);
  return server;
}

/**
 * The server's Prometheus metrics (internal listener) as {name: summed value over its
 * label sets}; a metric never recorded is absent.
 */
export async function metrics(sk) {
  const res = await fetch(`${sk.internalUrl}/metrics`, { signal: AbortSignal.timeout(HTTP_TIMEOUT_MS) });
  const text = await res.text();
  if (res.status !== 200) throw new Error(`GET /metrics returned ${res.status}: ${text.slice(0, 200)}`);
  const out = {};
  for (const line of text.split('\n')) {
    const m = line.match(/^([a-zA-Z_:][\w:]*)(?:\{[^}]*\})?\s+(\S+)/);
    if (m) out[m[1]] = (out[m[1]] ?? 0) + Number(m[2]);
  }
  return out;
}

/** JSON request with a timeout; throws with status and body on an unexpected status. */
export async function requestJson(method, url, { token, body, expect } = {}) {
  const headers = {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (token) headers.authorization = `Bearer ${token}`;
  let res;
  try {
    res = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(HTTP_TIMEOUT_MS),
    });
  } catch (e) {
    throw new Error(`${method} ${url} failed: ${e.cause?.message ?? e.message}`);
  }
  const text = await res.text();
  if (expect !== undefined && res.status !== expect) {
    throw new Error(`${method} ${new URL(url).pathname} returned ${res.status} (expected ${expect}): ${text.slice(0, 500)}`);
  }
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    /* not JSON */
  }
  return { status: res.status, headers: res.headers, json, text };
}

let counter = 0;

/** `POST /api/v1/auth/signup` → `{user, access_token, email, password}`. */
export async function signup(baseUrl, o = {}) {
  const n = `${Date.now().toString(36)}${process.pid}${++counter}`;
  const body = {
    email: o.email ?? `e2e-${n}@example.com`,
    password: o.password ?? `pw-${n}-correct-horse`,
    display_name: o.display_name ?? `E2E ${counter}`,
  };
  const { json } = await requestJson('POST', `${baseUrl}/api/v1/auth/signup`, { body, expect: 201 });
  if (!json?.access_token) throw new Error(`signup: no access_token in ${JSON.stringify(json)}`);
  return { ...json, email: body.email, password: body.password };
}

/** `POST /api/v1/rooms` → `{room:{id,…}, stream_key, ingest:{whip_url, rtmp_url}}`. */
export async function createRoom(baseUrl, token, o = {}) {
  const body = { title: o.title ?? 'E2E room', visibility: o.visibility ?? 'public', mode: o.mode ?? 'sfu' };
  const { json } = await requestJson('POST', `${baseUrl}/api/v1/rooms`, { token, body, expect: 201 });
  if (!json?.room?.id || !json?.stream_key) throw new Error(`createRoom: unexpected body ${JSON.stringify(json)}`);
  return json;
}

/**
 * Asks for a WebSocket upgrade on `GET /ws` from Node and returns the HTTP status
 * (101 when the endpoint exists), so a missing endpoint fails with a clear message
 * instead of a browser-side close code 1006.
 */
export function probeWebSocket(baseUrl, timeoutMs = 5000) {
  const u = new URL('/ws', baseUrl);
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: u.hostname,
      port: u.port,
      path: u.pathname,
      headers: {
        Connection: 'Upgrade',
        Upgrade: 'websocket',
        'Sec-WebSocket-Version': '13',
        'Sec-WebSocket-Key': Buffer.from('skylark-e2e-key!').toString('base64'),
      },
      timeout: timeoutMs,
    });
    req.on('upgrade', (res, socket) => {
      socket.destroy();
      resolve(res.statusCode);
    });
    req.on('response', (res) => {
      res.resume();
      resolve(res.statusCode);
    });
    req.on('timeout', () => req.destroy(new Error(`GET /ws: no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}
