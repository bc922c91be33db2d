"""The Responses API through the official openai-node SDK: runs
scripts/e2e/node/responses.mjs (openai pinned in its package-lock.json;
`make test-e2e` runs `npm ci` there) with node against a coordinator on the
mock engine, and asserts on the JSON it prints."""
import json
import os
import subprocess

import pytest

from responseskit import MODEL

NODE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "node")


@pytest.fixture(scope="module")
def results(server):
    assert os.path.isdir(os.path.join(NODE_DIR, "node_modules", "openai")), \
        "scripts/e2e/node/node_modules missing: run `make test-e2e` (it runs npm ci there)"
    env = dict(os.environ, GPTOSS_BASE_URL=server.base + "/v1", GPTOSS_MODEL=MODEL)
    p = subprocess.run(["node", os.path.join(NODE_DIR, "responses.mjs")], cwd=NODE_DIR, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def scenario(results, name):
    got = results[name]
    assert "error" not in got, got["error"]
    return got


def test_node_create(results):
    r = scenario(results, "create")
    assert r["id"].startswith("resp_") and r["object"] == "response" and r["status"] == "completed"
    assert r["model"] == MODEL
    assert r["kinds"] == ["reasoning", "message"]
    assert r["output_text"] == r["message_text"]
    assert "What is the capital of France?" in r["output_text"]
    assert r["reasoning_text"]
    u = r["usage"]
    assert u["input_tokens"] > 0 and u["output_tokens"] > 0
    assert u["total_tokens"] == u["input_tokens"] + u["output_tokens"]
    assert 0 < u["output_tokens_details"]["reasoning_tokens"] <= u["output_tokens"]
    assert r["metadata"] == {"client": "node"} and r["instructions"] == "Answer briefly."
    assert r["retrieved_equal"] is True


def test_node_stream_events(results):
    s = scenario(results, "streamEvents")
    t = s["types"]
    assert t[:2] == ["response.created", "response.in_progress"] and t[-1] == "response.completed"
    seq = s["sequence"]
    assert seq[0] in (0, 1) and all(b > a for a, b in zip(seq, seq[1:]))
    assert t.count("response.output_text.delta") > 5
    assert t.count("response.reasoning_text.delta") > 1
    for name in ("response.output_item.added", "response.output_item.done"):
        assert t.count(name) == 2
    assert t.index("response.content_part.added") < t.index("response.output_text.delta")
    assert t.index("response.output_text.done") < t.index("response.content_part.done", t.index("response.output_text.done"))
    assert s["final_status"] == "completed" and s["final_kinds"] == ["reasoning", "message"]
    assert s["text"] == s["final_text"] and "Count from one to ten" in s["text"]
    assert s["reasoning"] == s["final_reasoning"]
    assert s["retrieved_kinds"] == s["final_kinds"] and s["retrieved_text"] == s["text"]


def test_node_stream_helper(results):
    h = scenario(results, "streamHelper")
    assert len(h["deltas"]) > 5
    assert h["last_snapshot"] == "".join(h["deltas"]) == h["output_text"]
    assert h["status"] == "completed" and h["kinds"] == ["reasoning", "message"]
    assert "Say something about latency" in h["output_text"]


def test_node_stream_helper_function_call(results):
    t = scenario(results, "streamToolCall")
    assert t["kinds"] == ["reasoning", "function_call"]
    assert len(t["deltas"]) > 1
    # the snapshot is what output_item.added announced plus the deltas
    assert t["last_snapshot"] == "".join(t["deltas"]) == t["arguments"]
    assert json.loads(t["arguments"]) == {"city": "Weather in Rome?"}
    assert t["parsed_arguments"] == {"city": "Weather in Rome?"}  # strict tools are parsed


def test_node_function_call_round_trip(results):
    f = scenario(results, "toolRoundTrip")
    assert f["first_status"] == "completed" and f["first_kinds"] == ["reasoning", "function_call"]
    call = f["call"]
    assert call["name"] == "get_weather" and call["status"] == "completed"
    assert call["id"].startswith("fc_") and call["call_id"].startswith("call_")
    assert json.loads(call["arguments"]) == {"city": "What's the weather in Paris?"}
    assert f["second_status"] == "completed" and f["second_kinds"] == ["reasoning", "message"]
    assert f["previous_response_id"] == f["first_id"]
    assert "using the tool result" in f["output_text"] and f["result"] in f["output_text"]


def test_node_stored_items_and_delete(results):
    s = scenario(results, "stored")
    assert [(i["type"], i["role"], i["text"]) for i in s["items"]] == [
        ("message", "user", "one"), ("message", "assistant", "two"), ("message", "user", "three")]
    assert len({i["id"] for i in s["items"]}) == 3
    assert s["after_delete_status"] == 404 and s["after_delete_error"] == "NotFoundError"
