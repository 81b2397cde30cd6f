#!/usr/bin/env node
// Lip sync: the audio–video offset a viewer sees, through Skylark with audio and video in
// one MediaStream (as Skylark answers), in two (as it answered before lip sync; the sink
// rewrites the answer's a=msid), and over a direct Chromium-to-Chromium link (the floor);
// and of an RTMP source (FFmpeg, AAC transcoded to Opus for WebRTC) over WHEP and LL-HLS.
//
//   node tests/e2e/bench/avsync.mjs [--seconds 30] [--warmup 10] [--sources whip,rtmp] [--gop 2] [--rtmp-shift 0] [--json]
//   SKYLARK_BIN=/path/to/skylark node tests/e2e/bench/avsync.mjs
//
// One headless Chromium, two pages (separate renderer processes), and FFmpeg:
//   source  pages/avsync-source.html: once a second a WebAudio beep starts and the canvas
//           turns white at the same instant (one clock: the AudioContext's); canvas +
//           beep go in one MediaStream over WHIP and over a direct P2P link;
//   rtmp    Debian FFmpeg: a black picture that is white for 100 ms from each whole
//           second and a 1 kHz beep over the same 100 ms, both computed from lavfi's t
//           (aevalsrc: sample-exact), H.264 + AAC over RTMP to a second room;
//   sink    pages/avsync-sink.html: every path, each detecting when a flash is displayed
//           (requestVideoFrameCallback) and when a beep plays (AudioWorklet).
// offset = beep onset − flash display, per beep: > 0 means the sound comes late. All
// paths play in one page at the same time, so load hits them alike.
// Progress goes to stderr; the table (or, with --json, one JSON object) to stdout.

import fs from 'node:fs';
import os from 'node:os';
import { parseArgs } from 'node:util';
import { pollPage, waitForStatus } from '../lib/browser.js';
import { withCleanup, deadline } from '../lib/harness.js';
import { artifactPath } from '../lib/server.js';
import { serverFor, browserFor, rtmpPush } from '../lib/fixtures.js';

