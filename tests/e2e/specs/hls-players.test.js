// LL-HLS in every major HLS player that runs here: hls.js (lowLatencyMode), Shaka Player
// (streaming.lowLatencyMode) and video.js (VHS), all from npm, in Chromium, each playing
// pages/latency-player.html the room's /hls/{room}/index.m3u8 of two sources:
// - WHIP: Chromium draws the wall clock as blocks (pages/latency-source.html, a jittery
//   capture clock, Opus); the player page reads the clock back off every frame shown,
//   so the latency printed is glass to glass;
// - RTMP: Debian FFmpeg's test picture with its AAC tone (x264, a keyframe every 2 s, as OBS).
// - WHIP changing resolution: the same source scaled down by 2 as the window starts (what
//   WebRTC does under CPU load: new parameter sets, so the packager starts a new init
//   segment after a discontinuity, listed ahead of the preload hint of its first part).
// Each player must play PLAY_S seconds without a stall (no 'waiting' on the media
// element, no stall reported by the player, no picture frozen over 1 s of media) and
// without a fatal error. Safari cannot run here: README "Design notes" says which of
// Apple's rules `hls::check` holds the output to (tests/hls_rules.rs checks real
// publishes against them).
//
// Diagnosis: SHAKA_DEBUG=1 loads Shaka's debug build (it logs gaps, stalls and its
// prefetch), PLAYER_CONFIG='{…}' replaces the player's options, VHS_START=own leaves
// video.js its own live start point.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { noBrowser, waitForStatus, pollPage } from '../lib/browser.js';
import { withCleanup } from '../lib/harness.js';
import { serverAndBrowser, creatorWithRoom, rtmpPush } from '../lib/fixtures.js';

const noFfmpeg = spawnSync('ffmpeg', ['-version']).status === 0 ? null : 'Debian ffmpeg not installed';
if (noFfmpeg && process.env.CI === 'true') throw new Error(`${noFfmpeg}: scripts/test installs it`);
const skip = noBrowser() ?? false;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Joining (first playlist, first parts, a possible stall while the buffer first fills)
// is not what is judged: the window starts WARMUP_S after the first time code is read.
const WARMUP_S = 3;
const PLAY_S = 22;

const PLAYERS = [
  { id: 'hls', kind: 'hls', name: 'hls.js' },
  // Shaka ≤ 5.2.12 (the newest release) in its default `segments` mode re-sets a negative
  // timestampOffset before many appends: its legacy-Edge workaround writes the offset
  // + 1 ms, reads it back and finds it 1 ms off (± float noise). The abort() that goes
  // with it makes MSE drop video up to the next keyframe, so LL-HLS parts that don't start
  // with one vanish: the gaps it jumped in 4 of 11 WHIP and 4 of 7 RTMP windows. Traced
  // here (latency-player.html `trace=1`) and fixed upstream after 5.2.12
  // (shaka-project/shaka-player#10589, PRs #10559, #10591); until a release has it,
  // `sequenceMode` (which skips the recalculation) is what a Shaka page should set.
  { id: 'shaka', kind: 'shaka', name: 'Shaka Player', config: { manifest: { hls: { sequenceMode: true } } } },
  // VHS 3.17.5 starts LL-HLS mid-GOP (it counts the open segment as a whole target
  // duration): on RTMP sources (a keyframe every 2 s) Chromium then lost the video of the
  // first GOP's later parts and stalled ~3 s on, at media time ~7.1 s, in 4 of 4 runs
  // (2026-12-06). The page gives VHS an EXT-X-START at a keyframe at least PART-HOLD-BACK +
  // PART-TARGET from the end (pages/vhs-live-start.js, README "Design notes"), as a page
  // embedding video.js should; `vhsstart=own` in the page's query turns it off.
  // VHS 3.17.5 also re-appends an init segment with the next part when a live reload came
  // in between, and MSE then drops the video up to the next keyframe: across a resolution
  // change the buffer stopped growing for up to a GOP and video.js stalled (2 of 8 runs,
  // 2026-12-07). The page keeps VHS to one append per init (pages/vhs-init-once.js,
  // README "Design notes"); `vhsinit=own` turns it off.
  { id: 'videojs', kind: 'videojs', name: 'video.js (VHS)' },
];

// Open, not hidden: a case listed here runs and prints what it sees, but its failure does
// not fail the suite (node:test `todo`) until the cause is found.
const OPEN = {
  // 'whip-rescale hls' left on 2026-12-07: hls.js 1.7.4 skipped a segment's last part
  // listed while it was still appending the part before (README "Design notes"); the
  // packager now paces a segment's last part and the next segment's first (25 of 25
  // runs clean at load 2–10; docs/benchmarks.md, "hls.js and a segment's last part").
  // 'whip-rescale videojs' left this list on 2026-12-07: VHS appended the new init again
  // with the next parts (pages/vhs-init-once.js); 16 of 16 runs since (docs/benchmarks.md).
};

