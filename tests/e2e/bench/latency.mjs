#!/usr/bin/env node
// Glass-to-glass latency through Skylark, read off the video itself, next to the floor
// (the same frames over a direct Chromium-to-Chromium connection), plus WHEP join time
// and, with --cpu-seconds, the server's CPU time per viewer; over one or more transports
// back to back, against the same server processes.
//
//   node tests/e2e/bench/latency.mjs [--seconds 20] [--viewers 20] [--json]
//     [--transports udp,tcp,turn-udp,turn-tls] [--cpu-seconds 0]
//   SKYLARK_BIN=/path/to/release/skylark node tests/e2e/bench/latency.mjs
//
// Transports of the Skylark path (viewer side; the WHIP source always sends over UDP):
//   udp       direct UDP (the default)
//   tcp       ICE-TCP: the SFU's UDP candidates are dropped from the WHEP answer in the
//             page, so ICE can only take its passive TCP candidate (SKYLARK_RTC_TCP_ADDR)
//   turn-udp  relay only, through a `skylark turn` process of its own, over UDP
//   turn-tls  the same over `turns:` (self-signed certificate)
// `--turn off|udp|tls` is the older spelling of one of udp, turn-udp, turn-tls.
//
// One headless Chromium, separate pages (separate renderer processes):
//   source  pages/latency-source.html: draws its wall clock as blocks 30 times a second,
//           sends canvas.captureStream(30) + fake mic over WHIP and over a direct P2P link;
//   sinks   pages/latency-sink.html, one per transport: plays over WHEP and answers the
//           P2P offer; decodes the blocks of every displayed frame: latency = now − drawn.
// Both paths carry the same frames at the same time, so CPU load and scheduling noise
// hit both alike and the p50 difference is what the SFU adds. Then K viewers join one
// after another over the same transport (pages/watch.html): WHEP POST → first displayed
// frame. With --cpu-seconds S they stay, and the server processes' CPU time (utime +
// stime, /proc/<pid>/stat) over S seconds, less the same window with no viewer (the
// publisher alone, measured first), divided by K and S, is the CPU per viewer.
// Progress goes to stderr; the table (or, with --json, one JSON object) to stdout.

import fs from 'node:fs';
import os from 'node:os';
import { parseArgs } from 'node:util';
import { execFileSync } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { pollPage, waitForStatus } from '../lib/browser.js';
import { withCleanup, deadline } from '../lib/harness.js';
import { serverFor, browserFor } from '../lib/fixtures.js';
import { freePort } from '../lib/server.js';

const TARGET_SFU_ADDED_MS = 15;
const TARGET_JOIN_P50_MS = 100;

