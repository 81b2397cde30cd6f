// The creator's studio: account, rooms, stream keys, and going live from the browser —
// camera, microphone and screen composited on a canvas, published over WHIP (SFU rooms)
// or sent straight to each viewer (p2p rooms, p2p.js).
//
// For tests and the curious, `window.studio` exposes the state: `state` (status, error,
// room, location, …), `tracks()` (every media track this page obtained, with its
// readyState), `stats` (the last live figures), `compositor`, and in p2p rooms
// `peers()` (each viewer's connection) and `p2pStats` (upload, warning).

import { api, ApiError, session } from './api.js';
import { Compositor } from './compositor.js';
import { deleteSession, makeOffer, postOffer, preferH264, senderStats } from './rtc.js';
import { MANY_VIEWERS, P2pBroadcast, uplinkWarning } from './p2p.js';
import { $, copyText, el, flash, formatBitrate, formatMs, say, viewersText } from './ui.js';

const ROOMS_REFRESH_MS = 10_000;
const VIEWERS_REFRESH_MS = 3000;
const STATS_EVERY_MS = 1000;
/** How long a `disconnected` publisher connection may last before we republish. */
const DISCONNECTED_GRACE_MS = 2500;
const RECONNECT_MAX_DELAY_MS = 10_000;
/** A WHIP session whose media doesn't connect within this is retried. */
const CONNECT_TIMEOUT_MS = 15_000;
/** Encoder ceiling by output height. */
const MAX_BITRATE = { 1080: 4_500_000, 720: 2_500_000, 480: 1_200_000, 360: 800_000 };
/**
 * Simulcast layers, largest first, as the load generator sends them: the full
 * picture, half and a quarter of its size; each gets the top layer's bitrate divided by
 * `divisor` (bitrate grows about as pixels^0.75: 4^0.75 ≈ 2.8, 16^0.75 = 8).
 */
const SIMULCAST = [
  { rid: 'h', scale: 1, divisor: 1 },
  { rid: 'm', scale: 2, divisor: 3 },
  { rid: 'l', scale: 4, divisor: 8 },
];
/** A layer smaller than this (pixels tall) isn't worth a viewer's choice: paused. */
const MIN_LAYER_HEIGHT = 180;
const SIMULCAST_SETTING = 'skylark.simulcast';

const message = $('message');
const state = {
  status: 'offline', // offline | connecting | live | reconnecting | error
  error: null,
  user: null,
  room: null,
  location: null,
  publishes: 0,
  reconnects: 0,
  events: [],
};
/** Every track this page obtained (devices and canvas), so Stop can prove all ended. */
const obtained = new Set();
const keys = new Map(); // room id → stream key known to this tab
let rooms = [];
let roomsTimer = null;

// --- messages -----------------------------------------------------------------------

function note(name, detail) {
  state.events.push({ t: Date.now(), name, ...(detail === undefined ? {} : { detail }) });
  if (state.events.length > 200) state.events.shift();
}

function showError(text) {
  state.error = text;
  note('error', text);
  say(message, text, 'error');
}

function showInfo(text) {
  say(message, text, 'info');
}

function clearMessage() {
  say(message, '');
}

/** Runs an async UI action; an error lands in the message box (401 → sign in again). */
function action(fn) {
  return async (ev) => {
    ev?.preventDefault?.();
    try {
      await fn(ev);
    } catch (e) {
      if (e instanceof ApiError && e.status === 401 && state.user && !String(e.message).startsWith('WHIP')) {
        if (state.status === 'offline' || state.status === 'error') {
          signOut('Your session expired: sign in again.');
        } else {
          // Never cut a live stream for this: the WHIP session doesn't need the sign-in.
          showError('Your sign-in expired. The stream goes on; stop it and sign in again to manage your rooms.');
        }
        return;
      }
      showError(e?.message ?? String(e));
    }
  };
}

// --- account ------------------------------------------------------------------------

function showAuth(tab = 'signin') {
  $('auth').hidden = false;
  $('dashboard').hidden = true;
  $('account').hidden = true;
  selectTab(tab);
}

function selectTab(tab) {
  for (const t of ['signin', 'signup']) {
    const on = t === tab;
    $(`tab-${t}`).setAttribute('aria-selected', String(on));
    $(`tab-${t}`).tabIndex = on ? 0 : -1;
    $(`${t}-form`).hidden = !on;
  }
}

async function enter(token) {
  session.token = token;
  state.user = await api('GET', '/me', { token, what: 'Loading your account' });
  $('account-name').textContent = state.user.display_name ?? state.user.email;
  $('account').hidden = false;
  $('auth').hidden = true;
  $('dashboard').hidden = false;
  await loadRooms();
  clearInterval(roomsTimer);
  roomsTimer = setInterval(() => loadRooms().catch(() => {}), ROOMS_REFRESH_MS);
  const wanted = new URLSearchParams(location.hash.slice(1)).get('room');
  const pick = rooms.find((r) => r.id === wanted) ?? (rooms.length === 1 ? rooms[0] : null);
  if (pick) selectRoom(pick.id);
  else showRoomPanel(false);
}

async function signOut(why) {
  if (state.status !== 'offline') await stopAll();
  session.token = null;
  state.user = null;
  state.room = null;
  clearInterval(roomsTimer);
  keys.clear();
  showAuth('signin');
  if (why) showInfo(why);
  else clearMessage();
}

$('tab-signin').addEventListener('click', () => selectTab('signin'));
$('tab-signup').addEventListener('click', () => selectTab('signup'));
for (const id of ['tab-signin', 'tab-signup']) {
  $(id).addEventListener('keydown', (e) => {
    if (e.key === 'ArrowRight' || e.key === 'ArrowLeft') {
      const next = id === 'tab-signin' ? 'signup' : 'signin';
      selectTab(next);
      $(`tab-${next}`).focus();
    }
  });
}

$('signin-form').addEventListener(
  'submit',
  action(async () => {
    clearMessage();
    const r = await api('POST', '/auth/login', {
      body: { email: $('signin-email').value.trim(), password: $('signin-password').value },
      what: 'Sign in failed',
    });
    $('signin-password').value = '';
    await enter(r.access_token);
  }),
);

$('signup-form').addEventListener(
  'submit',
  action(async () => {
    clearMessage();
    const r = await api('POST', '/auth/signup', {
      body: {
        email: $('signup-email').value.trim(),
        password: $('signup-password').value,
        display_name: $('signup-name').value.trim(),
      },
      what: 'Creating the account failed',
    });
    $('signup-password').value = '';
    // `open` signup answers with a token (201); `verify` (202) mails a link instead,
    // saying the same whether or not the address already has an account.
    if (r?.access_token) {
      await enter(r.access_token);
    } else {
      selectTab('signin');
      showInfo(r?.message ?? 'Check your email for a link to finish creating your account.');
    }
  }),
);