/**
 * Until `ms` have passed, samples every 250 ms what the WHIP source page drew and encoded
 * (`senderStats`): the longest time each count stood still, ms. A player can only stall
 * for want of media if the source stopped for about as long as it had buffered; the
 * page shares the loaded machine with the players, so this tells their stalls apart.
 */
async function watchSource(source, ms) {
  const end = Date.now() + ms;
  const still = { draws: 0, encoded: 0 };
  const last = { draws: null, encoded: null };
  while (Date.now() < end) {
    const s = await source.evaluate(() => window.senderStats()).catch(() => null);
    const now = Date.now();
    for (const [k, v] of [['draws', s?.draws], ['encoded', s?.whip?.framesEncoded]]) {
      if (v === undefined || v === null) continue;
      if (last[k] === null || v !== last[k].v) last[k] = { v, at: now };
      still[k] = Math.max(still[k], now - last[k].at);
    }
    await sleep(250);
  }
  return { max_still_ms: still };
}

/** Nearest-rank percentile of `xs` (sorted copy), rounded to 0.1 ms. */
function pct(xs, p) {
  if (!xs.length) return null;
  const s = [...xs].sort((a, b) => a - b);
  return Math.round(s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))] * 10) / 10;
}

const SOURCES = [
  { id: 'whip', ingest: 'whip', title: 'Chromium WHIP publish (time code)', skip },
  { id: 'whip-rescale', ingest: 'whip', rescale: 2, title: 'Chromium WHIP publish changing resolution (time code)', skip },
  { id: 'rtmp', ingest: 'rtmp', title: 'FFmpeg RTMP publish (with AAC)', skip: skip || (noFfmpeg ?? false) },
];