const { values: opt } = parseArgs({
  options: {
    seconds: { type: 'string', default: '20' },
    warmup: { type: 'string', default: '3' },
    viewers: { type: 'string', default: '20' },
    'join-gap-ms': { type: 'string', default: '500' },
    'p2p-av-sync': { type: 'string', default: 'auto' },
    transports: { type: 'string' },
    turn: { type: 'string' },
    'cpu-seconds': { type: 'string', default: '0' },
    json: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (opt.help) {
  console.log(
    'usage: node tests/e2e/bench/latency.mjs [--seconds 20] [--warmup 3] [--viewers 20] [--join-gap-ms 500] [--p2p-av-sync auto|on|off]\n' +
      '         [--transports udp,tcp,turn-udp,turn-tls] [--cpu-seconds 0] [--json]\n' +
      '  --p2p-av-sync: audio+video of the P2P floor in one stream (lip-synced); auto = as Skylark delivers them\n' +
      '  --transports: the Skylark path measured over each, back to back (see the top of this file)\n' +
      '  --cpu-seconds: keep the --viewers joined and measure the server\'s CPU time per viewer over this window',
  );
  process.exit(0);
}
const SECONDS = positive('seconds');
const WARMUP_S = positive('warmup', true);
const VIEWERS = positive('viewers', true);
const JOIN_GAP_MS = positive('join-gap-ms', true);
const CPU_SECONDS = positive('cpu-seconds', true);
const TRANSPORTS = transports();
const P2P_AV_SYNC = opt['p2p-av-sync'];
if (!['auto', 'on', 'off'].includes(P2P_AV_SYNC)) {
  console.error(`--p2p-av-sync must be auto, on or off, not ${P2P_AV_SYNC}`);
  process.exit(2);
}

function positive(name, zeroOk = false) {
  const n = Number(opt[name]);
  if (!Number.isFinite(n) || n < 0 || (!zeroOk && n === 0)) {
    console.error(`--${name} must be a ${zeroOk ? 'non-negative' : 'positive'} number, not ${opt[name]}`);
    process.exit(2);
  }
  return n;
}

/** Caps per step; the whole run (default arguments) stays under 2 minutes. */
const CONNECT_CAP_MS = 20_000;
const JOIN_CAP_MS = 10_000;
// Start-up (servers, browser) ~10 s, teardown ~5 s; per transport: connections ~10 s,
// join ~1 s per viewer, settling before the CPU window 2 s; the baseline CPU window.
const RUN_CAP_MS = (30 + CPU_SECONDS + TRANSPORTS.length * (12 + WARMUP_S + SECONDS + VIEWERS * 2.5 + CPU_SECONDS)) * 1000;

const log = (m) => console.error(`[bench] ${m}`);

const TURN_SECRET = 'bench-latency-turn-secret';

function transports() {
  const legacy = { off: 'udp', udp: 'turn-udp', tls: 'turn-tls' };
  if (opt.turn !== undefined && !(opt.turn in legacy)) {
    console.error(`--turn must be off, udp or tls, not ${opt.turn}`);
    process.exit(2);
  }
  const list = (opt.transports ?? legacy[opt.turn ?? 'off']).split(',').map((t) => t.trim()).filter(Boolean);
  const bad = list.filter((t) => !['udp', 'tcp', 'turn-udp', 'turn-tls'].includes(t));
  if (!list.length || bad.length) {
    console.error(`--transports takes udp, tcp, turn-udp, turn-tls (comma-separated), not ${bad.join(',') || 'nothing'}`);
    process.exit(2);
  }
  return list;
}

/**
 * A TURN server for the turn-* transports: `skylark turn`, a process of its own, so its
 * CPU time is its own. It shares no bus with the all-in-one, so it learns no SFU nodes:
 * SKYLARK_TURN_ALLOW_PEERS lets it relay to loopback instead.
 */
async function turnServer(defer) {
  if (!TRANSPORTS.some((t) => t.startsWith('turn-'))) return null;
  const env = { SKYLARK_TURN_ADDR: '127.0.0.1:0', SKYLARK_TURN_SECRET: TURN_SECRET, SKYLARK_TURN_ALLOW_PEERS: '127.0.0.1/32' };
  let tlsPort = null;
  if (TRANSPORTS.includes('turn-tls')) {
    const dir = fs.mkdtempSync(`${os.tmpdir()}/bench-turn-`);
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1',
      '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', `${dir}/key.pem`, '-out', `${dir}/cert.pem`], { stdio: 'ignore' });
    tlsPort = await freePort();
    Object.assign(env, { SKYLARK_TURN_TLS_ADDR: `127.0.0.1:${tlsPort}`, SKYLARK_TURN_TLS_CERT: `${dir}/cert.pem`, SKYLARK_TURN_TLS_KEY: `${dir}/key.pem` });
  }
  const turn = await serverFor(defer, { label: 'bench-latency-turn', env, args: ['turn'] });
  const port = Number(turn.output().match(/TURN UDP and TCP listening on [\d.]+:(\d+)/)?.[1]);
  if (!port) throw new Error(`skylark turn did not say where it listens; log: ${turn.logFile}`);
  return { ...turn, udpPort: port, tlsPort };
}

/**
 * The `?ice=` of a page playing over `transport` (see iceSettings in pages/common.js);
 * TURN with a TURN REST credential of its own (`who`), as signaling mints one per viewer.
 */
function iceFor(transport, turn, who) {
  if (transport === 'udp') return {};
  if (transport === 'tcp') return { onlyTcp: true };
  const url = transport === 'turn-tls' ? `turns:127.0.0.1:${turn.tlsPort}?transport=tcp` : `turn:127.0.0.1:${turn.udpPort}?transport=udp`;
  const username = `${Math.floor(Date.now() / 1000) + 3600}:${who}`;
  const credential = createHmac('sha1', TURN_SECRET).update(username).digest('base64');
  return { iceServers: [{ urls: [url], username, credential }], iceTransportPolicy: 'relay' };
}

/** Throws unless ICE picked the pair `transport` means (selectedPair in pages/common.js). */
function checkPair(transport, pair, who) {
  const ok = {
    udp: (p) => p.protocol === 'udp' && p.localType !== 'relay',
    tcp: (p) => p.protocol === 'tcp' && p.localType !== 'relay',
    'turn-udp': (p) => p.localType === 'relay' && p.relayProtocol === 'udp',
    'turn-tls': (p) => p.localType === 'relay' && p.relayProtocol === 'tls',
  }[transport];
  if (!pair || !ok(pair)) throw new Error(`${who}: asked for ${transport}, ICE selected ${JSON.stringify(pair)}`);
}

const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;

/** CPU time (user + system) process `pid` has used so far, in ms. */
function cpuMs(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(f[11]) + Number(f[12])) * 1000) / CLK_TCK;
}

