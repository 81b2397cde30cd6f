// The home page: public rooms that are live now, busiest first, linking to /watch.

import { api } from './api.js';
import { $, el, say, viewersText } from './ui.js';

const REFRESH_MS = 10_000;
const list = $('rooms');
const state = { rooms: [], error: null, loads: 0 };
window.home = { state };

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
          el('span', { class: 'thumb', 'aria-hidden': 'true' }, el('span', { class: 'badge live' }, 'Live')),
          el('span', { class: 'room-card-title' }, r.title),
          el('span', { class: 'room-card-meta' }, viewersText(r.viewers ?? 0)),
        ),
      ),
    ),
  );
  $('empty').hidden = state.rooms.length > 0;
}

load();
