#!/usr/bin/env node
// Glass-to-glass latency through Skylark, read off the video itself, next to the floor
// (the same frames over a direct Chromium-to-Chromium connection), plus WHEP join time.
//
//   node tests/e2e/bench/latency.mjs [--seconds 20] [--viewers 20] [--turn off|udp|tls] [--json]
//   --turn: the Skylark path's viewer relays through the embedded TURN server
//   (SKYLARK_TURN_ADDR; `tls`: turns: with a self-signed certificate), relay only.
//   SKYLARK_BIN=/path/to/release/skylark node tests/e2e/bench/latency.mjs
//
// One headless Chromium, separate pages (separate renderer processes):
//   source  pages/latency-source.html: draws its wall clock as blocks 30 times a second,
//           sends canvas.captureStream(30) + fake mic over WHIP and over a direct P2P link;
//   sinks   pages/latency-sink.html ×2: one plays over WHEP, one answers the P2P offer;
//           each decodes the blocks of every displayed frame: latency = now − drawn time.
// Both paths carry the same frames at the same time, so CPU load and scheduling noise
// hit both alike and the p50 difference is what the SFU adds. Then K viewers join one
// after another (pages/watch.html): WHEP POST → first displayed frame.
// Progress goes to stderr; the table (or, with --json, one JSON object) to stdout.

import fs from 'node:fs';
import os from 'node:os';
import { parseArgs } from 'node:util';
import { pollPage, waitForStatus } from '../lib/browser.js';
import { withCleanup, deadline } from '../lib/harness.js';
import { serverFor, browserFor } from '../lib/fixtures.js';

const TARGET_SFU_ADDED_MS = 15;
const TARGET_JOIN_P50_MS = 100;