/** name → CPU ms per wall second of each process in `procs` (name → pid) over `seconds`. */
async function cpuWindow(procs, seconds) {
  const before = Object.fromEntries(Object.entries(procs).map(([n, pid]) => [n, cpuMs(pid)]));
  const t0 = performance.now();
  await sleep(seconds * 1000);
  const wall = (performance.now() - t0) / 1000;
  return Object.fromEntries(Object.entries(procs).map(([n, pid]) => [n, r1((cpuMs(pid) - before[n]) / wall)]));
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Nearest-rank percentile of a sorted array (a value that was actually measured). */
function pct(sorted, p) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}
const r1 = (x) => (x === null || x === undefined || Number.isNaN(x) ? null : Math.round(x * 10) / 10);

function summary(values) {
  const s = [...values].sort((a, b) => a - b);
  return { n: s.length, p50: r1(pct(s, 50)), p95: r1(pct(s, 95)), p99: r1(pct(s, 99)), min: r1(s[0]), max: r1(s.at(-1)) };
}

/** Whether the received audio and video tracks share a MediaStream (= are lip-synced). */
function sharedStream(tracks) {
  const ids = (kind) => new Set(tracks.filter((t) => t.kind === kind).flatMap((t) => t.streams));
  const audio = ids('audio');
  return [...ids('video')].some((id) => audio.has(id));
}

/** {"0": n, "5": n, …}: how many samples fell in each `width` ms bucket. */
function histogram(values, width) {
  const h = {};
  for (const v of values) {
    const k = Math.floor(v / width) * width;
    h[k] = (h[k] ?? 0) + 1;
  }
  return Object.fromEntries(Object.entries(h).sort((a, b) => a[0] - b[0]));
}

/**
 * Offset of `b`'s wall clock (timeOrigin + now) from `a`'s. The pages run in separate
 * renderer processes, each of which anchors its clock to the system time once; this
 * checks that assumption (a→b→a, best of 10: the answer is ± half that round trip).
 */
async function clockOffset(a, b) {
  const now = () => performance.timeOrigin + performance.now();
  let best = null;
  for (let i = 0; i < 10; i++) {
    const t1 = await a.evaluate(now);
    const tb = await b.evaluate(now);
    const t2 = await a.evaluate(now);
    if (!best || t2 - t1 < best.uncertainty * 2) best = { offset: r1(tb - (t1 + t2) / 2), uncertainty: r1((t2 - t1) / 2) };
  }
  return best;
}