/** Finishes a signup from the mailed link `/studio#verify=TOKEN`: creates the account, signs in. */
async function verifyFromLink(token) {
  // The token works once: off the address bar and out of the history right away.
  history.replaceState(null, '', location.pathname + location.search);
  const r = await api('POST', '/auth/verify', { body: { token }, what: 'Finishing the signup failed' });
  await enter(r.access_token);
  showInfo('Your account is ready.');
}

$('sign-out').addEventListener('click', action(() => signOut()));

// --- rooms --------------------------------------------------------------------------

async function loadRooms() {
  const r = await api('GET', '/rooms?mine=1', { token: session.token, what: 'Loading your rooms' });
  rooms = r.rooms ?? [];
  renderRooms();
  if (state.room) {
    const fresh = rooms.find((x) => x.id === state.room.id);
    if (fresh) {
      state.room = fresh;
      renderRoomHead();
    }
  }
}

function badge(text, cls) {
  return el('span', { class: `badge ${cls ?? ''}` }, text);
}

function renderRooms() {
  const list = $('room-list');
  list.replaceChildren(
    ...rooms.map((r) =>
      el(
        'li',
        {},
        el(
          'button',
          {
            type: 'button',
            class: 'room-item',
            'aria-current': state.room?.id === r.id ? 'true' : null,
            onclick: () => selectRoom(r.id),
          },
          el('span', { class: 'room-item-title' }, r.title),
          el('span', { class: 'badges' }, r.live ? badge('Live', 'live') : null, badge(r.visibility), r.mode === 'p2p' ? badge('p2p') : null),
        ),
      ),
    ),
  );
  $('no-rooms').hidden = rooms.length > 0;
}

function showRoomPanel(on) {
  $('room').hidden = !on;
  $('pick-room').hidden = on;
}

function storedKey(id) {
  if (keys.has(id)) return keys.get(id);
  try {
    return sessionStorage.getItem(`skylark.stream_key.${id}`);
  } catch {
    return null;
  }
}

function rememberKey(id, key, ingest) {
  keys.set(id, key);
  try {
    sessionStorage.setItem(`skylark.stream_key.${id}`, key);
    if (ingest?.rtmp_url) localStorage.setItem('skylark.rtmp_url', ingest.rtmp_url);
  } catch {
    /* storage disabled: kept for this page only */
  }
}

function selectRoom(id) {
  const r = rooms.find((x) => x.id === id);
  if (!r) return;
  if (state.room?.id !== id && state.status !== 'offline') {
    showError('Stop the stream before switching rooms.');
    return;
  }
  state.room = r;
  history.replaceState(null, '', `#room=${encodeURIComponent(id)}`);
  renderRooms();
  renderRoomHead();
  renderIngest();
  $('viewer-link').hidden = true;
  $('copy-viewer-link').hidden = true;
  showRoomPanel(true);
  loadRecordings().catch((e) => showError(e.message));
}

// --- recordings ----------------------------------------------------------------------