/** The number n of the newest init segment (`init{n}.mp4`) the room's media playlist lists. */
async function newestInit(index) {
  const variants = await (await fetch(index)).text();
  const uri = variants.split('\n').find((l) => l && !l.startsWith('#'));
  const media = await (await fetch(new URL(uri, index))).text();
  const maps = [...media.matchAll(/#EXT-X-MAP:URI="init(\d+)\.mp4"/g)].map((m) => Number(m[1]));
  assert.ok(maps.length, `no EXT-X-MAP in\n${media}`);
  return Math.max(...maps);
}

for (const { id, ingest, rescale, title, skip: skipSource } of SOURCES) {
for (const p of PLAYERS) {
    test(`${title} → ${p.name} plays LL-HLS ${PLAY_S} s without a stall${ingest === 'whip' ? '; glass-to-glass latency' : ''}`, { timeout: 120_000, skip: skipSource, todo: OPEN[`${id} ${p.id}`] }, () =>
      withCleanup(async (defer) => {
        const label = `hls-${id}-${p.id}`;
        const { sk, b } = await serverAndBrowser(defer, label);
        const { created, room } = await creatorWithRoom(sk, label);

        let source = null;
        if (ingest === 'whip') {
          source = await b.newPage('latency-source.html', { whip: created.ingest.whip_url, key: created.stream_key }, { tag: 'source' });
          defer(() => source.evaluate(() => window.stop()).catch(() => {}));
          await waitForStatus(source, 'live', { timeoutMs: 20_000, what: 'WHIP time code source' });
        } else {
          // A keyframe every 2 s, as OBS sends by default: a player's start can land mid-GOP.
          rtmpPush(defer, sk, created.stream_key, { seconds: 90, gopS: 2 });
        }

        const src = `${sk.baseUrl}/hls/${room}/index.m3u8`;
        const deadline = Date.now() + 20_000;
        for (;;) {
          const r = await fetch(src).catch(() => null);
          if (r?.ok) break;
          if (Date.now() > deadline) throw new Error(`${src} not available within 20 s (last status ${r?.status}); server log ${sk.logFile}`);
          await sleep(250);
        }

        const player = await b.newPage('latency-player.html', { kind: p.kind, src, ...(process.env.SHAKA_DEBUG ? { debug: process.env.SHAKA_DEBUG === 'v1' ? 'v1' : '1' } : {}), ...(process.env.HLS_TRACE ? { trace: '1' } : {}), ...(process.env.VHS_START ? { vhsstart: process.env.VHS_START } : {}), ...(process.env.VHS_INIT ? { vhsinit: process.env.VHS_INIT } : {}), ...(p.config ? { config: JSON.stringify(p.config) } : {}), ...(process.env.PLAYER_CONFIG ? { config: process.env.PLAYER_CONFIG } : {}) }, { tag: p.id });
        defer(() => player.evaluate(() => window.stop()).catch(() => {}));
        // The WHIP source's time codes; FFmpeg's picture has none, so any frame shown.
        await pollPage(player, () => window.progress(), (s) => (ingest === 'whip' ? s.decoded > 0 : s.videoWidth > 0 && s.currentTime > 0), {
          timeoutMs: 40_000,
          what: `${p.name} playing (browser log ${b.logFile})`,
        });
        await sleep(WARMUP_S * 1000);
        await player.evaluate(() => window.resetWindow());
        const initBefore = rescale ? await newestInit(src) : null;
        const watched = source ? watchSource(source, PLAY_S * 1000) : null;
        if (rescale) await source.evaluate((f) => window.scaleVideo(f), rescale);
        await sleep(PLAY_S * 1000);
        const sourceSeen = await watched;
        const w = await player.evaluate(() => window.takeWindow());
        const progress = await player.evaluate(() => window.progress());
        const initAfter = rescale ? await newestInit(src) : null;
        const info = JSON.stringify({ ...w, latencies: w.latencies.length, source: sourceSeen, inits: [initBefore, initAfter] });

        assert.equal(progress.error, null, `${p.name} fatal error: ${progress.error}; ${info}`);
        assert.equal(w.stalls, 0, `${p.name} stalled ('waiting') at media time ${w.stallAt.join(', ')} s; ${info}`);
        assert.equal(w.playerStalls, 0, `${p.name} reported a stall; ${info}`);
        // The picture moved on: no frozen frame while audio played on (MSE dropped video
        // after an init appended twice, vhs-init-once.js). The sources' frames come every
        // 33 ms; a starved publisher spaced them up to 0.5 s (0.94 s once, at load ~10).
        assert.ok(w.maxFrameStepS <= 1, `${p.name}: the picture froze for ${w.maxFrameStepS} s of media; ${info}`);
        // No stall, so the media clock ran through the window (the 10 % is the players'
        // latency catch-up, which may slow the rate below 1 for a moment).
        assert.ok(w.endTime - w.startTime >= PLAY_S * 0.9, `${p.name} played ${w.endTime - w.startTime} s of ${PLAY_S}; ${info}`);
        if (ingest === 'whip') {
          // Time codes kept arriving: the picture is the live source, not a frozen frame.
          assert.ok(w.latencies.length >= PLAY_S * 5, `${p.name}: only ${w.latencies.length} time codes in ${PLAY_S} s; ${info}`);
        } else {
          // New frames kept coming (rVFC fires only for frames presented).
          assert.ok(w.callbacks >= PLAY_S * 5, `${p.name}: only ${w.callbacks} frames shown in ${PLAY_S} s; ${info}`);
        }
        // WebRTC may scale the WHIP source down under CPU pressure; FFmpeg sends 640x360.
        if (ingest === 'rtmp') assert.equal(w.player.videoWidth, 640, info);
        else assert.ok(w.player.videoWidth > 0, info);
        if (rescale) {
          // The packager started a new init during the window, and the player plays past
          // it: its picture is the 640x480 canvas scaled down (WebRTC may scale it further).
          assert.ok(initAfter > initBefore, `no new init segment in the window; ${info}`);
          assert.ok(w.player.videoWidth <= 640 / rescale, `${p.name} still shows ${w.player.videoWidth} px wide; ${info}`);
        }
        if (p.kind === 'shaka') assert.equal(w.player.lowLatencyMode, true);

        console.log(
          `TIMING ${JSON.stringify({
            test: `hls-players ${id} ${p.id}`,
            inits: rescale ? [initBefore, initAfter] : undefined,
            player: `${p.name} ${w.player.version}`,
            window_s: PLAY_S,
            samples: w.latencies.length,
            g2g_latency_ms: ingest === 'whip' ? { p50: pct(w.latencies, 50), p95: pct(w.latencies, 95), min: pct(w.latencies, 0), max: pct(w.latencies, 100) } : null,
            player_latency_s: w.player.playerLatencyS,
            join_first_frame_ms: Math.round(w.marks.firstFrame - w.marks.start),
            played_s: Math.round((w.endTime - w.startTime) * 1000) / 1000,
            playback_rate: w.player.playbackRate,
            // Buffered ahead of the playhead: when the window began, and its least.
            ahead_s: { start: w.aheadAtStartS, min: w.minAheadS },
            max_frame_step_s: w.maxFrameStepS,
            misreads: w.misreads,
            source: sourceSeen,
            non_fatal_errors: w.errors,
            error_details: w.errorDetails,
          })}`,
        );
      }),
    );
  }
}
