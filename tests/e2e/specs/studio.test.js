// The creator's studio (/studio) served by the skylark binary, driven like a person would
// through its labelled controls:
//   - sign up, create a room, reveal the key; go live from Chromium's fake camera + fake
//     screen in picture-in-picture; drag the inset; change layout, corner, microphone and
//     camera while live (same WHIP session, same canvas track); stop (WHIP session
//     deleted, every track ended); a screenshot of the studio live goes to artifacts/;
//   - the errors a person must see: wrong password, a stream key refused after rotation
//     (401), a camera that disappears, a denied permission; a key rotated while live cuts
//     the publisher and the studio republishes by itself;
//   - phone width: no sideways scrolling, every visible control labelled.

import assert from 'node:assert/strict';
import { noBrowser } from '../lib/browser.js';
import { requestJson } from '../lib/server.js';
import { reportTimings } from '../lib/harness.js';
import { until, screenshot } from '../lib/app.js';
import { serverAndApp, serverFor, browserFor, appFor, fixtureTest } from '../lib/fixtures.js';
import { signUpInStudio, createRoomInStudio, goLiveInStudio, openStudioAs, SLOW_DRAW } from '../lib/studio.js';

const TEST_CAP_MS = 120_000;
const BODY_CAP = { capMs: 100_000 };
const skip = noBrowser() ?? false;

/** Where a failure's explanation points: the server log and the page console. */
const logs = (ctx) => ({ 'server log': ctx.sk.logFile, 'page console': ctx.app.logFile });

/** A test with its own server and browser (`label`), in the app's pages:
 *  `body({ sk, b, app }, defer)`, its failures explained with the server log and the
 *  page console. */
const studioTest = (name, label, body) =>
  fixtureTest(name, { timeout: TEST_CAP_MS, skip, bodyCap: BODY_CAP }, { setup: (defer) => serverAndApp(defer, label), logs }, body);

const studioState = () => JSON.parse(JSON.stringify({ ...window.studio.state, tracks: window.studio.tracks() }));

