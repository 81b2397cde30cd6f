// A wall-clock timestamp drawn as black/white blocks, for reading latency off the video
// itself (tests/e2e/bench/latency.mjs).
//
// Code: the 64 bits of a float64 (epoch milliseconds, `performance.timeOrigin +
// performance.now()`, so sub-millisecond precision survives) + a CRC-16 of those 8 bytes
// = 80 bits, one per block of a 10 x 8 grid. At 640x480 a block is 64x60 px: H.264 at any
// bitrate WebRTC picks keeps such flat blocks clearly black or white, and the reader
// samples only each block's centre, away from ringing and deblocking at the edges. A
// frame whose CRC does not match, or with a block too grey to call, is a misread and is
// discarded (never turned into a wrong latency).

export const COLS = 10;
export const ROWS = 8;
const BITS = COLS * ROWS; // 64 data + 16 CRC

/** CRC-16/CCITT-FALSE (poly 0x1021, init 0xffff): catches every 1-3 bit error and any burst ≤ 16 bits. */
export function crc16(bytes) {
  let crc = 0xffff;
  for (const b of bytes) {
    crc ^= b << 8;
    for (let i = 0; i < 8; i++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc;
}

/** The 80 bits (MSB first) coding `ms`. */
export function encodeBits(ms) {
  const bytes = new Uint8Array(10);
  new DataView(bytes.buffer).setFloat64(0, ms);
  const crc = crc16(bytes.subarray(0, 8));
  bytes[8] = crc >> 8;
  bytes[9] = crc & 0xff;
  const bits = new Array(BITS);
  for (let i = 0; i < BITS; i++) bits[i] = (bytes[i >> 3] >> (7 - (i & 7))) & 1;
  return bits;
}

/** The time coded by 80 bits, or null when the CRC does not match. */
export function decodeBits(bits) {
  const bytes = new Uint8Array(10);
  for (let i = 0; i < BITS; i++) if (bits[i]) bytes[i >> 3] |= 1 << (7 - (i & 7));
  if (crc16(bytes.subarray(0, 8)) !== ((bytes[8] << 8) | bytes[9])) return null;
  const ms = new DataView(bytes.buffer).getFloat64(0);
  return Number.isFinite(ms) ? ms : null;
}

/** Fills the whole 2D context (`w` x `h`) with the blocks of `ms`. */
export function drawTimecode(ctx, ms, w, h) {
  const bits = encodeBits(ms);
  const bw = w / COLS;
  const bh = h / ROWS;
  for (let i = 0; i < BITS; i++) {
    ctx.fillStyle = bits[i] ? '#fff' : '#000';
    // Rounded edges so neighbouring blocks neither overlap nor leave a seam.
    const x0 = Math.round((i % COLS) * bw);
    const y0 = Math.round(Math.floor(i / COLS) * bh);
    ctx.fillRect(x0, y0, Math.round(((i % COLS) + 1) * bw) - x0, Math.round((Math.floor(i / COLS) + 1) * bh) - y0);
  }
}

/** Luma below LOW is black, above HIGH white; in between the frame is a misread. */
const LOW = 80;
const HIGH = 176;

/**
 * Reads the code back from RGBA pixels (`ImageData` of the whole frame, any size):
 * averages the middle half (each way) of every block. Returns
 * `{ms}` or `{ms: null, why: 'grey' | 'crc'}`.
 */
export function readTimecode({ data, width, height }) {
  const bw = width / COLS;
  const bh = height / ROWS;
  const bits = new Array(BITS);
  for (let i = 0; i < BITS; i++) {
    const x0 = Math.floor((i % COLS) * bw + bw / 4);
    const x1 = Math.ceil((i % COLS) * bw + (3 * bw) / 4);
    const y0 = Math.floor(Math.floor(i / COLS) * bh + bh / 4);
    const y1 = Math.ceil(Math.floor(i / COLS) * bh + (3 * bh) / 4);
    let sum = 0;
    let n = 0;
    for (let y = y0; y < y1; y++) {
      for (let x = x0; x < x1; x++) {
        const p = (y * width + x) * 4;
        sum += (data[p] * 77 + data[p + 1] * 150 + data[p + 2] * 29) >> 8; // BT.601 luma
        n++;
      }
    }
    const luma = sum / n;
    if (luma > LOW && luma < HIGH) return { ms: null, why: 'grey' };
    bits[i] = luma >= HIGH ? 1 : 0;
  }
  const ms = decodeBits(bits);
  return ms === null ? { ms: null, why: 'crc' } : { ms };
}
