#!/usr/bin/env bash
# Browser end-to-end tests of Skylark: real Chromium (the Debian package, driven by npm
# playwright-core) publishing and watching through the skylark binary.
#
#   tests/e2e/run.sh                         # the binary in ${CARGO_TARGET_DIR:-target}/debug/skylark
#   SKYLARK_BIN=/path/to/skylark tests/e2e/run.sh
#   tests/e2e/run.sh specs/smoke.test.js     # some spec files only
#
# Installs Chromium with apt-get if it is missing, runs `npm ci` if node_modules is
# missing, then the specs. The exit code is the tests' result. Logs of every run
# (server output, browser consoles) go to tests/e2e/artifacts/.
set -uo pipefail

# A relative SKYLARK_BIN is relative to where the caller stands.
if [[ -n "${SKYLARK_BIN:-}" && "${SKYLARK_BIN}" != /* ]]; then
  SKYLARK_BIN="$PWD/$SKYLARK_BIN"
fi
export SKYLARK_BIN="${SKYLARK_BIN:-}"
[[ -z "$SKYLARK_BIN" ]] && unset SKYLARK_BIN
cd "$(dirname "$0")" || exit 1

log() { printf '\n== %s\n' "$*"; }

# --- Chromium (Debian package; never a browser download) --------------------------
chromium="${CHROMIUM_PATH:-/usr/bin/chromium}"
if [[ ! -x "$chromium" ]]; then
  log "installing Chromium (apt-get install chromium)"
  sudo=""
  if [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null; then sudo="sudo -n"; fi
  if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null; } ||
    [[ ! -x "$chromium" ]]; then
    if [[ "${CI:-}" == true ]]; then
      echo "run.sh: Chromium could not be installed (apt-get install chromium failed, or no $chromium afterwards): the browser tests cannot run" >&2
      exit 1
    fi
    echo "run.sh: WARNING: Chromium could not be installed: the browser tests are skipped (set CI=true to make this an error)" >&2
    export SKYLARK_E2E_SKIP_BROWSER="Chromium could not be installed"
  fi
fi

# --- playwright-core and the players (pinned in package-lock.json) ----------------
# npm ci again when a pinned package is missing or at another version (a checkout that
# ran npm ci before a package was added).
installed() {
  node -e 'const p = require("./package.json");
    for (const [d, v] of Object.entries(p.devDependencies))
      if (require(`./node_modules/${d}/package.json`).version !== v) process.exit(1);' 2>/dev/null
}
if ! installed; then
  log "npm ci"
  npm ci --no-audit --no-fund || { echo "run.sh: npm ci failed" >&2; exit 1; }
fi

# --- the binary under test ----------------------------------------------------------
root="$(cd ../.. && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
[[ "$target" != /* ]] && target="$root/$target"
bin="${SKYLARK_BIN:-$target/debug/skylark}"
if [[ ! -x "$bin" ]]; then
  echo "run.sh: no skylark binary at $bin: build it (cargo build -p skylark) or set SKYLARK_BIN" >&2
  exit 1
fi
log "browser end-to-end tests against $bin"

(($#)) || set -- specs/
mkdir -p artifacts
tap=artifacts/last-run.tap
node --test --test-concurrency=1 "$@" 2>&1 | tee "$tap"
status=${PIPESTATUS[0]}
# The failures again at the end, where a truncated CI log still shows them: each failing
# test's block (error, values, stack), not the `todo` ones.
if ((status != 0)); then
  log "failed browser tests"
  awk '/^not ok / && !/# TODO/ {show=1} /^(ok|not ok) / && (!/^not ok / || /# TODO/) {show=0} show' "$tap" | head -200
fi
exit "$status"
