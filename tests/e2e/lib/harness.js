// Small helpers shared by the specs: ordered cleanup that never hides the test's own
// failure, a hard deadline around a step, and timing output for later benchmarking.

/** Most time one cleanup step may take. */
const CLEANUP_CAP_MS = 20_000;

/**
 * Runs `body(defer)`; functions passed to `defer` run afterwards in reverse order, even
 * when the body throws. A cleanup error is thrown only if the body succeeded (so a
 * server that also failed to exit cleanly never masks the first failure).
 *
 * With `capMs`, the body fails after that long and the cleanup still runs: set it below
 * the node:test timeout, which abandons a test without running its cleanup (a browser
 * or server left running would then keep the test process alive).
 */
export async function withCleanup(body, { capMs } = {}) {
  const stack = [];
  const defer = (fn) => stack.push(fn);
  let failed = false;
  try {
    const run = body(defer);
    return await (capMs ? deadline(run, capMs, 'test body') : run);
  } catch (e) {
    failed = true;
    throw e;
  } finally {
    const errors = [];
    while (stack.length) {
      const fn = stack.pop();
      try {
        await deadline(Promise.resolve().then(() => fn(failed)), CLEANUP_CAP_MS, 'cleanup step');
      } catch (e) {
        errors.push(e);
      }
    }
    if (!failed && errors.length) throw errors[0];
    for (const e of errors) if (failed) console.error(`cleanup after failure: ${e.message}`);
  }
}

/** Rejects with `what: no result within N s` if `promise` takes longer than `ms`. */
export function deadline(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: no result within ${ms / 1000} s`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Milliseconds between two epoch timestamps, or null when either is missing. */
export const span = (from, to) => (from === undefined || to === undefined || from === null || to === null ? null : Math.round(to - from));

/**
 * Prints timings as one human line and one machine line:
 *   TIMING {"test":"…", "whep_post_to_first_frame_ms": 412, …}
 */
export function reportTimings(test, timings) {
  const human = Object.entries(timings)
    .map(([k, v]) => `${k}=${v ?? '–'}`)
    .join(' ');
  console.log(`[timing] ${test}: ${human}`);
  console.log(`TIMING ${JSON.stringify({ test, ...timings })}`);
}
