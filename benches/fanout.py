#!/usr/bin/env python3
"""Fan-out, join-storm and memory benchmarks of a release `skylark` (docs/benchmarks.md).

Each run starts a fresh all-in-one `skylark` pinned to one core (`taskset -c 0`),
creates a room, runs `skylark loadtest` pinned to the other core (`taskset -c 1`), and
samples during the steady part of the run (all viewers joined):

- the SFU's /metrics counters on its internal listener (RTP packets and datagrams sent)
  -> forwarded pps,
- CPU time of both processes from /proc/PID/stat -> which side saturates,
- VmRSS of the server from /proc/PID/status.

It prints one JSON object per run (stdout) with the loadtest's report folded in.
Figures only: nothing here passes or fails.

    cargo build --release --target-dir /work/target-bench -p skylark
    benches/fanout.py fanout --kbps 600 --viewers 50,100,200 --duration 20
    benches/fanout.py storm --viewers 1000 --ramp 100 --duration 20
    benches/fanout.py memory --viewers 0,100,200,400 --duration 15
    # N SFU workers (SKYLARK_SFU_WORKERS) on the cores of --server-cpus, and the raw UDP
    # ceiling of one core measured in the same run (ratio = forwarded pps per busy core
    # over it), to one socket and to as many sockets as viewers (`udp_ceiling fan N`):
    cargo bench --target-dir /work/target-bench -p skylark-loadgen --bench udp_ceiling --no-run
    benches/fanout.py fanout --workers 2 --server-cpus 0,1 --gen-cpus 0,1 \
        --ceiling /work/target-bench/release/deps/udp_ceiling-HASH --viewers 200,400
    # Two binaries side by side on one core, each with its own generator and N viewers:
    # the ratio of their CPU per packet (`b_over_a_us_per_packet`) moved under ±4 % (one
    # binary against itself: 1 %) on a VM whose single runs move ±15 %. Swap the order
    # between runs.
    benches/fanout.py pair --pair /work/bin/skylark-a,/work/bin/skylark-b --viewers 300 \
        --ramp 50 --duration 25
"""

import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

BIN = os.environ.get("SKYLARK_BIN", "/work/target-bench/release/skylark")
# The machine is shared (builds, browsers, other tests) and autogroup scheduling makes
# `nice` moot across sessions: the measured processes run SCHED_FIFO so a packet wakes
# them at once, as on an idle core. They take only the CPU they use (the kernel's RT
# throttling leaves others 5 % even if one spins). BENCH_SCHED="" turns this off.
NICE = os.environ.get("BENCH_SCHED", "chrt -f 10").split()
TICK = os.sysconf("SC_CLK_TCK")


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, token=None):
    req = urllib.request.Request(url, method=method)
    if body is not None:
        req.data = json.dumps(body).encode()
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"null")


def cpu_secs(pid):
    """utime + stime of a process, seconds (all threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_times():
    """Per-CPU (busy, softirq, total) jiffies from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *v = line.split()
                v = [int(x) for x in v[:8]]
                idle = v[3] + v[4]
                out[name] = (sum(v) - idle, v[6], sum(v))
    return out