function formatBytes(n) {
  if (n >= 1e9) return `${(n / 1e9).toFixed(1)} GB`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} MB`;
  return `${Math.max(1, Math.round(n / 1e3))} kB`;
}

function formatDuration(s) {
  const t = Math.round(s);
  const h = Math.floor(t / 3600);
  const m = Math.floor((t % 3600) / 60);
  const sec = String(t % 60).padStart(2, '0');
  return h ? `${h}:${String(m).padStart(2, '0')}:${sec}` : `${m}:${sec}`;
}

let recordingsRefresh = null;
// The private room's tokens behind the list's links, kept across the 5 s refreshes of an
// in-progress recording (a fresh pair each time would mint a token every 5 s).
let recordingLinks = null;

// A private room's media URLs take a playback token (as its live HLS does), and its
// watch page a viewer token: the owner's own session is not sent to another tab.
async function privateLinks(room) {
  const what = 'Loading the recordings failed';
  const p = await api('GET', `/rooms/${encodeURIComponent(room.id)}/playback`, { token: session.token, what });
  const t = p?.hls?.url ? new URL(p.hls.url, location.href).searchParams.get('token') : null;
  const v = await api('POST', `/rooms/${encodeURIComponent(room.id)}/viewer-tokens`, {
    token: session.token,
    body: { ttl_s: 21_600 },
    what,
  });
  // A playback token is `pt2.{room}.{generation}.{exp}.{sig}`; either token may end first.
  const exp = Number(t?.split('.').at(-2));
  let until = Date.now() + v.expires_in * 1000;
  if (Number.isFinite(exp)) until = Math.min(until, exp * 1000);
  return { room: room.id, suffix: t ? `?token=${encodeURIComponent(t)}` : '', viewerToken: v.token, until };
}

async function loadRecordings({ refresh = false } = {}) {
  const room = state.room;
  if (!room) return;
  const { recordings } = await api('GET', `/rooms/${encodeURIComponent(room.id)}/recordings`, {
    token: session.token,
    what: 'Loading the recordings failed',
  });
  let links = { suffix: '', viewerToken: null };
  if (room.visibility === 'private' && recordings.length) {
    // Reused only by the timer's refresh and while ten minutes of validity remain: a
    // list the owner opens or changes gets tokens of the room's current generation.
    const kept = recordingLinks;
    links = refresh && kept?.room === room.id && kept.until - Date.now() > 600_000 ? kept : await privateLinks(room);
    recordingLinks = links;
  }
  const { suffix, viewerToken } = links;
  if (state.room?.id !== room.id) return;
  // One in progress: follow it (its duration, then ready) while the list is open.
  clearTimeout(recordingsRefresh);
  if (recordings.some((r) => r.status === 'recording')) {
    recordingsRefresh = setTimeout(() => {
      if ($('recordings-box').open) loadRecordings({ refresh: true }).catch((e) => showError(e.message));
    }, 5000);
  }
  $('recordings-empty').hidden = recordings.length > 0;
  $('recordings-list').replaceChildren(
    ...recordings.map((r) => {
      const del = el('button', { type: 'button', class: 'danger' }, 'Delete');
      del.addEventListener(
        'click',
        action(async () => {
          await api('DELETE', `/recordings/${encodeURIComponent(r.id)}`, { token: session.token, what: 'Deleting the recording failed' });
          await loadRecordings();
          showInfo('Recording deleted.');
        }),
      );
      const watch = `/watch/${encodeURIComponent(room.id)}?recording=${encodeURIComponent(r.id)}${viewerToken ? `&token=${encodeURIComponent(viewerToken)}` : ''}`;
      const when = new Date(r.started_at_ms).toLocaleString();
      // In progress: it plays from the start as it grows; no download or delete yet.
      if (r.status === 'recording') {
        return el(
          'li',
          { 'data-recording': r.id, 'data-status': r.status },
          el('span', {}, `${when} · recording… ${formatDuration(r.duration_s)} · ${formatBytes(r.bytes)} so far `),
          el('a', { href: watch, target: '_blank', rel: 'noopener' }, 'Play'),
        );
      }
      return el(
        'li',
        { 'data-recording': r.id, 'data-status': r.status },
        el('span', {}, `${when} · ${formatDuration(r.duration_s)} · ${formatBytes(r.bytes)} `),
        el('a', { href: watch, target: '_blank', rel: 'noopener' }, 'Play'),
        ' ',
        el('a', { href: r.mp4_url + suffix, download: `${r.id}.mp4` }, 'Download'),
        ' ',
        del,
      );
    }),
  );
}

$('recordings-box').addEventListener('toggle', () => {
  if ($('recordings-box').open) loadRecordings().catch((e) => showError(e.message));
});

function renderRoomHead() {
  const r = state.room;
  $('room-title').textContent = r.title;
  $('room-badges').replaceChildren(
    r.live ? badge('Live', 'live') : badge('Offline'),
    badge(r.visibility),
    badge(r.mode === 'p2p' ? 'peer to peer' : 'SFU'),
  );
  $('private-tools').hidden = r.visibility !== 'private';
  $('edit-title').value = r.title;
  $('edit-visibility').value = r.visibility;
  $('edit-record').checked = !!r.record;
  if (state.status === 'offline') $('stat-viewers').textContent = viewersText(r.viewers);
}

function renderIngest() {
  const r = state.room;
  const watch = new URL(`/watch/${encodeURIComponent(r.id)}`, location.origin).toString();
  $('watch-url').value = watch;
  $('open-watch').href = watch;
  $('whip-url').value = new URL(`/whip/${encodeURIComponent(r.id)}`, location.origin).toString();
  let rtmp = null;
  try {
    rtmp = localStorage.getItem('skylark.rtmp_url');
  } catch {
    /* none */
  }
  $('rtmp-url').value = rtmp ?? '';
  $('rtmp-url').placeholder = 'shown with a new stream key';
  const key = storedKey(r.id);
  showKey(false);
  $('stream-key').placeholder = key ? '' : 'not shown again';
  $('reveal-key').disabled = !key;
  $('copy-key').disabled = !key;
  $('key-note').textContent = key
    ? 'Keep it secret: anyone with the key can stream to this room.'
    : 'A stream key is shown once, when it is issued. Rotate it to get a new one (the old one stops working).';
  resetRotate();
}

$('create-form').addEventListener(
  'submit',
  action(async () => {
    clearMessage();
    const r = await api('POST', '/rooms', {
      token: session.token,
      body: { title: $('create-title').value.trim(), visibility: $('create-visibility').value, mode: $('create-mode').value },
      what: 'Creating the room failed',
    });
    rememberKey(r.room.id, r.stream_key, r.ingest);
    $('create-title').value = '';
    await loadRooms();
    selectRoom(r.room.id);
    showInfo(`Room “${r.room.title}” created. Its stream key is below: copy it now, it is shown only this once.`);
  }),
);

$('edit-form').addEventListener(
  'submit',
  action(async () => {
    const r = await api('PATCH', `/rooms/${encodeURIComponent(state.room.id)}`, {
      token: session.token,
      body: { title: $('edit-title').value.trim(), visibility: $('edit-visibility').value, record: $('edit-record').checked },
      what: 'Saving the room failed',
    });
    state.room = { ...state.room, ...r };
    await loadRooms();
    showInfo('Saved.');
  }),
);

let deleteArmed = false;
$('delete-room').addEventListener(
  'click',
  action(async () => {
    if (!deleteArmed) {
      deleteArmed = true;
      $('delete-room').textContent = 'Really delete? Click again';
      setTimeout(() => {
        deleteArmed = false;
        $('delete-room').textContent = 'Delete room';
      }, 5000);
      return;
    }
    deleteArmed = false;
    $('delete-room').textContent = 'Delete room';
    if (state.status !== 'offline') await stopAll();
    await api('DELETE', `/rooms/${encodeURIComponent(state.room.id)}`, { token: session.token, what: 'Deleting the room failed' });
    state.room = null;
    history.replaceState(null, '', location.pathname);
    await loadRooms();
    showRoomPanel(false);
    showInfo('Room deleted.');
  }),
);

// --- stream key ---------------------------------------------------------------------

/**
 * Shows the key, or a mask of dots in its place. (A plain text field with a mask, not a
 * password field: browsers would offer to save the key as the site's password.)
 */
function showKey(reveal) {
  const key = state.room ? storedKey(state.room.id) : null;
  const input = $('stream-key');
  input.value = key ? (reveal ? key : '•'.repeat(Math.min(32, key.length))) : '';
  input.dataset.revealed = String(!!(key && reveal));
  $('reveal-key').setAttribute('aria-pressed', String(!!(key && reveal)));
  $('reveal-key').textContent = key && reveal ? 'Hide' : 'Reveal';
}

$('reveal-key').addEventListener('click', () => showKey($('stream-key').dataset.revealed !== 'true'));

$('copy-key').addEventListener('click', async () => {
  const key = state.room && storedKey(state.room.id);
  if (!key) return;
  const ok = await copyText(key);
  if (!ok) showKey(true);
  flash($('copy-key'), ok ? 'Copied' : 'Select and copy');
});

for (const [button, field] of [
  ['copy-whip', 'whip-url'],
  ['copy-rtmp', 'rtmp-url'],
  ['copy-watch', 'watch-url'],
  ['copy-viewer-link', 'viewer-link'],
]) {
  $(button).addEventListener('click', async () => {
    const ok = await copyText($(field).value, $(field));
    flash($(button), ok ? 'Copied' : 'Press Ctrl+C');
  });
}

let rotateArmed = null;
function resetRotate() {
  clearTimeout(rotateArmed);
  rotateArmed = null;
  $('rotate-key').textContent = 'Rotate key';
}

$('rotate-key').addEventListener(
  'click',
  action(async () => {
    if (!rotateArmed) {
      $('rotate-key').textContent = 'Confirm: the old key stops working';
      rotateArmed = setTimeout(resetRotate, 6000);
      return;
    }
    resetRotate();
    const id = state.room.id;
    const r = await api('POST', `/rooms/${encodeURIComponent(id)}/stream-key`, { token: session.token, what: 'Rotating the key failed' });
    rememberKey(id, r.stream_key, r.ingest);
    renderIngest();
    showInfo(
      state.status === 'offline'
        ? 'New stream key issued; the old one no longer works.'
        : 'New stream key issued; the old one no longer works. Streams using it were cut; this studio reconnects by itself.',
    );
  }),
);

$('make-viewer-link').addEventListener(
  'click',
  action(async () => {
    const id = state.room.id;
    const r = await api('POST', `/rooms/${encodeURIComponent(id)}/viewer-tokens`, {
      token: session.token,
      body: { ttl_s: 86_400 },
      what: 'Creating a viewer link failed',
    });
    const u = new URL(`/watch/${encodeURIComponent(id)}`, location.origin);
    u.searchParams.set('token', r.token);
    $('viewer-link').value = u.toString();
    $('viewer-link').hidden = false;
    $('copy-viewer-link').hidden = false;
  }),
);

// --- devices ------------------------------------------------------------------------

const cameraVideo = $('camera-video');
const screenVideo = $('screen-video');
const preview = $('preview');
const compositor = new Compositor(preview, { width: 1280, height: 720, fps: 30 });
const media = { camera: null, mic: null, screen: null };
let micMuted = false;
let audio = null; // {ctx, analyser, source, timer}

function track(kind, t) {
  obtained.add(t);
  note(`track:${kind}`, t.label);
  return t;
}

/** People-readable words for a getUserMedia/getDisplayMedia failure. */
function mediaError(e, what) {
  switch (e?.name) {
    case 'NotAllowedError':
    case 'SecurityError':
      return what === 'screen'
        ? 'Screen sharing was cancelled or is not allowed.'
        : `Permission to use the ${what} was denied. Allow it in the browser's site settings (next to the address bar), then try again.`;
    case 'NotFoundError':
    case 'OverconstrainedError':
      return `No ${what} was found. Is it plugged in? Pick another one in the list.`;
    case 'NotReadableError':
    case 'AbortError':
      return `The ${what} could not be started: another application may be using it.`;
    case 'TypeError':
      return `The ${what} can't be used here: the page needs https (or localhost).`;
    default:
      return `The ${what} could not be started: ${e?.message ?? e}`;
  }
}

