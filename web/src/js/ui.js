// Small DOM helpers shared by the pages. User-provided text (room titles, names) only
// ever goes through textContent, never innerHTML.

/** document.getElementById that throws on a missing element (a page bug, found early). */
export function $(id) {
  const el = document.getElementById(id);
  if (!el) throw new Error(`page bug: no element #${id}`);
  return el;
}

/**
 * Creates an element: el('a', {href: '/', class: 'x', onclick: fn}, 'text', child…).
 * Attributes whose value is null/undefined/false are left out.
 */
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') e.addEventListener(k.slice(2), v);
    else if (k === 'class') e.className = v;
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

/**
 * Shows a message in a live region (role=alert for errors, role=status otherwise).
 * `kind`: 'error' | 'info' | 'ok'. An empty text hides it.
 */
export function say(box, text, kind = 'error') {
  box.textContent = text ?? '';
  box.hidden = !text;
  box.dataset.kind = kind;
  box.setAttribute('role', kind === 'error' ? 'alert' : 'status');
  if (text) console.log(`[${kind}] ${text}`);
}

/** Copies text to the clipboard; falls back to selecting a field's text. */
export async function copyText(text, field) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    if (field) {
      field.focus();
      field.select?.();
    }
    return false;
  }
}

/** Flashes a button's label ("Copied") for a moment. */
export function flash(button, label, ms = 1500) {
  const old = button.dataset.label ?? button.textContent;
  button.dataset.label = old;
  button.textContent = label;
  clearTimeout(button._flashTimer);
  button._flashTimer = setTimeout(() => {
    button.textContent = old;
  }, ms);
}

/** "1.2 Mb/s", "850 kb/s". */
export function formatBitrate(bps) {
  if (bps === null || bps === undefined || !Number.isFinite(bps)) return '–';
  if (bps >= 1e6) return `${(bps / 1e6).toFixed(1)} Mb/s`;
  return `${Math.round(bps / 1e3)} kb/s`;
}

/** "120 ms" or "–". */
export function formatMs(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '–';
  return ms >= 10_000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms)} ms`;
}

/** "3 viewers", "1 viewer". */
export function viewersText(n) {
  if (n === null || n === undefined) return '–';
  return `${n} ${n === 1 ? 'viewer' : 'viewers'}`;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