def metrics(internal):
    text = urllib.request.urlopen(f"http://{internal}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, value = line.rsplit(" ", 1)
        try:
            out[name] = float(value)
        except ValueError:
            pass
    return out


class Server:
    def __init__(self, cpus, workers=None, extra_env=(), binary=None):
        self.dir = tempfile.mkdtemp(prefix="skylark-bench-")
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        # /metrics is served on the internal listener only.
        self.internal = f"127.0.0.1:{free_port()}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SKYLARK_")}
        env.update(
            SKYLARK_HTTP_ADDR=f"127.0.0.1:{port}",
            SKYLARK_INTERNAL_ADDR=self.internal,
            SKYLARK_PUBLIC_URL=self.base,
            SKYLARK_SIGNUP="open",
            SKYLARK_DATA_DIR=f"{self.dir}/data",
            SKYLARK_RTC_UDP_ADDR=f"127.0.0.1:{free_port(socket.SOCK_DGRAM)}",
            SKYLARK_RTC_TCP_ADDR="127.0.0.1:0",
            SKYLARK_RTC_PUBLIC_IP="127.0.0.1",
            SKYLARK_RTMP_ADDR=f"127.0.0.1:{free_port()}",
            SKYLARK_AUTH_RATE_BURST="1000",
            RUST_LOG="warn",
        )
        if workers:
            env["SKYLARK_SFU_WORKERS"] = str(workers)
        env.update(kv.split("=", 1) for kv in extra_env)
        log = open(f"{self.dir}/server.log", "w")
        binary = binary or BIN
        cmd = NICE + (["taskset", "-c", cpus, binary] if cpus else [binary])
        self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log)
        for _ in range(300):
            try:
                urllib.request.urlopen(f"{self.base}/readyz", timeout=1)
                return
            except Exception:
                time.sleep(0.1)
        raise RuntimeError(f"skylark not ready; log in {self.dir}/server.log")

    def room(self):
        email = f"bench{random.randrange(1 << 40)}@example.com"
        tok = http("POST", f"{self.base}/api/v1/auth/signup",
                   {"email": email, "password": "password123", "display_name": "B"})["access_token"]
        r = http("POST", f"{self.base}/api/v1/rooms",
                 {"title": "bench", "visibility": "public", "mode": "sfu"}, tok)
        return r["room"]["id"], r["stream_key"]

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def start_generator(sk, viewers, kbps, duration, ramp, gen_cpus):
    """`skylark loadtest` against a fresh room of `sk`, pinned to `gen_cpus`."""
    room, key = sk.room()
    cmd = NICE + (["taskset", "-c", gen_cpus] if gen_cpus else [])
    cmd += [BIN, "loadtest", "--url", sk.base, "--room", room, "--stream-key", key,
            "--viewers", str(viewers), "--ramp", f"{ramp}/s", "--duration", f"{duration}s",
            "--video-kbps", str(kbps), "--json", "--connect-timeout", "20s",
            "--http-timeout", "20s"]
    env = dict(os.environ, RUST_LOG="off")
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)


def snapshot(sk, gen):
    return (time.monotonic(), metrics(sk.internal), cpu_secs(sk.proc.pid), cpu_secs(gen.pid),
            rss_kib(sk.proc.pid), cpu_times())


def figures(viewers, kbps, gen, sample):
    """The generator's report and the steady window's figures of one server."""
    out, err = gen.communicate()
    try:
        rep = json.loads(out)
    except json.JSONDecodeError:
        return {"viewers": viewers, "kbps": kbps, "error": err[-2000:]}
    res = {
        "viewers_requested": viewers,
        "kbps": kbps,
        "connected": rep["viewers"]["connected"],
        "playing": rep["viewers"]["playing"],
        "failed": rep["viewers"]["failed"],
        "failures": rep["failures"],
        "loss_pct": round(rep["loss_pct"], 3),
        "join_ms": rep["join_ms"],
        "latency_ms": rep["latency_ms"],
        "received_kbps": rep["received_kbps"],
        "frames_bad_hash": rep["frames_bad_hash"],
    }
    if "a" not in sample or "b" not in sample:
        res["note"] = "run ended before the steady window"
        return res
    (ta, ma, sa, ga, ra, ca), (tb, mb, sb, gb, rb, cb) = sample["a"], sample["b"]
    dt = tb - ta
    d = lambda k: (mb.get(k, 0) - ma.get(k, 0)) / dt
    res.update(
        window_s=round(dt, 1),
        sfu_rtp_pps=round(d("skylark_sfu_packets_out_total")),
        sfu_datagrams_out_pps=round(d("skylark_sfu_datagrams_out_total")),
        sfu_datagrams_in_pps=round(d("skylark_sfu_datagrams_in_total")),
        sfu_nacks_from_subscribers_ps=round(d("skylark_sfu_nacks_from_subscribers_total"), 1),
        sfu_send_drops_ps=round(d("skylark_sfu_send_drops_total"), 1),
        sfu_egress_mbit_s=round(d("skylark_sfu_bytes_out_total") * 8 / 1e6, 1),
        server_cpu_pct=round((sb - sa) / dt * 100, 1),
        generator_cpu_pct=round((gb - ga) / dt * 100, 1),
        server_rss_kib=rb,
    )
    pps, cpu = res["sfu_rtp_pps"], (sb - sa) / dt
    if pps and cpu:
        # What one fully busy core forwards, and what one packet costs it.
        res["sfu_rtp_pps_per_busy_core"] = round(pps / cpu)
        res["server_cpu_us_per_packet"] = round(cpu / pps * 1e6, 2)
    # Whole-core view: softirq (loopback delivery) isn't charged to a process,
    # and other programs on the machine show up here too.
    for c in sorted(cb):
        busy = cb[c][0] - ca[c][0]
        total = max(1, cb[c][2] - ca[c][2])
        res[f"{c}_busy_pct"] = round(busy * 100 / total, 1)
        res[f"{c}_softirq_pct"] = round((cb[c][1] - ca[c][1]) * 100 / total, 1)
    return res