/** One path's window: latency percentiles and the reasons samples are missing. */
function pathResult(win, trackStreams, sent, sentBefore, seconds) {
  const st = win.stats;
  const misreads = win.misreads.grey + win.misreads.crc;
  const perFrame = (total, count) => (count ? r1((total / count) * 1000) : null);
  return {
    // drawn → the frame's requestVideoFrameCallback: the glass-to-glass figure.
    latency_ms: summary(win.latencies),
    // drawn → last packet received, and received → shown (rVFC receiveTime).
    draw_to_receive_ms: summary(win.toReceive),
    receive_to_shown_ms: summary(win.receiveToShown),
    histogram_5ms: histogram(win.latencies, 5),
    samples: win.latencies.length,
    misreads,
    misreads_by_reason: win.misreads,
    repeated_frames: win.repeats,
    // callbacks that read a newer frame than theirs (see latency-sink.html): skipped.
    newer_frame_read: win.early,
    frames_shown_without_callback: win.unseen,
    callbacks: win.callbacks,
    frames_decoded: st.framesDecoded,
    fps: r1(win.latencies.length / seconds),
    // decoded by WebRTC in the window, reported by rVFC or not
    frames_decoded_in_window: st.framesDecoded - win.decodedAtStart,
    codec: st.codec,
    decoder: st.decoderImplementation ?? null,
    encoder: sent?.encoderImplementation ?? null,
    frames_captured_in_window: sent && sentBefore ? sent.framesCaptured - sentBefore.framesCaptured : null,
    frames_encoded_in_window: sent && sentBefore ? sent.framesEncoded - sentBefore.framesEncoded : null,
    sent_resolution: sent ? `${sent.frameWidth}x${sent.frameHeight}` : null,
    sent_kbps: sent && sentBefore ? Math.round(((sent.bytesSent - sentBefore.bytesSent) * 8) / seconds / 1000) : null,
    quality_limitation: sent?.qualityLimitationReason ?? null,
    // averages over the whole session (warm-up included), from getStats
    jitter_buffer_ms_avg: perFrame(st.jitterBufferDelay, st.jitterBufferEmittedCount),
    decode_ms_avg: perFrame(st.totalDecodeTime, st.framesDecoded),
    frames_dropped: st.framesDropped ?? null,
    freezes: st.freezeCount ?? null,
    packets_lost: st.packetsLost ?? null,
    nacks: st.nackCount ?? null,
    av_streams: trackStreams,
  };
}

/** Servers + browser around `measure`; a failure names the server logs and browser console. */
async function main() {
  const result = {
    bench: 'latency',
    started: new Date().toISOString(),
    machine: {
      nproc: os.availableParallelism?.() ?? os.cpus().length,
      cpu: cpuModel(),
      os: osName(),
      node: process.version,
      // 1-minute load average before and after: other work on the machine is noise here.
      loadavg_start: r1(os.loadavg()[0]),
    },
    config: {
      seconds: SECONDS, warmup_s: WARMUP_S, viewers: VIEWERS, join_gap_ms: JOIN_GAP_MS, p2p_av_sync: P2P_AV_SYNC,
      size: '640x480', transports: TRANSPORTS, cpu_seconds: CPU_SECONDS,
    },
  };

  await withCleanup(
    async (defer) => {
      const turn = await turnServer(defer);
      const sk = await serverFor(defer, { label: 'bench-latency' });
      result.server = { bin: sk.bin, startup_ms: sk.startupMs, log: sk.logFile, turn_log: turn?.logFile ?? null };
      log(`skylark ${sk.bin} ready in ${sk.startupMs} ms on ${sk.baseUrl}${turn ? `; skylark turn on UDP/TCP ${turn.udpPort}` : ''}`);

      const b = await browserFor(defer, 'bench-latency', TRANSPORTS.includes('turn-tls') ? ['--ignore-certificate-errors'] : []);
      result.machine.chromium = b.version;
      result.browser_console = b.logFile;
      log(`Chromium ${b.version}; consoles in ${b.logFile}`);

      try {
        await measure(sk, turn, b, result);
      } catch (e) {
        e.message += `\n  server log: ${sk.logFile}${turn ? `\n  TURN server log: ${turn.logFile}` : ''}\n  browser console: ${b.logFile}`;
        throw e;
      }
    },
    { capMs: RUN_CAP_MS },
  );
  return result;
}

async function measure(sk, turn, b, result) {
  const creator = await sk.signup();
  const { room, stream_key: key, ingest } = await sk.createRoom(creator.access_token, { title: 'latency bench', visibility: 'public', mode: 'sfu' });
  const whep = `${sk.baseUrl}/whep/${room.id}`;
  const source = await b.newPage('latency-source.html', { whip: ingest.whip_url, key }, { tag: 'source' });
  await waitForStatus(source, 'live', { timeoutMs: CONNECT_CAP_MS, what: 'WHIP source' });

  const procs = { skylark: sk.child.pid, ...(turn ? { turn: turn.child.pid } : {}) };
  if (CPU_SECONDS) {
    log(`CPU baseline: the publisher alone, ${CPU_SECONDS} s`);
    result.cpu_baseline_ms_per_s = await cpuWindow(procs, CPU_SECONDS);
  }
  result.paths = [];
  for (const transport of TRANSPORTS) {
    log(`--- ${transport}`);
    const path = { transport };
    result.paths.push(path);
    await latencyWindow(b, source, whep, (who) => iceFor(transport, turn, who), path);
    path.join = await joins(b, whep, transport, (who) => iceFor(transport, turn, who), procs, result.cpu_baseline_ms_per_s);
  }
  await source.evaluate(() => window.stop());
}