function deviceOption(d, i, noun) {
  return el('option', { value: d.deviceId }, d.label || `${noun} ${i + 1}`);
}

/** Fills the camera and microphone lists (labels appear once permission is given). */
async function refreshDevices() {
  if (!navigator.mediaDevices?.enumerateDevices) return;
  let devices = [];
  try {
    devices = await navigator.mediaDevices.enumerateDevices();
  } catch {
    return;
  }
  const fill = (select, kind, noun, none) => {
    const current = select.value;
    const list = devices.filter((d) => d.kind === kind);
    select.replaceChildren(...list.map((d, i) => deviceOption(d, i, noun)), el('option', { value: 'none' }, none));
    const live = kind === 'videoinput' ? media.camera : media.mic;
    const liveId = live?.getSettings?.().deviceId;
    if (liveId && list.some((d) => d.deviceId === liveId)) select.value = liveId;
    else if ([...select.options].some((o) => o.value === current)) select.value = current;
  };
  fill($('camera-select'), 'videoinput', 'Camera', 'No camera');
  fill($('mic-select'), 'audioinput', 'Microphone', 'No microphone');
  refreshDeviceButton();
}

function wanted(select) {
  const v = select.value;
  if (v === 'none') return null;
  return v ? { exact: v } : undefined;
}

function cameraConstraints() {
  const id = wanted($('camera-select'));
  if (id === null) return false;
  return { ...(id ? { deviceId: id } : {}), width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } };
}

function micConstraints() {
  const id = wanted($('mic-select'));
  if (id === null) return false;
  return { ...(id ? { deviceId: id } : {}), echoCancellation: true, noiseSuppression: true, autoGainControl: true };
}

function ensureMediaDevices() {
  if (!navigator.mediaDevices?.getUserMedia) {
    throw new Error('This browser cannot capture a camera or microphone here (the page needs https or localhost).');
  }
}

/** Camera and microphone in one request (one permission prompt). */
async function startDevices() {
  ensureMediaDevices();
  const video = media.camera ? false : cameraConstraints();
  const audioC = media.mic ? false : micConstraints();
  if (!video && !audioC) {
    compositor.run();
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video, audio: audioC });
  } catch (e) {
    // With both asked for, one missing device fails the pair: try each alone.
    if (video && audioC && (e.name === 'NotFoundError' || e.name === 'NotReadableError' || e.name === 'OverconstrainedError')) {
      const errors = [];
      await setCamera().catch((x) => errors.push(x.message));
      await setMic().catch((x) => errors.push(x.message));
      if (errors.length) showError(errors.join(' '));
      return;
    }
    throw new Error(mediaError(e, video && audioC ? 'camera and microphone' : video ? 'camera' : 'microphone'));
  }
  const [v] = stream.getVideoTracks();
  const [a] = stream.getAudioTracks();
  if (v) useCamera(v);
  if (a) await useMic(a);
  await refreshDevices();
  compositor.run();
}

/** "Start camera & mic" only while one of them is off. */
function refreshDeviceButton() {
  const want = (cameraConstraints() && !media.camera) || (micConstraints() && !media.mic);
  $('start-devices').disabled = !want;
}

function useCamera(t) {
  const old = media.camera;
  media.camera = track('camera', t);
  cameraVideo.srcObject = new MediaStream([t]);
  cameraVideo.play().catch(() => {});
  compositor.camera = cameraVideo;
  refreshDeviceButton();
  t.addEventListener('ended', () => {
    if (media.camera !== t) return;
    media.camera = null;
    compositor.camera = null;
    cameraVideo.srcObject = null;
    refreshDeviceButton();
    // (Only the browser ends a track with an event: unplugged, revoked, taken.)
    showError('The camera stopped (was it unplugged or taken by another app?). Pick a camera in the list to continue.');
    refreshDevices();
  });
  old?.stop();
}

async function useMic(t) {
  const old = media.mic;
  media.mic = track('microphone', t);
  t.enabled = !micMuted;
  refreshDeviceButton();
  t.addEventListener('ended', () => {
    if (media.mic !== t) return;
    media.mic = null;
    refreshDeviceButton();
    // (Only the browser ends a track with an event: unplugged, revoked, taken.)
    showError('The microphone stopped (was it unplugged?). Pick a microphone in the list to continue.');
    refreshDevices();
  });
  // While live: swap the sender's track in place, no renegotiation.
  if (pub?.audioSender) await pub.audioSender.replaceTrack(t);
  await p2p?.setAudio(t);
  old?.stop();
  meter(t);
}

async function setCamera() {
  ensureMediaDevices();
  const c = cameraConstraints();
  if (!c) {
    const old = media.camera;
    media.camera = null;
    compositor.camera = null;
    cameraVideo.srcObject = null;
    old?.stop();
    refreshDeviceButton();
    return;
  }
  let s;
  try {
    s = await navigator.mediaDevices.getUserMedia({ video: c });
  } catch (e) {
    throw new Error(mediaError(e, 'camera'));
  }
  useCamera(s.getVideoTracks()[0]);
  compositor.run();
  await refreshDevices();
}

async function setMic() {
  ensureMediaDevices();
  const c = micConstraints();
  if (!c) {
    const old = media.mic;
    media.mic = null;
    if (pub?.audioSender) await pub.audioSender.replaceTrack(null);
    await p2p?.setAudio(null);
    old?.stop();
    meter(null);
    refreshDeviceButton();
    return;
  }
  let s;
  try {
    s = await navigator.mediaDevices.getUserMedia({ audio: c });
  } catch (e) {
    throw new Error(mediaError(e, 'microphone'));
  }
  await useMic(s.getAudioTracks()[0]);
  await refreshDevices();
}