const { values: opt } = parseArgs({
  options: {
    seconds: { type: 'string', default: '30' },
    warmup: { type: 'string', default: '10' },
    sources: { type: 'string', default: 'whip,rtmp' },
    gop: { type: 'string', default: '2' },
    'rtmp-shift': { type: 'string', default: '0' },
    json: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (opt.help) {
  console.log(
    'usage: node tests/e2e/bench/avsync.mjs [--seconds 30] [--warmup 10] [--sources whip,rtmp] [--gop 2] [--rtmp-shift 0] [--json]\n' +
      '  --warmup: seconds before the window; ≥ 6, as Chromium sends its first audio sender report after ~5 s\n' +
      '  --sources: whip (Chromium publisher: Skylark one/two streams, P2P), rtmp (FFmpeg: WHEP, LL-HLS)\n' +
      "  --gop: the RTMP publisher's keyframe interval in seconds (OBS default: 2)\n" +
      "  --rtmp-shift: ms the RTMP publisher's beep starts after its flash (negative: before), -400..400;\n" +
      '    a known offset: the RTMP paths should read that much more than with 0',
  );
  process.exit(0);
}
const SECONDS = positive('seconds');
const WARMUP_S = positive('warmup', true);
const GOP_S = positive('gop');
const RTMP_SHIFT_MS = Number(opt['rtmp-shift']);
if (!Number.isFinite(RTMP_SHIFT_MS) || Math.abs(RTMP_SHIFT_MS) > 400) {
  console.error(`--rtmp-shift must be a number of ms within -400..400 (beeps are 1 s apart), not ${opt['rtmp-shift']}`);
  process.exit(2);
}
const SOURCES = opt.sources.split(',').filter(Boolean);
if (!SOURCES.length || SOURCES.some((x) => x !== 'whip' && x !== 'rtmp')) {
  console.error(`--sources takes whip, rtmp or both (comma-separated), not ${opt.sources}`);
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

/** The paths, in the order of the table; `source`: the publisher they play. */
const PATHS = [
  { name: 'skylark', source: 'whip', label: 'Skylark, one stream', what: 'WHEP as Skylark answers: audio and video in one MediaStream' },
  { name: 'split', source: 'whip', label: 'Skylark, two streams', what: 'WHEP, answer rewritten to two MediaStreams (Skylark before lip sync)' },
  { name: 'p2p', source: 'whip', label: 'P2P, one stream', what: 'direct Chromium-to-Chromium link, one MediaStream (the floor)' },
  { name: 'rtmp', source: 'rtmp', label: 'RTMP → WHEP', what: 'FFmpeg RTMP publish (AAC → Opus), WHEP as Skylark answers' },
  { name: 'rtmp_hls', source: 'rtmp', label: 'RTMP → LL-HLS', what: 'FFmpeg RTMP publish (AAC as sent), LL-HLS in hls.js (lowLatencyMode)' },
].filter((p) => SOURCES.includes(p.source));
/** FFmpeg's flash and beep: both from lavfi's t, so they start at the same instant. */
const RTMP_VIDEO = ['-f', 'lavfi', '-i', "color=c=black:size=320x240:rate=30,drawbox=c=white:t=fill:enable='lt(mod(t,1),0.1)'"];
/** Its beep, starting `shiftMs` after each flash (sample-exact: lavfi's t). */
const rtmpAudio = (shiftMs) => ['-f', 'lavfi', '-i', `aevalsrc='if(lt(mod(t-(${shiftMs / 1000}),1),0.1),0.5*sin(2*PI*1000*t),0)':s=44100`, '-c:a', 'aac'];
/** A beep and a flash farther apart than this are not the same event (beeps are 1 s apart). */
const PAIR_MS = 450;

const CONNECT_CAP_MS = 20_000;
// An RTMP room's first LL-HLS segment needs a GOP or two, and hls.js then a few parts.
const HLS_CAP_MS = 40_000;
// Start-up (server, browser, connections; an RTMP room's HLS up to HLS_CAP_MS) ~15-40 s, teardown ~5 s.
const RUN_CAP_MS = (60 + WARMUP_S + SECONDS) * 1000;

const log = (m) => console.error(`[bench] ${m}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Nearest-rank percentile of a sorted array (a value that was actually measured). */
function pct(sorted, p) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}
const r1 = (x) => (x === null || x === undefined || Number.isNaN(x) ? null : Math.round(x * 10) / 10);

function summary(values) {
  const s = [...values].sort((a, b) => a - b);
  return { n: s.length, p5: r1(pct(s, 5)), p50: r1(pct(s, 50)), p95: r1(pct(s, 95)), min: r1(s[0]), max: r1(s.at(-1)) };
}

/** Whether a path's audio and video tracks arrived in one MediaStream. */
function sharedStream(tracks) {
  const ids = (kind) => new Set(tracks.filter((t) => t.kind === kind).flatMap((t) => t.streams));
  const audio = ids('audio');
  return [...ids('video')].some((id) => audio.has(id));
}

/** Offset of `b`'s wall clock (timeOrigin + now) from `a`'s, ± half the best round trip (see latency.mjs). */
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

/**
 * Pairs one path's onsets with each other and, for the Chromium source, with its beeps.
 * - beep ↔ flash: the flash displayed nearest the beep's onset, within PAIR_MS;
 * - flash ↔ source beep: the last one drawn before the flash was displayed.
 * The Chromium source draws the flash on the first frame at or after the beep's target
 * time, up to a frame late; both are lip-synced by their capture times, so that lateness
 * is added back: offset = beep onset − flash display + (drawn − target). FFmpeg (`sent`
 * null) draws each flash on the frame whose time is the beep's onset (its FLV decoded by
 * FFmpeg: 0.3 ms apart), so nothing is added back; its send times are unknown, so no
 * latencies.
 */
function pairPath(win, sent) {
  const drawn = (sent ?? []).filter((b) => Number.isFinite(b.drawn)).sort((a, b) => a.drawn - b.drawn);
  // Both pages read the one system clock; the check (clockOffset) is reported, not
  // applied: under load its uncertainty (up to ±13 ms seen) exceeds the offset itself.
  const toSink = (t) => t;
  const rows = [];
  let unpairedBeeps = 0;
  const used = new Set();
  for (const beep of win.beeps) {
    let best = null;
    for (const f of win.flashes) if (!best || Math.abs(f.at - beep.at) < Math.abs(best.at - beep.at)) best = f;
    if (!best || Math.abs(best.at - beep.at) > PAIR_MS || used.has(best)) {
      unpairedBeeps++;
      continue;
    }
    used.add(best);
    if (!sent) {
      const offset = beep.at - best.at;
      rows.push({ at: best.at, offset, raw: offset, lateness: 0, video_latency: null, audio_latency: null });
      continue;
    }
    const src = drawn.findLast((b) => toSink(b.drawn) <= best.at);
    if (!src || best.at - toSink(src.drawn) > PAIR_MS * 2) {
      unpairedBeeps++;
      continue;
    }
    const lateness = src.drawn - src.target;
    rows.push({
      n: src.n,
      at: best.at,
      offset: beep.at - best.at + lateness,
      raw: beep.at - best.at,
      lateness,
      video_latency: best.at - toSink(src.drawn),
      audio_latency: beep.at - toSink(src.target),
    });
  }
  return { rows, unpairedBeeps, unpairedFlashes: win.flashes.length - used.size };
}

/** A sample of Chromium's sync view this close to a beep stands for it (samples are 250 ms apart). */
const SYNC_NEAR_MS = 300;

/**
 * Each paired beep's offset less Chromium's own sync gap (video − audio playout time in
 * the sender's clock, `avsync-sink.html`) nearest it: what the measurement adds to the
 * media's offset as Chromium plays it (the sink's audio tap, Chromium's sync dead band).
 */
function syncView(rows, samples) {
  if (!samples?.length) return null;
  const near = (at) => samples.reduce((b, x) => (Math.abs(x.at - at) < Math.abs(b.at - at) ? x : b));
  const minus = rows.flatMap((r) => {
    const x = near(r.at);
    return Math.abs(x.at - r.at) <= SYNC_NEAR_MS ? [r.offset - x.gap] : [];
  });
  return {
    samples: samples.length,
    gap_ms: summary(samples.map((x) => x.gap)),
    offset_minus_gap_ms: summary(minus),
    // Beeps a half period (PAIR_MS) or more from where Chromium plays them: paired with
    // the wrong flash (beeps are 1 s apart), so their offset reads ~1 s off.
    aliased: minus.filter((x) => Math.abs(x) > PAIR_MS).length,
    audio_jitter_buffer_ms: summary(samples.map((x) => x.audio_jb).filter((x) => x !== null)),
    video_jitter_buffer_ms: summary(samples.map((x) => x.video_jb).filter((x) => x !== null)),
    each_gap: samples.map((x) => [r2(x.at - samples[0].at), r2(x.gap), x.audio_jb, x.video_jb]),
  };
}

function pathResult(p, win, sent, streams) {
  const { rows, unpairedBeeps, unpairedFlashes } = pairPath(win, sent);
  const col = (k) => summary(rows.map((r) => r[k]).filter((x) => x !== null));
  return {
    path: p.what,
    paired: rows.length,
    beeps_detected: win.beeps.length,
    flashes_detected: win.flashes.length,
    unpaired_beeps: unpairedBeeps,
    unpaired_flashes: unpairedFlashes,
    // beep onset − flash display (+ the flash's drawing lateness): > 0 = sound late.
    offset_ms: col('offset'),
    abs_offset_p50_ms: r1(pct(rows.map((r) => Math.abs(r.offset)).sort((a, b) => a - b), 50)),
    // Lip sync converges over seconds: the two halves of the window show whether it had.
    offset_p50_halves_ms: halves(rows),
    raw_offset_ms: col('raw'),
    // source drawn/target → sink displayed/played: how far sync delayed either track.
    video_latency_ms: col('video_latency'),
    audio_latency_ms: col('audio_latency'),
    each_offset_ms: rows.map((r) => r2(r.offset)),
    each_offset_at_s: rows.map((r) => r2((r.at - (win.sync?.[0]?.at ?? rows[0].at)) / 1000)),
    chromium_sync: syncView(rows, win.sync),
    frames_shown: win.frames,
    frames_shown_without_callback: win.unseen,
    receiver: win.stats,
    one_stream: sharedStream(streams.tracks),
    track_streams: streams.tracks,
    sdp_streams: streams.sdp,
  };
}
const r2 = (x) => Math.round(x * 10) / 10;

/** [p50 of the first half, p50 of the second half] of the window's offsets. */
function halves(rows) {
  const sorted = [...rows].sort((a, b) => a.at - b.at);
  const mid = Math.floor(sorted.length / 2);
  const p50 = (part) => r1(pct(part.map((r) => r.offset).sort((a, b) => a - b), 50));
  return [p50(sorted.slice(0, mid)), p50(sorted.slice(mid))];
}

async function main() {
  const result = {
    bench: 'avsync',
    started: new Date().toISOString(),
    machine: {
      nproc: os.availableParallelism?.() ?? os.cpus().length,
      cpu: cpuModel(),
      os: osName(),
      node: process.version,
      loadavg_start: r1(os.loadavg()[0]),
    },
    config: { seconds: SECONDS, warmup_s: WARMUP_S, sources: SOURCES, beep_period_ms: 1000, beep_ms: 100, flash_ms: 150, rtmp_flash_ms: 100, rtmp_gop_s: GOP_S, rtmp_shift_ms: RTMP_SHIFT_MS, size: '320x240' },
  };
  await withCleanup(
    async (defer) => {
      const sk = await serverFor(defer, { label: 'bench-avsync' });
      result.server = { bin: sk.bin, startup_ms: sk.startupMs, log: sk.logFile };
      log(`skylark ${sk.bin} ready in ${sk.startupMs} ms on ${sk.baseUrl}`);
      const b = await browserFor(defer, 'bench-avsync');
      result.machine.chromium = b.version;
      result.browser_console = b.logFile;
      log(`Chromium ${b.version}; consoles in ${b.logFile}`);
      try {
        await measure(sk, b, result, defer);
      } catch (e) {
        e.message += `\n  server log: ${sk.logFile}\n  browser console: ${b.logFile}`;
        throw e;
      }
    },
    { capMs: RUN_CAP_MS },
  );
  return result;
}

/** A click (a user gesture, which lets an AudioContext start), then resume it. */
async function startAudio(page, what) {
  await page.mouse.click(5, 5);
  const a = await page.evaluate(() => window.startAudio());
  if (a.state !== 'running') throw new Error(`${what}: AudioContext ${a.state} after a click and resume()`);
  return a;
}

async function measure(sk, b, result, defer) {
  const whip = SOURCES.includes('whip');
  const creator = await sk.signup();
  let source = null;
  let whep = null;
  if (whip) {
    const { room, stream_key: key, ingest } = await sk.createRoom(creator.access_token, { title: 'lip sync bench', visibility: 'public', mode: 'sfu' });
    whep = `${sk.baseUrl}/whep/${room.id}`;
    source = await b.newPage('avsync-source.html', { whip: ingest.whip_url, key, autostart: 0 }, { tag: 'source' });
    result.source_audio = await startAudio(source, 'source');
    await source.evaluate(() => window.start());
    await waitForStatus(source, 'live', { timeoutMs: CONNECT_CAP_MS, what: 'WHIP source' });
  }
  let rtmpRoom = null;
  if (SOURCES.includes('rtmp')) {
    const { room, stream_key: key } = await sk.createRoom(creator.access_token, { title: 'lip sync bench, RTMP', visibility: 'public', mode: 'sfu' });
    rtmpRoom = room.id;
    const ffLog = artifactPath('bench-avsync-ffmpeg.log');
    rtmpPush(defer, sk, key, { seconds: RUN_CAP_MS / 1000, video: RTMP_VIDEO, audio: rtmpAudio(RTMP_SHIFT_MS), gopS: GOP_S, loglevel: 'warning', stdio: ['ignore', 'ignore', fs.openSync(ffLog, 'w')] });
    result.rtmp_source = { gop_s: GOP_S, ffmpeg_log: ffLog };
  }
  const sink = await b.newPage('avsync-sink.html', {}, { tag: 'sink' });
  result.sink_audio = await startAudio(sink, 'sink');

  if (whip) {
    await sink.evaluate(([url]) => window.startWhep('skylark', url), [whep]);
    await sink.evaluate(([url]) => window.startWhep('split', url, { split: true }), [whep]);
    const offer = await deadline(source.evaluate(() => window.p2pOffer()), CONNECT_CAP_MS, 'P2P offer');
    const answer = await deadline(sink.evaluate((sdp) => window.answerOffer('p2p', sdp), offer), CONNECT_CAP_MS, 'P2P answer');
    await source.evaluate((sdp) => window.p2pAnswer(sdp), answer);
  }
  if (rtmpRoom) {
    // The room is live (WHEP answers) once the publish is placed; HLS once a segment is cut.
    const hls = `${sk.baseUrl}/hls/${rtmpRoom}/index.m3u8`;
    await waitFor(hls, HLS_CAP_MS, 'the RTMP room\'s LL-HLS playlist');
    await sink.evaluate(([url]) => window.startWhep('rtmp', url), [`${sk.baseUrl}/whep/${rtmpRoom}`]);
    await sink.evaluate(([url]) => window.startHls('rtmp_hls', url), [hls]);
  }
  await pollPage(
    sink,
    () => window.progress(),
    (s) => PATHS.every((p) => s[p.name]?.flashes > 0 && s[p.name]?.beeps > 0),
    { timeoutMs: HLS_CAP_MS, what: 'every path waiting for a flash and a beep' },
  );
  const streams = await sink.evaluate(() => window.trackStreams());
  for (const p of PATHS) log(`${p.name}: flashes and beeps arrive; ${sharedStream(streams[p.name].tracks) ? 'one stream' : 'two streams'} ${JSON.stringify(streams[p.name].tracks)}`);
  if (whip) result.clock_offset_ms = await clockOffset(source, sink);

  log(`warm-up ${WARMUP_S} s, then measuring ${SECONDS} s`);
  await sleep(WARMUP_S * 1000);
  await sink.evaluate(() => window.resetWindow());
  await sleep(SECONDS * 1000);
  const win = await sink.evaluate(() => window.takeWindow());
  const sched = whip ? await source.evaluate(() => window.schedule()) : null;
  if (sched) {
    result.source_stream = sched.streamId;
    // Read again now: the output latency is 0 until the device has started.
    result.source_audio = sched.audio;
    const missed = sched.beeps.filter((x) => x.drawn !== null && !Number.isFinite(x.drawn)).length;
    result.source_flashes_missed = missed;
    result.flash_lateness_ms = summary(sched.beeps.filter((x) => Number.isFinite(x.drawn)).map((x) => x.drawn - x.target));
  }
  for (const p of PATHS) result[p.name] = pathResult(p, win[p.name], p.source === 'whip' ? sched.beeps : null, streams[p.name]);
  const d = (a, f) => (a === null || f === null ? null : r1(a - f));
  if (whip) {
    result.split_minus_skylark_p50_ms = d(result.split.offset_ms.p50, result.skylark.offset_ms.p50);
    result.skylark_minus_p2p_p50_ms = d(result.skylark.offset_ms.p50, result.p2p.offset_ms.p50);
  }

  await sink.evaluate(() => window.stop()).catch(() => {});
  await source?.evaluate(() => window.stop()).catch(() => {});
}

/** Polls `url` until it answers 2xx. */
async function waitFor(url, capMs, what) {
  const end = Date.now() + capMs;
  for (;;) {
    const r = await fetch(url).catch(() => null);
    if (r?.ok) return;
    if (Date.now() > end) throw new Error(`${what} (${url}) not available within ${capMs / 1000} s (last status ${r?.status})`);
    await sleep(250);
  }
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
  const w = [22, 7, 7, 7, 7, 7, 7, 7, 13, 9, 9];
  const pad = (cells) => cells.map((c, i) => (i === 0 ? fmt(c).padEnd(w[i]) : fmt(c).padStart(w[i]))).join('  ');
  const lines = [
    `Audio–video offset at the viewer (beep onset − flash display; > 0 = sound late), ${r.config.seconds} s window after ${r.config.warmup_s} s warm-up, ms`,
    pad(['path', 'paired', 'p5', 'p50', 'p95', 'min', 'max', '|p50|', 'p50 1st|2nd', 'video lat', 'audio lat']),
  ];
  for (const p of PATHS) {
    const x = r[p.name];
    lines.push(pad([p.label, x.paired, x.offset_ms.p5, x.offset_ms.p50, x.offset_ms.p95, x.offset_ms.min, x.offset_ms.max, x.abs_offset_p50_ms, x.offset_p50_halves_ms.map(fmt).join(' | '), x.video_latency_ms.p50, x.audio_latency_ms.p50]));
  }
  if (r.split_minus_skylark_p50_ms !== undefined) {
    lines.push('', `two streams − one stream (p50): ${fmt(r.split_minus_skylark_p50_ms)} ms; one stream, Skylark − P2P (p50): ${fmt(r.skylark_minus_p2p_p50_ms)} ms`);
  }
  lines.push('', 'streams (ids of the track events: audio | video)');
  for (const p of PATHS) {
    const x = r[p.name];
    const ids = (k) => x.track_streams.filter((t) => t.kind === k).flatMap((t) => t.streams).join(',') || '(none)';
    lines.push(`  ${p.label.padEnd(22)}${x.one_stream ? 'ONE ' : 'TWO '} ${ids('audio')} | ${ids('video')}`);
  }
  lines.push('', 'details');
  for (const p of PATHS) {
    const x = r[p.name];
    const jb = (k) => fmt(x.receiver?.[k]?.jitterBufferMsAvg);
    const a = x.receiver?.audio;
    // Audio NetEq had to invent (no packet in time): playout glitches, each one a jump.
    const concealed = a?.totalSamplesReceived ? `${r1((100 * a.concealedSamples) / a.totalSamplesReceived)} %` : '–';
    lines.push(
      `  ${p.label.padEnd(22)}beeps ${x.beeps_detected}, flashes ${x.flashes_detected}, unpaired ${x.unpaired_beeps}/${x.unpaired_flashes}; ` +
        `raw offset p50 ${fmt(x.raw_offset_ms.p50)}; jitter buffer avg audio ${jb('audio')} video ${jb('video')} ms; audio concealed ${concealed}; ` +
        `frames shown ${x.frames_shown} (${x.frames_shown_without_callback} without callback)`,
    );
  }
  lines.push('', "Chromium's own sync view (video − audio playout time, sender clock; getStats every 250 ms), ms");
  for (const p of PATHS) {
    const c = r[p.name].chromium_sync;
    if (!c) continue;
    const s3 = (x) => `${fmt(x.p5)} / ${fmt(x.p50)} / ${fmt(x.p95)}`;
    lines.push(
      `  ${p.label.padEnd(22)}gap p5/p50/p95 ${s3(c.gap_ms)}; offset − gap ${s3(c.offset_minus_gap_ms)} (${c.offset_minus_gap_ms.n} beeps); ` +
        `jitter buffer audio ${s3(c.audio_jitter_buffer_ms)}, video p50 ${fmt(c.video_jitter_buffer_ms.p50)}`,
    );
  }
  const o = r.clock_offset_ms;
  const l = r.flash_lateness_ms;
  const ms = (a, k) => fmt(r1(a[k] * 1000));
  if (o) {
    lines.push(
      `  flash drawn after its target (added back): p50 ${fmt(l.p50)}, max ${fmt(l.max)} ms; flashes missed ${r.source_flashes_missed}; sink clock − source clock ${o.offset} ± ${o.uncertainty} ms`,
      `  source audio: ${r.source_audio.sampleRate} Hz, base latency ${ms(r.source_audio, 'baseLatency')} ms, output latency ${ms(r.source_audio, 'outputLatency')} ms`,
    );
  }
  if (r.rtmp_source) lines.push(`  RTMP source: FFmpeg, GOP ${r.rtmp_source.gop_s} s, beep ${r.config.rtmp_shift_ms} ms after flash; its log ${r.rtmp_source.ffmpeg_log}`);
  lines.push(
    `  sink audio: base latency ${ms(r.sink_audio, 'baseLatency')} ms, output latency ${ms(r.sink_audio, 'outputLatency')} ms`,
    `  ${r.machine.nproc} CPUs (${r.machine.cpu}), load average ${r.machine.loadavg_start} → ${r.machine.loadavg_end}, ${r.machine.os}, Chromium ${r.machine.chromium}`,
    `  ${r.server.bin}; ran ${r.run_s} s`,
  );
  for (const p of PATHS) {
    const c = r[p.name].chromium_sync;
    if (c?.aliased) lines.push(`  WARNING: ${p.label}: ${c.aliased} beeps over ${PAIR_MS} ms from Chromium's sync gap: the sync error passed half the beep period, its offsets fold by 1 s (read the gap)`);
    if (r[p.name].paired < r.config.seconds * 0.5) lines.push(`  WARNING: ${p.label}: ${r[p.name].paired} beeps paired in ${r.config.seconds} s`);
  }
  return lines.join('\n');
}

try {
  const t0 = performance.now();
  const r = await main();
  r.run_s = r1((performance.now() - t0) / 1000);
  r.machine.loadavg_end = r1(os.loadavg()[0]);
  process.stdout.write(`${opt.json ? JSON.stringify(r) : table(r)}\n`, () => process.exit(0));
} catch (e) {
  console.error(`avsync bench failed: ${e.stack ?? e.message ?? e}`);
  process.exit(1);
}
