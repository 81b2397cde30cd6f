"""The chart's wiring, run: each workload of a default render becomes a local process of
the real binary with exactly the environment the chart gives its container.

Only what a cluster provides is substituted: Secret references by the rendered Secret's
data, the downward API (pod IP, host IP: 127.0.0.1; pod name), Service names by
127.0.0.1, and, because every pod here shares one network namespace, each listening
port by a free one (also in the URLs that point at it). Then: `skylark migrate` (the
hook Job) exits 0; api, sfu, signaling and two packagers get ready; a creator makes a
room through the api; `skylark loadtest` publishes and watches through signaling (WHIP
and WHEP, placed on the SFU through its advertised gRPC URL); both packagers serve the
room's HLS (one holds it, the other passes the request on to the advertised address);
`/metrics` answers on each workload's internal port and on no public one.

Needs the binary and PostgreSQL and Redis on 127.0.0.1 (as scripts/test provides);
`run()` returns a reason to skip when one is missing.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

DATABASE_URL = os.environ.get("SKYLARK_HELM_LIVE_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("SKYLARK_HELM_LIVE_REDIS_URL", "redis://127.0.0.1:6379")
JWT = "helm-live-check-secret-helm-live-check-secret"
REPLICAS = {"api": 1, "sfu": 1, "signaling": 1, "packager": 2}


def route_backend(ingress: dict, request_path: str) -> str | None:
    """The Service ingress-nginx (use-regex) sends a path to: every path is a
    case-insensitive regex anchored at the start, the longest tried first."""
    paths = []
    for rule in ingress["spec"]["rules"]:
        for p in rule["http"]["paths"]:
            paths.append((p["path"], p["backend"]["service"]["name"]))
    for path, svc in sorted(paths, key=lambda p: len(p[0]), reverse=True):
        if re.match(path, request_path, re.IGNORECASE):
            return svc
    return None


HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade",
              "te", "trailer", "content-length"}


class IngressProxy(ThreadingHTTPServer):
    """The rendered Ingress as a small HTTP reverse proxy (no WebSocket upgrade)."""
    daemon_threads = True

    def __init__(self, route):
        self.route = route  # request path -> (host, port) or None
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _forward(self):
        target = self.server.route(self.path.split("?", 1)[0])
        if target is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        headers["X-Forwarded-For"] = self.client_address[0]
        conn = http.client.HTTPConnection(*target, timeout=30)
        try:
            conn.request(self.command, self.path, body, headers)
            r = conn.getresponse()
            data = r.read()
        except OSError:
            self.send_response(502)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        finally:
            conn.close()
        self.send_response(r.status)
        for k, v in r.getheaders():
            if k.lower() not in HOP_BY_HOP:
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _forward


def reachable(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(method: str, url: str, body=None, token=None, timeout=10):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError as e:
        return 0, str(e).encode()


class Cluster:
    def __init__(self, binary: Path, objs: list[dict], fullname: str, workdir: Path):
        self.binary, self.objs, self.fullname, self.workdir = binary, objs, fullname, workdir
        self.procs: list[tuple[str, subprocess.Popen, Path]] = []
        # (component, container port) -> local port, per instance
        self.ports: dict[tuple[str, int, int], int] = {}
        self.secrets = {s["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in s["data"].items()}
                        for s in objs if s["kind"] == "Secret"}

    def container(self, component: str) -> dict:
        for o in self.objs:
            if o["kind"] in ("Deployment", "DaemonSet", "Job") and \
                    o["metadata"]["labels"]["app.kubernetes.io/component"] == component:
                return o["spec"]["template"]["spec"]["containers"][0]
        raise AssertionError(f"no workload for {component}")

    def port(self, component: str, container_port: int, instance: int = 0) -> int:
        key = (component, container_port, instance)
        if key not in self.ports:
            udp = any(p["containerPort"] == container_port and p["protocol"] == "UDP"
                      for p in self.container(component).get("ports", []))
            self.ports[key] = free_port(socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
        return self.ports[key]

    def http_port(self, component: str, instance: int = 0, name: str = "http") -> int:
        """The local port of the container port `name` (http, internal, …)."""
        c = self.container(component)
        return self.port(component, next(p["containerPort"] for p in c["ports"] if p["name"] == name), instance)

    def service_component(self, service: str) -> str:
        for s in self.objs:
            if s["kind"] == "Service" and s["metadata"]["name"] == service:
                return s["spec"]["selector"]["app.kubernetes.io/component"]
        raise AssertionError(f"env names Service {service}, which the chart does not render")

    def env(self, component: str, instance: int) -> dict[str, str]:
        """The container's environment as the kubelet would set it, localised."""
        c = self.container(component)
        out: dict[str, str] = {}
        for e in c.get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref and ref.get("optional") and ref["key"] not in self.secrets[ref["name"]]:
                continue  # the kubelet leaves an optional variable out
            if "value" in e:
                v = re.sub(r"\$\((\w+)\)", lambda m: out[m.group(1)], e["value"])
            else:
                src = e["valueFrom"]
                if "secretKeyRef" in src:
                    v = self.secrets[src["secretKeyRef"]["name"]][src["secretKeyRef"]["key"]]
                else:
                    field = src["fieldRef"]["fieldPath"]
                    v = {"status.podIP": "127.0.0.1", "status.hostIP": "127.0.0.1",
                         "metadata.name": f"{component}-{instance}"}[field]
            out[e["name"]] = v
        own = {p["containerPort"] for p in c.get("ports", [])}
        for k, v in out.items():
            # Another Service: http://<fullname>-api:7001 -> http://127.0.0.1:<api's port>
            v = re.sub(r"\b(" + re.escape(self.fullname) + r"-[a-z]+):(\d+)",
                       lambda m: f"127.0.0.1:{self.port(self.service_component(m.group(1)), int(m.group(2)))}", v)
            # This pod's own listen/advertise addresses.
            v = re.sub(r"\b(?:0\.0\.0\.0|127\.0\.0\.1):(\d+)",
                       lambda m: f"127.0.0.1:{self.port(component, int(m.group(1)), instance)}"
                       if int(m.group(1)) in own else m.group(0), v)
            out[k] = v
        if "SKYLARK_DATA_DIR" in out:  # the emptyDir
            d = self.workdir / f"{component}-{instance}-data"
            d.mkdir(parents=True, exist_ok=True)
            out["SKYLARK_DATA_DIR"] = str(d)
        return out

    def start(self, component: str, instance: int = 0) -> dict[str, str]:
        env = self.env(component, instance)
        log = self.workdir / f"{component}-{instance}.log"
        args = self.container(component)["args"]
        p = subprocess.Popen([str(self.binary), *args], env=env, cwd=self.workdir,
                             stdin=subprocess.DEVNULL, stdout=log.open("wb"), stderr=subprocess.STDOUT)
        self.procs.append((f"{component}-{instance}", p, log))
        return env

    def logs(self) -> str:
        return "\n".join(f"--- {n} (last lines)\n" + "\n".join(l.read_text(errors="replace").splitlines()[-15:])
                         for n, _, l in self.procs)

    def stop(self):
        for _, p, _ in self.procs:
            if p.poll() is None:
                p.terminate()
        for _, p, _ in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def wait_ready(url: str, cluster: Cluster, what: str, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if request("GET", url, timeout=2)[0] == 200:
            return
        for n, p, _ in cluster.procs:
            assert p.poll() is None, f"{n} exited ({p.returncode})\n{cluster.logs()}"
        time.sleep(0.2)
    raise AssertionError(f"{what}: {url} not ready in {timeout}s\n{cluster.logs()}")


def skip_reason(binary: Path) -> str | None:
    """Why the live check cannot run here, or None."""
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        return f"no binary at {binary}"
    if not (reachable(5432) and reachable(6379)):
        return "PostgreSQL (5432) and Redis (6379) are not both up on 127.0.0.1"
    return None


def run(binary: Path, render, objects) -> None:
    """Runs the live check; raises AssertionError on a failure."""
    proxy = IngressProxy(route=lambda path: None)  # its port is the public URL's
    prefix = f"helm-live-{os.getpid()}-{proxy.server_address[1]}:"
    values = {
        "database": {"url": DATABASE_URL},
        "redis": {"url": REDIS_URL, "prefix": prefix},
        "jwtSecret": JWT,
        "publicUrl": proxy.url,
        "ingress": {"enabled": True, "host": "127.0.0.1"},
        # The creator below gets its token at once (no mail round trip).
        "signup": {"mode": "open"},
    }
    objs = objects(render(values))
    fullname = next(o["metadata"]["name"] for o in objs if o["kind"] == "Secret"
                    and "migrate" not in o["metadata"]["name"])
    ingress = next(o for o in objs if o["kind"] == "Ingress")
    workdir = Path(tempfile.mkdtemp(prefix="skylark-helm-live-"))
    cluster = Cluster(binary, objs, fullname, workdir)
    turn = iter(range(1 << 30))

    def route(path: str):
        svc = route_backend(ingress, path)
        if svc is None:
            return None
        comp = cluster.service_component(svc)
        return ("127.0.0.1", cluster.http_port(comp, next(turn) % REPLICAS[comp]))
    proxy.route = route
    public = proxy.url
    try:
        # The pre-install hook.
        job = subprocess.run([str(binary), *cluster.container("migrate")["args"]],
                             env=cluster.env("migrate", 0), cwd=workdir, capture_output=True,
                             text=True, timeout=120)
        assert job.returncode == 0, f"skylark migrate failed:\n{job.stdout}{job.stderr}"

        for comp in ("api", "sfu", "signaling", "packager"):
            for i in range(REPLICAS[comp]):
                env = cluster.start(comp, i)
                wait_ready(f"http://{env['SKYLARK_HTTP_ADDR']}/readyz", cluster, f"{comp}-{i}")
                wait_ready(f"http://{env['SKYLARK_INTERNAL_ADDR']}/metrics", cluster, f"{comp}-{i} internal")
        packagers = [f"http://127.0.0.1:{cluster.http_port('packager', i)}" for i in range(REPLICAS["packager"])]

        # A creator, through the ingress.
        status, body = request("POST", f"{public}/api/v1/auth/signup", {
            "email": f"helm-{os.getpid()}-{proxy.server_address[1]}@example.com",
            "password": "correct horse battery", "display_name": "Helm check"})
        assert status == 201, f"signup: {status} {body[:300]!r}\n{cluster.logs()}"
        token = json.loads(body)["access_token"]
        status, body = request("POST", f"{public}/api/v1/rooms",
                            {"title": "helm", "visibility": "public", "mode": "sfu"}, token)
        assert status == 201, f"create room: {status} {body[:300]!r}"
        created = json.loads(body)
        room, key = created["room"]["id"], created["stream_key"]
        assert created["ingest"]["whip_url"] == f"{public}/whip/{room}", created["ingest"]
        # Served by signaling (the regex path), not the api.
        status, body = request("GET", f"{public}/api/v1/rooms/{room}/playback")
        assert status == 200 and json.loads(body)["webrtc"]["whep_url"] == f"{public}/whep/{room}", \
            f"playback: {status} {body[:300]!r}"
        status, body = request("GET", f"{public}/watch/{room}")
        assert status == 200 and b"<html" in body.lower(), f"/watch page: {status}"

        load = subprocess.Popen(
            [str(binary), "loadtest", "--url", public, "--room", room, "--stream-key", key,
             "--viewers", "2", "--ramp", "0", "--duration", "8s", "--json"],
            env={"RUST_LOG": "off", "PATH": os.environ.get("PATH", "")}, cwd=workdir,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            # HLS from every packager (one holds the room, the other passes the request
            # to its advertised address) and through the ingress.
            pending = set(packagers) | {public}
            deadline = time.monotonic() + 25
            while pending and time.monotonic() < deadline:
                for p in list(pending):
                    status, body = request("GET", f"{p}/hls/{room}/index.m3u8", timeout=5)
                    if status == 200 and body.startswith(b"#EXTM3U"):
                        pending.discard(p)
                time.sleep(0.3)
            if pending:
                load.kill()
                out, err = load.communicate()
                raise AssertionError(f"no HLS playlist from {sorted(pending)}\n"
                                     f"loadtest: {err[-1500:]}\n{cluster.logs()}")
            out, err = load.communicate(timeout=90)
        finally:
            if load.poll() is None:
                load.kill()
                load.communicate()
        assert load.returncode == 0, f"loadtest failed ({load.returncode}):\n{err[-2000:]}\n{cluster.logs()}"
        report = json.loads(out.strip())
        assert report["viewers"]["connected"] == 2 and report["viewers"]["failed"] == 0, report["viewers"]
        status, body = request("GET", f"http://127.0.0.1:{cluster.http_port('sfu', name='internal')}/metrics")
        assert status == 200 and b"skylark_sfu_subscribers" in body, "SFU /metrics on the internal port"
        # Never on a public port: not a pod's HTTP port, not through the ingress.
        for url in [f"http://127.0.0.1:{cluster.http_port('sfu')}/metrics", f"{public}/metrics"] + \
                [f"{p}/metrics" for p in packagers]:
            status, _ = request("GET", url)
            assert status == 404, f"{url}: {status}"
    finally:
        cluster.stop()
        proxy.shutdown()
        shutil.rmtree(workdir, ignore_errors=True)