/** One transport's latency window: source → Skylark → sink over it, beside the P2P floor. */
async function latencyWindow(b, source, whep, ice, result) {
  // Both paths play in one sink page: they share its rendering steps (see latency-sink.html).
  const sink = await b.newPage('latency-sink.html', { ice: JSON.stringify(ice('bench-sink')) }, { tag: `sink-${result.transport}` });
  const decoding = (path) =>
    pollPage(sink, () => window.progress(), (s) => s[path] > 0, { timeoutMs: CONNECT_CAP_MS, what: `${path} path waiting for decodable timecodes` });
  await sink.evaluate(([url]) => window.startWhep('skylark', url), [whep]);
  await decoding('skylark');
  result.selected_pair = await sink.evaluate(() => window.selectedPair('skylark'));
  checkPair(result.transport, result.selected_pair, 'the latency sink');

  // Lip sync costs video latency, so the floor plays by the rule Skylark's viewer got.
  const sfuAvSync = sharedStream((await sink.evaluate(() => window.trackStreams())).skylark);
  const avSync = P2P_AV_SYNC === 'auto' ? sfuAvSync : P2P_AV_SYNC === 'on';
  result.av_sync = { skylark: sfuAvSync, p2p: avSync };
  const offer = await deadline(source.evaluate((o) => window.p2pOffer(o), { avSync }), CONNECT_CAP_MS, 'P2P offer');
  const answer = await deadline(sink.evaluate((sdp) => window.answerOffer('p2p', sdp), offer), CONNECT_CAP_MS, 'P2P answer');
  await source.evaluate((sdp) => window.p2pAnswer(sdp), answer);
  await decoding('p2p');
  log(`both paths decode timecodes (Skylark over ${JSON.stringify(result.selected_pair)}; lip sync: Skylark ${sfuAvSync ? 'on' : 'off'}, P2P ${avSync ? 'on' : 'off'})`);

  // The browser's own ICE + DTLS time on loopback, with no server: a floor for the
  // "answer → connected" part of a WHEP join.
  const pt = await source.evaluate(() => window.p2pTimings());
  result.p2p_connect_ms = {
    answer_to_ice_connected: pt['ice:connected'] - pt.answerReceived,
    answer_to_connected: pt['pc:connected'] - pt.answerReceived,
  };
  result.clock_offset_ms = await clockOffset(source, sink);

  log(`warm-up ${WARMUP_S} s, then measuring ${SECONDS} s`);
  await sleep(WARMUP_S * 1000);
  await sink.evaluate(() => window.resetWindow());
  const before = await source.evaluate(() => window.senderStats());
  result.loadavg_start = r1(os.loadavg()[0]);
  await sleep(SECONDS * 1000);
  const win = await sink.evaluate(() => window.takeWindow());
  const after = await source.evaluate(() => window.senderStats());
  result.loadavg_end = r1(os.loadavg()[0]);
  result.source_draws_in_window = after.draws - before.draws;
  const streams = await sink.evaluate(() => window.trackStreams());

  result.source = {
    draw_fps: r1((after.draws - before.draws) / SECONDS),
    frame_ms: after.frameMs,
    visibility: after.visibility,
  };
  result.skylark = pathResult(win.skylark, streams.skylark, after.whip, before.whip, SECONDS);
  result.p2p = pathResult(win.p2p, streams.p2p, after.p2p, before.p2p, SECONDS);
  const a = result.skylark.latency_ms.p50;
  const f = result.p2p.latency_ms.p50;
  result.sfu_added_p50_ms = a === null || f === null ? null : r1(a - f);
  // The same difference up to the frame's arrival only: the SFU can only add time there,
  // and without the receiver's vsync wait it is less noisy.
  const ar = result.skylark.draw_to_receive_ms.p50;
  const fr = result.p2p.draw_to_receive_ms.p50;
  result.sfu_added_to_receive_p50_ms = ar === null || fr === null ? null : r1(ar - fr);

  // The join phase from here on: free the CPU the sink and the P2P encoder use.
  await sink.evaluate(() => window.stop()).catch(() => {});
  await sink.context().close().catch(() => {});
  await source.evaluate(() => window.p2pClose());
}