const { values: opt } = parseArgs({
  options: {
    seconds: { type: 'string', default: '20' },
    warmup: { type: 'string', default: '3' },
    viewers: { type: 'string', default: '20' },
    'join-gap-ms': { type: 'string', default: '500' },
    'p2p-av-sync': { type: 'string', default: 'auto' },
    turn: { type: 'string', default: 'off' },
    json: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (opt.help) {
  console.log(
    'usage: node tests/e2e/bench/latency.mjs [--seconds 20] [--warmup 3] [--viewers 20] [--join-gap-ms 500] [--p2p-av-sync auto|on|off] [--json]\n' +
      '  --p2p-av-sync: audio+video of the P2P floor in one stream (lip-synced); auto = as Skylark delivers them',
  );
  process.exit(0);
}
const SECONDS = positive('seconds');
const WARMUP_S = positive('warmup', true);
const VIEWERS = positive('viewers', true);
const JOIN_GAP_MS = positive('join-gap-ms', true);
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
// Start-up (server, browser, connections) ~10 s, teardown ~5 s, join ~1 s per viewer.
const RUN_CAP_MS = (30 + WARMUP_S + SECONDS + VIEWERS * 2.5) * 1000;

const log = (m) => console.error(`[bench] ${m}`);

const TURN = opt.turn;
if (!['off', 'udp', 'tls'].includes(TURN)) {
  console.error(`--turn must be off, udp or tls, not ${TURN}`);
  process.exit(2);
}
const TURN_SECRET = 'bench-latency-turn-secret';
/** The Skylark path's ICE configuration (`--turn`), once the server is up. */
let SKYLARK_ICE = null;

/** Server environment and browser flags for `--turn`. */
async function turnSetup() {
  if (TURN === 'off') return { env: {}, browserArgs: [] };
  const env = { SKYLARK_TURN_ADDR: '127.0.0.1:0', SKYLARK_TURN_SECRET: TURN_SECRET };
  if (TURN === 'udp') return { env, browserArgs: [] };
  const { execFileSync } = await import('node:child_process');
  const net = await import('node:net');
  const dir = fs.mkdtempSync(`${os.tmpdir()}/bench-turn-`);
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1',
    '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', `${dir}/key.pem`, '-out', `${dir}/cert.pem`], { stdio: 'ignore' });
  const port = await new Promise((resolve) => {
    const srv = net.createServer().listen(0, '127.0.0.1', () => {
      const p = srv.address().port;
      srv.close(() => resolve(p));
    });
  });
  Object.assign(env, { SKYLARK_TURN_TLS_ADDR: `127.0.0.1:${port}`, SKYLARK_TURN_TLS_CERT: `${dir}/cert.pem`, SKYLARK_TURN_TLS_KEY: `${dir}/key.pem` });
  // Chromium takes the self-signed certificate for TURN with this flag too.
  return { env, browserArgs: ['--ignore-certificate-errors'], tlsPort: port };
}

/** iceServers (one URL: the transport asked for) with a TURN REST credential, relay only. */
async function turnIce(sk, turn) {
  const { createHmac } = await import('node:crypto');
  const text = fs.readFileSync(sk.logFile, 'utf8');
  const port = TURN === 'tls' ? turn.tlsPort : Number(text.match(/TURN UDP and TCP listening on [\d.]+:(\d+)/)?.[1]);
  const url = TURN === 'tls' ? `turns:127.0.0.1:${port}?transport=tcp` : `turn:127.0.0.1:${port}?transport=udp`;
  const username = `${Math.floor(Date.now() / 1000) + 3600}:bench`;
  const credential = createHmac('sha1', TURN_SECRET).update(username).digest('base64');
  return { iceServers: [{ urls: [url], username, credential }], iceTransportPolicy: 'relay' };
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

/** Server + browser around `measure`; a failure names the server log and browser console. */
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
    config: { seconds: SECONDS, warmup_s: WARMUP_S, viewers: VIEWERS, join_gap_ms: JOIN_GAP_MS, p2p_av_sync: P2P_AV_SYNC, size: '640x480' },
  };

  await withCleanup(
    async (defer) => {
      const turn = await turnSetup();
      const sk = await serverFor(defer, { label: 'bench-latency', env: turn.env });
      result.turn = TURN;
      if (TURN !== 'off') SKYLARK_ICE = await turnIce(sk, turn);
      result.server = { bin: sk.bin, startup_ms: sk.startupMs, log: sk.logFile };
      log(`skylark ${sk.bin} ready in ${sk.startupMs} ms on ${sk.baseUrl}`);

      const b = await browserFor(defer, 'bench-latency', turn.browserArgs);
      result.machine.chromium = b.version;
      result.browser_console = b.logFile;
      log(`Chromium ${b.version}; consoles in ${b.logFile}`);

      try {
        await measure(sk, b, result);
      } catch (e) {
        e.message += `\n  server log: ${sk.logFile}\n  browser console: ${b.logFile}`;
        throw e;
      }
    },
    { capMs: RUN_CAP_MS },
  );
  return result;
}

