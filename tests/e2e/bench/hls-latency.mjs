#!/usr/bin/env node
// Glass-to-glass latency of Skylark's LL-HLS and HTTP-FLV outputs (and WHEP for
// reference), read off the video itself as in latency.mjs; with RTMP ingest, also
// nginx + libnginx-mod-rtmp's HLS fed the same FFmpeg stream in the same run.
//
//   node tests/e2e/bench/hls-latency.mjs --ingest whip [--seconds 20] [--part-ms 200] [--json]
//   node tests/e2e/bench/hls-latency.mjs --ingest rtmp [--nginx] [--gop 1] [--kbps 600] [--json]
//
// Ingest:
//   whip  pages/latency-source.html: Chromium draws the wall clock as blocks (timecode.js)
//         every 34 ms and publishes canvas.captureStream(30) + fake mic over WHIP.
//   rtmp  this process draws the same blocks into raw YUV frames at 30 fps (the time
//         code = performance.timeOrigin + performance.now() when the frame is made) and
//         pipes them to FFmpeg (libx264 zerolatency, fixed GOP, silent AAC), which pushes
//         one encode over RTMP to Skylark and, with --nginx, to two nginx-rtmp applications
//         (HLS with default settings; HLS with 1 s fragments) through the tee muxer.
// Viewers (one page each): WHEP (pages/latency-sink.html), Skylark LL-HLS with hls.js and
// HTTP-FLV with mpegts.js (pages/latency-player.html), nginx HLS with the same hls.js page.
// Every viewer decodes the time code of each displayed frame: latency = now − drawn time.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { once } from 'node:events';
import { parseArgs } from 'node:util';
import { launchBrowser, pollPage, waitForStatus } from '../lib/browser.js';
import { startServer, freePort, artifactPath } from '../lib/server.js';
import { withCleanup } from '../lib/harness.js';
import { encodeBits, COLS, ROWS } from '../pages/timecode.js';