/**
 * K viewers one after another over the transport (`ice(who)`), each in a fresh context:
 * WHEP POST start → first frame the <video> displays (requestVideoFrameCallback), as
 * pages/watch.html marks them. The gap between viewers keeps each join independent:
 * Skylark coalesces keyframe requests within 300 ms, so back-to-back joins would partly
 * measure that throttle. With --cpu-seconds the viewers stay for the CPU window.
 */
async function joins(b, whep, transport, ice, procs, baseline) {
  const rows = [];
  const failures = [];
  const pages = [];
  log(`${VIEWERS} sequential WHEP joins over ${transport}`);
  try {
    for (let i = 0; i < VIEWERS; i++) {
      if (i > 0 && JOIN_GAP_MS) await sleep(JOIN_GAP_MS);
      const page = await b.newPage('watch.html', { whep, ice: JSON.stringify(ice(`bench-viewer-${i + 1}`)) }, { tag: `join#${i + 1}-${transport}` });
      pages.push(page);
      try {
        const t = await pollPage(
          page,
          () => ({ error: window.state.error, ...window.state.timings }),
          (s) => s.firstFrame !== undefined,
          { timeoutMs: JOIN_CAP_MS, what: `join viewer ${i + 1}`, intervalMs: 25 },
        );
        checkPair(transport, await page.evaluate(() => window.selectedPair()), `join viewer ${i + 1}`);
        rows.push({
          post_to_first_frame: t.firstFrame - t.postSent,
          post_to_answer: t.answerReceived - t.postSent,
          answer_to_connected: t['pc:connected'] - t.answerReceived,
          // ICE (connectivity checks) vs DTLS (handshake) within answer → connected.
          answer_to_ice_connected: t['ice:connected'] - t.answerReceived,
          ice_to_dtls_connected: t['pc:connected'] - t['ice:connected'],
          connected_to_first_frame: t.firstFrame - t['pc:connected'],
        });
      } catch (e) {
        failures.push(e.message);
        log(e.message);
      }
      if (!CPU_SECONDS) await closeViewer(pages.pop());
    }
    const col = (k) => summary(rows.map((r) => r[k]).filter(Number.isFinite));
    return {
      viewers: VIEWERS,
      joined: rows.length,
      failures,
      post_to_first_frame_ms: col('post_to_first_frame'),
      breakdown_ms: {
        post_to_answer: col('post_to_answer'),
        answer_to_connected: col('answer_to_connected'),
        answer_to_ice_connected: col('answer_to_ice_connected'),
        ice_to_dtls_connected: col('ice_to_dtls_connected'),
        connected_to_first_frame: col('connected_to_first_frame'),
      },
      each_ms: rows.map((r) => r.post_to_first_frame),
      cpu: CPU_SECONDS ? await cpuPerViewer(pages, procs, baseline) : null,
    };
  } finally {
    for (const page of pages) await closeViewer(page);
  }
}

async function closeViewer(page) {
  await page.evaluate(() => window.stop()).catch(() => {});
  await page.context().close().catch(() => {});
}

const decodedBy = (pages) => Promise.all(pages.map((p) => p.evaluate(() => window.stats()).then((s) => s.framesDecoded ?? 0, () => 0)));

/**
 * The server processes' CPU over --cpu-seconds with `pages` playing, less the publisher
 * alone (`baseline`), per viewer: ms of CPU per second, per viewer (10 ms/s = 1 % of a core).
 */
async function cpuPerViewer(pages, procs, baseline) {
  await sleep(2000); // joins settle: the last keyframe requests, the first NACKs
  const before = await decodedBy(pages);
  const loadStart = r1(os.loadavg()[0]);
  log(`CPU window: ${pages.length} viewers, ${CPU_SECONDS} s`);
  const used = await cpuWindow(procs, CPU_SECONDS);
  const after = await decodedBy(pages);
  // A viewer counts if it decoded at least half the frames of the window (30 fps source).
  const playing = after.filter((n, i) => n - before[i] >= 15 * CPU_SECONDS).length;
  const perViewer = Object.fromEntries(
    Object.entries(used).map(([n, ms]) => [n, playing ? r1((ms - (baseline?.[n] ?? 0)) / playing) : null]),
  );
  return { viewers: pages.length, playing, window_ms_per_s: used, per_viewer_ms_per_s: perViewer, loadavg_start: loadStart, loadavg_end: r1(os.loadavg()[0]) };
}

