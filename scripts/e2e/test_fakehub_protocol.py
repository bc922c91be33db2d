"""The fake Hub (scripts/fakehub, package coordinator/hub/hubtest) against
the official client, huggingface_hub: if the official client downloads from
the fake exactly as from huggingface.co, the Go downloader's tests against
the fake mean something.

The binary comes from FAKEHUB_BIN, else it is built into bin/fakehub. The
client runs in a subprocess of this interpreter, whose venv has
huggingface_hub (scripts/requirements-e2e.txt).
"""
import hashlib
import json
import os
import re

import pytest

from hubkit import run_client, write_files

TOKEN = "hf_fakehub_test_token"
LFS_FILES = {"model.safetensors", "original/x.bin", "metal/model.bin"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A small gpt-oss-like repository: regular JSON files and LFS weights,
    at the top and in original/ and metal/."""
    root = str(tmp_path_factory.mktemp("model"))
    files = {
        "config.json": json.dumps({"model_type": "gpt_oss", "num_hidden_layers": 2}).encode(),
        "generation_config.json": json.dumps({"eos_token_id": [200002, 199999]}).encode(),
        "model.safetensors": os.urandom(3 << 20),
        "original/x.bin": os.urandom(200_000),
        "metal/model.bin": os.urandom(50_000),
        "README.md": b"# fake model\n",
    }
    write_files(root, files)
    return root, files


def git_blob_sha1(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def blob_name(rel, data):
    """The cache's blob name: the sha256 for an LFS file (X-Linked-Etag),
    the git blob sha1 for a regular one (ETag)."""
    return hashlib.sha256(data).hexdigest() if rel in LFS_FILES else git_blob_sha1(data)


def snapshot_files(snapshot):
    out = set()
    for dirpath, _, names in os.walk(snapshot):
        for n in names:
            out.add(os.path.relpath(os.path.join(dirpath, n), snapshot).replace(os.sep, "/"))
    return out


def test_snapshot_download_cache_layout(start_hub, model_dir, tmp_path):
    root, files = model_dir
    hub = start_hub("--repo", f"org/model={root}", "--token", TOKEN, "--tree-page-size", "2")
    assert set(hub.ready) >= {"hub", "cdn", "repos"}
    commit = hub.ready["repos"]["org/model"]
    assert re.fullmatch(r"[0-9a-f]{40}", commit)
    cache = str(tmp_path / "cache")

    snap, single = run_client(hub, cache, [
        {"op": "snapshot", "repo": "org/model", "allow": ["*.json", "*.safetensors", "original/*"]},
        {"op": "file", "repo": "org/model", "filename": "metal/model.bin"},
    ], token=TOKEN)
    assert snap["ok"], snap
    assert single["ok"], single

    repo_dir = os.path.join(cache, "models--org--model")
    snapshot = os.path.join(repo_dir, "snapshots", commit)
    assert os.path.realpath(snap["path"]) == os.path.realpath(snapshot)
    assert os.path.realpath(single["path"]) == os.path.realpath(os.path.join(snapshot, "metal", "model.bin"))
    with open(os.path.join(repo_dir, "refs", "main")) as f:
        assert f.read() == commit
    want = {"config.json", "generation_config.json", "model.safetensors", "original/x.bin", "metal/model.bin"}
    assert snapshot_files(snapshot) == want  # README.md was not asked for
    for rel in want:
        link = os.path.join(snapshot, rel)
        with open(link, "rb") as f:
            assert f.read() == files[rel], rel
        assert os.path.islink(link), rel
        assert os.path.basename(os.readlink(link)) == blob_name(rel, files[rel]), rel
    assert sorted(os.listdir(os.path.join(repo_dir, "blobs"))) == sorted(blob_name(r, files[r]) for r in want)

    seen = hub.requests()
    reqs = seen["requests"]
    cdn_gets = [r for r in reqs if r["host"] == "cdn" and r["method"] == "GET"]
    assert sorted(r["file"] for r in cdn_gets) == sorted(LFS_FILES)
    assert not seen["cdn_auth_seen"], "the token was sent to the CDN"
    assert not any(r["auth"] for r in reqs if r["host"] == "cdn")
    assert all(r["auth"] for r in reqs if r["host"] == "hub"), "HF_TOKEN not sent to the Hub"
    # The tree listing was followed over several pages (page size 2).
    assert any(r["path"].startswith("/api/models/org/model/tree/") and "cursor=" in r.get("query", "")
               for r in reqs)

    # The Hub down (connections refused): the client falls back to its cache.
    hub.post("/_fake/down?on=1")
    try:
        offline = run_client(hub, cache, [
            {"op": "file", "repo": "org/model", "filename": "config.json"},
            {"op": "snapshot", "repo": "org/model", "allow": ["*.json"]},
        ], token=TOKEN)
    finally:
        hub.post("/_fake/down?on=0")
    assert all(r["ok"] for r in offline), offline
    assert os.path.realpath(offline[0]["path"]) == os.path.realpath(os.path.join(snapshot, "config.json"))


def test_private_repo_needs_token(start_hub, model_dir, tmp_path):
    root, files = model_dir
    hub = start_hub("--repo", f"org/secret={root}", "--private", "org/secret", "--token", TOKEN)
    ops = [{"op": "file", "repo": "org/secret", "filename": "config.json"},
           {"op": "snapshot", "repo": "org/secret", "allow": ["*.json"]}]

    anonymous = run_client(hub, str(tmp_path / "anon"), ops)
    assert [r["ok"] for r in anonymous] == [False, False], anonymous
    assert anonymous[0]["error"] == "RepositoryNotFoundError", anonymous[0]

    wrong = run_client(hub, str(tmp_path / "wrong"), ops[:1], token="hf_wrong")
    assert not wrong[0]["ok"] and "Invalid credentials in Authorization header" in wrong[0]["message"], wrong

    good = run_client(hub, str(tmp_path / "good"), ops, token=TOKEN)
    assert all(r["ok"] for r in good), good
    with open(good[0]["path"], "rb") as f:
        assert f.read() == files["config.json"]


def test_cut_is_resumed_and_corrupt_served(start_hub, tmp_path):
    # huggingface_hub writes what it reads in 10 MiB chunks and resumes from
    # the last whole chunk: the cut must come after the first one for the
    # resume to be a Range request (else it starts over).
    big = os.urandom(12 << 20)
    cut_at = 11 << 20
    config = json.dumps({"model_type": "gpt_oss"}).encode()
    root = str(tmp_path / "big")
    write_files(root, {"model.safetensors": big, "config.json": config})
    hub = start_hub("--repo", f"org/big={root}", "--cut", f"model.safetensors:{cut_at}:1",
                    "--corrupt", "config.json:1")

    weights, cfg = run_client(hub, str(tmp_path / "cache"), [
        {"op": "file", "repo": "org/big", "filename": "model.safetensors"},
        {"op": "file", "repo": "org/big", "filename": "config.json"},
    ])
    assert weights["ok"], weights
    with open(weights["path"], "rb") as f:
        assert f.read() == big

    gets = [r for r in hub.requests()["requests"]
            if r["host"] == "cdn" and r["method"] == "GET" and r["file"] == "model.safetensors"]
    assert len(gets) == 2, gets
    assert gets[0]["fault"] == "cut" and gets[0].get("range", "") == "", gets[0]
    m = re.fullmatch(r"bytes=(\d+)-", gets[1].get("range", ""))
    assert m and 0 < int(m.group(1)) <= cut_at and gets[1]["status"] == 206, gets[1]

    # Corrupt: same length, other bytes (huggingface_hub does not hash
    # regular files; a downloader that checks the git sha1 would notice).
    assert cfg["ok"], cfg
    with open(cfg["path"], "rb") as f:
        served = f.read()
    assert len(served) == len(config) and served != config
