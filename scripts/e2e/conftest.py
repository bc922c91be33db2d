"""Fixtures that start a real coordinator process on a free loopback port.

The binary comes from COORDINATOR_BIN (make test-e2e builds it). Each server
runs the mock engine with fast pacing so the suite stays quick.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest

from hubkit import FakeHub, fakehub_binary

BIN = os.environ.get("COORDINATOR_BIN", os.path.join(os.path.dirname(__file__), "..", "..", "bin", "coordinator"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Tests never touch the network or the developer's Hugging Face cache: an
# empty cache, offline (tests that exercise the Hub point HF_ENDPOINT at
# scripts/fakehub and turn this off).
TEST_HUB_CACHE = os.path.join("/tmp", f"gptoss-e2e-hf-{os.getpid()}")


class Coordinator:
    def __init__(self, *args, env=None, wait_ready=True, timeout=20):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        full_env = dict(os.environ)
        full_env.update({"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": TEST_HUB_CACHE, "HF_TOKEN": ""})
        # Each server keeps its stored responses in its own data directory,
        # removed when it stops, unless the test names one (to restart on it).
        self.own_data = None
        if "GPTOSS_DATA_DIR" not in (env or {}):
            self.own_data = tempfile.mkdtemp(prefix="gptoss-e2e-data-")
            full_env["GPTOSS_DATA_DIR"] = self.own_data
        full_env.update(env or {})
        cmd = [BIN, "--model", "20b", "--profile", "latency_first", "--host", "127.0.0.1",
               "--port", str(self.port), "--mock-step", "2ms", "--log-format", "json", *args]
        self.log_path = f"/tmp/coordinator-e2e-{self.port}.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=full_env)
        # The port opens before the model is loaded: wait for the phase
        # too, unless the test watches the start-up itself.
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"coordinator exited early: {open(self.log_path).read()}")
            try:
                with urllib.request.urlopen(self.base + "/health", timeout=1) as r:
                    phase = json.loads(r.read()).get("phase")
                    if r.status == 200 and (not wait_ready or phase == "ready"):
                        return
                    if phase == "failed":
                        raise RuntimeError(f"coordinator failed to start: {open(self.log_path).read()}")
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("coordinator did not become healthy")

    def get_json(self, path):
        with urllib.request.urlopen(self.base + path, timeout=5) as r:
            return json.loads(r.read())

    def logs(self):
        self.log.flush()
        return open(self.log_path).read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        if self.own_data:
            shutil.rmtree(self.own_data, ignore_errors=True)


@pytest.fixture(scope="module")
def server():
    c = Coordinator()
    yield c
    c.stop()


@pytest.fixture
def make_server():
    started = []

    def make(*args, env=None, **kw):
        c = Coordinator(*args, env=env, **kw)
        started.append(c)
        return c

    yield make
    for c in started:
        c.stop()


@pytest.fixture(scope="session")
def fakehub_bin():
    return fakehub_binary()


@pytest.fixture
def start_hub(fakehub_bin):
    """Starts fake Hubs (scripts/fakehub) with the given flags; stopped after the test."""
    started = []

    def start(*args):
        h = FakeHub(fakehub_bin, *args)
        started.append(h)
        return h

    yield start
    for h in started:
        h.stop()
