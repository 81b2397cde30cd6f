// What one test starts and `withCleanup`'s `defer` tears down: the server, the browser, the
// app pages, a creator with a room, an FFmpeg RTMP publisher.

import { spawn } from 'node:child_process';
import { test } from 'node:test';
import { launchBrowser } from './browser.js';
import { startServer } from './server.js';
import { appBrowser } from './app.js';
import { withCleanup } from './harness.js';

/**
 * `startServer(opts)`, stopped once by `defer`: after a passing test it must exit cleanly
 * (`stop()` asserts that), after a failure it is killed.
 */
export async function serverFor(defer, opts) {
  const sk = await startServer(opts);
  let stopped = false;
  defer(async (failed) => {
    if (stopped) return;
    stopped = true;
    if (failed) await sk.kill();
    else await sk.stop();
  });
  return sk;
}

/** `launchBrowser({ label })`, closed by `defer`. */
export async function browserFor(defer, label, args = []) {
  const b = await launchBrowser({ label, args });
  defer(() => b.close());
  return b;
}

/** `appBrowser(b, label)` (the app's own pages), closed by `defer`. */
export function appFor(defer, b, label) {
  const app = appBrowser(b, label);
  defer(() => app.close());
  return app;
}

/** A server and a browser for the test labelled `label`, both torn down by `defer`. */
export async function serverAndBrowser(defer, label, env) {
  const sk = await serverFor(defer, { label, env });
  const b = await browserFor(defer, label);
  return { sk, b };
}

/** [`serverAndBrowser`] and the app's own pages in that browser (`app`). */
export async function serverAndApp(defer, label, env) {
  const { sk, b } = await serverAndBrowser(defer, label, env);
  return { sk, b, app: appFor(defer, b, label) };
}

/** A new creator and an SFU room of theirs: `{ creator, created, room }` (`room` = its id). */
export async function creatorWithRoom(sk, title, visibility = 'public') {
  const creator = await sk.signup();
  const created = await sk.createRoom(creator.access_token, { title, visibility, mode: 'sfu' });
  return { creator, created, room: created.room.id };
}

/** The AAC tone of `rtmpPush` (44.1 kHz, as a camera's mic). */
export const AAC_TONE = ['-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=44100', '-c:a', 'aac'];

/** The test picture of `rtmpPush`: 640x360 at 30 fps. */
export const TEST_PICTURE = ['-f', 'lavfi', '-i', 'testsrc2=size=640x360:rate=30'];

/**
 * Debian FFmpeg pushing `video` (default: `TEST_PICTURE`, 30 fps, H.264 with a keyframe
 * every `gopS` seconds, exactly) and `audio` (default: `AAC_TONE`) to `streamKey` over
 * RTMP for `seconds`; killed by `defer`.
 */
export function rtmpPush(defer, sk, streamKey, { seconds, video = TEST_PICTURE, audio = AAC_TONE, gopS = 1, loglevel = 'error', stdio = 'ignore' }) {
  const gop = String(Math.round(gopS * 30));
  const ff = spawn('ffmpeg', [
    '-hide_banner', '-loglevel', loglevel, '-re',
    ...video,
    ...audio,
    '-c:v', 'libx264', '-preset', 'veryfast', '-tune', 'zerolatency', '-g', gop, '-keyint_min', gop, '-sc_threshold', '0',
    '-t', String(seconds), '-f', 'flv', `rtmp://127.0.0.1:${sk.rtmpPort}/live/${streamKey}`,
  ], { stdio });
  defer(() => ff.kill('SIGKILL'));
  return ff;
}

/**
 * Runs `fn`; a failure's message gains where to look, one line a log:
 * `logs()` = `{ 'server log': path, … }` (read after the failure).
 */
export async function explainFailure(fn, logs) {
  try {
    return await fn();
  } catch (e) {
    for (const [name, file] of Object.entries(logs())) e.message += `\n  ${name}: ${file}`;
    throw e;
  }
}

/**
 * `test(name)` on fixtures of its own: `setup(defer)` makes them (torn down by `defer`),
 * then `body(ctx, defer)` runs, a failure explained by `logs(ctx)` (see
 * [`explainFailure`]). `timeout` caps the whole test, `bodyCap` its body.
 */
export function fixtureTest(name, { timeout, skip, bodyCap }, { setup, logs }, body) {
  test(name, { timeout, skip }, () =>
    withCleanup(async (defer) => {
      const ctx = await setup(defer);
      await explainFailure(() => body(ctx, defer), () => logs(ctx));
    }, bodyCap),
  );
}
