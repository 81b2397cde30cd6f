#!/usr/bin/env node
// Join time per source and viewer type: how long a new viewer waits for its first
// frame, and what its first seconds look like (latency, unreadable frames), for a room
// published over RTMP (FFmpeg, fixed GOP) or WHIP (Chromium), watched over WHEP, HTTP-FLV
// (mpegts.js) and LL-HLS (hls.js).
//
//   node tests/e2e/bench/join.mjs --ingest rtmp --gop 2 [--join-frames gop-fast] [--viewers 6] [--json]
//   node tests/e2e/bench/join.mjs --ingest whip [--viewers 6] [--json]
//
// The source shows the wall clock as a time code (timecode.js): RTMP frames are drawn by
// this process and piped to FFmpeg (as hls-latency.mjs), WHIP frames by
// pages/latency-source.html. Viewers join one at a time, each a fresh page
// (pages/join-viewer.html) in its own browser context, at join moments spread over the
// GOP; for RTMP the driver knows where in the GOP each join fell (FFmpeg's keyframes are
// every --gop seconds exactly), hence how long the viewer would wait for the encoder's
// next keyframe. --join-frames sets SKYLARK_SFU_JOIN_FRAMES (what the SFU sends a WebRTC
// viewer joining mid-GOP of a publisher it can't ask for a keyframe).

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import { once } from 'node:events';
import { parseArgs } from 'node:util';
import { launchBrowser, waitForStatus } from '../lib/browser.js';
import { startServer, artifactPath } from '../lib/server.js';
import { withCleanup } from '../lib/harness.js';
import { encodeBits, COLS, ROWS } from '../pages/timecode.js';

