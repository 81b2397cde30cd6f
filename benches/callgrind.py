#!/usr/bin/env python3
"""Instructions per forwarded packet of the SFU core, counted by callgrind.

Wall time on a shared 2-core machine is noise; an instruction count is not. The
criterion bench binary `forward` has a fixed workload (SKYLARK_FORWARD_COUNT): a
publisher's 600 kbit/s stream forwarded through one core to N subscribers, real str0m
peers on both ends, simulated time (the subscribers' side of forwarded media is not
run). Each subscriber count runs twice under callgrind, for F and 2F frames: the
difference takes out the setup (handshakes). What is left still holds the simulated
publisher's own sending, once per frame; the second difference against the smallest
subscriber count takes that out too, leaving the core's cost of one forwarded packet
("marginal"). Figures only: nothing here passes or fails.

The setup is not quite deterministic (aws-lc seeds its generator from CPU jitter, and
key generation varies with the keys), which left ±100–200 instructions of noise in a
packet's figure at 50 subscribers. `--core-only` counts only inside the bench's
`Net::forward` (the core taking a frame's datagrams and sending what it forwards;
`--toggle-collect`), which repeats to the instruction: setup, the simulated
publisher and the keep-alive exchanges are left out.

    apt-get install valgrind
    cargo bench -p skylark-sfu --bench forward --no-run     # prints the binary's path
    benches/callgrind.py --bin target/release/deps/forward-HASH --subs 1,10,50 --frames 150
    benches/callgrind.py --bin … --subs 1,50 --frames 150 --core-only --audio   # with Opus
"""

import argparse
import glob
import json
import os
import re
import subprocess
import sys
import tempfile


def run(binary, subs, frames, core_only=False, audio=False):
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "cg.out")
        spec = f"{subs},{frames}" + (",audio" if audio else "")
        env = dict(os.environ, SKYLARK_FORWARD_COUNT=spec)
        toggle = ["--toggle-collect=forward::Net::forward"] if core_only else []
        p = subprocess.run(
            ["valgrind", "--tool=callgrind", *toggle, f"--callgrind-out-file={out}", binary],
            env=env, capture_output=True, text=True, check=True)
        report = json.loads(p.stdout.strip().splitlines()[-1])
        with open(out) as f:
            total = next(int(m.group(1)) for line in f
                         if (m := re.match(r"(?:summary|totals):\s+(\d+)", line)))
        report["instructions"] = total
        return report


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", help="the `forward` bench binary (default: newest in target)")
    ap.add_argument("--subs", default="1,10,50")
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--core-only", action="store_true",
                    help="count only inside Net::forward (repeatable to the instruction)")
    ap.add_argument("--audio", action="store_true",
                    help="add the load generator's 50 packets/s Opus track, each packet its own batch")
    a = ap.parse_args()
    binary = a.bin
    if not binary:
        target = os.environ.get("CARGO_TARGET_DIR", "target")
        found = [b for b in glob.glob(f"{target}/release/deps/forward-*") if os.access(b, os.X_OK)
                 and not b.endswith(".d")]
        if not found:
            sys.exit("no bench binary: cargo bench -p skylark-sfu --bench forward --no-run")
        binary = max(found, key=os.path.getmtime)
    base = None
    for subs in [int(s) for s in a.subs.split(",")]:
        short = run(binary, subs, a.frames, a.core_only, a.audio)
        long = run(binary, subs, 2 * a.frames, a.core_only, a.audio)
        packets = long["rtp_out"] - short["rtp_out"]
        ins = long["instructions"] - short["instructions"]
        row = {
            "subscribers": subs,
            "frames": [a.frames, 2 * a.frames],
            "packets_forwarded": packets,
            "instructions_per_packet": round(ins / max(packets, 1)),
        }
        if base is None:
            base = (packets, ins)
        elif packets > base[0]:
            row["marginal_instructions_per_packet"] = round((ins - base[1]) / (packets - base[0]))
        row["core_only"] = a.core_only
        row["audio"] = a.audio
        row["binary"] = os.path.basename(binary)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