async function shareScreen() {
  if (media.screen) {
    stopScreen();
    return;
  }
  if (!navigator.mediaDevices?.getDisplayMedia) throw new Error('This browser cannot share a screen.');
  let s;
  try {
    s = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: { ideal: compositor.fps } }, audio: false });
  } catch (e) {
    throw new Error(mediaError(e, 'screen'));
  }
  const t = track('screen', s.getVideoTracks()[0]);
  media.screen = t;
  screenVideo.srcObject = new MediaStream([t]);
  screenVideo.play().catch(() => {});
  compositor.screen = screenVideo;
  t.addEventListener('ended', () => {
    if (media.screen !== t) return;
    stopScreen();
    showInfo('Screen sharing stopped.');
  });
  $('share-screen').setAttribute('aria-pressed', 'true');
  $('share-screen').textContent = 'Stop sharing';
  compositor.run();
}

function stopScreen() {
  const t = media.screen;
  media.screen = null;
  compositor.screen = null;
  screenVideo.srcObject = null;
  t?.stop();
  $('share-screen').setAttribute('aria-pressed', 'false');
  $('share-screen').textContent = 'Share screen';
}

/** A level meter for the microphone (Web Audio analyser). */
function meter(t) {
  if (audio) {
    clearInterval(audio.timer);
    audio.source?.disconnect();
  }
  if (!t) {
    $('mic-level').value = 0;
    return;
  }
  try {
    if (!audio) {
      const ctx = new AudioContext();
      audio = { ctx, analyser: ctx.createAnalyser(), source: null, timer: null };
      audio.analyser.fftSize = 512;
    }
    audio.ctx.resume().catch(() => {});
    audio.source = audio.ctx.createMediaStreamSource(new MediaStream([t]));
    audio.source.connect(audio.analyser);
    const buf = new Float32Array(audio.analyser.fftSize);
    audio.timer = setInterval(() => {
      audio.analyser.getFloatTimeDomainData(buf);
      let peak = 0;
      for (const x of buf) peak = Math.max(peak, Math.abs(x));
      $('mic-level').value = t.enabled ? Math.min(1, peak * 1.5) : 0;
    }, 100);
  } catch {
    /* no Web Audio: no meter */
  }
}

function closeMeter() {
  if (!audio) return;
  clearInterval(audio.timer);
  audio.source?.disconnect();
  audio.ctx.close().catch(() => {});
  audio = null;
  $('mic-level').value = 0;
}

$('start-devices').addEventListener('click', action(startDevices));
$('camera-select').addEventListener('change', action(setCamera));
$('mic-select').addEventListener('change', action(setMic));
$('share-screen').addEventListener('click', action(shareScreen));
$('mute-mic').addEventListener('click', () => {
  micMuted = !micMuted;
  if (media.mic) media.mic.enabled = !micMuted;
  $('mute-mic').setAttribute('aria-pressed', String(micMuted));
  $('mute-mic').textContent = micMuted ? 'Unmute mic' : 'Mute mic';
});
$('hide-camera').addEventListener('click', () => {
  compositor.cameraHidden = !compositor.cameraHidden;
  $('hide-camera').setAttribute('aria-pressed', String(compositor.cameraHidden));
  $('hide-camera').textContent = compositor.cameraHidden ? 'Show camera' : 'Hide camera';
  compositor.draw();
});
navigator.mediaDevices?.addEventListener?.('devicechange', () => refreshDevices());

// --- layout -------------------------------------------------------------------------

function setLayout(layout) {
  compositor.layout = layout;
  note('layout', layout);
  for (const r of document.querySelectorAll('input[name=layout]')) r.checked = r.value === layout;
  $('inset-corner').disabled = layout !== 'pip';
  $('inset-size').disabled = layout !== 'pip';
  // Text on a shared screen stays sharp ('detail': keep resolution, drop frames under
  // pressure); a camera alone keeps its motion smooth.
  if (compositor.track) compositor.track.contentHint = layout === 'camera' ? 'motion' : 'detail';
  compositor.draw();
}

for (const r of document.querySelectorAll('input[name=layout]')) {
  r.addEventListener('change', () => r.checked && setLayout(r.value));
}
$('inset-corner').addEventListener('change', (e) => compositor.setCorner(e.target.value));
$('inset-size').addEventListener('input', (e) => compositor.setInsetSize(Number(e.target.value) / 100));
$('resolution').addEventListener('change', (e) => {
  const [w, h] = e.target.value.split('x').map(Number);
  compositor.setSize(w, h);
  applyEncoding();
});
$('framerate').addEventListener('change', (e) => {
  compositor.setFps(Number(e.target.value));
  applyEncoding();
});

// Drag the inset on the preview (pointer events: mouse, touch and pen alike).
let drag = null;
function canvasPoint(ev) {
  const r = preview.getBoundingClientRect();
  return { x: ((ev.clientX - r.left) * preview.width) / r.width, y: ((ev.clientY - r.top) * preview.height) / r.height };
}
preview.addEventListener('pointerdown', (ev) => {
  if (!compositor.insetShown()) return;
  const p = canvasPoint(ev);
  const r = compositor.insetRect();
  if (p.x < r.x || p.x > r.x + r.w || p.y < r.y || p.y > r.y + r.h) return;
  drag = { dx: p.x - r.x, dy: p.y - r.y };
  preview.setPointerCapture(ev.pointerId);
  preview.classList.add('dragging');
  ev.preventDefault();
});
preview.addEventListener('pointermove', (ev) => {
  if (drag) {
    const p = canvasPoint(ev);
    compositor.moveInset(p.x - drag.dx, p.y - drag.dy);
    return;
  }
  if (!compositor.insetShown()) {
    preview.style.cursor = '';
    return;
  }
  const p = canvasPoint(ev);
  const r = compositor.insetRect();
  preview.style.cursor = p.x >= r.x && p.x <= r.x + r.w && p.y >= r.y && p.y <= r.y + r.h ? 'grab' : '';
});
const endDrag = () => {
  if (!drag) return;
  drag = null;
  preview.classList.remove('dragging');
  $('inset-corner').value = compositor.nearestCorner();
  note('inset', { ...compositor.inset });
};
preview.addEventListener('pointerup', endDrag);
preview.addEventListener('pointercancel', endDrag);

// --- publishing (WHIP) --------------------------------------------------------------

/** The live publication: {pc, location, bearer, audioSender, videoSender, timers}. */
let pub = null;
let stopping = false;
let statsTimer = null;
let viewersTimer = null;
let lastStats = null;

function setStatus(s, detail) {
  state.status = s;
  note(`status:${s}`, detail);
  const label = { offline: 'Offline', connecting: 'Connecting…', live: 'Live', reconnecting: 'Reconnecting…', error: 'Stopped by an error' }[s] ?? s;
  $('stat-state').textContent = label;
  $('stat-state').dataset.state = s;
  $('live-badge').hidden = s !== 'live';
  $('go-live').disabled = s !== 'offline' && s !== 'error';
  $('go-live').textContent = s === 'live' ? 'Live' : 'Go live';
}

