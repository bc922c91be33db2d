"""Helpers for the tests that download models: the fake Hub process
(scripts/fakehub), and the official client, huggingface_hub, run in a
subprocess of this interpreter (its venv has it: scripts/requirements-e2e.txt).
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

# The interpreter that runs huggingface_hub: this one. make test installs
# it; a missing client is a failure, not a skip.
HF_PYTHON = sys.executable


def fakehub_binary():
    """bin/fakehub from FAKEHUB_BIN (make test-e2e builds it), else built now."""
    explicit = os.environ.get("FAKEHUB_BIN")
    if explicit:
        return explicit
    out = os.path.join(ROOT, "bin", "fakehub")
    env = dict(os.environ)
    env.setdefault("CGO_CFLAGS", "-O2 -g -Wno-deprecated-declarations")
    r = subprocess.run(["go", "build", "-o", out, "./scripts/fakehub"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"go build ./scripts/fakehub failed:\n{r.stderr}"
    return out


class FakeHub:
    """A running fakehub process (stopped with SIGTERM), ready once its
    ready file appears: .hub is HF_ENDPOINT, .control the /_fake/ endpoints
    (up even while the Hub is down)."""

    def __init__(self, binary, *args):
        self.dir = tempfile.mkdtemp(prefix="fakehub-")
        ready_path = os.path.join(self.dir, "ready.json")
        self.log_path = os.path.join(self.dir, "fakehub.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([binary, "--ready-file", ready_path, *args],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 20
        while not os.path.exists(ready_path):
            if self.proc.poll() is not None:
                raise RuntimeError(f"fakehub exited early: {self.logs()}")
            if time.time() > deadline:
                self.stop()
                raise RuntimeError(f"fakehub never became ready: {self.logs()}")
            time.sleep(0.02)
        with open(ready_path) as f:
            self.ready = json.load(f)
        self.hub, self.cdn, self.control = self.ready["hub"], self.ready["cdn"], self.ready["control"]
        self.repos = self.ready["repos"]

    def logs(self):
        self.log.flush()
        with open(self.log_path) as f:
            return f.read()

    def requests(self):
        with urllib.request.urlopen(self.control + "/_fake/requests", timeout=5) as r:
            return json.load(r)

    def post(self, path):
        req = urllib.request.Request(self.control + path, method="POST", data=b"")
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.load(r)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def write_files(root, files):
    for rel, data in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)


def hf_env(hub, cache, token=None, offline=False):
    """The environment of a huggingface_hub (or coordinator) process that
    talks to hub and keeps its files in cache: nothing inherited from HF_*,
    no token file (HF_HOME is inside the cache), the token only when given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update({
        "HF_ENDPOINT": hub.hub if hub else "http://127.0.0.1:9",
        "HF_HUB_CACHE": cache,
        "HF_HOME": os.path.join(cache, ".hf-home"),
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HUB_OFFLINE": "1" if offline else "0",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    })
    if token is not None:
        env["HF_TOKEN"] = token
    return env


# Runs huggingface_hub operations in order, and prints one JSON result per
# operation: {"ok": true, "path": ...} or {"ok": false, "error": class, "message": ...}.
CLIENT = r"""
import json, sys
import huggingface_hub as hf
results = []
for op in json.loads(sys.argv[1]):
    try:
        if op["op"] == "snapshot":
            path = hf.snapshot_download(op["repo"], allow_patterns=op.get("allow"))
        else:
            path = hf.hf_hub_download(op["repo"], op["filename"], revision=op.get("revision"))
        results.append({"ok": True, "path": path})
    except Exception as e:
        results.append({"ok": False, "error": type(e).__name__, "message": str(e)})
print(json.dumps(results))
"""


def run_client(hub, cache, ops, token=None, offline=False):
    """Runs CLIENT against hub (None: nowhere) in the environment hf_env
    gives: only HF_TOKEN (when given) for auth, no token file."""
    env = hf_env(hub, cache, token=token, offline=offline)
    r = subprocess.run([HF_PYTHON, "-c", CLIENT, json.dumps(ops)], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, f"client failed:\n{r.stderr}\nfakehub log:\n{hub.logs() if hub else ''}"
    return json.loads(r.stdout.strip().splitlines()[-1])
