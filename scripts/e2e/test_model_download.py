"""Getting the model as users do: the coordinator downloads a Hugging Face
repository from a Hub (scripts/fakehub, which huggingface_hub itself is
tested against in test_fakehub_protocol.py) into the standard cache, serves
while it downloads and loads (503 + Retry-After, /health with the progress),
survives cut connections, corrupt bytes and a kill mid-file, refuses
missing repositories and missing tokens instead of serving the mock, marks
the mock when it does serve it, and shares its cache with huggingface_hub
in both directions.
"""
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request

import pytest
from openai import OpenAI

from conftest import BIN
from hubkit import hf_env, run_client, write_files

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TINY = os.path.join(ROOT, "models", "tiny")
REPO = "test-org/gpt-oss-tiny"
SERVED = ["config.json", "generation_config.json", "model.safetensors"]


@pytest.fixture(scope="module")
def repo_dir(tmp_path_factory):
    """The tiny checkpoint laid out as the gpt-oss repositories are: the
    HF layout at the top, the same weights again under original/ and metal/
    (never to be fetched), a README."""
    root = str(tmp_path_factory.mktemp("repo"))
    shutil.copy(os.path.join(TINY, "config.json"), root)
    shutil.copy(os.path.join(TINY, "model.safetensors"), root)
    write_files(root, {
        "generation_config.json": json.dumps({"eos_token_id": [200002, 199999, 200012]}).encode(),
        "original/model.safetensors": os.urandom(1 << 20),
        "metal/model.bin": os.urandom(1 << 20),
        "README.md": b"# tiny\n",
    })
    return root


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def get(url, timeout=5):
    """(status, headers, parsed JSON body) of a GET, errors included."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.headers, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.headers, json.loads(e.read())


def post_chat(srv, model):
    req = urllib.request.Request(srv.base + "/v1/chat/completions", method="POST",
                                 headers={"Content-Type": "application/json"},
                                 data=json.dumps({"model": model, "max_tokens": 3,
                                                  "messages": [{"role": "user", "content": "hi"}]}).encode())
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.headers, json.loads(e.read())


def check_snapshot(cache, repo, repo_dir, commit):
    """The cache holds exactly what serving needs, huggingface_hub's way."""
    base = os.path.join(cache, "models--" + repo.replace("/", "--"))
    with open(os.path.join(base, "refs", "main")) as f:
        assert f.read() == commit
    snap = os.path.join(base, "snapshots", commit)
    assert sorted(os.listdir(snap)) == SERVED
    for name in SERVED:
        p = os.path.join(snap, name)
        assert os.path.islink(p) and os.readlink(p).startswith("../../blobs/")
        assert sha256(p) == sha256(os.path.join(repo_dir, name)), name
    assert not [b for b in os.listdir(os.path.join(base, "blobs")) if b.endswith(".incomplete")]
    return snap