function credential() {
  if ($('credential').value === 'key') {
    const key = storedKey(state.room.id);
    if (!key) {
      throw new Error('This browser does not know the stream key of this room (it is shown only once). Rotate the key to get a new one, or publish with your account.');
    }
    return key;
  }
  return session.token;
}

/** Explains a WHIP refusal in the creator's terms. */
function whipError(e) {
  if (!(e instanceof ApiError)) return e?.message ?? String(e);
  if (e.status === 401 && $('credential').value === 'key') {
    return `The server refused the stream key (${e.message}). It may have been rotated: use the current key, or publish with your account.`;
  }
  if (e.status === 401) return `The server refused your sign-in (${e.message}). Sign in again.`;
  if (e.code === 'p2p_room' || e.status === 409) return `${e.message}`;
  if (e.status === 422) return `The server can't take this video: ${e.message}. This browser may lack an H.264 encoder.`;
  return e.message;
}

/** 4xx answers that another try won't change. */
function fatal(e) {
  return e instanceof ApiError && e.status >= 400 && e.status < 500 && e.status !== 408 && e.status !== 429;
}

async function goLive() {
  clearMessage();
  state.error = null;
  if (!state.room) throw new Error('Pick a room first.');
  if (typeof RTCPeerConnection !== 'function') throw new Error('This browser has no WebRTC: it cannot go live.');
  credential(); // fails early when the key is unknown
  if (!media.camera && !media.mic && !media.screen) await startDevices();
  stopping = false;
  compositor.captureTrack();
  setLayout(compositor.layout);
  setStatus('connecting');
  if (state.room.mode === 'p2p') {
    try {
      await publishP2p();
    } catch (e) {
      setStatus('error', e.message);
      throw new Error(`Going live peer to peer failed: ${e.message}`);
    }
    startLivePanel();
    return;
  }
  try {
    await publish();
  } catch (e) {
    setStatus('error', whipError(e));
    throw new Error(whipError(e));
  }
  startLivePanel();
}

async function publish() {
  const bearer = credential();
  const videoTrack = compositor.captureTrack();
  if (!obtained.has(videoTrack)) track('canvas', videoTrack);
  const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
  const stream = new MediaStream([videoTrack]);
  const simulcast = $('simulcast').checked;
  const vt = pc.addTransceiver(videoTrack, {
    direction: 'sendonly',
    streams: [stream],
    // Every layer is negotiated; those too small for the output size are paused
    // (applyEncoding), so a size change while live needs no renegotiation.
    ...(simulcast ? { sendEncodings: SIMULCAST.map((l) => ({ rid: l.rid, scaleResolutionDownBy: l.scale })) } : {}),
  });
  // Always an audio transceiver: a microphone picked later is swapped in with replaceTrack.
  const at = pc.addTransceiver(media.mic ?? 'audio', { direction: 'sendonly', streams: [stream] });
  const codec = preferH264(vt, 'sendonly');
  const p = { pc, location: null, bearer, videoSender: vt.sender, audioSender: at.sender, codec, simulcast, graceTimer: null };
  pub = p;
  pc.addEventListener('connectionstatechange', () => onConnectionState(p));
  state.publishes += 1;
  const offer = await makeOffer(pc);
  if (pub !== p) return;
  const whipUrl = new URL(`/whip/${encodeURIComponent(state.room.id)}`, location.origin).toString();
  note('whip:post');
  let res;
  try {
    res = await postOffer('WHIP', whipUrl, offer, bearer);
  } catch (e) {
    if (pub === p) {
      pc.close();
      pub = null;
    }
    throw e;
  }
  if (pub !== p) {
    deleteSession(res.location, bearer);
    return;
  }
  p.location = res.location;
  state.location = res.location;
  note('whip:answer');
  await pc.setRemoteDescription({ type: 'answer', sdp: res.answer });
  applyEncoding();
  p.connectTimer = setTimeout(() => {
    if (pub === p && pc.connectionState !== 'connected') reconnect(p, `no media connection to the server within ${CONNECT_TIMEOUT_MS / 1000} s`);
  }, CONNECT_TIMEOUT_MS);
}

// --- publishing peer to peer (p2p rooms) -------------------------------------------

/** The live p2p broadcast (P2pBroadcast), or null. */
let p2p = null;
/** The latest one, kept after Stop so its closed connections can be inspected. */
let lastP2p = null;
/** The p2p warning threshold (a test may lower it through window.studio.p2pLimits). */
const p2pLimits = { manyViewers: MANY_VIEWERS };

/** What one viewer's copy of the stream may use: the size's ceiling, the chosen rate. */
function p2pEncoding() {
  return { maxBitrate: MAX_BITRATE[tier()], maxFramerate: compositor.fps };
}

/** Publishes over the WebSocket; viewers are then connected as they come. */
async function publishP2p() {
  const videoTrack = compositor.captureTrack();
  if (!obtained.has(videoTrack)) track('canvas', videoTrack);
  const cred = $('credential').value === 'key' ? { stream_key: credential() } : { token: credential() };
  const b = new P2pBroadcast({
    room: state.room.id,
    credential: cred,
    video: videoTrack,
    audio: media.mic,
    encoding: p2pEncoding,
    onEvent: (name, detail) => {
      note(name, detail);
      if (p2p === b) renderPeers(b);
    },
    onClose: (why) => p2pLost(b, b.endReason ?? why),
  });
  p2p = b;
  lastP2p = b;
  state.publishes += 1;
  note('p2p:publish');
  try {
    await b.start();
  } catch (e) {
    if (p2p === b) p2p = null;
    throw e;
  }
  if (p2p !== b) {
    b.stop();
    return;
  }
  state.reconnects = 0;
  $('p2p-panel').hidden = false;
  renderPeers(b);
  setStatus('live');
  setTimeout(() => loadRooms().catch(() => {}), 1000);
  if (state.error === null) clearMessage();
}

/** The signaling connection dropped while live: viewers see the room go offline; publish again. */
async function p2pLost(b, why) {
  if (stopping || p2p !== b) return;
  p2p = null;
  b.stop();
  // Another tab or device went live with this credential: publishing again here
  // would take the room back from it, so stop and say so.
  if (b.endCode === 'publish_taken_over') {
    const text = 'Your stream was taken over: you went live with the same stream key or account from another tab or device, so this studio stopped broadcasting. Go live here again to take it back.';
    setStatus('error', text);
    showError(text);
    return;
  }
  // A refused credential won't change; anything else (a restart, the old connection
  // still holding the room) may.
  const refused = (e) => ['unauthorized', 'forbidden', 'not_found', 'publish_ended'].includes(e.code);
  await republish(why, () => p2p, publishP2p, refused, (e) => e.message);
}

const PEER_STATE = {
  new: 'connecting',
  connecting: 'connecting',
  connected: 'connected',
  disconnected: 'interrupted',
  failed: 'could not connect (ICE failed)',
  timeout: 'could not connect (timed out)',
  left: 'left',
  replaced: 'reconnected',
  stopped: 'ended',
  closed: 'closed',
};

