"""The Procfile under foreman with a real nats-server: NATS, the coordinator
waiting for external workers, and two CPU workers in tensor parallelism on
the tiny checkpoint, serving a chat request. .ci/run installs foreman
(ruby-foreman) and nats-server from Debian."""
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request

import pytest

from conftest import free_port

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

pytestmark = pytest.mark.skipif(
    not (shutil.which("foreman") and shutil.which("nats-server")
         and os.path.exists(os.path.join(ROOT, "models", "tiny", "model.safetensors"))),
    reason="needs foreman and nats-server (Debian ruby-foreman, nats-server) and models/tiny")


def test_procfile_under_foreman():
    port, nats_port = free_port(), free_port()
    store = tempfile.mkdtemp(prefix="procfile-nats-")
    env_file = tempfile.NamedTemporaryFile("w", suffix=".env", delete=False)
    env_file.write(f"GPTOSS_NATS_TOKEN=procfile-test\nGPTOSS_PORT={port}\nNATS_PORT={nats_port}\nGPTOSS_NATS_STORE={store}\n")
    env_file.close()
    log = open(os.path.join(tempfile.gettempdir(), f"foreman-{port}.log"), "w")
    proc = subprocess.Popen(["foreman", "start", "-f", "Procfile", "-e", env_file.name, "-d", ROOT],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(base + "/ready", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, open(log.name).read()
            assert time.time() < deadline, "the Procfile's coordinator never became ready:\n" + open(log.name).read()
            time.sleep(0.3)
        with urllib.request.urlopen(base + "/health", timeout=5) as r:
            health = json.load(r)
        assert health["mode"] == "real" and sorted(w["rank"] for w in health["workers"]) == [0, 1]
        req = urllib.request.Request(base + "/v1/chat/completions", method="POST",
                                     headers={"Content-Type": "application/json"},
                                     data=json.dumps({"model": "tiny", "max_tokens": 6,
                                                      "messages": [{"role": "user", "content": "Hi"}]}).encode())
        with urllib.request.urlopen(req, timeout=30) as r:
            body = json.load(r)
        assert body["usage"]["completion_tokens"] <= 6 and body["choices"][0]["finish_reason"] in ("length", "stop")
        # A stored response lives in the external nats-server's JetStream.
        req = urllib.request.Request(base + "/v1/responses", method="POST", headers={"Content-Type": "application/json"},
                                     data=json.dumps({"model": "tiny", "max_output_tokens": 16, "input": "Hi"}).encode())
        with urllib.request.urlopen(req, timeout=30) as r:
            created = json.load(r)
        with urllib.request.urlopen(base + "/v1/responses/" + created["id"], timeout=5) as r:
            assert json.load(r) == created
        assert os.listdir(os.path.join(store, "jetstream"))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        os.unlink(env_file.name)
        shutil.rmtree(store, ignore_errors=True)
