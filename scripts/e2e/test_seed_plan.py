"""The user's original test plan (shared/seed, for the Python server we
replace), request by request and verbatim, against our coordinator in mock
mode: `coordinator --model 20b --profile latency_first --port <free>`."""
import json
import signal
import subprocess
import threading
import time

import openai


def curl(server, *args):
    out = subprocess.run(["curl", "-s", *args], capture_output=True, text=True, timeout=60, check=True)
    return out.stdout


def post(server, body):
    return curl(server, "-X", "POST", server.base + "/v1/chat/completions",
                "-H", "Content-Type: application/json", "-d", body)


def test_phase1_endpoints(server):
    health = json.loads(curl(server, server.base + "/health"))
    assert health["status"] == "ok" and health["mode"] == "mock" and health["model"] == "gpt-oss-20b"
    assert "reason" not in health or health["mode_reason"]
    stats = json.loads(curl(server, server.base + "/stats"))
    assert "total" in stats["stats"] and "latency_first" in stats["stats"]["profiles"]
    r = json.loads(post(server, '''{
    "model": "gpt-oss-20b",
    "messages": [{"role": "user", "content": "Hello"}],
    "max_tokens": 50
  }'''))
    assert r["choices"][0]["message"]["content"]
    assert r["usage"]["completion_tokens"] <= 50


def test_phase1_startup_log_says_mock(server):
    assert "MOCK MODE" in server.logs()


def test_phase2_inference_profiles_streaming(server):
    r = json.loads(post(server, '''{
    "model": "gpt-oss-20b",
    "messages": [{"role": "user", "content": "What is Python?"}],
    "max_tokens": 100,
    "temperature": 0.7
  }'''))
    assert r["choices"][0]["finish_reason"] in ("stop", "length")
    r = json.loads(post(server, '''{
    "model": "gpt-oss-20b",
    "messages": [{"role": "user", "content": "Write a hello world function"}],
    "max_tokens": 150
  }'''))
    assert r["usage"]["completion_tokens"] <= 150
    # Profile switch per request: quality_first allows the larger budget.
    r = json.loads(post(server, '''{
    "model": "gpt-oss-20b",
    "messages": [{"role": "user", "content": "Explain recursion in detail"}],
    "max_tokens": 300,
    "profile": "quality_first"
  }'''))
    assert r["choices"][0]["message"]["content"]
    before = json.loads(curl(server, server.base + "/stats"))["stats"]["profiles"]["quality_first"]["requests_total"]
    assert before >= 1
    # Streaming: SSE framing, incremental, ends with [DONE].
    out = curl(server, "-N", "-X", "POST", server.base + "/v1/chat/completions",
               "-H", "Content-Type: application/json", "-d", '''{
    "model": "gpt-oss-20b",
    "messages": [{"role": "user", "content": "Count from 1 to 10"}],
    "max_tokens": 50,
    "stream": true
  }''')
    events = [e for e in out.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert len(chunks) > 10


def test_phase3_120b_id_is_refused_by_a_20b_server(server):
    r = json.loads(post(server, '''{
    "model": "gpt-oss-120b",
    "messages": [{"role": "user", "content": "Explain the differences between machine learning and deep learning with examples"}],
    "max_tokens": 500,
    "temperature": 0.8
  }'''))
    assert r["error"]["code"] == "model_not_found"


def test_phase3_120b_server(make_server):
    srv = make_server("--model", "120b", "--profile", "quality_first")
    r = json.loads(post(srv, '''{
    "model": "gpt-oss-120b",
    "messages": [{"role": "user", "content": "Explain the differences between machine learning and deep learning with examples"}],
    "max_tokens": 500,
    "temperature": 0.8
  }'''))
    assert r["model"] == "gpt-oss-120b" and r["choices"][0]["message"]["content"]


def test_phase4_consecutive_requests_and_stats(make_server):
    srv = make_server()
    for _ in range(5):
        r = json.loads(post(srv, '''{
      "model": "gpt-oss-20b",
      "messages": [{"role": "user", "content": "Hello"}],
      "max_tokens": 20
    }'''))
        assert r["usage"]["completion_tokens"] <= 20
    s = json.loads(curl(srv, srv.base + "/stats"))["stats"]["total"]
    assert s["requests_total"] == 5 and s["requests_ok"] == 5
    assert s["qps"] >= 0.3
    assert s["error_rate"] < 0.01
    assert 0 < s["latency_seconds"]["p95"] < 10


def test_phase5_errors(server):
    r = json.loads(post(server, '''{
    "model": "gpt-oss-20b",
    "messages": [],
    "max_tokens": 100
  }'''))
    assert r["error"]["param"] == "messages" and r["error"]["type"] == "invalid_request_error"
    r = json.loads(post(server, '''{
    "model": "gpt-oss-20b",
    "messages": [{"role": "user", "content": "Hi"}],
    "max_tokens": 10000
  }'''))
    assert r["error"]["param"] == "max_tokens"
    assert json.loads(curl(server, server.base + "/health"))["status"] == "ok"


def test_benchmark_script(server):
    ok = 0
    start = time.time()
    for _ in range(10):
        p = subprocess.run(["curl", "-s", "-f", "-X", "POST", server.base + "/v1/chat/completions",
                            "-H", "Content-Type: application/json", "-d", '''{
      "model": "gpt-oss-20b",
      "messages": [{"role": "user", "content": "Hello"}],
      "max_tokens": 50
    }'''], capture_output=True)
        ok += p.returncode == 0
    assert ok == 10
    assert 10 / (time.time() - start) >= 0.3


def test_sigterm_drains_running_streams(make_server):
    srv = make_server("--mock-step", "20ms", "--shutdown-timeout", "10s")
    c = openai.OpenAI(base_url=srv.base + "/v1", api_key="x", max_retries=0)
    result = {}
    started = threading.Event()

    def stream():
        chunks = []
        for ch in c.chat.completions.create(model="gpt-oss-20b", messages=[{"role": "user", "content": "Hi"}],
                                            max_tokens=40, stream=True):
            chunks.append(ch)
            started.set()
        result["finish"] = chunks[-1].choices[0].finish_reason

    t = threading.Thread(target=stream)
    t.start()
    assert started.wait(10)  # the stream is running
    srv.proc.send_signal(signal.SIGTERM)
    time.sleep(0.1)
    # New work is refused while the running stream finishes.
    try:
        c.chat.completions.create(model="gpt-oss-20b", messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
        refused = False
    except (openai.InternalServerError, openai.APIConnectionError) as e:
        refused = True
        if isinstance(e, openai.InternalServerError):
            assert e.status_code == 503
    assert refused
    t.join(timeout=15)
    assert result.get("finish") == "length"  # ran to completion, not cut off
    assert srv.proc.wait(timeout=15) == 0


def test_sigterm_timeout_aborts_streams(make_server):
    srv = make_server("--mock-step", "20ms", "--shutdown-timeout", "200ms")
    c = openai.OpenAI(base_url=srv.base + "/v1", api_key="x", max_retries=0)
    stream = c.chat.completions.create(model="gpt-oss-20b", messages=[{"role": "user", "content": "Hi"}],
                                       max_tokens=4000, stream=True)
    it = iter(stream)
    next(it)
    srv.proc.send_signal(signal.SIGTERM)
    rest = list(it)
    assert rest[-1].choices[0].finish_reason == "abort"
    assert srv.proc.wait(timeout=15) == 0