function cpuModel() {
  try {
    return fs.readFileSync('/proc/cpuinfo', 'utf8').match(/^model name\s*:\s*(.*)$/m)?.[1] ?? null;
  } catch {
    return os.cpus()[0]?.model ?? null;
  }
}

function osName() {
  try {
    return fs.readFileSync('/etc/os-release', 'utf8').match(/^PRETTY_NAME="?([^"\n]*)/m)?.[1] ?? os.platform();
  } catch {
    return os.platform();
  }
}

const fmt = (x) => (x === null || x === undefined ? '–' : String(x));
const pad = (cells, widths) => cells.map((c, i) => (i === 0 ? fmt(c).padEnd(widths[i]) : fmt(c).padStart(widths[i]))).join('  ');

/** Everything measured over one transport. */
function pathTable(r, p) {
  const w = [14, 8, 8, 7, 7, 7, 7, 7];
  const row = (name, q) => pad([name, q.samples, q.misreads, q.latency_ms.p50, q.latency_ms.p95, q.latency_ms.p99, q.latency_ms.min, q.latency_ms.max], w);
  const met = (ok) => (ok === null ? 'n/a' : ok ? 'met' : 'NOT met');
  const j = p.join.post_to_first_frame_ms;
  const jb = p.join.breakdown_ms;
  const sp = p.selected_pair;
  const lines = [
    `=== ${p.transport}: the Skylark path's selected pair ${sp.localType}/${sp.protocol}${sp.relayProtocol ? ` (relay over ${sp.relayProtocol})` : ''} → ${sp.remoteType}:${sp.remotePort}; load average ${p.loadavg_start} → ${p.loadavg_end} over the window`,
    `Glass-to-glass latency (drawn → requestVideoFrameCallback), ${r.config.size} H.264, a frame every ${p.source.frame_ms} ms, ${r.config.seconds} s window (ms)`,
    pad(['path', 'samples', 'misread', 'p50', 'p95', 'p99', 'min', 'max'], w),
    row('Skylark (SFU)', p.skylark),
    row('P2P loopback', p.p2p),
    '',
    `SFU adds (p50 Skylark − p50 P2P): ${fmt(p.sfu_added_p50_ms)} ms   target ≤ ${TARGET_SFU_ADDED_MS} ms: ${met(p.sfu_added_p50_ms === null ? null : p.sfu_added_p50_ms <= TARGET_SFU_ADDED_MS)}`,
    `  same, drawn → received only: ${fmt(p.sfu_added_to_receive_p50_ms)} ms`,
    `WHEP join (POST → first frame), ${j.n}/${p.join.viewers} viewers: p50 ${fmt(j.p50)} ms, p95 ${fmt(j.p95)} ms   target p50 ≤ ${TARGET_JOIN_P50_MS} ms: ${met(j.p50 === null ? null : j.p50 <= TARGET_JOIN_P50_MS)}`,
    `  p50 parts: POST → answer ${fmt(jb.post_to_answer.p50)}, answer → connected ${fmt(jb.answer_to_connected.p50)} (ICE ${fmt(jb.answer_to_ice_connected.p50)} + DTLS ${fmt(jb.ice_to_dtls_connected.p50)}), connected → first frame ${fmt(jb.connected_to_first_frame.p50)}`,
    `  for reference, the P2P link: answer → connected ${fmt(p.p2p_connect_ms.answer_to_connected)} (ICE ${fmt(p.p2p_connect_ms.answer_to_ice_connected)})`,
  ];
  const c = p.join.cpu;
  if (c) {
    const per = Object.entries(c.per_viewer_ms_per_s).map(([n, v]) => `${n} ${fmt(v)}`).join(', ');
    const all = Object.entries(c.window_ms_per_s).map(([n, v]) => `${n} ${fmt(v)}`).join(', ');
    lines.push(`Server CPU per viewer (ms of CPU per s; 10 = 1 % of a core), ${c.playing}/${c.viewers} viewers playing: ${per}   (all: ${all}; publisher alone: ${Object.entries(r.cpu_baseline_ms_per_s).map(([n, v]) => `${n} ${fmt(v)}`).join(', ')}; load ${c.loadavg_start} → ${c.loadavg_end})`);
  }
  lines.push('', 'details                 Skylark        P2P');
  const d = (label, k) => lines.push(`  ${label.padEnd(22)}${fmt(p.skylark[k]).padEnd(15)}${fmt(p.p2p[k])}`);
  const part = (k) => (q) => `${fmt(q[k].p50)} / ${fmt(q[k].p95)}`;
  const dp = (label, f) => lines.push(`  ${label.padEnd(22)}${f(p.skylark).padEnd(15)}${f(p.p2p)}`);
  dp('drawn→received p50/95', part('draw_to_receive_ms'));
  dp('received→shown p50/95', part('receive_to_shown_ms'));
  d('samples/s', 'fps');
  d('captured in window', 'frames_captured_in_window');
  d('encoded in window', 'frames_encoded_in_window');
  d('decoded in window', 'frames_decoded_in_window');
  d('repeated frames', 'repeated_frames');
  d('newer frame read', 'newer_frame_read');
  d('shown, no callback', 'frames_shown_without_callback');
  d('jitter buffer ms avg', 'jitter_buffer_ms_avg');
  d('decode ms avg', 'decode_ms_avg');
  d('sent kbit/s', 'sent_kbps');
  d('sent resolution', 'sent_resolution');
  d('limited by', 'quality_limitation');
  d('frames dropped', 'frames_dropped');
  d('freezes', 'freezes');
  d('packets lost', 'packets_lost');
  d('encoder', 'encoder');
  const o = p.clock_offset_ms;
  lines.push(`  source drew ${p.source_draws_in_window} frames in the window (one per ${p.source.frame_ms} ms); sink clock − source clock: ${o.offset} ± ${o.uncertainty} ms`);
  for (const [name, q] of [['Skylark', p.skylark], ['P2P', p.p2p]]) {
    if (q.samples < p.source.draw_fps * r.config.seconds * 0.5) {
      lines.push(`  WARNING: ${name} has ${q.samples} samples for ${Math.round(p.source.draw_fps * r.config.seconds)} frames drawn (framesDecoded ${q.frames_decoded}, callbacks ${q.callbacks})`);
    }
  }
  if (p.join.failures.length) lines.push(`  join failures: ${p.join.failures.join(' | ')}`);
  return lines;
}