const { values: opt } = parseArgs({
  options: {
    ingest: { type: 'string', default: 'whip' },
    seconds: { type: 'string', default: '20' },
    warmup: { type: 'string', default: '5' },
    'part-ms': { type: 'string', default: '200' },
    gop: { type: 'string', default: '1' },
    kbps: { type: 'string', default: '600' },
    nginx: { type: 'boolean', default: false },
    'no-flv': { type: 'boolean', default: false },
    'no-audio': { type: 'boolean', default: false },
    'no-hls': { type: 'boolean', default: false },
    'hls-config': { type: 'string', default: '{}' },
    players: { type: 'string', default: 'hls' },
    json: { type: 'boolean', default: false },
    save: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (opt.help) {
  console.log(
    'usage: node tests/e2e/bench/hls-latency.mjs [--ingest whip|rtmp] [--seconds 20] [--warmup 5] [--part-ms 200]\n' +
      '       [--gop 1 (s, rtmp)] [--kbps 600 (rtmp)] [--nginx (rtmp)] [--no-audio (rtmp)] [--no-flv] [--no-hls (Skylark HLS viewer off)] [--players hls,shaka,videojs] [--hls-config JSON (hls.js)] [--json] [--save FILE.json]',
  );
  process.exit(0);
}
const INGEST = opt.ingest;
if (!['whip', 'rtmp'].includes(INGEST)) throw new Error('--ingest must be whip or rtmp');
const SECONDS = Number(opt.seconds);
const WARMUP_S = Number(opt.warmup);
const PART_MS = Number(opt['part-ms']);
const GOP_S = Number(opt.gop);
const KBPS = Number(opt.kbps);
const NGINX = opt.nginx && INGEST === 'rtmp';
const HLS_CONFIG = JSON.parse(opt['hls-config']);
// Which players play Skylark's LL-HLS, each in its own page (pages/latency-player.html kinds).
const PLAYER_NAMES = { hls: 'hls.js', shaka: 'Shaka', videojs: 'video.js' };
const PLAYERS = opt.players.split(',').filter(Boolean);
for (const k of PLAYERS) if (!PLAYER_NAMES[k]) throw new Error(`--players: ${k} is not one of ${Object.keys(PLAYER_NAMES).join(', ')}`);
const CONNECT_CAP_MS = 30_000;
const RUN_CAP_MS = (90 + WARMUP_S + SECONDS) * 1000;
const W = 640;
const H = 480;

const log = (m) => console.error(`[hls-bench] ${m}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const r1 = (x) => (x === null || x === undefined || Number.isNaN(x) ? null : Math.round(x * 10) / 10);
function pct(sorted, p) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}
function summary(values) {
  const s = [...values].sort((a, b) => a - b);
  return { n: s.length, p50: r1(pct(s, 50)), p95: r1(pct(s, 95)), min: r1(s[0]), max: r1(s.at(-1)) };
}
const wallNow = () => performance.timeOrigin + performance.now();

/** Offset of a page's wall clock from this process's (best of 10, ± half a round trip). */
async function clockOffset(page) {
  let best = null;
  for (let i = 0; i < 10; i++) {
    const t1 = wallNow();
    const tp = await page.evaluate(() => performance.timeOrigin + performance.now());
    const t2 = wallNow();
    if (!best || t2 - t1 < best.uncertainty * 2) best = { offset: r1(tp - (t1 + t2) / 2), uncertainty: r1((t2 - t1) / 2) };
  }
  return best;
}

// --- RTMP source: time-code frames → FFmpeg → RTMP -------------------------------------

/** One 640x480 yuv420p frame with the blocks of `ms` (Y 0/255, chroma neutral). */
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

function startRtmpSource(targets, defer) {
  const tee = targets.map((u) => `[f=flv:onfail=ignore]${u}`).join('|');
  const args = [
    '-hide_banner', '-loglevel', 'warning', '-nostats',
    '-f', 'rawvideo', '-pix_fmt', 'yuv420p', '-s', `${W}x${H}`, '-framerate', '30',
    '-fflags', 'nobuffer', '-thread_queue_size', '64', '-i', 'pipe:0',
    ...(opt['no-audio'] ? [] : ['-f', 'lavfi', '-i', 'anullsrc=r=44100:cl=mono']),
    '-map', '0:v', ...(opt['no-audio'] ? [] : ['-map', '1:a']),
    '-c:v', 'libx264', '-preset', 'veryfast', '-tune', 'zerolatency', '-pix_fmt', 'yuv420p',
    '-g', String(Math.round(GOP_S * 30)), '-keyint_min', String(Math.round(GOP_S * 30)), '-sc_threshold', '0',
    '-b:v', `${KBPS}k`, '-maxrate', `${KBPS}k`, '-bufsize', `${KBPS}k`,
    // tee cannot tell the encoders that FLV wants the codec headers up front
    '-flags', '+global_header', ...(opt['no-audio'] ? [] : ['-c:a', 'aac', '-b:a', '64k']), '-flush_packets', '1',
    '-f', 'tee', tee,
  ];
  const logFile = artifactPath('hls-bench-ffmpeg.log');
  const out = fs.createWriteStream(logFile);
  out.write(`# ffmpeg ${args.join(' ')}\n`);
  const ff = spawn('ffmpeg', args, { stdio: ['pipe', 'ignore', 'pipe'] });
  ff.stderr.pipe(out);
  ff.stdin.on('error', () => {});
  // behind: frames written while FFmpeg had not yet taken the previous one (they wait in
  // the pipe, and that wait is part of the measured latency).
  const st = { frames: 0, behind: 0, logFile, args };
  const buf = Buffer.alloc((W * H * 3) / 2, 128);
  buf.fill(16, 0, W * H);
  const t0 = performance.now();
  let frame = 0;
  let stopped = false;
  const tick = () => {
    if (stopped) return;
    if (ff.stdin.writableLength > 0) st.behind++;
    ff.stdin.write(Buffer.from(timecodeFrame(wallNow(), buf)));
    st.frames++;
    // Exactly 30 fps on a fixed grid (FFmpeg stamps the raw frames at a constant 30 fps,
    // so the stream's clock must not drift from the wall clock).
    frame++;
    setTimeout(tick, Math.max(0, t0 + (frame * 1000) / 30 - performance.now()));
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

// --- nginx-rtmp -------------------------------------------------------------------------

async function startNginx(defer) {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'hls-bench-nginx-'));
  const rtmpPort = await freePort();
  const httpPort = await freePort();
  for (const d of ['hls', 'hls1', 'tmp']) await fsp.mkdir(path.join(dir, d));
  const conf = `
load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
daemon off;
user root;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 256; }
rtmp {
  server {
    listen 127.0.0.1:${rtmpPort};
    chunk_size 4096;
    # nginx-rtmp defaults: hls_fragment 5s, hls_playlist_length 30s
    application live { live on; hls on; hls_path ${dir}/hls; }
    application live1 { live on; hls on; hls_path ${dir}/hls1; hls_fragment 1s; hls_playlist_length 6s; }
  }
}
http {
  access_log off;
  client_body_temp_path ${dir}/tmp; proxy_temp_path ${dir}/tmp; fastcgi_temp_path ${dir}/tmp;
  uwsgi_temp_path ${dir}/tmp; scgi_temp_path ${dir}/tmp;
  types { application/vnd.apple.mpegurl m3u8; video/mp2t ts; }
  server {
    listen 127.0.0.1:${httpPort};
    location /hls/ { alias ${dir}/hls/; add_header Access-Control-Allow-Origin * always; add_header Cache-Control no-cache always; }
    location /hls1/ { alias ${dir}/hls1/; add_header Access-Control-Allow-Origin * always; add_header Cache-Control no-cache always; }
  }
}
`;
  const confFile = path.join(dir, 'nginx.conf');
  await fsp.writeFile(confFile, conf);
  const ng = spawn('nginx', ['-p', dir, '-e', path.join(dir, 'error.log'), '-c', confFile], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  ng.stderr.on('data', (c) => (err += c));
  defer(async () => {
    ng.kill('SIGTERM');
    await Promise.race([once(ng, 'exit'), sleep(3000)]);
    if (ng.exitCode === null) ng.kill('SIGKILL');
    await fsp.rm(dir, { recursive: true, force: true }).catch(() => {});
  });
  await sleep(500);
  if (ng.exitCode !== null) throw new Error(`nginx exited: ${err} ${fs.readFileSync(path.join(dir, 'error.log'), 'utf8')}`);
  return { dir, rtmpPort, httpPort, version: await nginxVersion() };
}

async function nginxVersion() {
  const p = spawn('nginx', ['-v'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let s = '';
  p.stderr.on('data', (c) => (s += c));
  await once(p, 'exit');
  return s.trim();
}

/** Segment durations and part info of a media playlist. */
function parsePlaylist(text) {
  const seg = [...text.matchAll(/#EXTINF:([\d.]+)/g)].map((m) => Number(m[1]));
  return {
    target_duration_s: Number(text.match(/#EXT-X-TARGETDURATION:(\d+)/)?.[1] ?? NaN),
    part_target_s: Number(text.match(/PART-TARGET=([\d.]+)/)?.[1] ?? NaN) || null,
    server_control: text.match(/#EXT-X-SERVER-CONTROL:(.*)/)?.[1] ?? null,
    segments_s: seg,
    parts: (text.match(/#EXT-X-PART:/g) ?? []).length,
  };
}

async function waitFor(url, what, capMs = CONNECT_CAP_MS) {
  const end = Date.now() + capMs;
  for (;;) {
    const r = await fetch(url).catch(() => null);
    if (r?.ok) return r.text();
    if (Date.now() > end) throw new Error(`${what}: ${url} not available within ${capMs / 1000} s`);
    await sleep(250);
  }
}

// --- run --------------------------------------------------------------------------------

async function main() {
  const result = {
    bench: 'hls-latency',
    started: new Date().toISOString(),
    machine: { nproc: os.availableParallelism?.() ?? os.cpus().length, loadavg_start: os.loadavg().map(r1) },
    config: { ingest: INGEST, seconds: SECONDS, warmup_s: WARMUP_S, part_ms: PART_MS, nginx: NGINX, players: PLAYERS, hls_config: { lowLatencyMode: true, ...HLS_CONFIG } },
  };
  if (INGEST === 'rtmp') Object.assign(result.config, { gop_s: GOP_S, kbps: KBPS, audio: !opt['no-audio'] });
  await withCleanup(
    async (defer) => {
      const sk = await startServer({ label: 'hls-bench', env: { SKYLARK_HLS_PART_MS: String(PART_MS) } });
      defer(async (failed) => (failed ? sk.kill() : sk.stop()));
      result.server = { bin: sk.bin, log: sk.logFile };
      const b = await launchBrowser({ label: 'hls-bench' });
      defer(() => b.close());
      result.machine.chromium = b.version;
      result.browser_console = b.logFile;
      try {
        await measure(sk, b, result, defer);
      } catch (e) {
        e.message += `\n  server log: ${sk.logFile}\n  browser console: ${b.logFile}`;
        throw e;
      }
    },
    { capMs: RUN_CAP_MS },
  );
  result.machine.loadavg_end = os.loadavg().map(r1);
  return result;
}

async function measure(sk, b, result, defer) {
  const creator = await sk.signup();
  const { room, stream_key: key, ingest } = await sk.createRoom(creator.access_token, { title: 'hls bench', visibility: 'public', mode: 'sfu' });
  const hlsUrl = `${sk.baseUrl}/hls/${room.id}/index.m3u8`;
  let source = null;
  let ng = null;
  if (INGEST === 'whip') {
    source = await b.newPage('latency-source.html', { whip: ingest.whip_url, key }, { tag: 'source' });
    await waitForStatus(source, 'live', { timeoutMs: CONNECT_CAP_MS, what: 'WHIP source' });
  } else {
    const targets = [`rtmp://127.0.0.1:${sk.rtmpPort}/live/${key}`];
    if (NGINX) {
      ng = await startNginx(defer);
      result.nginx = { version: ng.version, conf: 'application live: hls defaults (hls_fragment 5s, hls_playlist_length 30s); live1: hls_fragment 1s, hls_playlist_length 6s' };
      targets.push(`rtmp://127.0.0.1:${ng.rtmpPort}/live/stream`, `rtmp://127.0.0.1:${ng.rtmpPort}/live1/stream`);
    }
    result.rtmp_source = startRtmpSource(targets, defer);
    log(`FFmpeg → ${targets.join(', ')}; log ${result.rtmp_source.logFile}`);
  }
  const mv = await waitFor(hlsUrl, 'Skylark HLS');
  const mediaUrl = new URL(mv.split('\n').find((l) => l && !l.startsWith('#')) ?? 'media.m3u8', hlsUrl).toString();
  log(`room packaged: ${hlsUrl}`);

  // Viewers.
  const viewers = [];
  const whepSink = await b.newPage('latency-sink.html', {}, { tag: 'whep' });
  await whepSink.evaluate(([u]) => window.startWhep('whep', u), [`${sk.baseUrl}/whep/${room.id}`]);
  viewers.push({ name: 'Skylark WHEP', page: whepSink, kind: 'whep' });
  const player = async (name, kind, src) => {
    // Shaka with the setting its page needs until a release fixes its gaps (README "Design notes").
    const params =
      kind === 'hls' ? { kind, src, config: JSON.stringify(HLS_CONFIG) }
      : kind === 'shaka' ? { kind, src, config: JSON.stringify({ manifest: { hls: { sequenceMode: true } } }) }
      : { kind, src };
    const page = await b.newPage('latency-player.html', params, { tag: name });
    viewers.push({ name, page, kind, src, opened: wallNow() });
  };
  if (!opt['no-hls']) {
    for (const k of PLAYERS) await player(PLAYERS.length === 1 && k === 'hls' ? 'Skylark LL-HLS' : `LL-HLS ${PLAYER_NAMES[k]}`, k, hlsUrl);
  }
  if (!opt['no-flv']) await player('Skylark HTTP-FLV', 'flv', `${sk.baseUrl}/flv/${room.id}.flv`);
  if (ng) {
    await waitFor(`http://127.0.0.1:${ng.httpPort}/hls/stream.m3u8`, 'nginx HLS', 40_000);
    await player('nginx HLS (default)', 'hls', `http://127.0.0.1:${ng.httpPort}/hls/stream.m3u8`);
    await waitFor(`http://127.0.0.1:${ng.httpPort}/hls1/stream.m3u8`, 'nginx HLS 1 s', 20_000);
    await player('nginx HLS (1 s frag)', 'hls', `http://127.0.0.1:${ng.httpPort}/hls1/stream.m3u8`);
  }
  for (const v of viewers) {
    const fn = v.kind === 'whep' ? () => window.progress() : () => window.progress();
    const done = v.kind === 'whep' ? (s) => s.whep > 0 : (s) => s.decoded > 0;
    await pollPage(v.page, fn, done, { timeoutMs: 40_000, what: `${v.name} waiting for time codes` });
    log(`${v.name}: decoding time codes`);
  }
  result.clock_offset_ms = Object.fromEntries(await Promise.all(viewers.map(async (v) => [v.name, await clockOffset(v.page)])));

  log(`warm-up ${WARMUP_S} s, then measuring ${SECONDS} s`);
  await sleep(WARMUP_S * 1000);
  for (const v of viewers) await v.page.evaluate(() => window.resetWindow());
  const frames0 = result.rtmp_source?.frames;
  // Player-reported distance to the live edge, sampled every 2 s in the window.
  const samples = Object.fromEntries(viewers.map((v) => [v.name, []]));
  const end = Date.now() + SECONDS * 1000;
  while (Date.now() < end) {
    await sleep(Math.min(2000, Math.max(0, end - Date.now())));
    for (const v of viewers) if (v.kind !== 'whep') samples[v.name].push(await v.page.evaluate(() => window.progress()));
  }
  const wins = [];
  for (const v of viewers) wins.push(await v.page.evaluate(() => window.takeWindow()));
  if (frames0 !== undefined) result.rtmp_frames_in_window = result.rtmp_source.frames - frames0;

  result.paths = {};
  viewers.forEach((v, i) => {
    const w = v.kind === 'whep' ? wins[i].whep : wins[i];
    const lat = summary(w.latencies);
    const row = {
      latency_ms: lat,
      samples: w.latencies.length,
      misreads: w.misreads.grey + w.misreads.crc,
      repeats: w.repeats,
      shown_without_callback: w.unseen,
    };
    if (v.kind !== 'whep') {
      const s = samples[v.name];
      const avg = (k) => {
        const xs = s.map((x) => x[k]).filter(Number.isFinite);
        return xs.length ? Math.round((xs.reduce((a, c) => a + c, 0) / xs.length) * 1000) : null;
      };
      Object.assign(row, {
        stalls: w.stalls,
        player_stalls: w.playerStalls,
        // page opened → first frame shown / first time code read (ms)
        join_first_frame_ms: w.marks.firstFrame !== undefined ? Math.round(w.marks.firstFrame - w.marks.start) : null,
        player_latency_avg_ms: avg('playerLatencyS'),
        player_target_latency_avg_ms: avg('playerTargetLatencyS'),
        buffer_ahead_avg_ms: avg('bufferAheadS'),
        playlist_seen_by_player: w.player.segmentDurationsS
          ? { target_duration_s: w.player.targetDurationS, part_target_s: w.player.partTargetS, part_hold_back_s: w.player.partHoldBackS, segments_s: w.player.segmentDurationsS.slice(-10) }
          : null,
        player_errors: w.errors,
        player_error_details: w.errorDetails,
      });
    }
    result.paths[v.name] = row;
  });
  result.skylark_media_playlist = parsePlaylist(await (await fetch(mediaUrl)).text());
  if (ng) {
    result.nginx_playlists = {
      default: parsePlaylist(await (await fetch(`http://127.0.0.1:${ng.httpPort}/hls/stream.m3u8`)).text()),
      frag1s: parsePlaylist(await (await fetch(`http://127.0.0.1:${ng.httpPort}/hls1/stream.m3u8`)).text()),
    };
  }
  for (const v of viewers) await v.page.evaluate(() => window.stop()).catch(() => {});
  if (source) await source.evaluate(() => window.stop()).catch(() => {});
}

function table(r) {
  const fmt = (x) => (x === null || x === undefined ? '–' : String(x));
  const lines = [
    `Glass-to-glass latency, ingest ${r.config.ingest}${r.config.ingest === 'rtmp' ? ` (FFmpeg x264, GOP ${r.config.gop_s} s, ${r.config.kbps} kbit/s)` : ''}, SKYLARK_HLS_PART_MS=${r.config.part_ms}, ${r.config.seconds} s window (ms)`,
    `${'path'.padEnd(22)}${'samples'.padStart(8)}${'p50'.padStart(8)}${'p95'.padStart(8)}${'min'.padStart(8)}${'max'.padStart(8)}  join  player-latency  buffer-ahead  stalls`,
  ];
  for (const [name, p] of Object.entries(r.paths)) {
    const l = p.latency_ms;
    lines.push(
      `${name.padEnd(22)}${fmt(p.samples).padStart(8)}${fmt(l.p50).padStart(8)}${fmt(l.p95).padStart(8)}${fmt(l.min).padStart(8)}${fmt(l.max).padStart(8)}  ${fmt(p.join_first_frame_ms).padStart(5)}  ${fmt(p.player_latency_avg_ms).padStart(14)}  ${fmt(p.buffer_ahead_avg_ms).padStart(12)}  ${fmt(p.stalls).padStart(6)}`,
    );
  }
  const pl = r.skylark_media_playlist;
  lines.push(`Skylark media playlist: segments ${pl.segments_s.join(', ')} s; PART-TARGET ${fmt(pl.part_target_s)}; ${pl.server_control}`);
  if (r.nginx_playlists) {
    lines.push(`nginx default playlist: segments ${r.nginx_playlists.default.segments_s.join(', ')} s`);
    lines.push(`nginx 1 s playlist: segments ${r.nginx_playlists.frag1s.segments_s.join(', ')} s`);
  }
  lines.push(`clock offsets (page − driver/source): ${JSON.stringify(r.clock_offset_ms)}`);
  lines.push(`load average start ${r.machine.loadavg_start.join(' ')} → end ${r.machine.loadavg_end.join(' ')}; Chromium ${r.machine.chromium}`);
  if (r.rtmp_source) lines.push(`RTMP source: ${r.rtmp_source.frames} frames piped, ${r.rtmp_source.behind} written while FFmpeg was behind; ffmpeg log ${r.rtmp_source.logFile}`);
  return lines.join('\n');
}

try {
  const t0 = performance.now();
  const r = await main();
  r.run_s = r1((performance.now() - t0) / 1000);
  if (r.rtmp_source) delete r.rtmp_source.args;
  if (opt.save) fs.writeFileSync(opt.save, JSON.stringify(r, null, 1));
  process.stdout.write(`${opt.json ? JSON.stringify(r) : table(r)}\n`, () => process.exit(0));
} catch (e) {
  console.error(`hls-latency bench failed: ${e.stack ?? e.message ?? e}`);
  process.exit(1);
}
