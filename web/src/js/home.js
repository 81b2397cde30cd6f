// The home page: public rooms that are live now, busiest first, linking to /watch.

import { api } from './api.js';
import { $, el, say, viewersText } from './ui.js';

const REFRESH_MS = 10_000;
// Thumbnails: a one-picture MP4 of a recent keyframe per live room, decoded by the
// browser (the server has no video decoder), refreshed this often.
const THUMB_MS = 5_000;
const list = $('rooms');
// thumbs: pictures shown per room id (for the page's tests and curious readers).
const state = { rooms: [], error: null, loads: 0, thumbs: {} };
window.home = { state };
// Per room id, its tile's picture frame, kept across renders so a refresh never blanks it.
const frames = new Map();

async function load() {
  try {
    const r = await api('GET', '/rooms', { what: 'Loading the live rooms' });
    state.rooms = r.rooms ?? [];
    state.error = null;
    say($('message'), '');
    render();
  } catch (e) {
    state.error = e.message;
    say($('message'), `${e.message}. Retrying…`, 'error');
  } finally {
    state.loads += 1;
    list.setAttribute('aria-busy', 'false');
    setTimeout(load, document.hidden ? REFRESH_MS * 3 : REFRESH_MS);
  }
}

function render() {
  list.replaceChildren(
    ...state.rooms.map((r) =>
      el(
        'li',
        { class: 'room-card' },
        el(
          'a',
          { href: `/watch/${encodeURIComponent(r.id)}`, 'aria-label': `${r.title}, ${viewersText(r.viewers ?? 0)}` },
          frame(r),
          el('span', { class: 'room-card-title' }, r.title),
          el('span', { class: 'room-card-meta' }, viewersText(r.viewers ?? 0)),
        ),
      ),
    ),
  );
  $('empty').hidden = state.rooms.length > 0;
  for (const id of frames.keys()) {
    if (!state.rooms.some((r) => r.id === id)) frames.delete(id);
  }
  refreshThumbs();
}

/** Room `r`'s picture frame: the Live badge over its latest still, if it has one. */
function frame(r) {
  let f = frames.get(r.id);
  if (!f) {
    f = el('span', { class: 'thumb', 'aria-hidden': 'true' }, el('span', { class: 'badge live' }, 'Live'));
    frames.set(r.id, f);
  }
  f.dataset.src = r.thumbnail_url ?? '';
  return f;
}

/** Loads each room's newest still off-screen and swaps it in once decoded. */
function refreshThumbs() {
  for (const [id, f] of frames) {
    if (!f.dataset.src || document.hidden) continue;
    const v = document.createElement('video');
    v.muted = true;
    v.playsInline = true;
    v.preload = 'auto';
    v.addEventListener(
      'loadeddata',
      () => {
        const old = f.querySelector('video');
        if (old) old.replaceWith(v);
        else f.prepend(v);
        state.thumbs[id] = (state.thumbs[id] ?? 0) + 1;
      },
      { once: true },
    );
    v.src = `${f.dataset.src}${f.dataset.src.includes('?') ? '&' : '?'}t=${Date.now()}`;
  }
}

setInterval(refreshThumbs, THUMB_MS);
load();