/** Each viewer's connection, then those that ended lately. */
function renderPeers(b, figures = null) {
  const byViewer = new Map((figures?.viewers ?? []).map((v) => [v.viewer, v]));
  const items = [...b.peers.values()].map((p) => {
    const f = byViewer.get(p.viewer);
    const parts = [`Viewer ${p.viewer.slice(-6)}`, PEER_STATE[p.state] ?? p.state];
    if (f?.bitrate) parts.push(formatBitrate(f.bitrate));
    if (f?.rttMs !== null && f?.rttMs !== undefined) parts.push(`${formatMs(f.rttMs)} round trip`);
    return el('li', { dataset: { viewer: p.viewer, state: p.state } }, parts.join(' · '));
  });
  const ended = b.gone.slice(-5).map((g) => el('li', { dataset: { viewer: g.viewer, state: g.state } }, `Viewer ${g.viewer.slice(-6)} · ${PEER_STATE[g.state] ?? g.state}`));
  $('p2p-peers').replaceChildren(...items, ...ended);
  $('p2p-count').textContent = String([...b.peers.values()].filter((p) => p.state === 'connected').length);
}

async function updateP2pStats() {
  const b = p2p;
  if (!b) return;
  const figures = await b.stats(senderStats);
  if (p2p !== b) return;
  const connected = figures.viewers.filter((v) => v.state === 'connected');
  const warning = uplinkWarning(figures.viewers, p2pEncoding().maxBitrate, p2pLimits.manyViewers);
  const s = { ...figures, warning, at: Date.now() };
  window.studio.p2pStats = s;
  $('p2p-upload').textContent = connected.length ? formatBitrate(figures.uploadBps) : '–';
  $('p2p-per-viewer').textContent = connected.length ? formatBitrate(figures.uploadBps / connected.length) : '–';
  $('stat-bitrate').textContent = connected.length ? formatBitrate(figures.uploadBps) : '–';
  const top = connected.find((v) => v.width) ?? null;
  $('stat-resolution').textContent = top ? `${top.width}×${top.height}${top.limitation && top.limitation !== 'none' ? ` (limited: ${top.limitation})` : ''}` : '–';
  $('stat-codec').textContent = top?.codec ?? '–';
  const rtts = connected.map((v) => v.rttMs).filter((x) => x !== null);
  $('stat-rtt').textContent = rtts.length ? formatMs(Math.max(...rtts)) : '–';
  $('stat-viewers').textContent = viewersText(connected.length);
  $('stat-audience').textContent = `peer to peer ${connected.length}`;
  const w = $('p2p-warning');
  w.textContent = warning?.text ?? '';
  w.hidden = !warning;
  w.dataset.reason = warning?.reason ?? '';
  renderPeers(b, figures);
}

function onConnectionState(p) {
  if (pub !== p) return;
  const s = p.pc.connectionState;
  note(`pc:${s}`);
  clearTimeout(p.graceTimer);
  if (s === 'connected') {
    clearTimeout(p.connectTimer);
    state.reconnects = 0;
    setStatus('live');
    setTimeout(() => loadRooms().catch(() => {}), 1000);
    if (state.error === null) clearMessage();
  } else if (s === 'disconnected') {
    p.graceTimer = setTimeout(() => pub === p && reconnect(p, 'the connection to the server was interrupted'), DISCONNECTED_GRACE_MS);
  } else if (s === 'failed') {
    reconnect(p, 'the connection to the server failed');
  }
}

/** Republishes the same canvas and microphone tracks after a lost connection. */
async function reconnect(p, why) {
  if (stopping || pub !== p) return;
  pub = null;
  clearTimeout(p.graceTimer);
  clearTimeout(p.connectTimer);
  p.pc.close();
  deleteSession(p.location, p.bearer);
  // Connected or not, the connection's state handler takes it from here.
  await republish(why, () => pub, publish, fatal, whipError);
}

/**
 * Publishes again with backoff until `attempt()` succeeds, Stop is pressed, or a
 * publication exists (`current()`); a `refused(e)` error stops with `words(e)`, others
 * (the server may be restarting) are retried.
 */
async function republish(why, current, attempt, refused, words) {
  setStatus('reconnecting', why);
  showInfo(`Reconnecting: ${why}…`);
  for (;;) {
    const n = ++state.reconnects;
    await new Promise((r) => setTimeout(r, Math.min(RECONNECT_MAX_DELAY_MS, 500 * 2 ** Math.min(n - 1, 5))));
    if (stopping || current()) return;
    try {
      await attempt();
      return;
    } catch (e) {
      if (stopping) return;
      if (refused(e)) {
        setStatus('error', words(e));
        showError(words(e));
        return;
      }
      showInfo(`Reconnecting (attempt ${n}): ${e.message}`);
    }
  }
}

/**
 * Encoder ceilings for the chosen size and rate, per simulcast layer: the top layer gets
 * the size's bitrate, the others their share; layers under MIN_LAYER_HEIGHT (or all but
 * the top one, with simulcast turned off while live) are paused.
 */
function applyEncoding() {
  p2p?.applyEncoding();
  const sender = pub?.videoSender;
  if (!sender) return;
  try {
    const params = sender.getParameters();
    if (!params.encodings?.length) return;
    const h = preview.height;
    const several = $('simulcast').checked;
    for (const [i, e] of params.encodings.entries()) {
      const layer = SIMULCAST.find((l) => l.rid === e.rid) ?? SIMULCAST[0];
      e.maxBitrate = Math.round(MAX_BITRATE[tier()] / layer.divisor);
      e.maxFramerate = compositor.fps;
      if (params.encodings.length > 1) e.active = i === 0 || (several && h / layer.scale >= MIN_LAYER_HEIGHT);
    }
    sender.setParameters(params).catch((e) => note('setParameters:error', e.message));
  } catch {
    /* not supported: the browser's defaults apply */
  }
}

/** The output size's row of MAX_BITRATE. */
function tier() {
  const h = preview.height;
  return h >= 1080 ? 1080 : h >= 720 ? 720 : h >= 480 ? 480 : 360;
}

/** "WebRTC 3 · HLS 1 · FLV 0": how the viewers watch (the API counts each transport). */
function audienceText(a) {
  if (!a) return '–';
  return `WebRTC ${a.webrtc ?? 0} · HLS ${a.hls ?? 0} · FLV ${a.flv ?? 0}`;
}

/** "1280×720, 640×360, 320×180": the sizes being sent, largest first. */
function layersText(s) {
  if (!s.layers?.length) return '–';
  const sizes = s.layers.map((l) => `${l.width}×${l.height}`).join(', ');
  return pub?.simulcast && $('simulcast').checked ? sizes : `${sizes} (simulcast off)`;
}

function loadSimulcastSetting() {
  try {
    const v = localStorage.getItem(SIMULCAST_SETTING);
    if (v !== null) $('simulcast').checked = v === 'on';
  } catch {
    /* storage disabled: the default (on) */
  }
}