const { values: opt } = parseArgs({
  options: {
    ingest: { type: 'string', default: 'rtmp' },
    gop: { type: 'string', default: '2' },
    kbps: { type: 'string', default: '600' },
    'join-frames': { type: 'string' },
    viewers: { type: 'string', default: '6' },
    kinds: { type: 'string', default: 'whep,flv,hls' },
    'after-s': { type: 'string', default: '4' },
    json: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (opt.help) {
  console.log('usage: node tests/e2e/bench/join.mjs [--ingest rtmp|whip] [--gop 2] [--kbps 600] [--join-frames wait|keyframe|gop|gop-fast] [--viewers 6] [--kinds whep,flv,hls] [--after-s 4] [--json]');
  process.exit(0);
}
const INGEST = opt.ingest;
if (!['whip', 'rtmp'].includes(INGEST)) throw new Error('--ingest must be whip or rtmp');
const GOP_S = Number(opt.gop);
const KBPS = Number(opt.kbps);
const VIEWERS = Number(opt.viewers);
const KINDS = opt.kinds.split(',');
const AFTER_S = Number(opt['after-s']);
const FIRST_FRAME_CAP_MS = 20_000;
const RUN_CAP_MS = (60 + VIEWERS * KINDS.length * (AFTER_S + 8)) * 1000;
const W = 640;
const H = 480;

const log = (m) => console.error(`[join-bench] ${m}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const r0 = (x) => (x === null || x === undefined || Number.isNaN(x) ? null : Math.round(x));
const wallNow = () => performance.timeOrigin + performance.now();
function pct(values, p) {
  const s = [...values].filter(Number.isFinite).sort((a, b) => a - b);
  if (!s.length) return null;
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}

function timecodeFrame(ms, buf) {
  const bits = encodeBits(ms);
  const bw = W / COLS;
  const bh = H / ROWS;
  for (let i = 0; i < COLS * ROWS; i++) {
    const v = bits[i] ? 235 : 16;
    const x0 = Math.round((i % COLS) * bw);
    const x1 = Math.round(((i % COLS) + 1) * bw);
    const y0 = Math.round(Math.floor(i / COLS) * bh);
    const y1 = Math.round((Math.floor(i / COLS) + 1) * bh);
    for (let y = y0; y < y1; y++) buf.fill(v, y * W + x0, y * W + x1);
  }
  return buf;
}

/** FFmpeg pushing time-code frames at exactly 30 fps, a keyframe every GOP_S s. */
function startRtmpSource(url, defer) {
  const gop = String(Math.round(GOP_S * 30));
  const args = [
    '-hide_banner', '-loglevel', 'warning', '-nostats',
    '-f', 'rawvideo', '-pix_fmt', 'yuv420p', '-s', `${W}x${H}`, '-framerate', '30',
    '-fflags', 'nobuffer', '-thread_queue_size', '64', '-i', 'pipe:0',
    '-f', 'lavfi', '-i', 'anullsrc=r=44100:cl=mono', '-map', '0:v', '-map', '1:a',
    '-c:v', 'libx264', '-preset', 'veryfast', '-tune', 'zerolatency', '-pix_fmt', 'yuv420p',
    '-g', gop, '-keyint_min', gop, '-sc_threshold', '0',
    '-b:v', `${KBPS}k`, '-maxrate', `${KBPS}k`, '-bufsize', `${KBPS}k`,
    '-c:a', 'aac', '-b:a', '64k', '-flush_packets', '1', '-f', 'flv', url,
  ];
  const logFile = artifactPath('join-bench-ffmpeg.log');
  const out = fs.createWriteStream(logFile);
  out.write(`# ffmpeg ${args.join(' ')}\n`);
  const ff = spawn('ffmpeg', args, { stdio: ['pipe', 'ignore', 'pipe'] });
  ff.stderr.pipe(out);
  ff.stdin.on('error', () => {});
  // keyAt: wall clock of the newest keyframe's source frame (frame numbers are exact).
  const st = { frames: 0, keyAt: null, logFile, args };
  const buf = Buffer.alloc((W * H * 3) / 2, 128);
  buf.fill(16, 0, W * H);
  const t0 = performance.now();
  let stopped = false;
  const tick = () => {
    if (stopped) return;
    const t = wallNow();
    if (st.frames % Number(gop) === 0) st.keyAt = t;
    ff.stdin.write(Buffer.from(timecodeFrame(t, buf)));
    st.frames++;
    setTimeout(tick, Math.max(0, t0 + (st.frames * 1000) / 30 - performance.now()));
  };
  tick();
  defer(async () => {
    stopped = true;
    ff.stdin.end();
    ff.kill('SIGTERM');
    await Promise.race([once(ff, 'exit'), sleep(3000)]);
    if (ff.exitCode === null) ff.kill('SIGKILL');
  });
  return st;
}

async function waitFor(url, what, capMs = 30_000) {
  const end = Date.now() + capMs;
  for (;;) {
    const r = await fetch(url).catch(() => null);
    if (r?.ok) return r.text();
    if (Date.now() > end) throw new Error(`${what}: ${url} not available within ${capMs / 1000} s`);
    await sleep(250);
  }
}

/** One viewer: page open → go → first frame, then AFTER_S s of frames. */
async function viewer(b, kind, src, source) {
  const page = await b.newPage('join-viewer.html', {}, { tag: `join-${kind}` });
  try {
    // Where in the source's GOP the join falls (RTMP only).
    const sinceKey = source?.keyAt ? wallNow() - source.keyAt : null;
    await page.evaluate(([k, s]) => window.go(k, s), [kind, src]);
    const end = Date.now() + FIRST_FRAME_CAP_MS;
    let r;
    for (;;) {
      r = await page.evaluate(() => window.result());
      if (r.error) throw new Error(`${kind} viewer: ${r.error}`);
      if (r.firstFrame !== null && wallNow() - r.firstFrame >= AFTER_S * 1000) break;
      if (Date.now() > end && r.firstFrame === null) throw new Error(`${kind} viewer: no frame within ${FIRST_FRAME_CAP_MS / 1000} s`);
      await sleep(200);
    }
    const lat = (from, to) => pct(r.samples.filter(([t]) => t >= from && t < to).map(([, l]) => l), 50);
    return {
      since_keyframe_ms: r0(sinceKey),
      join_ms: r0(r.firstFrame - r.start),
      first_timecode_ms: r.firstCode ? r0(r.firstCode.at - r.start) : null,
      first_latency_ms: r.firstCode ? r0(r.firstCode.latency) : null,
      latency_p50_0_1s: r0(lat(0, 1000)),
      latency_p50_1_2s: r0(lat(1000, 2000)),
      latency_p50_last_s: r0(lat((AFTER_S - 1) * 1000, AFTER_S * 1000)),
      misreads: r.misreads.length,
      misreads_first_s: r.misreads.filter((t) => t < 1000).length,
      stalls: r.waiting,
    };
  } finally {
    await page.evaluate(() => window.stop()).catch(() => {});
    await page.context().close().catch(() => {});
  }
}

async function main() {
  const result = {
    bench: 'join',
    started: new Date().toISOString(),
    machine: { nproc: os.availableParallelism?.() ?? os.cpus().length, loadavg_start: os.loadavg() },
    config: { ingest: INGEST, viewers: VIEWERS, kinds: KINDS, after_s: AFTER_S, join_frames: opt['join-frames'] ?? 'server default' },
  };
  if (INGEST === 'rtmp') Object.assign(result.config, { gop_s: GOP_S, kbps: KBPS });
  await withCleanup(
    async (defer) => {
      const env = opt['join-frames'] ? { SKYLARK_SFU_JOIN_FRAMES: opt['join-frames'] } : {};
      const sk = await startServer({ label: 'join-bench', env });
      defer(async (failed) => (failed ? sk.kill() : sk.stop()));
      result.server = { bin: sk.bin, log: sk.logFile };
      const b = await launchBrowser({ label: 'join-bench' });
      defer(() => b.close());
      result.machine.chromium = b.version;
      const creator = await sk.signup();
      const { room, stream_key: key, ingest } = await sk.createRoom(creator.access_token, { title: 'join bench', visibility: 'public', mode: 'sfu' });
      let source = null;
      if (INGEST === 'whip') {
        const page = await b.newPage('latency-source.html', { whip: ingest.whip_url, key }, { tag: 'source' });
        await waitForStatus(page, 'live', { timeoutMs: 30_000, what: 'WHIP source' });
      } else {
        source = startRtmpSource(`rtmp://127.0.0.1:${sk.rtmpPort}/live/${key}`, defer);
      }
      const urls = {
        whep: `${sk.baseUrl}/whep/${room.id}`,
        flv: `${sk.baseUrl}/flv/${room.id}.flv`,
        hls: `${sk.baseUrl}/hls/${room.id}/index.m3u8`,
      };
      await waitFor(urls.hls, 'Skylark HLS');
      await sleep(4000); // a few segments and GOPs in
      log(`room ${room.id} live and packaged; ${VIEWERS} viewers of each of ${KINDS.join(', ')}`);
      result.viewers = Object.fromEntries(KINDS.map((k) => [k, []]));
      for (let i = 0; i < VIEWERS; i++) {
        for (const kind of KINDS) {
          // Spread the joins over the GOP: an offset that is no multiple of a frame or GOP.
          await sleep(300 + ((i * 7 + KINDS.indexOf(kind) * 3) % 10) * 173);
          const v = await viewer(b, kind, urls[kind], source);
          result.viewers[kind].push(v);
          log(`${kind} #${i + 1}: ${JSON.stringify(v)}`);
        }
      }
    },
    { capMs: RUN_CAP_MS },
  );
  result.machine.loadavg_end = os.loadavg();
  result.summary = Object.fromEntries(
    Object.entries(result.viewers).map(([k, vs]) => {
      const col = (f) => vs.map((v) => v[f]);
      return [
        k,
        {
          join_p50: pct(col('join_ms'), 50),
          join_max: pct(col('join_ms'), 100),
          join_min: pct(col('join_ms'), 0),
          first_latency_p50: pct(col('first_latency_ms'), 50),
          latency_0_1s_p50: pct(col('latency_p50_0_1s'), 50),
          latency_1_2s_p50: pct(col('latency_p50_1_2s'), 50),
          latency_last_s_p50: pct(col('latency_p50_last_s'), 50),
          misreads_total: col('misreads').reduce((a, c) => a + c, 0),
          stalls_total: col('stalls').reduce((a, c) => a + c, 0),
          next_keyframe_wait_p50: INGEST === 'rtmp' ? pct(col('since_keyframe_ms').map((s) => GOP_S * 1000 - s), 50) : null,
        },
      ];
    }),
  );
  return result;
}

function table(r) {
  const c = r.config;
  const lines = [
    `Join, ingest ${c.ingest}${c.ingest === 'rtmp' ? ` (GOP ${c.gop_s} s, ${c.kbps} kbit/s)` : ''}, SKYLARK_SFU_JOIN_FRAMES=${c.join_frames}, ${c.viewers} viewers per kind (ms)`,
    'kind   join p50 (min–max)   next key p50   latency: first / 0–1 s / 1–2 s / last s   misreads  stalls',
  ];
  for (const [k, s] of Object.entries(r.summary)) {
    lines.push(
      `${k.padEnd(6)} ${String(s.join_p50).padStart(8)} (${s.join_min}–${s.join_max})`.padEnd(28) +
        `${String(s.next_keyframe_wait_p50 ?? '–').padStart(9)}   ${s.first_latency_p50} / ${s.latency_0_1s_p50} / ${s.latency_1_2s_p50} / ${s.latency_last_s_p50}`.padEnd(50) +
        `${s.misreads_total}  ${s.stalls_total}`,
    );
  }
  lines.push(`load average ${r.machine.loadavg_start.map((x) => x.toFixed(1)).join(' ')} → ${r.machine.loadavg_end.map((x) => x.toFixed(1)).join(' ')}; Chromium ${r.machine.chromium}`);
  return lines.join('\n');
}

main().then(
  (r) => {
    console.log(opt.json ? JSON.stringify(r, null, 2) : table(r));
    process.exit(0);
  },
  (e) => {
    console.error(e.stack ?? e);
    process.exit(1);
  },
);