def steady_window(viewers, ramp, settle, duration):
    """From `settle` s after the ramp to 2 s before the end, in s from the start."""
    start_at = (viewers / ramp if ramp > 0 else 0) + settle
    return start_at, max(start_at + 3, duration - 2)


def sample_steady_window(runs, start_at, end_at, on_start=None):
    """Snapshots of each (server, generator) of `runs` at the window's start ("a") and
    end ("b"), taken until every generator has exited; `on_start()` once at the start."""
    t_start = time.monotonic()
    samples = [{} for _ in runs]
    while any(gen.poll() is None for _, gen in runs):
        t = time.monotonic() - t_start
        if t >= start_at and "a" not in samples[0]:
            for (sk, gen), sample in zip(runs, samples):
                sample["a"] = snapshot(sk, gen)
            if on_start:
                on_start()
        if t >= end_at and "a" in samples[0] and "b" not in samples[0]:
            for (sk, gen), sample in zip(runs, samples):
                sample["b"] = snapshot(sk, gen)
        time.sleep(0.2)
    return samples


def run(viewers, kbps, duration, ramp, server_cpus, gen_cpus, settle, profile=None, workers=None,
        extra_env=()):
    sk = Server(server_cpus, workers, extra_env)
    try:
        gen = start_generator(sk, viewers, kbps, duration, ramp, gen_cpus)
        start_at, end_at = steady_window(viewers, ramp, settle, duration)
        perf = []

        def start_profile():
            # BENCH_PERF="--call-graph dwarf -F 499" for callers (a bigger file).
            extra = os.environ.get("BENCH_PERF", "-F 1999").split()
            perf.append(subprocess.Popen(["perf", "record", *extra, "-o", profile,
                                          "-p", str(sk.proc.pid), "--", "sleep",
                                          str(max(1, int(end_at - start_at)))],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

        [sample] = sample_steady_window([(sk, gen)], start_at, end_at,
                                        start_profile if profile else None)
        res = figures(viewers, kbps, gen, sample)
        for p in perf:
            p.wait()
        return res
    finally:
        sk.stop()


def run_pair(binaries, viewers, kbps, duration, ramp, server_cpus, gen_cpus, settle,
             workers=None, extra_env=()):
    """Two servers, one per binary, on the same core at the same time, each with its own
    generator and `viewers` viewers: whatever else the machine does in the window falls
    on both, so the ratio of their CPU per packet holds still where either alone does not."""
    servers = [Server(server_cpus, workers or 1, extra_env, b) for b in binaries]
    try:
        gens = [start_generator(sk, viewers, kbps, duration, ramp, gen_cpus) for sk in servers]
        start_at, end_at = steady_window(viewers, ramp, settle, duration)
        samples = sample_steady_window(list(zip(servers, gens)), start_at, end_at)
        res = [figures(viewers, kbps, g, s) for g, s in zip(gens, samples)]
        for b, r in zip(binaries, res):
            r["binary"] = b
        out = {"mode": "pair", "a": res[0], "b": res[1]}
        us = [r.get("server_cpu_us_per_packet") for r in res]
        if all(us):
            out["b_over_a_us_per_packet"] = round(us[1] / us[0], 3)
        return out
    finally:
        for sk in servers:
            sk.stop()


def raw_ceiling(binary, cpu, sockets=None):
    """Datagrams per second one core sends and drains on loopback: to one socket
    (`udp_ceiling loop`), or spread over `sockets` receiving sockets (`fan N`), as the
    SFU's are over its viewers."""
    mode = ["fan", str(sockets)] if sockets else ["loop"]
    out = subprocess.run(NICE + ["taskset", "-c", cpu, binary] + mode + ["3"],
                         capture_output=True, text=True, check=True).stdout
    return round(json.loads(out.strip().splitlines()[-1])["pps"])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["fanout", "storm", "memory", "pair"])
    ap.add_argument("--viewers", default="50,100,200")
    ap.add_argument("--kbps", type=int, default=600)
    ap.add_argument("--duration", type=int, default=20)
    ap.add_argument("--ramp", type=float, default=100)
    ap.add_argument("--settle", type=float, default=3)
    ap.add_argument("--server-cpus", default="0")
    ap.add_argument("--gen-cpus", default="1")
    ap.add_argument("--profile", help="perf.data path: profile the server in the steady window")
    ap.add_argument("--workers", type=int, help="SKYLARK_SFU_WORKERS of the server")
    ap.add_argument("--env", action="append", default=[], metavar="K=V",
                    help="more server environment, e.g. SKYLARK_SFU_OVERLOAD_AT=0.8")
    ap.add_argument("--ceiling", help="udp_ceiling bench binary: measure one core's raw UDP "
                    "ceiling first and report the forwarded pps per busy core against it")
    ap.add_argument("--stop-on-limit", action="store_true",
                    help="fanout: stop once loss > 1 %% or latency p99 > 100 ms")
    ap.add_argument("--pair", metavar="BIN_A,BIN_B",
                    help="pair: the two skylark binaries, run side by side on --server-cpus")
    a = ap.parse_args()
    if a.mode == "pair":
        binaries = (a.pair or f"{BIN},{BIN}").split(",")
        if len(binaries) != 2:
            ap.error("--pair takes exactly two binaries: --pair BIN_A,BIN_B")
        if a.profile or a.ceiling:
            ap.error("pair reports a ratio only: run --profile or --ceiling in fanout mode")
        for n in [int(v) for v in a.viewers.split(",")]:
            print(json.dumps(run_pair(binaries, n, a.kbps, a.duration, a.ramp, a.server_cpus,
                                      a.gen_cpus, a.settle, a.workers, a.env)), flush=True)
        return
    ceiling = raw_ceiling(a.ceiling, a.server_cpus.split(",")[0]) if a.ceiling else None
    for n in [int(v) for v in a.viewers.split(",")]:
        res = run(n, a.kbps, a.duration, a.ramp, a.server_cpus, a.gen_cpus, a.settle, a.profile,
                  a.workers, a.env)
        res["mode"] = a.mode
        res["workers"] = a.workers or "default"
        if ceiling:
            res["raw_ceiling_pps"] = ceiling
            # The same, to as many sockets as viewers (`udp_ceiling fan`).
            fan = raw_ceiling(a.ceiling, a.server_cpus.split(",")[0], max(n, 1))
            res["raw_fan_ceiling_pps"] = fan
            if res.get("sfu_rtp_pps_per_busy_core"):
                res["pct_of_ceiling"] = round(res["sfu_rtp_pps_per_busy_core"] * 100 / ceiling, 1)
                res["pct_of_fan_ceiling"] = round(res["sfu_rtp_pps_per_busy_core"] * 100 / fan, 1)
        print(json.dumps(res), flush=True)
        lat = (res.get("latency_ms") or {}).get("p99", 0)
        if a.stop_on_limit and (res.get("loss_pct", 100) > 1 or lat > 100 or "error" in res):
            break


if __name__ == "__main__":
    sys.exit(main())