studioTest('studio: sign up, create a room, go live (camera + screen PiP), change layout live, stop releases every device', 'studio-live', async ({ sk, app }, defer) => {
  const tOpen = Date.now();
  const page = await app.open(`${sk.baseUrl}/studio`, { tag: 'studio', viewport: { width: 1400, height: 1000 } });
  defer(() => page.evaluate(() => window.studio.stop()).catch(() => {}));
  await page.getByRole('heading', { name: 'Creator studio' }).waitFor();

  await signUpInStudio(page, 'live');
  const room = await createRoomInStudio(page, 'Studio e2e: PiP');
  const tCreated = Date.now();

  // Stream key: hidden until revealed; WHIP/RTMP URLs shown.
  const key = page.getByLabel('Stream key', { exact: true });
  assert.match(await key.inputValue(), /^•+$/, 'the key starts hidden');
  await page.getByRole('button', { name: 'Show the stream key' }).click();
  const keyValue = await key.inputValue();
  assert.match(keyValue, /^sk_/, `Reveal shows the key issued at creation (got ${keyValue.length} chars)`);
  assert.equal(await page.getByRole('button', { name: 'Show the stream key' }).getAttribute('aria-pressed'), 'true');
  // The page's session is the creator's.
  const tokenInPage = await page.evaluate(() => localStorage.getItem('skylark.access_token'));
  const mine = await requestJson('GET', `${sk.baseUrl}/api/v1/rooms?mine=1`, { token: tokenInPage, expect: 200 });
  assert.deepEqual(mine.json.rooms.map((r) => r.id), [room], 'the new room is listed as mine');
  assert.equal(await page.getByLabel('WHIP URL', { exact: true }).inputValue(), `${sk.baseUrl}/whip/${room}`);
  assert.match(await page.getByLabel('RTMP URL', { exact: true }).inputValue(), /^rtmp:\/\//);

  // Go live: fake camera + mic, fake screen, picture-in-picture.
  assert.equal(await page.getByLabel('Screen + camera', { exact: true }).isChecked(), true, 'PiP is the default layout');
  const { goLiveMs, state: live } = await goLiveInStudio(page);
  assert.match(live.location ?? '', new RegExp(`/whip/${room}/`), `WHIP Location: ${live.location}`);
  const roomView = await requestJson('GET', `${sk.baseUrl}/api/v1/rooms/${room}`, { expect: 200 });
  assert.equal(roomView.json.live, true, 'the API reports the room live');

  // The live panel fills in: bitrate, frame rate, codec H.264.
  const stats = await until(page, () => window.studio.stats, (s) => s && s.bitrate > 50_000 && s.fps > 0 && s.framesSent > 30, {
    what: 'live stats (bitrate, fps)',
    timeoutMs: 15_000,
  });
  assert.equal(stats.codec?.toLowerCase(), 'h264', `published codec: ${stats.codec}`);
  // 1280x720 composited; the encoder may scale it down while bandwidth ramps up.
  assert.ok(stats.width <= 1280 && Math.abs(stats.width / stats.height - 16 / 9) < 0.05, `published ${stats.width}x${stats.height}`);
  const panel = await page.locator('#live-panel').innerText();
  assert.match(panel, /State\s+Live/);
  assert.match(panel, /Bitrate\s+[\d.]+ [kM]b\/s/);

  // Drag the camera inset from the bottom-right corner to the top-left.
  const box = await page.locator('#preview').boundingBox();
  const inset = await page.evaluate(() => window.studio.compositor.insetRect());
  const scale = box.width / 1280;
  const from = { x: box.x + (inset.x + inset.w / 2) * scale, y: box.y + (inset.y + inset.h / 2) * scale };
  await page.mouse.move(from.x, from.y);
  await page.mouse.down();
  await page.mouse.move(box.x + 120 * scale, box.y + 90 * scale, { steps: 8 });
  await page.mouse.up();
  const moved = await page.evaluate(() => ({ rect: window.studio.compositor.insetRect(), corner: document.getElementById('inset-corner').value }));
  assert.ok(moved.rect.x < 200 && moved.rect.y < 200, `inset dragged to the top left: ${JSON.stringify(moved.rect)}`);
  assert.equal(moved.corner, 'top-left', 'the corner list follows the drag');

  const shot = await screenshot(page, 'studio-live');
  console.log(`studio screenshot (live, PiP): ${shot}`);

  // Switch layouts while live: the same WHIP session keeps sending.
  const before = await page.evaluate(() => window.studio.stats.framesSent);
  await page.getByLabel('Screen only', { exact: true }).check();
  await page.waitForTimeout(1200);
  await page.getByLabel('Camera only', { exact: true }).check();
  await page.waitForTimeout(1200);
  await page.getByLabel('Screen + camera', { exact: true }).check();
  await page.getByLabel('Camera corner', { exact: true }).selectOption('bottom-left');
  await page.getByRole('button', { name: 'Mute mic' }).click();
  const after = await until(page, () => ({ ...window.studio.stats, s: JSON.parse(JSON.stringify(window.studio.state)) }), (v) => v.framesSent > before + 30, {
    what: 'frames keep flowing after layout changes',
    timeoutMs: 10_000,
  });
  assert.equal(after.s.status, 'live');
  assert.equal(after.s.location, live.location, 'no new WHIP session for a layout change');
  assert.equal(after.s.publishes, 1, 'published once');
  assert.deepEqual(
    after.s.events.filter((e) => e.name === 'layout').map((e) => e.detail).slice(-3),
    ['screen', 'camera', 'pip'],
  );
  const micEnabled = await page.evaluate(() => window.studio.media.mic.enabled);
  assert.equal(micEnabled, false, 'Mute mic disables the microphone track');

  // Switch the microphone while live: replaceTrack, same session, still muted.
  const mics = await page.locator('#mic-select option').evaluateAll((os) => os.map((o) => ({ value: o.value, label: o.textContent })));
  const oldMic = await page.evaluate(() => ({ id: window.studio.media.mic.id, label: window.studio.media.mic.label }));
  const otherMic = mics.find((m) => m.value !== 'none' && m.label !== oldMic.label);
  assert.ok(otherMic, `a second fake microphone to switch to: ${JSON.stringify(mics)}`);
  await page.getByLabel('Microphone', { exact: true }).selectOption(otherMic.value);
  const switched = await until(
    page,
    () => ({ mic: window.studio.media.mic && { id: window.studio.media.mic.id, label: window.studio.media.mic.label, enabled: window.studio.media.mic.enabled }, sending: window.studio.sending(), s: JSON.parse(JSON.stringify(window.studio.state)) }),
    (v) => v.mic && v.mic.label !== oldMic.label,
    { what: 'microphone switched' },
  );
  // The page takes the new microphone before the sender's replaceTrack resolves.
  const sent = await until(page, () => window.studio.sending().audio, (id) => id === switched.mic.id, {
    what: 'the WHIP sender sends the new microphone',
    timeoutMs: 5_000,
  });
  assert.equal(sent, switched.mic.id, 'the WHIP sender now sends the new microphone');
  assert.equal(switched.mic.enabled, false, 'still muted after the switch');
  assert.equal(switched.s.location, live.location, 'no new WHIP session for a microphone switch');

  // Camera off and on again while live: the canvas track keeps going.
  const canvasTrack = switched.sending.video;
  await page.getByLabel('Camera', { exact: true }).selectOption('none');
  await until(page, () => window.studio.media.camera, (c) => c === null, { what: 'camera off' });
  await page.getByLabel('Camera', { exact: true }).selectOption({ index: 0 });
  await until(page, () => window.studio.compositor.hasCamera(), (v) => v, { what: 'camera back on' });
  const afterCamera = await page.evaluate(() => ({ sending: window.studio.sending(), s: JSON.parse(JSON.stringify(window.studio.state)) }));
  assert.equal(afterCamera.sending.video, canvasTrack, 'the same canvas track is sent throughout');
  assert.equal(afterCamera.s.publishes, 1, 'still one WHIP publish');
  assert.equal(afterCamera.s.status, 'live');

  // Stop: WHIP session deleted, every track obtained has ended.
  const tStop = Date.now();
  await page.getByRole('button', { name: 'Stop', exact: true }).click();
  const stopped = await until(page, studioState, (s) => s.status === 'offline', { what: 'studio stopped' });
  const kinds = stopped.tracks.map((t) => t.kind).sort();
  // Two microphones, two cameras (off and on again), the screen, the canvas.
  assert.deepEqual(kinds, ['audio', 'audio', 'video', 'video', 'video', 'video'], `tracks obtained: ${JSON.stringify(stopped.tracks)}`);
  for (const t of stopped.tracks) assert.equal(t.readyState, 'ended', `track ${t.kind} "${t.label}" ended`);
  const del = stopped.events.find((e) => e.name === 'stopped');
  assert.ok([200, 204].includes(del?.detail?.deleteStatus), `WHIP DELETE status: ${JSON.stringify(del)}`);
  await until(
    page,
    async (id) => (await (await fetch(`/api/v1/rooms/${id}`)).json()).live,
    (v) => v === false,
    { what: 'room offline after Stop', arg: room, timeoutMs: 10_000 },
  );
  const stopMs = Date.now() - tStop;

  assert.deepEqual(app.unexpectedErrors(), [], 'no console errors');
  reportTimings('studio/live', {
    open_to_room_created_ms: tCreated - tOpen,
    go_live_click_to_connected_ms: goLiveMs,
    stop_to_offline_ms: stopMs,
    frames_sent: after.framesSent,
  });
});

studioTest('studio: errors reach the person (wrong password, key refused after rotation, camera lost, permission denied); a key rotated while live → republishes by itself', 'studio-errors', async ({ sk, app }, defer) => {
  const creator = await sk.signup();
  const page = await app.open(`${sk.baseUrl}/studio`, { tag: 'studio' });
  defer(() => page.evaluate(() => window.studio.stop()).catch(() => {}));

  // Wrong password: the server's words, in an alert.
  const signin = page.locator('#signin-form');
  await signin.getByLabel('Email').fill(creator.email);
  await signin.getByLabel('Password').fill('not-the-password');
  await signin.getByRole('button', { name: 'Sign in' }).click();
  const alert = page.getByRole('alert');
  await alert.waitFor();
  const wrong = await alert.innerText();
  assert.match(wrong, /Sign in failed/);
  assert.match(wrong, /401/);

  // The right one works.
  await signin.getByLabel('Password').fill(creator.password);
  await signin.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('#dashboard').waitFor({ state: 'visible' });
  const room = await createRoomInStudio(page, 'Studio e2e: key');

  // Rotate the key elsewhere (another tab, the API); publishing with the old key is refused.
  await requestJson('POST', `${sk.baseUrl}/api/v1/rooms/${room}/stream-key`, { token: creator.access_token, expect: 201 });
  await page.getByLabel('Publish with').selectOption('key');
  await page.getByRole('button', { name: 'Start camera & mic' }).click();
  await until(page, () => !!window.studio.media.camera, (v) => v, { what: 'camera started' });
  await page.getByRole('button', { name: 'Go live' }).click();
  const failed = await until(page, () => JSON.parse(JSON.stringify(window.studio.state)), (s) => s.status === 'error', {
    what: 'WHIP refusal shown',
  });
  const shown = await page.getByRole('alert').innerText();
  assert.match(shown, /refused the stream key/);
  assert.match(shown, /401/);
  assert.match(await page.locator('#stat-state').innerText(), /error/i);
  assert.ok(failed.error, 'the state carries the error');

  // Rotating in the studio gives a key that works.
  await page.getByRole('button', { name: 'Rotate key' }).click();
  await page.getByRole('button', { name: /Confirm/ }).click();
  await page.getByText('New stream key issued').waitFor();
  assert.match(await page.getByLabel('Stream key', { exact: true }).inputValue(), /^•+$/, 'the new key starts hidden');
  await page.getByRole('button', { name: 'Go live' }).click();
  await until(page, () => window.studio.state.status, (s) => s === 'live', { what: 'live with the new key' });

  // Rotating while live cuts the publisher; the studio notices and republishes by
  // itself with the key it now holds.
  const tRotate = Date.now();
  await page.getByRole('button', { name: 'Rotate key' }).click();
  await page.getByRole('button', { name: /Confirm/ }).click();
  const back = await until(page, () => JSON.parse(JSON.stringify(window.studio.state)), (s) => s.publishes === 3 && s.status === 'live', {
    what: 'studio republished after its key was rotated while live',
    timeoutMs: 30_000,
  });
  assert.ok(back.events.some((e) => e.name === 'status:reconnecting'), 'went through reconnecting');
  const rotateToLiveMs = Date.now() - tRotate;
  await page.getByRole('button', { name: 'Stop', exact: true }).click();
  await until(page, () => window.studio.tracks().every((t) => t.readyState === 'ended'), (v) => v, { what: 'all tracks ended' });

  // A camera that disappears while in use: a clear message.
  await page.getByRole('button', { name: 'Start camera & mic' }).click();
  await until(page, () => !!window.studio.media.camera, (v) => v, { what: 'camera started again' });
  await page.evaluate(() => window.studio.media.camera.dispatchEvent(new Event('ended')));
  await page.getByRole('alert').filter({ hasText: 'The camera stopped' }).waitFor();
  await page.getByRole('button', { name: 'Stop', exact: true }).click();

  // Permission denied: a clear message, nothing captured.
  const denied = await app.open(`${sk.baseUrl}/studio`, {
    tag: 'studio-denied',
    initScript: `localStorage.setItem('skylark.access_token', ${JSON.stringify(creator.access_token)});
      navigator.mediaDevices.getUserMedia = () => Promise.reject(new DOMException('Permission denied', 'NotAllowedError'));`,
  });
  await denied.locator('#room').waitFor({ state: 'visible' });
  await denied.getByRole('button', { name: 'Start camera & mic' }).click();
  const deniedText = await denied.getByRole('alert').innerText();
  assert.match(deniedText, /Permission to use the camera and microphone was denied/);
  assert.deepEqual(await denied.evaluate(() => window.studio.tracks()), []);

  // The expected failures log a failed request (401) in the console; nothing else may.
  assert.deepEqual(app.unexpectedErrors([/status of 401/]), [], 'no unexpected console errors');
  reportTimings('studio/errors', { rotate_while_live_to_live_again_ms: rotateToLiveMs });
});

fixtureTest(
  'studio: signup in verify mode says "check your email"; the mailed link signs the new creator in',
  { timeout: TEST_CAP_MS, skip, bodyCap: BODY_CAP },
  {
    // The default signup: a link by mail, here the log transport (SKYLARK_MAIL_URL unset).
    setup: async (defer) => {
      const sk = await serverFor(defer, { label: 'studio-verify', env: { SKYLARK_SIGNUP: 'verify' } });
      const b = await browserFor(defer, 'studio-verify');
      return { sk, b, app: appFor(defer, b, 'studio-verify') };
    },
    logs,
  },
  async ({ sk, app }) => {
    const page = await app.open(`${sk.baseUrl}/studio`, { tag: 'studio' });
    await page.getByRole('heading', { name: 'Creator studio' }).waitFor();
    const n = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
    await page.getByRole('tab', { name: 'Create account' }).click();
    const form = page.locator('#signup-form');
    await form.getByLabel('Display name').fill('Verified creator');
    await form.getByLabel('Email').fill(`verify-${n}@example.com`);
    await form.getByLabel('Password').fill(`pw-${n}-correct-horse`);
    await form.getByRole('button', { name: 'Create account' }).click();
    await page.getByRole('status').filter({ hasText: 'Check your email' }).waitFor();
    assert.equal(await page.locator('#dashboard').isVisible(), false, 'no account before the link');

    // The log transport writes the mail, link included, to the server's log.
    let link;
    for (const deadline = Date.now() + 10_000; !link && Date.now() < deadline; ) {
      link = sk.output().match(/http:\/\/127\.0\.0\.1:\d+\/studio#verify=[A-Za-z0-9_-]+/)?.[0];
      if (!link) await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(link, 'the signup link is in the server log');
    // Opened from a mail client: a fresh page load, not a hash change of this one.
    await page.goto('about:blank');
    await page.goto(link);
    await page.locator('#dashboard').waitFor({ state: 'visible' });
    assert.equal(await page.locator('#account-name').innerText(), 'Verified creator');
    assert.equal(await page.evaluate(() => location.hash), '', 'the used token is gone from the address bar');
    // The link works once: opened again it says to sign up again.
    await page.evaluate(() => localStorage.clear());
    await page.goto('about:blank');
    await page.goto(link);
    const alert = page.getByRole('alert');
    await alert.waitFor();
    assert.match(await alert.innerText(), /sign up again/);
  },
);

studioTest('studio: with paints slower than its frame interval (a starved CPU) it keeps painting and still answers: Stop works', 'studio-slow', async ({ sk, app }, defer) => {
  const creator = await sk.signup();
  await sk.createRoom(creator.access_token, { title: 'Studio e2e: slow CPU' });
  const page = await openStudioAs(app, sk, creator, 'studio', '', { initScript: SLOW_DRAW });
  defer(() => page.evaluate(() => window.studio.stop()).catch(() => {}));
  await goLiveInStudio(page);
  // 80 ms a paint against 33 ms between ticks at 30 fps.
  await page.evaluate(() => (window.slowDrawMs = 40));
  // Ticks queued behind slow paints (the CI flake) would leave the page's input and
  // rendering waiting ever longer from here: Playwright's click below would never see a
  // frame to check the button is stable, and time out.
  await page.waitForTimeout(3000);
  await page.getByRole('button', { name: 'Stop', exact: true }).click();
  const stopped = await until(page, () => ({ status: window.studio.state.status, slowDraws: window.slowDraws }), (s) => s.status === 'offline', {
    what: 'studio stopped',
  });
  assert.ok(stopped.slowDraws > 0, 'the compositor kept painting while slow');
  assert.deepEqual(app.unexpectedErrors(), [], 'no console errors');
});

studioTest('studio and home at phone width: no horizontal scrolling, labelled controls', 'studio-phone', async ({ sk, app }, defer) => {
  const creator = await sk.signup();
  const created = await sk.createRoom(creator.access_token, { title: 'Phone room' });
  const viewport = { width: 390, height: 844 };
  const page = await app.open(`${sk.baseUrl}/studio`, {
    tag: 'studio-phone',
    viewport,
    initScript: `localStorage.setItem('skylark.access_token', ${JSON.stringify(creator.access_token)})`,
  });
  await page.locator('#room-title', { hasText: 'Phone room' }).waitFor();
  const overflow = await page.evaluate(() => document.scrollingElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `studio scrolls sideways by ${overflow}px at 390px`);
  // Every visible form control has an accessible name.
  const unlabelled = await page.evaluate(() =>
    [...document.querySelectorAll('input, select, button, canvas[role], video')]
      .filter((e) => e.offsetParent !== null)
      .filter((e) => !(e.labels?.length || e.getAttribute('aria-label') || e.getAttribute('aria-labelledby') || (e.tagName === 'BUTTON' && e.textContent.trim())))
      .map((e) => e.outerHTML.slice(0, 120)),
  );
  assert.deepEqual(unlabelled, [], 'unlabelled controls');
  await screenshot(page, 'studio-phone');
  const home = await app.open(`${sk.baseUrl}/`, { tag: 'home-phone', viewport });
  await until(home, () => window.home.state.loads, (n) => n > 0, { what: 'home loaded' });
  const homeOverflow = await home.evaluate(() => document.scrollingElement.scrollWidth - window.innerWidth);
  assert.ok(homeOverflow <= 0, `home scrolls sideways by ${homeOverflow}px at 390px`);
  const watch = await app.open(`${sk.baseUrl}/watch/${created.room.id}`, { tag: 'watch-phone', viewport });
  await until(watch, () => window.player.state.status, (s) => s === 'waiting', { what: 'watch waiting' });
  const watchOverflow = await watch.evaluate(() => document.scrollingElement.scrollWidth - window.innerWidth);
  assert.ok(watchOverflow <= 0, `watch scrolls sideways by ${watchOverflow}px at 390px`);
  assert.deepEqual(app.unexpectedErrors(), [], 'no console errors');
});