async function measure(sk, b, result) {
  const creator = await sk.signup();
  const { room, stream_key: key, ingest } = await sk.createRoom(creator.access_token, { title: 'latency bench', visibility: 'public', mode: 'sfu' });
  const whep = `${sk.baseUrl}/whep/${room.id}`;

  // --- connect: source → Skylark → sink, and source → sink directly ---------------
  const source = await b.newPage('latency-source.html', { whip: ingest.whip_url, key }, { tag: 'source' });
  await waitForStatus(source, 'live', { timeoutMs: CONNECT_CAP_MS, what: 'WHIP source' });
  // Both paths play in one sink page: they share its rendering steps (see latency-sink.html).
  const sink = await b.newPage('latency-sink.html', SKYLARK_ICE ? { ice: JSON.stringify(SKYLARK_ICE) } : {}, { tag: 'sink' });
  const decoding = (path) =>
    pollPage(sink, () => window.progress(), (s) => s[path] > 0, { timeoutMs: CONNECT_CAP_MS, what: `${path} path waiting for decodable timecodes` });
  await sink.evaluate(([url]) => window.startWhep('skylark', url), [whep]);
  await decoding('skylark');

  // Lip sync costs video latency, so the floor plays by the rule Skylark's viewer got.
  const sfuAvSync = sharedStream((await sink.evaluate(() => window.trackStreams())).skylark);
  const avSync = P2P_AV_SYNC === 'auto' ? sfuAvSync : P2P_AV_SYNC === 'on';
  result.av_sync = { skylark: sfuAvSync, p2p: avSync };
  const offer = await deadline(source.evaluate((o) => window.p2pOffer(o), { avSync }), CONNECT_CAP_MS, 'P2P offer');
  const answer = await deadline(sink.evaluate((sdp) => window.answerOffer('p2p', sdp), offer), CONNECT_CAP_MS, 'P2P answer');
  await source.evaluate((sdp) => window.p2pAnswer(sdp), answer);
  await decoding('p2p');
  log(`both paths decode timecodes (audio/video lip sync: Skylark ${sfuAvSync ? 'on' : 'off'}, P2P ${avSync ? 'on' : 'off'})`);

  // The browser's own ICE + DTLS time on loopback, with no server: a floor for the
  // "answer → connected" part of a WHEP join.
  const pt = await source.evaluate(() => window.p2pTimings());
  result.p2p_connect_ms = {
    answer_to_ice_connected: pt['ice:connected'] - pt.answerReceived,
    answer_to_connected: pt['pc:connected'] - pt.answerReceived,
  };
  result.clock_offset_ms = await clockOffset(source, sink);

  // --- latency window -------------------------------------------------------------
  log(`warm-up ${WARMUP_S} s, then measuring ${SECONDS} s`);
  await sleep(WARMUP_S * 1000);
  await sink.evaluate(() => window.resetWindow());
  const before = await source.evaluate(() => window.senderStats());
  await sleep(SECONDS * 1000);
  const win = await sink.evaluate(() => window.takeWindow());
  const after = await source.evaluate(() => window.senderStats());
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

  // Only the join phase from here on: free the CPU the sink and the P2P encoder use.
  await sink.evaluate(() => window.stop()).catch(() => {});
  await sink.context().close().catch(() => {});
  await source.evaluate(() => window.p2pClose());

  // --- WHEP join time ---------------------------------------------------------------
  result.join = await joins(b, whep);
  await source.evaluate(() => window.stop());
}

/**
 * K viewers one after another, each in a fresh context: WHEP POST start → first frame
 * the <video> displays (requestVideoFrameCallback), as pages/watch.html marks them.
 * The gap between viewers keeps each join independent: Skylark coalesces keyframe
 * requests within 300 ms, so back-to-back joins would partly measure that throttle.
 */