$('simulcast').addEventListener('change', (e) => {
  const on = e.target.checked;
  note('simulcast', on);
  try {
    localStorage.setItem(SIMULCAST_SETTING, on ? 'on' : 'off');
  } catch {
    /* storage disabled: kept for this page only */
  }
  if (!pub) return;
  // Layers negotiated at go-live can be paused and resumed; none can be added.
  if (pub.simulcast) applyEncoding();
  else if (on) showInfo('Simulcast starts the next time you go live.');
});

function startLivePanel() {
  clearInterval(statsTimer);
  clearInterval(viewersTimer);
  lastStats = null;
  statsTimer = setInterval(updateStats, STATS_EVERY_MS);
  viewersTimer = setInterval(updateViewers, VIEWERS_REFRESH_MS);
  updateViewers();
}

function stopLivePanel() {
  clearInterval(statsTimer);
  clearInterval(viewersTimer);
  statsTimer = null;
  viewersTimer = null;
  for (const id of ['stat-bitrate', 'stat-fps', 'stat-resolution', 'stat-layers', 'stat-loss', 'stat-rtt', 'stat-codec', 'p2p-upload', 'p2p-per-viewer']) $(id).textContent = '–';
  $('p2p-warning').hidden = true;
}

async function updateStats() {
  if (p2p) {
    await updateP2pStats().catch(() => {});
    return;
  }
  const p = pub;
  if (!p?.pc || p.pc.connectionState === 'closed') return;
  try {
    const s = await senderStats(p.pc, lastStats);
    lastStats = s;
    window.studio.stats = s;
    $('stat-bitrate').textContent = formatBitrate(s.bitrate);
    $('stat-fps').textContent = s.fps === null ? '–' : `${Math.round(s.fps)} fps`;
    $('stat-resolution').textContent = s.width ? `${s.width}×${s.height}${s.limitation && s.limitation !== 'none' ? ` (limited: ${s.limitation})` : ''}` : '–';
    $('stat-layers').textContent = layersText(s);
    $('stat-loss').textContent = s.lossPct === null ? '–' : `${s.lossPct.toFixed(1)} %`;
    $('stat-rtt').textContent = formatMs(s.rttMs);
    $('stat-codec').textContent = s.codec ?? p.codec?.split(' ')[0]?.split('/')[1] ?? '–';
  } catch {
    /* the connection closed under us */
  }
}

async function updateViewers() {
  if (!state.room || p2p) return;
  try {
    const r = await api('GET', `/rooms/${encodeURIComponent(state.room.id)}`, { token: session.token });
    state.viewers = r.viewers;
    state.audience = r.viewers_by_transport ?? null;
    $('stat-viewers').textContent = viewersText(r.viewers);
    $('stat-audience').textContent = audienceText(state.audience);
  } catch {
    /* keep the last figure */
  }
}

/** Ends the WHIP session and releases every device and the canvas track. */
async function stopAll() {
  stopping = true;
  const p = pub;
  pub = null;
  const b = p2p;
  p2p = null;
  stopLivePanel();
  if (b) {
    b.stop();
    renderPeers(b);
    $('p2p-count').textContent = '0';
  }
  let deleteStatus = null;
  if (p) {
    clearTimeout(p.graceTimer);
    clearTimeout(p.connectTimer);
    if (p.location) deleteStatus = await deleteSession(p.location, p.bearer);
    p.pc.close();
  }
  state.location = null;
  compositor.stop();
  stopScreen();
  for (const k of ['camera', 'mic']) {
    media[k]?.stop();
    media[k] = null;
  }
  compositor.camera = null;
  cameraVideo.srcObject = null;
  closeMeter();
  for (const t of obtained) t.stop();
  compositor.draw();
  refreshDeviceButton();
  setStatus('offline');
  note('stopped', { deleteStatus });
  if (state.user) setTimeout(() => loadRooms().catch(() => {}), 1000);
  return { deleteStatus, tracks: [...obtained].map((t) => ({ kind: t.kind, label: t.label, readyState: t.readyState })) };
}

$('go-live').addEventListener('click', action(goLive));
$('stop').addEventListener(
  'click',
  action(async () => {
    const wasLive = state.status !== 'offline';
    await stopAll();
    showInfo(wasLive ? 'Stream ended. Camera, microphone and screen are released.' : 'Camera, microphone and screen are released.');
  }),
);

// Leaving while live asks first; leaving ends the session (keepalive lets the DELETE
// outlive the page).
window.addEventListener('beforeunload', (e) => {
  if (state.status === 'live' || state.status === 'reconnecting' || state.status === 'connecting') {
    e.preventDefault();
    e.returnValue = '';
  }
});
window.addEventListener('pagehide', () => {
  if (pub?.location) deleteSession(pub.location, pub.bearer, { keepalive: true });
});

// --- start --------------------------------------------------------------------------

window.studio = {
  state,
  stats: null,
  compositor,
  media,
  tracks: () => [...obtained].map((t) => ({ kind: t.kind, label: t.label, readyState: t.readyState, enabled: t.enabled })),
  /** Ids of the tracks the WHIP session is sending now (p2p: the first viewer's). */
  sending: () => {
    const first = p2p ? [...p2p.peers.values()][0] : null;
    const s = pub ? { video: pub.videoSender, audio: pub.audioSender } : { video: first?.video, audio: first?.audio };
    return { video: s.video?.track?.id ?? null, audio: s.audio?.track?.id ?? null };
  },
  /** p2p: each viewer's connection now ({viewer, state, pcState, video, audio: track ids}), and those that ended. */
  peers: () => ({
    live: [...(lastP2p?.peers.values() ?? [])].map((p) => ({ viewer: p.viewer, state: p.state, pcState: p.pc.connectionState, video: p.video.track?.id ?? null, audio: p.audio.track?.id ?? null })),
    gone: (lastP2p?.gone ?? []).map((g) => ({ ...g })),
  }),
  p2pStats: null,
  p2pLimits,
  /** The video sender's encodings (rid, active, maxBitrate, …) as set now. */
  encodings: () => JSON.parse(JSON.stringify(pub?.videoSender?.getParameters().encodings ?? [])),
  stop: stopAll,
};

setStatus('offline');
setLayout('pip');
loadSimulcastSetting();
refreshDevices();

(async () => {
  const verifyToken = new URLSearchParams(location.hash.slice(1)).get('verify');
  if (verifyToken) {
    try {
      await verifyFromLink(verifyToken);
    } catch (e) {
      showAuth('signup');
      showError(e.message);
    }
    return;
  }
  const token = session.token;
  if (!token) {
    showAuth('signin');
    return;
  }
  try {
    await enter(token);
  } catch (e) {
    if (e instanceof ApiError && (e.status === 401 || e.status === 403)) {
      session.token = null;
      showAuth('signin');
      showInfo('Your session expired: sign in again.');
    } else {
      showAuth('signin');
      showError(e.message);
    }
  }
})();
