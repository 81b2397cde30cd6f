#!/usr/bin/env node
// Publishes pages/latency-source.html (the wall clock drawn as blocks, timecode.js) to a
// Skylark room over WHIP from headless Chromium (the Debian package), for tests in other
// languages (tests/ice_tcp.rs) to read glass-to-glass latency off a viewer's frames
// (watch-cli.js --timecode). One JSON object per line on stdout:
//
//   {"type":"live","t":…}            the WHIP session is connected
//   {"type":"error","error":"…"}     it could not go live
//
//   node tests/e2e/lib/source-cli.js WHIP_URL STREAM_KEY
//
// Runs until stdin closes (the parent went away) or SIGTERM, and closes the browser.

import { exitWithParent, launchBrowser, waitForStatus } from './browser.js';

const [whip, key] = process.argv.slice(2);
const out = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);
if (!whip || !key) {
  console.error('usage: source-cli.js WHIP_URL STREAM_KEY');
  process.exit(2);
}

let b = null;
exitWithParent(async () => b?.close());

try {
  b = await launchBrowser({ label: 'timecode-source' });
  const page = await b.newPage('latency-source.html', { whip, key }, { tag: 'source' });
  await waitForStatus(page, 'live', { timeoutMs: 20_000, what: `WHIP time code source (browser log ${b.logFile})` });
  out({ type: 'live', t: Date.now() });
} catch (e) {
  out({ type: 'error', error: String(e?.message ?? e) });
}
