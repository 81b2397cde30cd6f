#!/usr/bin/env python3
"""Checks of Skylark's deployment artifacts, offline (no cluster, no container engine).

  - Dockerfile: its `cargo build` is the one CI checks; one image, non-root, `skylark`.
  - Helm chart (deploy/helm/skylark): `helm lint --strict` through Helm's Go SDK
    (PyPI helm-python-sdk), then a render for each value set below; every rendered
    object is validated against the Kubernetes OpenAPI schemas (PyPI
    kubernetes-validate, strict: unknown fields fail). CRDs (ServiceMonitor) have no
    schema there: they are parsed and checked by hand.
  - The wiring: container args are the binary's targets; environment names are exactly
    the ones the binary reads (`skylark --help`, else the README's table); probes,
    ports, Services, Secrets, the Ingress routes, the SFU's host networking and drain,
    the migration hook; the internal port (/metrics) scraped and never public.
  - values.yaml: every value is used by a template.
  - The Grafana dashboard: every metric it plots exists in the source.
  - Live (tests/helm/live.py, when the binary is built and PostgreSQL and Redis run on
    127.0.0.1): every workload run as a process with the chart's environment, end to end.

Run through tests/helm/run.sh (it makes the venv). Prints one line per check and ends
with `N passed, N failed`; exits 1 on any failure.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import subprocess
import sys
import traceback
from pathlib import Path

import yaml

import helm_python as helm
import kubernetes_validate

sys.path.insert(0, str(Path(__file__).resolve().parent))
import live  # noqa: E402  (tests/helm/live.py)

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "skylark"
DOCKERFILE = ROOT / "Dockerfile"
README = ROOT / "README.md"
CI_SCRIPT = ROOT / "scripts" / "test"

# The image's build command, as CI builds the binary (plus --release).
EXPECTED_BUILD = "cargo build --release --locked -p skylark"

# Kubernetes versions to validate against: the newest kubernetes-validate knows, and an
# older one still common in managed clusters (the chart says kubeVersion >= 1.25).
KUBE_VERSIONS = [kubernetes_validate.latest_version(), "1.30.0"]

RELEASE, NAMESPACE = "sky", "live"

# Variables the chart sets that the binary does not read: downward-API values that
# other variables use through Kubernetes' $(NAME) expansion. Each must be referenced.
HELPER_ENV = {"POD_IP", "HOST_IP"}

# RUST_LOG is read by tracing's EnvFilter, not by a clap flag, so `--help` does not list
# it; the README's configuration table does.
ENV_NOT_IN_HELP = {"RUST_LOG"}
# The recordings store's S3 client (object_store) reads the standard AWS variables.
ENV_NOT_IN_HELP |= {"AWS_REGION", "AWS_ENDPOINT_URL", "AWS_ALLOW_HTTP", "AWS_ACCESS_KEY_ID",
                    "AWS_SECRET_ACCESS_KEY"}

# values.yaml leaves deliberately not referenced as `.Values.<path>` (path -> why).
# Empty today: every value is used.
UNUSED_VALUE_EXCEPTIONS: dict[str, str] = {}

STANDARD_LABELS = [
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
]

TARGETS = {"api", "signaling", "sfu", "packager", "migrate", "turn"}

# Secret keys a workload reads only when present (secretKeyRef optional: true).
# SKYLARK_MAIL_URL: an existingSecret made before mail was wired may lack it (then `log`).
OPTIONAL_SECRET_KEYS = {"SKYLARK_INTERNAL_SECRET_ACCEPT", "SKYLARK_MAIL_URL"}

# Variables each target must get from the chart (whatever the value set).
REQUIRED_ENV = {
    "api": {
        "SKYLARK_HTTP_ADDR", "SKYLARK_GRPC_ADDR", "SKYLARK_PUBLIC_URL", "DATABASE_URL",
        "SKYLARK_JWT_SECRET", "REDIS_URL", "SKYLARK_REDIS_PREFIX", "LOG_FORMAT", "RUST_LOG",
        "SKYLARK_TRUSTED_PROXIES",
        "SKYLARK_INTERNAL_ADDR", "SKYLARK_INTERNAL_SECRET", "SKYLARK_RECORDINGS_URL",
    },
    "signaling": {
        "SKYLARK_TRUSTED_PROXIES", "SKYLARK_HTTP_ADDR", "SKYLARK_PUBLIC_URL", "SKYLARK_API_GRPC_URL", "REDIS_URL",
        "SKYLARK_REDIS_PREFIX", "LOG_FORMAT", "RUST_LOG", "SKYLARK_INTERNAL_ADDR",
        "SKYLARK_PLAYBACK_SECRET", "SKYLARK_INTERNAL_SECRET",
        "SKYLARK_TURN_URLS", "SKYLARK_TURN_TTL_S", "SKYLARK_TURN_SECRET",
    },
    "sfu": {
        "SKYLARK_HTTP_ADDR", "SKYLARK_GRPC_ADDR", "SKYLARK_GRPC_ADVERTISE_URL",
        "SKYLARK_RTC_UDP_ADDR", "SKYLARK_RTC_TCP_ADDR", "SKYLARK_RTC_PUBLIC_IP", "SKYLARK_NODE_ID", "REDIS_URL",
        "SKYLARK_REDIS_PREFIX", "LOG_FORMAT", "RUST_LOG", "SKYLARK_INTERNAL_ADDR",
        "SKYLARK_API_GRPC_URL", "SKYLARK_INTERNAL_SECRET",
    },
    "packager": {
        "SKYLARK_HTTP_ADDR", "SKYLARK_HTTP_ADVERTISE", "SKYLARK_HLS_SEGMENT_MS",
        "SKYLARK_HLS_PART_MS", "SKYLARK_DVR_WINDOW_S", "REDIS_URL", "SKYLARK_REDIS_PREFIX", "LOG_FORMAT", "RUST_LOG",
        "SKYLARK_INTERNAL_ADDR", "SKYLARK_API_GRPC_URL", "SKYLARK_PLAYBACK_SECRET",
        "SKYLARK_INTERNAL_SECRET", "SKYLARK_RECORDINGS_URL",
    },
    "migrate": {"DATABASE_URL", "LOG_FORMAT", "RUST_LOG"},
    "turn": {
        "SKYLARK_HTTP_ADDR", "SKYLARK_INTERNAL_ADDR", "SKYLARK_TURN_ADDR", "SKYLARK_TURN_RELAY_IP",
        "SKYLARK_TURN_SECRET", "SKYLARK_TURN_REALM", "SKYLARK_TURN_ALLOW_PEERS", "SKYLARK_TURN_UNSCOPED",
        "SKYLARK_TURN_MAX_ALLOCATIONS", "SKYLARK_TURN_USER_ALLOCATIONS", "SKYLARK_TURN_BYTES_PER_S",
        "REDIS_URL", "SKYLARK_REDIS_PREFIX", "LOG_FORMAT", "RUST_LOG",
    },
}
# ...and must not get: secrets only where they are needed.
FORBIDDEN_ENV = {
    "signaling": {"DATABASE_URL", "SKYLARK_JWT_SECRET"},
    "sfu": {"DATABASE_URL", "SKYLARK_JWT_SECRET", "SKYLARK_PLAYBACK_SECRET"},
    "packager": {"DATABASE_URL", "SKYLARK_JWT_SECRET"},
    "migrate": {"SKYLARK_JWT_SECRET", "SKYLARK_PLAYBACK_SECRET", "SKYLARK_INTERNAL_SECRET", "REDIS_URL"},
    # The TURN server makes no internal calls and reads no database.
    "turn": {"DATABASE_URL", "SKYLARK_JWT_SECRET", "SKYLARK_PLAYBACK_SECRET", "SKYLARK_INTERNAL_SECRET"},
}

# Public routes: (a request path, the component that must serve it).
ROUTES = [
    ("/api/v1/rooms/room_abc/playback", "signaling"),
    ("/api/v1/rooms/room_abc", "api"),
    ("/api/v1/auth/login", "api"),
    ("/whip/room_abc", "signaling"),
    ("/whep/room_abc", "signaling"),
    ("/ws", "signaling"),
    ("/hls/room_abc/index.m3u8", "packager"),
    ("/flv/room_abc.flv", "packager"),
    ("/recordings/rec_abc/index.m3u8", "packager"),
    ("/", "signaling"),
    ("/studio", "signaling"),
    ("/watch/room_abc", "signaling"),
    ("/assets/0123/player.js", "signaling"),
]

# Metrics the dashboard must plot (the services' main ones).
DASHBOARD_MUST_PLOT = {
    "skylark_sfu_publishers", "skylark_sfu_subscribers", "skylark_sfu_ingress_bitrate_bps",
    "skylark_sfu_egress_bitrate_bps", "skylark_sfu_publisher_loss_ratio",
    "skylark_sfu_nacks_from_subscribers_total", "skylark_sfu_plis_from_subscribers_total",
    "skylark_http_requests_total", "skylark_whep_sessions_total", "skylark_hls_requests_total",
    "skylark_hls_bytes_served_total", "skylark_packager_rooms", "skylark_grpc_unauthenticated_total",
}

# --- value sets ----------------------------------------------------------------------

INGRESS_TLS = {
    "publicUrl": "https://live.example.com",
    "ingress": {"enabled": True, "host": "live.example.com",
                "tls": {"enabled": True, "secretName": "live-example-com-tls"}},
    "rtmp": {"enabled": True, "publicUrl": "rtmp://rtmp.example.com:1935/live"},
}
AUTOSCALING = {
    "api": {"autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 6}},
    "signaling": {"autoscaling": {"enabled": True, "maxReplicas": 20}},
    "packager": {"autoscaling": {"enabled": True, "maxReplicas": 8},
                 "podDisruptionBudget": {"enabled": False}},
    "otlpEndpoint": "http://otel-collector.observability:4317",
}
EXISTING_SECRET = {"existingSecret": "skylark-secrets"}
MONITORING = {
    "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
    "dashboard": {"enabled": True, "annotations": {"grafana_folder": "Skylark"}},
}
SFU_PUBLIC_IP = {
    "sfu": {"hostNetwork": True, "publicIp": "203.0.113.10",
            "nodeSelector": {"skylark.io/media": "true"},
            "tolerations": [{"key": "media", "operator": "Exists", "effect": "NoSchedule"}]},
}
SFU_NO_HOST_NETWORK = {"sfu": {"hostNetwork": False}}
SFU_NO_ICE_TCP = {"sfu": {"tcpPort": 0}}
NETWORK_POLICY_OFF = {"networkPolicy": {"enabled": False}}
NETWORK_POLICY_NARROW = {
    "networkPolicy": {
        "httpFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}],
        "metricsFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "observability"}},
                         "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}],
        "nodeCidrs": ["10.0.0.0/16"],
    },
}


def deep_merge(*dicts):
    out: dict = {}
    for d in dicts:
        for k, v in d.items():
            if isinstance(v, dict) and isinstance(out.get(k), dict):
                out[k] = deep_merge(out[k], v)
            else:
                out[k] = v
    return out


VALUE_SETS = {
    "default": {},
    "ingress-tls-rtmp": INGRESS_TLS,
    "autoscaling-otlp": AUTOSCALING,
    "existing-secret": EXISTING_SECRET,
    "servicemonitor-dashboard": MONITORING,
    "sfu-hostnetwork-public-ip": SFU_PUBLIC_IP,
    "sfu-no-hostnetwork": SFU_NO_HOST_NETWORK,
    "sfu-no-ice-tcp": SFU_NO_ICE_TCP,
    "network-policy-off": NETWORK_POLICY_OFF,
    "network-policy-narrow": NETWORK_POLICY_NARROW,
    "internal-secret-set": {"internalSecret": "z" * 40},
    "signup-smtp": {"signup": {"mode": "verify"},
                    "mail": {"url": "smtp://skylark:pw@mail.example.com:587", "from": "Live <live@example.com>"}},
    "internal-secret-rotation": {"internalSecret": "z" * 40, "internalSecretAccept": "w" * 40},
    "webhooks-admission": {"webhooks": {"urls": ["https://ops.example.com/skylark", "http://audit:8080/hooks"],
                                        "secret": "whsec_" + "s" * 32, "allowPrivate": True,
                                        "admission": {"url": "http://admission:8080/publish",
                                                      "timeoutMs": 1500, "default": "allow"}}},
    "recordings-volume": {"recordings": {"existingClaim": "skylark-recordings"}},
    "turn-coturn": {"turn": {"urls": ["turn:turn.example.com:3478?transport=udp",
                                      "turn:turn.example.com:3478?transport=tcp"],
                             "secret": "t" * 32, "ttlSeconds": 600}},
    "turn-embedded": {"turn": {"secret": "t" * 32, "server": {
        "enabled": True, "host": "turn.example.com", "allowPeers": ["10.20.0.0/16"],
        "userAllocations": 8, "nodeSelector": {"skylark.io/turn": "true"}}}},
    "turn-embedded-tls": {"turn": {"secret": "t" * 32, "server": {
        "enabled": True, "host": "turn.example.com", "tlsSecret": "turn-tls", "tlsPort": 5350,
        "publicIp": "203.0.113.20", "publicIp6": "2001:db8::20", "bytesPerSecond": 2500000}}},
    "recordings-s3": {"recordings": {"url": "s3://skylark-rec/live", "s3": {
        "region": "eu-west-1", "endpoint": "http://minio.storage:9000", "allowHttp": True,
        "existingSecret": "skylark-s3", "accessKeyIdKey": "access-key",
        "secretAccessKeyKey": "secret-key"}}},
    "everything": deep_merge(INGRESS_TLS, AUTOSCALING, EXISTING_SECRET, MONITORING,
                             SFU_PUBLIC_IP, NETWORK_POLICY_NARROW,
                             {"jwtSecret": "x" * 40, "playbackSecret": "y" * 40,
                              "internalSecret": "z" * 40}),
}

# Values the schema must refuse: (name, values, a word the error must contain).
BAD_VALUE_SETS = [
    ("unknown key", {"sfu": {"udpPrt": 7882}}, "udpPrt"),
    ("short jwtSecret", {"jwtSecret": "too-short"}, "jwtSecret"),
    ("short playbackSecret", {"playbackSecret": "too-short"}, "playbackSecret"),
    ("short internalSecret", {"internalSecret": "too-short"}, "internalSecret"),
    ("an internalSecret with spaces", {"internalSecret": "with spaces " * 4}, "internalSecret"),
    ("short internalSecretAccept", {"internalSecretAccept": "too-short"}, "internalSecretAccept"),
    ("a networkPolicy peer with an unknown key", {"networkPolicy": {"httpFrom": [{"podSelectr": {}}]}}, "podSelectr"),
    ("an unknown signup mode", {"signup": {"mode": "closed"}}, "mode"),
    ("a mail URL that is not SMTP", {"mail": {"url": "http://mail.example.com"}}, "url"),
    ("a webhook URL that is not http(s)", {"webhooks": {"urls": ["ftp://x"]}}, "urls"),
    ("an unknown admission default", {"webhooks": {"admission": {"default": "maybe"}}}, "default"),
    ("recordings on an unknown object store", {"recordings": {"url": "gs://bucket/rec"}}, "url"),
    ("recordings in an S3 bucket with no name", {"recordings": {"url": "s3:///rec"}}, "url"),
    ("an S3 endpoint that is not http(s)", {"recordings": {"s3": {"endpoint": "minio:9000"}}}, "endpoint"),
    ("port out of range", {"sfu": {"udpPort": 70000}}, "udpPort"),
    ("ICE-TCP port out of range", {"sfu": {"tcpPort": 70000}}, "tcpPort"),
    ("a TURN URL that is not turn:/turns:", {"turn": {"urls": ["stun:x:3478"], "secret": "t" * 32}}, "urls"),
    ("the internal port on the HTTP port", {"internalPort": 8080}, "internalPort"),
    ("a TURN port out of range", {"turn": {"server": {"port": 70000}}}, "port"),
    ("a TURN allow-list entry that is not a CIDR", {"turn": {"server": {"allowPeers": ["not a cidr"]}}}, "allowPeers"),
    ("an unscoped TURN policy that is neither sfu nor public", {"turn": {"server": {"unscoped": "open"}}}, "unscoped"),
    ("the SFU's internal port on its HTTP port", {"sfu": {"internalPort": 7880}}, "sfu.internalPort"),
]

# Workloads with an internal listener (SKYLARK_INTERNAL_ADDR): every target but migrate.
INTERNAL = {"api", "signaling", "sfu", "packager"}


# --- the little test runner ----------------------------------------------------------

RESULTS: list[tuple[str, bool]] = []


def check(name):
    """Runs the decorated function now as one named check."""
    def run(fn):
        try:
            fn()
        except AssertionError as e:
            RESULTS.append((name, False))
            print(f"FAIL {name}\n     {e}")
        except Exception:  # a crash in a check is a failure with its traceback
            RESULTS.append((name, False))
            print(f"FAIL {name}\n" + "".join("     " + l for l in traceback.format_exc().splitlines(True)))
        else:
            RESULTS.append((name, True))
            print(f"ok   {name}")
        return fn
    return run


# --- helpers --------------------------------------------------------------------------

def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, buf = [], ""
    for line in text.splitlines():
        s = line.strip()
        if not buf and (not s or s.startswith("#")):
            continue
        if buf and s.startswith("#"):
            continue
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        buf += s
        instr, _, args = buf.partition(" ")
        out.append((instr.upper(), args.strip()))
        buf = ""
    return out


def shell_commands(run_args: str) -> list[str]:
    """The simple commands of a RUN line, split on && ; ||, whitespace normalised."""
    if run_args.startswith("["):  # exec form
        return [" ".join(json.loads(run_args))]
    args = re.sub(r"--mount=\S+\s*", "", run_args)  # BuildKit RUN flags
    return [" ".join(part.split()) for part in re.split(r"&&|\|\||;", args) if part.strip()]


def skylark_binary() -> Path:
    """${SKYLARK_BIN}, else ${CARGO_TARGET_DIR:-target}/debug/skylark (may not exist)."""
    if os.environ.get("SKYLARK_BIN"):
        return Path(os.environ["SKYLARK_BIN"]).resolve()
    target = Path(os.environ.get("CARGO_TARGET_DIR", "target"))
    if not target.is_absolute():
        target = ROOT / target
    return target / "debug" / "skylark"


def known_env() -> tuple[set[str], str]:
    """Environment names the binary reads, and where they were learnt."""
    binary = skylark_binary()
    if binary.is_file() and os.access(binary, os.X_OK):
        out = subprocess.run([str(binary), "--help"], capture_output=True, text=True,
                             timeout=30, check=True).stdout
        names = set(re.findall(r"\[env: ([A-Z0-9_]+)", out))
        assert names, f"no `[env: …]` in `{binary} --help`"
        return names | ENV_NOT_IN_HELP, f"`{binary} --help` (+ {', '.join(sorted(ENV_NOT_IN_HELP))})"
    # The README's configuration table: first-column names in backticks.
    names: set[str] = set()
    in_table = False
    for line in README.read_text().splitlines():
        if line.startswith("| variable |"):
            in_table = True
            continue
        if in_table:
            if not line.startswith("|"):
                break
            first = line.split("|")[1]
            names |= set(re.findall(r"`([A-Z][A-Z0-9_]+)`", first))
    assert names, "no configuration table in README.md"
    return names, f"README.md's configuration table ({binary} not built)"


def render(values: dict) -> dict[str, str]:
    chart = helm.Chart.load(str(CHART))
    try:
        return chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    finally:
        chart.close()


def objects(rendered: dict[str, str]) -> list[dict]:
    out = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc is None:
                continue
            assert isinstance(doc, dict), f"{path}: a document is not a mapping"
            doc.setdefault("__source__", path)
            out.append(doc)
    return out


def strip(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k != "__source__"}


def pod_spec(obj: dict) -> dict | None:
    if obj["kind"] in ("Deployment", "DaemonSet", "StatefulSet", "Job"):
        return obj["spec"]["template"]["spec"]
    return None


def component(obj: dict) -> str:
    return obj["metadata"]["labels"]["app.kubernetes.io/component"]


def by_kind(objs, kind):
    return [o for o in objs if o["kind"] == kind]


def leaves(tree, prefix=()):
    """Leaf paths (tuples of keys) of values.yaml: scalars, lists, and empty maps."""
    if isinstance(tree, dict) and tree:
        for k, v in tree.items():
            yield from leaves(v, prefix + (k,))
    else:
        yield prefix


def turn_on(values: dict) -> bool:
    """Whether a value set runs the embedded TURN server."""
    return values.get("turn", {}).get("server", {}).get("enabled", False)


def value_used(path: tuple, templates: str) -> bool:
    """`.Values.<path>` appears, or an ancestor map is rendered whole: `toYaml
    .Values.<ancestor>`, or `with .Values.<ancestor>` whose block does `toYaml .`."""
    if all(re.fullmatch(r"\w+", k) for k in path) and \
            re.search(r"\.Values\." + re.escape(".".join(path)) + r"(?![\w])", templates):
        return True
    for i in range(len(path) - 1, 0, -1):
        anc = path[:i]
        if not all(re.fullmatch(r"\w+", k) for k in anc):
            continue
        ref = r"\$?\.Values\." + re.escape(".".join(anc)) + r"(?![\w.])"
        if re.search(r"toYaml\s+" + ref, templates):
            return True
        for m in re.finditer(r"with\s+" + ref + r"\s*-?}}", templates):
            block = templates[m.end():templates.find("{{- end", m.end())]
            if re.search(r"toYaml\s+\.\s", block):
                return True
    return False


# --- the checks -----------------------------------------------------------------------

def main() -> int:
    print(f"chart {CHART.relative_to(ROOT)}; helm SDK {helm.helm_sdk_version()}; "
          f"kubernetes-validate schemas {', '.join(KUBE_VERSIONS)}")
    values_yaml = yaml.safe_load((CHART / "values.yaml").read_text())
    templates_text = "\n".join(p.read_text() for p in sorted((CHART / "templates").rglob("*"))
                               if p.is_file())
    env_known, env_source = known_env()
    print(f"environment names known to the binary, from {env_source}: {len(env_known)}")

    # --- Dockerfile -------------------------------------------------------------------
    @check("Dockerfile: the image's cargo build is CI's (`%s`)" % EXPECTED_BUILD)
    def _():
        instrs = dockerfile_instructions(DOCKERFILE.read_text())
        builds = [c for i, a in instrs if i == "RUN" for c in shell_commands(a)
                  if c.startswith("cargo build")]
        assert builds == [EXPECTED_BUILD], f"RUN cargo build lines: {builds}"
        # scripts/test (CI) builds the same package, locked; the image adds --release.
        ci = [" ".join(l.split()) for l in CI_SCRIPT.read_text().splitlines()
              if l.strip().startswith("cargo build")]
        assert ci, "scripts/test has no `cargo build` line"
        want = set(shlex.split(EXPECTED_BUILD)) - {"--release"}
        for line in ci:
            assert set(shlex.split(line)) == want, f"CI builds `{line}`, the image `{builds[0]}`"

    @check("Dockerfile: rust builder with npm, debian-slim runtime, non-root, ENTRYPOINT skylark")
    def _():
        instrs = dockerfile_instructions(DOCKERFILE.read_text())
        froms = [a for i, a in instrs if i == "FROM"]
        assert len(froms) == 2 and froms[0].startswith("rust:1-bookworm") \
            and froms[1] == "debian:bookworm-slim", froms
        runs = " ".join(a for i, a in instrs if i == "RUN")
        assert re.search(r"apt-get install .*\bnodejs\b.*\bnpm\b", runs), "builder lacks nodejs npm"
        runtime = instrs[[n for n, (i, _) in enumerate(instrs) if i == "FROM"][1]:]
        installs = [a for i, a in runtime if i == "RUN" and "apt-get install" in a]
        assert installs and all(
            re.sub(r".*apt-get install -y --no-install-recommends ([\w .-]+?)(&&.*)?$", r"\1", a).split()
            == ["ca-certificates", "libssl3"] for a in installs), \
            f"runtime installs other than ca-certificates and libssl3 (DTLS links OpenSSL): {installs}"
        users = [a for i, a in runtime if i == "USER"]
        assert users and users[-1].split(":")[0] not in ("root", "0"), f"USER {users}"
        assert ("ENTRYPOINT", '["skylark"]') in instrs, "ENTRYPOINT [\"skylark\"]"
        exposed = {p for i, a in instrs if i == "EXPOSE" for p in a.split()}
        assert {"8080", "7882/udp", "7881", "1935"} <= exposed, f"EXPOSE {exposed}"
        ignore = (ROOT / ".dockerignore").read_text().split()
        for p in ("target", "**/node_modules", ".git"):
            assert p in ignore, f".dockerignore lacks {p}"

    # --- lint ---------------------------------------------------------------------------
    for name, values in VALUE_SETS.items():
        @check(f"helm lint --strict [{name}]")
        def _():
            r = helm.lint(str(CHART), values, strict=True, namespace=NAMESPACE)
            bad = [m for m in r["messages"] if m["severity"] >= 2] + r["errors"]
            assert not bad, json.dumps(bad, indent=1)

    for name, values, word in BAD_VALUE_SETS:
        @check(f"values.schema.json refuses {name}")
        def _():
            try:
                render(values)
            except helm.HelmError as e:
                assert word in str(e), f"refused, but the error does not name {word}: {e}"
            else:
                raise AssertionError(f"rendered with {values}")

    # --- render + validate each value set -------------------------------------------------
    rendered_env: set[str] = set()
    for name, values in VALUE_SETS.items():
        state: dict = {}

        @check(f"render [{name}]")
        def _():
            out = render(values)
            notes = next(v for k, v in out.items() if k.endswith("NOTES.txt"))
            assert "stream key" in notes and "/watch/" in notes, "NOTES.txt says how to go live and watch"
            state["objs"] = objects(out)
            kinds = sorted({o["kind"] for o in state["objs"]})
            print(f"     {len(state['objs'])} objects: {', '.join(kinds)}")

        if "objs" not in state:
            continue
        objs = state["objs"]

        @check(f"kubernetes-validate strict, k8s {' and '.join(KUBE_VERSIONS)} [{name}]")
        def _():
            n = 0
            for o in objs:
                if o["apiVersion"] == "monitoring.coreos.com/v1":
                    continue  # a CRD: checked below
                for v in KUBE_VERSIONS:
                    try:
                        kubernetes_validate.validate(strip(o), v, strict=True)
                    except kubernetes_validate.ValidationError as e:
                        raise AssertionError(f"{o['kind']}/{o['metadata']['name']} ({o['__source__']}), "
                                             f"k8s {v}: {e.message} at {'.'.join(map(str, e.path))}")
                    n += 1
            assert n, "nothing validated"

        @check(f"standard labels on every object and pod [{name}]")
        def _():
            for o in objs:
                lab = o["metadata"].get("labels", {})
                missing = [l for l in STANDARD_LABELS if l not in lab]
                assert not missing, f"{o['kind']}/{o['metadata']['name']} lacks {missing}"
                assert lab["app.kubernetes.io/part-of"] == "skylark"
                ps = pod_spec(o)
                if ps is not None:
                    sel = o["spec"].get("selector", {}).get("matchLabels", {})
                    pl = o["spec"]["template"]["metadata"]["labels"]
                    assert all(pl.get(k) == v for k, v in sel.items()), f"{o['metadata']['name']}: selector ⊄ pod labels"

        @check(f"env names are the binary's; $(VAR) references resolve [{name}]")
        def _():
            for o in objs:
                ps = pod_spec(o)
                if ps is None:
                    continue
                for c in ps["containers"]:
                    defined: list[str] = []
                    for e in c.get("env", []):
                        for ref in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", e.get("value", "")):
                            assert ref in defined, f"{c['name']}: {e['name']} uses $({ref}) before it is defined"
                        defined.append(e["name"])
                    assert len(defined) == len(set(defined)), f"{c['name']}: duplicate env {defined}"
                    unknown = set(defined) - env_known - HELPER_ENV
                    assert not unknown, f"{c['name']}: env the binary does not read: {sorted(unknown)}"
                    for h in set(defined) & HELPER_ENV:
                        assert any(f"$({h})" in e.get("value", "") for e in c["env"]), \
                            f"{c['name']}: helper {h} is set but never used"
                    rendered_env.update(set(defined) - HELPER_ENV)

        @check(f"each target: args, required env, probes, security context [{name}]")
        def _():
            seen = set()
            for o in objs:
                ps = pod_spec(o)
                if ps is None:
                    continue
                assert ps.get("automountServiceAccountToken") is False
                psc = ps["securityContext"]
                assert psc["runAsNonRoot"] is True and psc["runAsUser"] != 0
                for c in ps["containers"]:
                    target = c["args"][0]
                    assert target in TARGETS and c["args"] == [target], f"args {c['args']}"
                    assert component(o) == target
                    seen.add(target)
                    names = {e["name"] for e in c.get("env", [])}
                    assert REQUIRED_ENV[target] <= names, f"{target} lacks {REQUIRED_ENV[target] - names}"
                    assert not (FORBIDDEN_ENV.get(target, set()) & names), \
                        f"{target} gets {FORBIDDEN_ENV[target] & names}"
                    sc = c["securityContext"]
                    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
                    assert sc["capabilities"]["drop"] == ["ALL"]
                    assert c["image"].startswith("skylark:")
                    assert c.get("resources", {}).get("requests"), f"{target}: no resource requests"
                    if target == "migrate":
                        continue
                    ports = {p["name"]: p for p in c["ports"]}
                    http = dict((e["name"], e.get("value")) for e in c["env"])["SKYLARK_HTTP_ADDR"]
                    assert http == f"0.0.0.0:{ports['http']['containerPort']}", f"{target}: {http} vs port http"
                    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
                    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
                    assert c["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
                    mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
                    data = dict((e["name"], e.get("value")) for e in c["env"])["SKYLARK_DATA_DIR"]
                    assert data in mounts, f"{target}: SKYLARK_DATA_DIR {data} is not a volume (read-only root)"
            want = TARGETS if turn_on(values) else TARGETS - {"turn"}
            assert seen == want, f"targets rendered: {seen}"

        @check(f"Deployments, PDBs, HPAs for api/signaling/packager [{name}]")
        def _():
            deps = {component(o): o for o in by_kind(objs, "Deployment")}
            assert set(deps) == {"api", "signaling", "packager"}, set(deps)
            hpas = {o["spec"]["scaleTargetRef"]["name"]: o for o in by_kind(objs, "HorizontalPodAutoscaler")}
            for comp, d in deps.items():
                want_hpa = values.get(comp, {}).get("autoscaling", {}).get("enabled", False)
                assert (d["metadata"]["name"] in hpas) == want_hpa, f"{comp}: HPA {want_hpa}"
                assert ("replicas" in d["spec"]) != want_hpa, f"{comp}: replicas set alongside an HPA"
                if want_hpa:
                    h = hpas[d["metadata"]["name"]]
                    assert h["apiVersion"] == "autoscaling/v2" and h["spec"]["scaleTargetRef"]["kind"] == "Deployment"
            pdbs = [component(o) for o in by_kind(objs, "PodDisruptionBudget")]
            want = {c for c in deps if values.get(c, {}).get("podDisruptionBudget", {}).get("enabled", True)}
            assert set(pdbs) == want, f"PDBs {pdbs}, want {want}"

        @check(f"Services select pods and name their ports [{name}]")
        def _():
            pods = [(o["spec"]["template"]["metadata"]["labels"], pod_spec(o)) for o in objs
                    if pod_spec(o) is not None and o["kind"] != "Job"]
            names = set()
            for s in by_kind(objs, "Service"):
                names.add(s["metadata"]["name"])
                sel = s["spec"]["selector"]
                match = [ps for labels, ps in pods if all(labels.get(k) == v for k, v in sel.items())]
                assert match, f"Service {s['metadata']['name']} selects no pod"
                cports = {p["name"] for ps in match for c in ps["containers"] for p in c.get("ports", [])}
                for p in s["spec"]["ports"]:
                    assert p["targetPort"] in cports, f"{s['metadata']['name']}: targetPort {p['targetPort']} ∉ {cports}"
            api_svc = next(s for s in by_kind(objs, "Service") if s["metadata"]["name"].endswith("-api"))
            grpc = next(p["port"] for p in api_svc["spec"]["ports"] if p["name"] == "grpc")
            for comp in ("signaling", "packager"):
                dep = next(o for o in by_kind(objs, "Deployment") if component(o) == comp)
                api_url = {e["name"]: e.get("value") for e in pod_spec(dep)["containers"][0]["env"]}["SKYLARK_API_GRPC_URL"]
                assert api_url == f"http://{api_svc['metadata']['name']}:{grpc}", (comp, api_url)

        @check(f"Secrets: every secretKeyRef resolves; migrate hook ordering [{name}]")
        def _():
            existing = values.get("existingSecret")
            secrets = {s["metadata"]["name"]: s for s in by_kind(objs, "Secret")}
            if existing:
                assert not any(s.get("metadata", {}).get("annotations", {}).get("helm.sh/hook") is None
                               for s in secrets.values()), "a Secret is rendered although existingSecret is set"
            for o in objs:
                ps = pod_spec(o)
                if ps is None:
                    continue
                for c in ps["containers"]:
                    for e in c.get("env", []):
                        ref = e.get("valueFrom", {}).get("secretKeyRef")
                        if not ref:
                            continue
                        s3 = values.get("recordings", {}).get("s3", {})
                        if s3.get("existingSecret") and ref["name"] == s3["existingSecret"]:
                            # The S3 credentials: the user's own Secret, keys as configured.
                            want = {"AWS_ACCESS_KEY_ID": s3["accessKeyIdKey"],
                                    "AWS_SECRET_ACCESS_KEY": s3["secretAccessKeyKey"]}
                            assert ref["key"] == want.get(e["name"]), f"{e['name']} from key {ref['key']}"
                            continue
                        assert ref["key"] == e["name"], f"{e['name']} from key {ref['key']}"
                        if existing:
                            assert ref["name"] == existing, f"{e['name']} from {ref['name']}, not {existing}"
                        else:
                            s = secrets.get(ref["name"])
                            assert s, f"{e['name']}: no Secret {ref['name']}"
                            if ref.get("optional") and ref["key"] not in s["data"]:
                                assert ref["key"] in OPTIONAL_SECRET_KEYS, f"{e['name']}: optional, unexpectedly"
                                continue
                            assert ref["key"] in s["data"], f"{e['name']}: no Secret {ref['name']}/{ref['key']}"
                            if o["kind"] == "Job":  # a hook: its Secret must be a hook that runs first
                                ann = s["metadata"].get("annotations", {})
                                assert "pre-install" in ann.get("helm.sh/hook", ""), "migrate Secret is not a hook"
                                assert int(ann["helm.sh/hook-weight"]) < int(o["metadata"]["annotations"]["helm.sh/hook-weight"])
            job = by_kind(objs, "Job")
            assert len(job) == 1, "one migrate Job"
            ann = job[0]["metadata"]["annotations"]
            assert set(ann["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}, ann
            assert "before-hook-creation" in ann["helm.sh/hook-delete-policy"], ann
            assert job[0]["spec"]["template"]["spec"]["restartPolicy"] == "Never"
            for key, value in (("SKYLARK_JWT_SECRET", "jwtSecret"), ("SKYLARK_PLAYBACK_SECRET", "playbackSecret")):
                if not existing and not values.get(value):
                    sec = next(s for s in secrets.values() if key in s["data"])
                    assert len(base64.b64decode(sec["data"][key])) >= 32, key

        @check(f"SFU: DaemonSet, one UDP port, one ICE-TCP port, host networking, announced IP, drain [{name}]")
        def _():
            ds = [o for o in by_kind(objs, "DaemonSet") if component(o) != "turn"]
            assert len(ds) == 1 and component(ds[0]) == "sfu", "the SFU is a DaemonSet"
            sfu_values = values.get("sfu", {})
            host_net = sfu_values.get("hostNetwork", True)
            ps = pod_spec(ds[0])
            c = ps["containers"][0]
            env = {e["name"]: e for e in c["env"]}
            udp = [p for p in c["ports"] if p["protocol"] == "UDP"]
            assert len(udp) == 1, f"UDP ports {udp}"
            assert env["SKYLARK_RTC_UDP_ADDR"]["value"] == f"0.0.0.0:{udp[0]['containerPort']}"
            assert ps["terminationGracePeriodSeconds"] >= 60, "a long grace period"
            assert int(c["lifecycle"]["preStop"]["exec"]["command"][1]) < ps["terminationGracePeriodSeconds"]
            assert env["SKYLARK_NODE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
            grpc_port = next(p["containerPort"] for p in c["ports"] if p["name"] == "grpc")
            # gRPC on the pod IP only (the node's InternalIP with host networking), never
            # 0.0.0.0, which would take the node's public interface too.
            assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP", env["POD_IP"]
            assert env["SKYLARK_GRPC_ADDR"]["value"] == f"$(POD_IP):{grpc_port}", env["SKYLARK_GRPC_ADDR"]
            assert env["SKYLARK_GRPC_ADVERTISE_URL"]["value"] == f"http://$(POD_IP):{grpc_port}"
            tcp = [p for p in c["ports"] if p["name"] == "rtc-tcp"]
            tcp_port = sfu_values.get("tcpPort", 7881)
            if tcp_port:
                assert len(tcp) == 1 and tcp[0]["protocol"] == "TCP", f"ICE-TCP port {tcp}"
                assert tcp[0]["containerPort"] == tcp_port
                assert env["SKYLARK_RTC_TCP_ADDR"]["value"] == f"0.0.0.0:{tcp_port}"
            else:
                assert not tcp, f"ICE-TCP off, yet a port {tcp}"
                assert env["SKYLARK_RTC_TCP_ADDR"]["value"] == "off"
            if host_net:
                assert ps.get("hostNetwork") is True and ps.get("dnsPolicy") == "ClusterFirstWithHostNet"
                assert "hostPort" not in udp[0]
                assert all("hostPort" not in p for p in tcp)
            else:
                assert not ps.get("hostNetwork") and udp[0]["hostPort"] == udp[0]["containerPort"]
                assert all(p["hostPort"] == p["containerPort"] for p in tcp)
            if sfu_values.get("publicIp"):
                assert env["SKYLARK_RTC_PUBLIC_IP"]["value"] == sfu_values["publicIp"]
            else:
                assert env["SKYLARK_RTC_PUBLIC_IP"]["value"] == "$(HOST_IP)"
                assert env["HOST_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP"
            if "nodeSelector" in sfu_values:
                assert ps["nodeSelector"] == sfu_values["nodeSelector"]

        @check(f"packager advertises its pod IP; RTMP wiring [{name}]")
        def _():
            pk = next(o for o in by_kind(objs, "Deployment") if component(o) == "packager")
            env = {e["name"]: e for e in pod_spec(pk)["containers"][0]["env"]}
            assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP", env["POD_IP"]
            http_port = next(p["containerPort"] for p in pod_spec(pk)["containers"][0]["ports"] if p["name"] == "http")
            assert env["SKYLARK_HTTP_ADVERTISE"]["value"] == f"$(POD_IP):{http_port}", env["SKYLARK_HTTP_ADVERTISE"]
            rtmp = values.get("rtmp", {}).get("enabled", False)
            svc = [s for s in by_kind(objs, "Service") if s["metadata"]["name"].endswith("-rtmp")]
            assert bool(svc) == rtmp, f"RTMP Service rendered: {bool(svc)}"
            sig = next(o for o in by_kind(objs, "Deployment") if component(o) == "signaling")
            senv = {e["name"] for e in pod_spec(sig)["containers"][0]["env"]}
            assert "SKYLARK_RTMP_ADDR" in senv, "signaling always listens for RTMP"
            if rtmp:
                assert svc[0]["spec"]["selector"]["app.kubernetes.io/component"] == "signaling"

        @check(f"recordings: one store for the packagers and the api; volume, URL, S3 credentials from a Secret [{name}]")
        def _():
            rec = values.get("recordings", {})
            claim, url, s3 = rec.get("existingClaim", ""), rec.get("url", ""), rec.get("s3", {})
            want_url = url or ("file:///recordings" if claim else "file:///data/recordings")
            for comp in ("packager", "api"):
                dep = next(o for o in by_kind(objs, "Deployment") if component(o) == comp)
                ps = pod_spec(dep)
                c = ps["containers"][0]
                env = {e["name"]: e for e in c["env"]}
                assert env["SKYLARK_RECORDINGS_URL"].get("value") == want_url, (comp, env["SKYLARK_RECORDINGS_URL"])
                vols = {v["name"]: v for v in ps.get("volumes", [])}
                mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
                if claim:
                    assert vols["recordings"]["persistentVolumeClaim"]["claimName"] == claim, (comp, vols)
                    assert mounts.get("recordings") == "/recordings", (comp, mounts)
                else:
                    assert "recordings" not in vols and "recordings" not in mounts, (comp, vols, mounts)
                s3_on = url.startswith("s3://")
                for var, key in (("AWS_ACCESS_KEY_ID", "accessKeyIdKey"), ("AWS_SECRET_ACCESS_KEY", "secretAccessKeyKey")):
                    if s3_on and s3.get("existingSecret"):
                        assert var in env, f"{comp}: no {var} with recordings.s3.existingSecret"
                        ref = env[var]["valueFrom"]["secretKeyRef"]
                        assert (ref["name"], ref["key"]) == (s3["existingSecret"], s3[key]), (comp, var, ref)
                        assert "value" not in env[var], f"{comp}: {var} literal"
                    else:
                        assert var not in env, f"{comp}: {var} without recordings.s3.existingSecret"
                if s3_on:
                    for var, key in (("AWS_REGION", "region"), ("AWS_ENDPOINT_URL", "endpoint")):
                        assert env.get(var, {}).get("value") == s3.get(key), (comp, var, env.get(var))
                    assert env["AWS_ALLOW_HTTP"]["value"] == str(s3.get("allowHttp", False)).lower(), (comp, env["AWS_ALLOW_HTTP"])

        @check(f"Ingress routes each public path to its service [{name}]")
        def _():
            ings = by_kind(objs, "Ingress")
            want = values.get("ingress", {}).get("enabled", False)
            assert bool(ings) == want, f"Ingress rendered: {bool(ings)}"
            if not want:
                return
            ing = ings[0]
            prefix = f"{RELEASE}-skylark-"
            for path, comp in ROUTES:
                got = live.route_backend(ing, path)
                assert got == prefix + comp, f"{path} → {got}, want {prefix + comp}"
            first = ing["spec"]["rules"][0]["http"]["paths"][0]
            assert first["pathType"] == "ImplementationSpecific" and first["backend"]["service"]["name"] == prefix + "signaling"
            ann = ing["metadata"]["annotations"]
            assert ann.get("nginx.ingress.kubernetes.io/use-regex") == "true"
            assert int(ann["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600, "WebSocket timeouts"
            tls = values["ingress"].get("tls", {})
            if tls.get("enabled"):
                assert ing["spec"]["tls"] == [{"hosts": [values["ingress"]["host"]], "secretName": tls["secretName"]}]
            for p in ing["spec"]["rules"][0]["http"]["paths"]:
                port = p["backend"]["service"]["port"]["number"]
                svc = next(s for s in by_kind(objs, "Service") if s["metadata"]["name"] == p["backend"]["service"]["name"])
                assert port in [sp["port"] for sp in svc["spec"]["ports"]], f"{p['path']}: port {port}"

        @check(f"internal port: named, bound, scraped; no public Service or ingress path [{name}]")
        def _():
            sfu_host_net = values.get("sfu", {}).get("hostNetwork", True)
            internal = INTERNAL | ({"turn"} if turn_on(values) else set())
            internal_port = {}
            for o in objs:
                ps = pod_spec(o)
                if ps is None or component(o) not in internal:
                    continue
                comp, c = component(o), ps["containers"][0]
                ports = {p["name"]: p for p in c["ports"]}
                assert "internal" in ports, f"{comp}: no container port named internal"
                port = ports["internal"]["containerPort"]
                assert port not in [p["containerPort"] for n, p in ports.items() if n != "internal"], \
                    f"{comp}: the internal port {port} is shared"
                bind = "$(HOST_IP)" if (comp == "sfu" and sfu_host_net) or comp == "turn" else "0.0.0.0"
                env = {e["name"]: e.get("value") for e in c["env"]}
                assert env["SKYLARK_INTERNAL_ADDR"] == f"{bind}:{port}", f"{comp}: {env['SKYLARK_INTERNAL_ADDR']}"
                meta = o["spec"]["template"]["metadata"]
                ann = meta["annotations"]
                assert (ann["prometheus.io/port"], ann["prometheus.io/path"]) == (str(port), "/metrics"), \
                    f"{comp}: scrape annotations {ann}"
                assert meta["labels"].get("skylark.io/internal") == "true", f"{comp}: not in the internal Service"
                internal_port[comp] = port
            assert set(internal_port) == internal, f"internal ports: {internal_port}"
            internal_numbers = set(internal_port.values())
            # One headless Service lists the internal ports; no other Service does.
            internal_svcs = []
            for svc in by_kind(objs, "Service"):
                targets = {p["targetPort"] for p in svc["spec"]["ports"]}
                if "internal" in targets:
                    internal_svcs.append(svc)
                    assert targets == {"internal"}, f"{svc['metadata']['name']} mixes internal with {targets}"
                    assert svc["spec"].get("clusterIP") == "None" and svc["spec"].get("type", "ClusterIP") == "ClusterIP", \
                        f"{svc['metadata']['name']}: not headless"
                else:
                    assert not targets & internal_numbers, f"{svc['metadata']['name']} targets an internal port"
            assert [s["metadata"]["name"] for s in internal_svcs] == [f"{RELEASE}-skylark-internal"], internal_svcs
            sel = internal_svcs[0]["spec"]["selector"]
            selected = {component(o) for o in objs if pod_spec(o) is not None and
                        all(o["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in sel.items())}
            assert selected == internal, f"the internal Service selects {selected}"
            for ing in by_kind(objs, "Ingress"):
                for rule in ing["spec"]["rules"]:
                    for p in rule["http"]["paths"]:
                        backend = p["backend"]["service"]
                        assert backend["name"] != internal_svcs[0]["metadata"]["name"], f"{p['path']} → internal"
                        svc = next(s for s in by_kind(objs, "Service") if s["metadata"]["name"] == backend["name"])
                        target = next(sp["targetPort"] for sp in svc["spec"]["ports"]
                                      if sp["port"] == backend["port"]["number"])
                        assert target == "http", f"ingress {p['path']} → {backend['name']} port {target}"
            sms = [o for o in objs if o["kind"] == "ServiceMonitor"]
            for sm in sms:
                assert [e["port"] for e in sm["spec"]["endpoints"]] == ["internal"], sm["spec"]["endpoints"]
                labels = internal_svcs[0]["metadata"]["labels"]
                assert all(labels.get(k) == v for k, v in sm["spec"]["selector"]["matchLabels"].items())
                scraped = [s for s in by_kind(objs, "Service")
                           if all(s["metadata"]["labels"].get(k) == v for k, v in sm["spec"]["selector"]["matchLabels"].items())]
                assert scraped == internal_svcs, f"the ServiceMonitor selects {[s['metadata']['name'] for s in scraped]}"

        @check(f"ServiceMonitor (CRD, parsed) and dashboard ConfigMap [{name}]")
        def _():
            sms = [o for o in objs if o["kind"] == "ServiceMonitor"]
            want_sm = values.get("serviceMonitor", {}).get("enabled", False)
            assert bool(sms) == want_sm, f"ServiceMonitor rendered: {bool(sms)}"
            if sms:
                sm = sms[0]
                assert sm["apiVersion"] == "monitoring.coreos.com/v1"
                assert sm["metadata"]["labels"]["release"] == "prometheus"
                assert sm["spec"]["endpoints"][0]["path"] == "/metrics"
            cms = [o for o in by_kind(objs, "ConfigMap") if o["metadata"]["name"].endswith("-dashboard")]
            want_db = values.get("dashboard", {}).get("enabled", False)
            assert bool(cms) == want_db, f"dashboard rendered: {bool(cms)}"
            if cms:
                assert cms[0]["metadata"]["labels"]["grafana_dashboard"] == "1"
                dash = json.loads(cms[0]["data"]["skylark.json"])
                assert dash["panels"], "dashboard has panels"

        @check(f"internal secret: from the Secret, on every service, never literal [{name}]")
        def _():
            existing = values.get("existingSecret")
            secret_name = existing or f"{RELEASE}-skylark"
            seen = set()
            for o in objs:
                ps = pod_spec(o)
                if ps is None or component(o) not in INTERNAL:
                    continue
                env = {e["name"]: e for e in ps["containers"][0]["env"]}
                ref = env["SKYLARK_INTERNAL_SECRET"].get("valueFrom", {}).get("secretKeyRef")
                assert ref == {"name": secret_name, "key": "SKYLARK_INTERNAL_SECRET"}, \
                    f"{component(o)}: SKYLARK_INTERNAL_SECRET from {env['SKYLARK_INTERNAL_SECRET']}"
                # During a rotation: read when the Secret has it, so a Secret edit and a
                # restart start or end one without a chart change.
                ref = env["SKYLARK_INTERNAL_SECRET_ACCEPT"].get("valueFrom", {}).get("secretKeyRef")
                assert ref == {"name": secret_name, "key": "SKYLARK_INTERNAL_SECRET_ACCEPT", "optional": True}, \
                    f"{component(o)}: SKYLARK_INTERNAL_SECRET_ACCEPT from {env['SKYLARK_INTERNAL_SECRET_ACCEPT']}"
                seen.add(component(o))
            assert seen == INTERNAL, f"services with the internal secret: {seen}"
            if not existing:
                sec = next(s for s in by_kind(objs, "Secret") if s["metadata"]["name"] == secret_name)
                got = base64.b64decode(sec["data"]["SKYLARK_INTERNAL_SECRET"]).decode()
                assert len(got) >= 32 and re.fullmatch(r"[!-~]+", got), "a valid generated secret"
                if values.get("internalSecret"):
                    assert got == values["internalSecret"]
                accept = sec["data"].get("SKYLARK_INTERNAL_SECRET_ACCEPT")
                want_accept = values.get("internalSecretAccept")
                assert (base64.b64decode(accept).decode() if accept else None) == (want_accept or None), \
                    "SKYLARK_INTERNAL_SECRET_ACCEPT in the Secret only during a rotation"
                jwt = base64.b64decode(sec["data"]["SKYLARK_JWT_SECRET"]).decode()
                assert got != jwt, "the internal secret is not the JWT key"

        @check(f"NetworkPolicies: who may reach each port [{name}]")
        def _():
            pols = by_kind(objs, "NetworkPolicy")
            npv = values.get("networkPolicy", {})
            if not npv.get("enabled", True):
                assert not pols, "NetworkPolicies rendered although networkPolicy.enabled is false"
                return
            http_from = npv.get("httpFrom", [])
            metrics_from = npv.get("metricsFrom", values_yaml["networkPolicy"]["metricsFrom"])
            host_net = values.get("sfu", {}).get("hostNetwork", True)
            rtmp = values.get("rtmp", {}).get("enabled", False)
            ANY = "anyone"

            def pods(*comps):
                return sorted(f"pods:{c}" for c in comps)

            def peer(p):
                if set(p) == {"podSelector"}:
                    labels = p["podSelector"]["matchLabels"]
                    assert labels["app.kubernetes.io/instance"] == RELEASE, p
                    return f"pods:{labels['app.kubernetes.io/component']}"
                return json.dumps(p, sort_keys=True)

            def values_peers(ps):
                return sorted(json.dumps(p, sort_keys=True) for p in ps)

            # component -> container port name -> who may connect (None: closed).
            want = {
                "api": {"http": values_peers(http_from) or ANY,
                        "grpc": sorted(pods("signaling", "packager", "sfu") +
                                       ([json.dumps({"ipBlock": {"cidr": c}}, sort_keys=True)
                                         for c in npv.get("nodeCidrs", [])] if host_net else [])),
                        "internal": values_peers(metrics_from) or None},
                "signaling": {"http": values_peers(http_from) or ANY, "rtmp": ANY if rtmp else None,
                              "internal": values_peers(metrics_from) or None},
                "packager": {"http": sorted(values_peers(http_from) + pods("packager")) if http_from else ANY,
                             "internal": values_peers(metrics_from) or None},
                "sfu": {"rtc-udp": ANY, "http": ANY,
                        **({"rtc-tcp": ANY} if values.get("sfu", {}).get("tcpPort", 7881) else {}),
                        "grpc": sorted(pods("signaling", "packager", "sfu") +
                                       ([json.dumps({"ipBlock": {"cidr": c}}, sort_keys=True)
                                         for c in npv.get("nodeCidrs", [])] if host_net else [])),
                        "internal": values_peers(metrics_from) or None},
            }
            by_comp = {}
            for pol in pols:
                comp = component(pol)
                assert comp not in by_comp, f"two NetworkPolicies for {comp}"
                by_comp[comp] = pol
                assert pol["spec"]["policyTypes"] == ["Ingress"], pol["spec"]["policyTypes"]
            assert set(by_comp) == set(want), f"NetworkPolicies for {sorted(by_comp)}"
            workloads = {component(o): o for o in objs if pod_spec(o) is not None and component(o) in want}
            for comp, pol in by_comp.items():
                w = workloads[comp]
                pod_labels = w["spec"]["template"]["metadata"]["labels"]
                sel = pol["spec"]["podSelector"]["matchLabels"]
                assert all(pod_labels.get(k) == v for k, v in sel.items()), f"{comp}: policy selects other pods"
                ports = {p["name"]: p for p in pod_spec(w)["containers"][0]["ports"]}
                for port_name, port in ports.items():
                    allowed = set()
                    for rule in pol["spec"].get("ingress", []):
                        rports = rule.get("ports")
                        assert rports, f"{comp}: a rule without ports opens every port"
                        if not any(rp["port"] == port_name and rp["protocol"] == port["protocol"] for rp in rports):
                            continue
                        if not rule.get("from"):
                            allowed.add(ANY)
                        else:
                            allowed.update(peer(p) for p in rule["from"])
                    exp = want[comp].get(port_name)
                    got = None if not allowed else (ANY if ANY in allowed else sorted(allowed))
                    assert got == exp, f"{comp} port {port_name}: reachable from {got}, want {exp}"
                for rule in pol["spec"].get("ingress", []):
                    for rp in rule["ports"]:
                        assert rp["port"] in ports, f"{comp}: the policy names port {rp['port']}, which the pod lacks"

    @check(f"env names across all value sets are exactly the binary's ({env_source})")
    def _():
        missing = env_known - rendered_env
        extra = rendered_env - env_known
        assert not extra, f"the chart sets variables the binary does not read: {sorted(extra)}"
        assert not missing, (f"the binary reads variables no value set wires: {sorted(missing)} "
                             "(add them to the chart, or to a value set here)")

    # --- values.yaml ----------------------------------------------------------------------
    @check("every value in values.yaml is used by a template")
    def _():
        paths = {".".join(p): p for p in leaves(values_yaml)}
        unused = [d for d, p in paths.items()
                  if d not in UNUSED_VALUE_EXCEPTIONS and not value_used(p, templates_text)]
        assert not unused, f"unused values: {unused}"
        stale = [d for d in UNUSED_VALUE_EXCEPTIONS if d not in paths]
        assert not stale, f"exceptions for values that no longer exist: {stale}"

    @check("values.yaml documents each top-level key with a comment")
    def _():
        lines = (CHART / "values.yaml").read_text().splitlines()
        for i, line in enumerate(lines):
            m = re.match(r"^([A-Za-z]\w*):", line)
            if m and m.group(1) not in ("nameOverride", "fullnameOverride"):
                above = lines[max(0, i - 3):i]
                assert any(l.lstrip().startswith("#") for l in above), f"{m.group(1)} has no comment above it"

    # --- dashboard ------------------------------------------------------------------------
    @check("dashboard: every metric it plots exists in the source; the main ones are there")
    def _():
        dash = json.loads((CHART / "files" / "dashboard.json").read_text())
        exprs = []

        def walk(panels):
            for p in panels:
                exprs.extend(t["expr"] for t in p.get("targets", []))
                walk(p.get("panels", []))
        walk(dash["panels"])
        exprs += [v.get("definition", "") for v in dash["templating"]["list"]]
        plotted = {re.sub(r"_(bucket|sum|count)$", "", m) for e in exprs for m in re.findall(r"\bskylark_[a-z0-9_]+", e)}
        source = "\n".join(p.read_text(errors="replace") for d in ("services", "crates", "src")
                           for p in (ROOT / d).rglob("*.rs"))
        defined = set(re.findall(r'"(skylark_[a-z0-9_]+)"', source))
        assert plotted - defined == set(), f"metrics not defined in the source: {sorted(plotted - defined)}"
        assert DASHBOARD_MUST_PLOT <= plotted, f"not plotted: {sorted(DASHBOARD_MUST_PLOT - plotted)}"
        ids = []

        def ids_of(panels):
            for p in panels:
                ids.append(p["id"])
                ids_of(p.get("panels", []))
        ids_of(dash["panels"])
        assert len(ids) == len(set(ids)), "panel ids are unique"

    # --- the wiring, run ---------------------------------------------------------------
    skipped = live.skip_reason(skylark_binary())
    if skipped:
        print(f"skip live: the chart's environment, run as processes ({skipped})")
    else:
        @check("live: migrate, api, sfu, signaling, 2 packagers with the chart's env; "
               "publish, watch, HLS from both packagers")
        def _():
            live.run(skylark_binary(), render, objects)

    passed = sum(ok for _, ok in RESULTS)
    failed = len(RESULTS) - passed
    print(f"\nvalue sets: {', '.join(VALUE_SETS)}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