/** Each transport's block, then (with several) one line each side by side. */
function table(r) {
  const lines = r.paths.flatMap((p) => [...pathTable(r, p), '']);
  if (r.paths.length > 1) {
    const w = [9, 15, 9, 9, 13, 9, 13, 10];
    lines.push(
      'Summary (ms; CPU per viewer in ms of CPU per s)',
      pad(['transport', 'g2g p50/p95', 'floor', 'added', 'drawn→recv', 'join p50', 'CPU skylark', 'CPU turn'], w),
      ...r.paths.map((p) =>
        pad([
          p.transport,
          `${fmt(p.skylark.latency_ms.p50)} / ${fmt(p.skylark.latency_ms.p95)}`,
          p.p2p.latency_ms.p50,
          p.sfu_added_p50_ms,
          p.skylark.draw_to_receive_ms.p50,
          p.join.post_to_first_frame_ms.p50,
          p.join.cpu?.per_viewer_ms_per_s.skylark,
          p.join.cpu?.per_viewer_ms_per_s.turn,
        ], w),
      ),
      '',
    );
  }
  lines.push(
    `${r.machine.nproc} CPUs (${r.machine.cpu}), load average ${r.machine.loadavg_start} → ${r.machine.loadavg_end}, ${r.machine.os}, Chromium ${r.machine.chromium}`,
    `${r.server.bin}; ran ${r.run_s} s`,
  );
  return lines.join('\n');
}

try {
  const t0 = performance.now();
  const r = await main();
  r.run_s = r1((performance.now() - t0) / 1000);
  r.machine.loadavg_end = r1(os.loadavg()[0]);
  // exit only once stdout is flushed: a pipe would otherwise lose the tail of the output.
  process.stdout.write(`${opt.json ? JSON.stringify(r) : table(r)}\n`, () => process.exit(0));
} catch (e) {
  console.error(`latency bench failed: ${e.stack ?? e.message ?? e}`);
  process.exit(1);
}