async function joins(b, whep) {
  const rows = [];
  const failures = [];
  log(`${VIEWERS} sequential WHEP joins`);
  for (let i = 0; i < VIEWERS; i++) {
    if (i > 0 && JOIN_GAP_MS) await sleep(JOIN_GAP_MS);
    const page = await b.newPage('watch.html', { whep }, { tag: `join#${i + 1}` });
    try {
      const t = await pollPage(
        page,
        () => ({ error: window.state.error, ...window.state.timings }),
        (s) => s.firstFrame !== undefined,
        { timeoutMs: JOIN_CAP_MS, what: `join viewer ${i + 1}`, intervalMs: 25 },
      );
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
    } finally {
      await page.evaluate(() => window.stop()).catch(() => {});
      await page.context().close().catch(() => {});
    }
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
  };
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

function table(r) {
  const fmt = (x) => (x === null || x === undefined ? '–' : String(x));
  const pad = (cells, widths) => cells.map((c, i) => (i === 0 ? fmt(c).padEnd(widths[i]) : fmt(c).padStart(widths[i]))).join('  ');
  const w = [14, 8, 8, 7, 7, 7, 7, 7];
  const row = (name, p) => pad([name, p.samples, p.misreads, p.latency_ms.p50, p.latency_ms.p95, p.latency_ms.p99, p.latency_ms.min, p.latency_ms.max], w);
  const met = (ok) => (ok === null ? 'n/a' : ok ? 'met' : 'NOT met');
  const j = r.join.post_to_first_frame_ms;
  const jb = r.join.breakdown_ms;
  const lines = [
    `Glass-to-glass latency (drawn → requestVideoFrameCallback), ${r.config.size} H.264, a frame every ${r.source.frame_ms} ms, ${r.config.seconds} s window (ms)`,
    pad(['path', 'samples', 'misread', 'p50', 'p95', 'p99', 'min', 'max'], w),
    row('Skylark (SFU)', r.skylark),
    row('P2P loopback', r.p2p),
    '',
    `SFU adds (p50 Skylark − p50 P2P): ${fmt(r.sfu_added_p50_ms)} ms   target ≤ ${TARGET_SFU_ADDED_MS} ms: ${met(r.sfu_added_p50_ms === null ? null : r.sfu_added_p50_ms <= TARGET_SFU_ADDED_MS)}`,
    `  same, drawn → received only: ${fmt(r.sfu_added_to_receive_p50_ms)} ms`,
    `WHEP join (POST → first frame), ${j.n}/${r.join.viewers} viewers: p50 ${fmt(j.p50)} ms, p95 ${fmt(j.p95)} ms   target p50 ≤ ${TARGET_JOIN_P50_MS} ms: ${met(j.p50 === null ? null : j.p50 <= TARGET_JOIN_P50_MS)}`,
    `  p50 parts: POST → answer ${fmt(jb.post_to_answer.p50)}, answer → connected ${fmt(jb.answer_to_connected.p50)} (ICE ${fmt(jb.answer_to_ice_connected.p50)} + DTLS ${fmt(jb.ice_to_dtls_connected.p50)}), connected → first frame ${fmt(jb.connected_to_first_frame.p50)}`,
    `  for reference, the P2P link: answer → connected ${fmt(r.p2p_connect_ms.answer_to_connected)} (ICE ${fmt(r.p2p_connect_ms.answer_to_ice_connected)})`,
    '',
    'details                 Skylark        P2P',
  ];
  const d = (label, k) => lines.push(`  ${label.padEnd(22)}${fmt(r.skylark[k]).padEnd(15)}${fmt(r.p2p[k])}`);
  const part = (k) => (p) => `${fmt(p[k].p50)} / ${fmt(p[k].p95)}`;
  const dp = (label, f) => lines.push(`  ${label.padEnd(22)}${f(r.skylark).padEnd(15)}${f(r.p2p)}`);
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
  const o = r.clock_offset_ms;
  lines.push(
    `  source drew ${r.source_draws_in_window} frames in the window (one per ${r.source.frame_ms} ms); sink clock − source clock: ${o.offset} ± ${o.uncertainty} ms`,
    `  ${r.machine.nproc} CPUs (${r.machine.cpu}), load average ${r.machine.loadavg_start} → ${r.machine.loadavg_end}, ${r.machine.os}, Chromium ${r.machine.chromium}`,
    `  ${r.server.bin}; ran ${r.run_s} s`,
  );
  for (const [name, p] of [['Skylark', r.skylark], ['P2P', r.p2p]]) {
    if (p.samples < r.source.draw_fps * r.config.seconds * 0.5) {
      lines.push(`  WARNING: ${name} has ${p.samples} samples for ${Math.round(r.source.draw_fps * r.config.seconds)} frames drawn (framesDecoded ${p.frames_decoded}, callbacks ${p.callbacks})`);
    }
  }
  if (r.join.failures.length) lines.push(`  join failures: ${r.join.failures.join(' | ')}`);
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