def run_coordinator(args, env, timeout=60):
    """Runs bin/coordinator to its end (a download, or a start that fails)."""
    return subprocess.run([BIN, *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_serves_while_downloading_then_the_model(make_server, start_hub, repo_dir, tmp_path):
    hub = start_hub("--repo", f"{REPO}={repo_dir}", "--throttle", "12000000")
    cache = str(tmp_path / "cache")
    srv = make_server("--model", REPO, env=hf_env(hub, cache), wait_ready=False)

    # The port is open at once; the model is on its way.
    status, _, h = get(srv.base + "/health")
    assert status == 200 and h["status"] == "starting" and h["phase"] == "downloading", h
    assert h["startup"]["repo"] == REPO and h["startup"]["source"] == "hub"
    files = {f["name"]: f for f in h["startup"]["download"]["files"]}
    assert set(files) == {"model.safetensors"} and files["model.safetensors"]["bytes_total"] == os.path.getsize(
        os.path.join(repo_dir, "model.safetensors"))
    status, headers, body = post_chat(srv, REPO)
    assert status == 503 and int(headers["Retry-After"]) >= 1 and body["error"]["code"] == "model_loading", body
    assert "downloading" in body["error"]["message"]
    assert get(srv.base + "/ready")[0] == 503

    # Progress moves, then the model serves.
    seen_progress = False
    deadline = time.time() + 60
    while time.time() < deadline:
        _, _, h = get(srv.base + "/health")
        d = h["startup"].get("download") or {}
        if h["phase"] == "downloading" and 0 < d.get("bytes_done", 0) < d.get("bytes_total", 0):
            seen_progress = True
        if h["phase"] == "ready":
            break
        time.sleep(0.1)
    assert h["phase"] == "ready" and h["status"] == "ok", h
    assert seen_progress
    client = OpenAI(base_url=srv.base + "/v1", api_key="unused")
    r = client.chat.completions.create(model=REPO, messages=[{"role": "user", "content": "hi"}], max_tokens=3)
    assert r.model == REPO and r.usage.completion_tokens == 3 and r.system_fingerprint.startswith("fp_")

    check_snapshot(cache, REPO, repo_dir, hub.repos[REPO])
    logs = srv.logs()
    assert '"downloading the model"' in logs and '"bytes_done"' in logs and '"model ready"' in logs
    reqs = hub.requests()["requests"]
    assert not [r for r in reqs if any(x in r["path"] for x in ("original", "metal", "README"))]
    assert not hub.requests()["cdn_auth_seen"]


def test_preset_from_the_hub_keeps_its_name(make_server, start_hub, repo_dir, tmp_path):
    hub = start_hub("--repo", f"openai/gpt-oss-20b={repo_dir}")
    srv = make_server("--model", "20b", env=hf_env(hub, str(tmp_path)), timeout=60)
    h = srv.get_json("/health")
    assert h["mode"] == "real" and h["model"] == "gpt-oss-20b" and h["context_length"] == 4096, h
    status, headers, body = post_chat(srv, "openai/gpt-oss-20b")
    assert status == 200 and "X-Gptoss-Mock" not in headers and body["model"] == "gpt-oss-20b"


def test_download_survives_cuts_and_corruption(start_hub, repo_dir, tmp_path):
    hub = start_hub("--repo", f"{REPO}={repo_dir}", "--cut", "model.safetensors:20000000:2",
                    "--corrupt", "config.json:1")
    cache = str(tmp_path / "cache")
    r = run_coordinator(["download", REPO], hf_env(hub, cache))
    assert r.returncode == 0, r.stderr
    snap = check_snapshot(cache, REPO, repo_dir, hub.repos[REPO])
    assert r.stdout.strip().splitlines()[-1] == snap
    ranges = [q["range"] for q in hub.requests()["requests"] if q.get("range")]
    assert "bytes=20000000-" in ranges and "bytes=40000000-" in ranges, ranges
    assert "checksum" in r.stderr  # the corrupt config.json was noticed and fetched again

    # Bytes that are always wrong: a clear error, nothing in the cache.
    hub2 = start_hub("--repo", f"{REPO}={repo_dir}", "--corrupt", "model.safetensors:1000")
    cache2 = str(tmp_path / "cache2")
    r = run_coordinator(["download", REPO], hf_env(hub2, cache2), timeout=120)
    assert r.returncode == 1 and "checksum mismatch" in r.stderr and "model.safetensors" in r.stderr, r.stderr
    base = os.path.join(cache2, "models--test-org--gpt-oss-tiny")
    assert not os.path.exists(os.path.join(base, "snapshots", hub2.repos[REPO], "model.safetensors"))
    want = sha256(os.path.join(repo_dir, "model.safetensors"))
    assert not [b for b in os.listdir(os.path.join(base, "blobs")) if b.startswith(want)]


def test_a_killed_download_resumes(make_server, start_hub, repo_dir, tmp_path):
    hub = start_hub("--repo", f"{REPO}={repo_dir}", "--throttle", "8000000")
    cache = str(tmp_path / "cache")
    srv = make_server("--model", REPO, env=hf_env(hub, cache), wait_ready=False)
    deadline = time.time() + 30
    done = 0
    while time.time() < deadline and done < 10_000_000:
        d = srv.get_json("/health")["startup"].get("download") or {}
        done = d.get("bytes_done", 0)
        time.sleep(0.1)
    assert done >= 10_000_000
    srv.proc.send_signal(signal.SIGKILL)
    srv.proc.wait()
    blobs = os.path.join(cache, "models--test-org--gpt-oss-tiny", "blobs")
    partial = [b for b in os.listdir(blobs) if b.endswith(".incomplete")]
    assert len(partial) == 1 and os.path.getsize(os.path.join(blobs, partial[0])) >= 10_000_000 - (1 << 20)

    hub.post("/_fake/reset")
    r = run_coordinator(["download", REPO], hf_env(hub, cache))
    assert r.returncode == 0, r.stderr
    check_snapshot(cache, REPO, repo_dir, hub.repos[REPO])
    ranges = [q["range"] for q in hub.requests()["requests"] if q.get("range")]
    assert len(ranges) == 1 and int(ranges[0][len("bytes="):-1]) >= 9_000_000, ranges


def test_tokens(start_hub, repo_dir, tmp_path):
    hub = start_hub("--repo", f"{REPO}={repo_dir}", "--private", REPO, "--token", "hf_secret")
    cache = str(tmp_path / "cache")
    # No token: the Hub answers as for a missing repository; the error says
    # what to do, and the server does not start (no mock for a repository).
    r = run_coordinator(["download", REPO], hf_env(hub, cache))
    assert r.returncode == 1 and "HF_TOKEN" in r.stderr and "repository not found" in r.stderr, r.stderr
    r = run_coordinator(["--model", REPO, "--port", "0"], hf_env(hub, cache))
    assert r.returncode == 1 and "HF_TOKEN" in r.stderr, r.stderr
    r = run_coordinator(["download", REPO], hf_env(hub, cache, token="hf_wrong"))
    assert r.returncode == 1 and "refused the token" in r.stderr, r.stderr
    # The token from HF_TOKEN, or from the file `hf auth login` writes.
    r = run_coordinator(["download", REPO], hf_env(hub, cache, token="hf_secret"))
    assert r.returncode == 0, r.stderr
    cache2 = str(tmp_path / "cache2")
    env = hf_env(hub, cache2)
    os.makedirs(env["HF_HOME"])
    with open(os.path.join(env["HF_HOME"], "token"), "w") as f:
        f.write("hf_secret\n")
    r = run_coordinator(["download", REPO], env)
    assert r.returncode == 0, r.stderr
    assert not hub.requests()["cdn_auth_seen"]


def test_mistakes_are_errors_not_the_mock(start_hub, repo_dir, tmp_path):
    hub = start_hub("--repo", f"{REPO}={repo_dir}")
    env = hf_env(hub, str(tmp_path))
    for args, words in [(["--model", "test-org/nothing"], "repository not found"),
                        (["--model", REPO, "--revision", "v9"], "revision not found"),
                        (["--model", "/no/such/dir"], "no such checkpoint directory"),
                        (["--model", "./models/nope"], "no such checkpoint directory")]:
        r = run_coordinator([*args, "--port", "0"], env)
        assert r.returncode == 1 and words in r.stderr and "MOCK" not in r.stderr, (args, r.stderr)


def test_unreachable_hub_serves_a_marked_mock_or_the_fallback(make_server, start_hub, repo_dir, tmp_path):
    hub = start_hub("--repo", f"{REPO}={repo_dir}")
    hub.post("/_fake/down?on=1")
    env = hf_env(hub, str(tmp_path))
    srv = make_server("--model", "20b", env=env)
    h = srv.get_json("/health")
    assert h["mode"] == "mock" and "cannot be reached" in h["mode_reason"] and h["phase"] == "ready", h
    status, headers, body = post_chat(srv, "gpt-oss-20b")
    assert status == 200 and headers["X-Gptoss-Mock"] == "true" and body["system_fingerprint"].startswith("mock_")
    assert "MOCK MODE" in srv.logs()
    # The same with --mock=false: no start.
    r = run_coordinator(["--model", "20b", "--mock=false", "--port", "0"], env)
    assert r.returncode == 1 and "cannot be reached" in r.stderr
    # With a fallback model (make run's): the tiny model, said loudly.
    srv = make_server("--model", "20b", "--fallback-model", TINY, env=env)
    h = srv.get_json("/health")
    assert h["mode"] == "real" and h["model"] == "tiny" and "FALLBACK" in h["mode_reason"], h
    assert "FALLBACK MODEL" in srv.logs()


def test_our_cache_is_huggingface_hubs(start_hub, make_server, repo_dir, tmp_path):
    hub = start_hub("--repo", f"{REPO}={repo_dir}")
    commit = hub.repos[REPO]
    # Ours, read by huggingface_hub with no network.
    ours = str(tmp_path / "ours")
    r = run_coordinator(["download", REPO], hf_env(hub, ours))
    assert r.returncode == 0, r.stderr
    snap = r.stdout.strip().splitlines()[-1]
    res = run_client(None, ours, [{"op": "snapshot", "repo": REPO},
                                  {"op": "file", "repo": REPO, "filename": "config.json"},
                                  {"op": "file", "repo": REPO, "filename": "model.safetensors", "revision": commit}],
                     offline=True)
    assert [x.get("path") for x in res] == [snap, os.path.join(snap, "config.json"),
                                             os.path.join(snap, "model.safetensors")], res

    # huggingface_hub's, read by us offline: the download command finds
    # it, and the server serves it from the cache.
    theirs = str(tmp_path / "theirs")
    res = run_client(hub, theirs, [{"op": "snapshot", "repo": REPO, "allow": ["*.json", "*.safetensors"]}])
    assert res[0]["ok"], res
    hub.post("/_fake/down?on=1")
    env = hf_env(hub, theirs, offline=True)
    r = run_coordinator(["download", REPO], env)
    assert r.returncode == 0 and r.stdout.strip().splitlines()[-1] == res[0]["path"], r.stderr
    srv = make_server("--model", REPO, env=env, timeout=60)
    h = srv.get_json("/health")
    assert h["mode"] == "real" and h["startup"]["source"] == "cache" and "HF_HUB_OFFLINE" in h["mode_reason"], h
    assert post_chat(srv, REPO)[0] == 200
