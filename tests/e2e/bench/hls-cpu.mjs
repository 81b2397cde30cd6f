#!/usr/bin/env node
// CPU of the skylark process (all-in-one: API, SFU, packager) with 0 rooms and with 1
// room published by `skylark loadtest` (synthetic H.264 + Opus over WHIP, no WHEP
// viewers), for each --kbps. Skylark packages every live room (LL-HLS + FLV) whether or
// not anyone watches, so "1 room" = WHIP ingest + relay to the packager + packaging.
//
//   SKYLARK_BIN=/path/to/release/skylark node tests/e2e/bench/hls-cpu.mjs [--seconds 30] [--kbps 600,1500] [--json]
//
// CPU = utime + stime of the server process from /proc/PID/stat over the window; the
// publisher (skylark loadtest) is another process and is not counted.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import { once } from 'node:events';
import { parseArgs } from 'node:util';
import { startServer } from '../lib/server.js';
import { withCleanup } from '../lib/harness.js';

const { values: opt } = parseArgs({
  options: {
    seconds: { type: 'string', default: '30' },
    kbps: { type: 'string', default: '600,1500' },
    json: { type: 'boolean', default: false },
  },
});
const SECONDS = Number(opt.seconds);
const KBPS = opt.kbps.split(',').map(Number);
const TICK = 100; // USER_HZ on Linux
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (m) => console.error(`[hls-cpu] ${m}`);
const r2 = (x) => Math.round(x * 100) / 100;

function cpuSeconds(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / TICK; // fields 14, 15: utime, stime
}
function rssMiB(pid) {
  const m = fs.readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+)/);
  return m ? Math.round(Number(m[1]) / 102.4) / 10 : null;
}

async function cpuWindow(pid) {
  const l0 = os.loadavg()[0];
  const c0 = cpuSeconds(pid);
  const t0 = performance.now();
  await sleep(SECONDS * 1000);
  const c1 = cpuSeconds(pid);
  const wall = (performance.now() - t0) / 1000;
  return { cpu_s: r2(c1 - c0), wall_s: r2(wall), cpu_pct_of_core: r2(((c1 - c0) / wall) * 100), rss_mib: rssMiB(pid), loadavg: [r2(l0), r2(os.loadavg()[0])] };
}

async function oneRun(kbps) {
  return withCleanup(async (defer) => {
    const sk = await startServer({ label: `hls-cpu-${kbps}` });
    defer(async (failed) => (failed ? sk.kill() : sk.stop()));
    const pid = sk.child.pid;
    await sleep(3000);
    log(`${kbps} kbit/s: idle window ${SECONDS} s`);
    const idle = await cpuWindow(pid);
    const creator = await sk.signup();
    const { room, stream_key: key } = await sk.createRoom(creator.access_token, { title: 'cpu', visibility: 'public', mode: 'sfu' });
    const lt = spawn(sk.bin, ['loadtest', '--url', sk.baseUrl, '--room', room.id, '--stream-key', key, '--viewers', '0', '--duration', `${SECONDS + 30}s`, '--video-kbps', String(kbps)], { stdio: ['ignore', 'ignore', 'pipe'] });
    let ltErr = '';
    lt.stderr.on('data', (c) => (ltErr = (ltErr + c).slice(-2000)));
    defer(async () => {
      if (lt.exitCode === null) {
        lt.kill('SIGINT');
        await Promise.race([once(lt, 'exit'), sleep(5000)]);
        if (lt.exitCode === null) lt.kill('SIGKILL');
      }
    });
    const hls = `${sk.baseUrl}/hls/${room.id}/media.m3u8`;
    const end = Date.now() + 20_000;
    for (;;) {
      const r = await fetch(hls).catch(() => null);
      if (r?.ok && (await r.text()).includes('#EXTINF')) break;
      if (Date.now() > end) throw new Error(`room not packaged within 20 s; loadtest: ${ltErr}; server log ${sk.logFile}`);
      await sleep(250);
    }
    await sleep(3000);
    log(`${kbps} kbit/s: 1-room window ${SECONDS} s`);
    const busy = await cpuWindow(pid);
    const pl = await (await fetch(hls)).text();
    const segs = [...pl.matchAll(/#EXTINF:([\d.]+)/g)].map((m) => Number(m[1]));
    return { kbps, idle, one_room: busy, room_minus_idle_cpu_pct: r2(busy.cpu_pct_of_core - idle.cpu_pct_of_core), segments_s: segs, parts: (pl.match(/#EXT-X-PART:/g) ?? []).length };
  }, { capMs: (SECONDS * 2 + 60) * 1000 });
}

const out = { bench: 'hls-cpu', started: new Date().toISOString(), nproc: os.availableParallelism?.() ?? os.cpus().length, runs: [] };
try {
  for (const k of KBPS) out.runs.push(await oneRun(k));
} catch (e) {
  console.error(`hls-cpu failed: ${e.stack ?? e}`);
  process.exit(1);
}
if (opt.json) console.log(JSON.stringify(out));
else {
  console.log(`skylark process CPU (% of one core) over ${SECONDS} s: idle vs 1 room published (skylark loadtest, 0 viewers)`);
  for (const r of out.runs) {
    console.log(
      `${String(r.kbps).padStart(5)} kbit/s  idle ${r.idle.cpu_pct_of_core} %  1 room ${r.one_room.cpu_pct_of_core} %  difference ${r.room_minus_idle_cpu_pct} %  (RSS ${r.idle.rss_mib} → ${r.one_room.rss_mib} MiB; load ${r.idle.loadavg.join('→')} / ${r.one_room.loadavg.join('→')}; segments ${r.segments_s.join(', ')} s)`,
    );
  }
}
