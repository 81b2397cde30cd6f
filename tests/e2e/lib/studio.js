// Drives the studio page (/studio) through its labelled controls, as a person would.

import { until } from './app.js';

/**
 * Opens the studio in `app` signed in as `creator` (its token put in storage first), and
 * waits for its room panel (a creator with one room gets it selected). `initScript` runs
 * before the page's scripts, after the sign-in.
 */
export async function openStudioAs(app, sk, creator, tag = 'studio', query = '', { initScript = '' } = {}) {
  const page = await app.open(`${sk.baseUrl}/studio${query}`, {
    tag,
    viewport: { width: 1400, height: 1000 },
    initScript: `localStorage.setItem('skylark.access_token', ${JSON.stringify(creator.access_token)});
${initScript}`,
  });
  await page.locator('#room').waitFor({ state: 'visible' });
  return page;
}

/** Signs up through the studio's form; returns the credentials used. */
export async function signUpInStudio(page, label) {
  const n = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
  const who = { name: `Creator ${label}`, email: `studio-${n}@example.com`, password: `pw-${n}-correct-horse` };
  await page.getByRole('tab', { name: 'Create account' }).click();
  const form = page.locator('#signup-form');
  await form.getByLabel('Display name').fill(who.name);
  await form.getByLabel('Email').fill(who.email);
  await form.getByLabel('Password').fill(who.password);
  await form.getByRole('button', { name: 'Create account' }).click();
  await page.locator('#dashboard').waitFor({ state: 'visible' });
  return who;
}

/** Creates a room through the studio's form; returns its id (selected afterwards). */
export async function createRoomInStudio(page, title, visibility = 'public') {
  const form = page.locator('#create-form');
  await form.getByLabel('Title').fill(title);
  await form.getByLabel('Visibility').selectOption(visibility);
  await form.getByRole('button', { name: 'Create room' }).click();
  await page.locator('#room-title', { hasText: title }).waitFor();
  return page.evaluate(() => window.studio.state.room.id);
}

/** Starts camera + mic and the screen, then goes live; resolves once connected. */
export async function goLiveInStudio(page, { screen = true } = {}) {
  await page.getByRole('button', { name: 'Start camera & mic' }).click();
  await until(page, () => !!window.studio.media.camera && !!window.studio.media.mic, (v) => v, { what: 'camera + mic started' });
  if (screen) {
    await page.getByRole('button', { name: 'Share screen' }).click();
    await until(page, () => window.studio.compositor.hasScreen() && window.studio.compositor.hasCamera(), (v) => v, {
      what: 'camera and screen frames in the compositor',
    });
  }
  const t0 = Date.now();
  await page.getByRole('button', { name: 'Go live' }).click();
  const s = await until(page, () => JSON.parse(JSON.stringify(window.studio.state)), (v) => v.status === 'live' || v.status === 'error', {
    what: 'studio going live',
  });
  if (s.status !== 'live') throw new Error(`studio did not go live: ${s.error}`);
  return { goLiveMs: Date.now() - t0, state: s };
}

/**
 * A starved CPU, made repeatable: once `window.slowDrawMs` is set, each canvas drawImage
 * (two a paint in picture-in-picture) busy-waits that long first; `window.slowDraws`
 * counts them. An init script for `openStudioAs`.
 */
export const SLOW_DRAW = `{
  const drawImage = CanvasRenderingContext2D.prototype.drawImage;
  window.slowDraws = 0;
  CanvasRenderingContext2D.prototype.drawImage = function (...args) {
    if (window.slowDrawMs) {
      window.slowDraws += 1;
      const t = performance.now();
      while (performance.now() - t < window.slowDrawMs);
    }
    return drawImage.apply(this, args);
  };
}`;
