"""The real engine end to end: the coordinator with its embedded NATS server
and a worker process running the deterministic tiny gpt-oss checkpoint
(models/tiny, written by `make tiny`) on the CPU, driven with the openai SDK.
The weights are random, so the text is noise; what is tested is the path."""
import os
import signal
import subprocess
import time

import openai
import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
TINY = os.path.join(ROOT, "models", "tiny")

pytestmark = pytest.mark.skipif(not os.path.exists(os.path.join(TINY, "model.safetensors")),
                                reason="models/tiny missing: run `make tiny` (make test-e2e does)")


def workers_of(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


def client(srv):
    return openai.OpenAI(base_url=srv.base + "/v1", api_key="x", max_retries=0)


def serves_again(srv, max_tokens, within=30):
    """Retries a small chat request until the server answers it."""
    c = client(srv)
    deadline = time.time() + within
    while True:
        try:
            return c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=max_tokens)
        except openai.APIError:
            assert time.time() < deadline, srv.logs()[-3000:]
            time.sleep(0.5)


def test_chat_through_a_worker_process(make_server):
    srv = make_server("--model", TINY, "--step-timeout", "5s")
    health = srv.get_json("/health")
    assert health["mode"] == "real" and len(health["workers"]) == 1
    assert health["workers"][0]["device"] == "cpu" and health["context_length"] == 4096
    c = client(srv)
    r = c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hello"}], max_tokens=12, temperature=0)
    assert r.usage.completion_tokens <= 12 and r.choices[0].finish_reason in ("length", "stop")
    assert "<|" not in (r.choices[0].message.content or "")
    again = c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hello"}], max_tokens=12, temperature=0)
    assert again.choices[0].message.content == r.choices[0].message.content  # greedy is deterministic
    chunks = list(c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=8,
                                            stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].usage.completion_tokens <= 8
    deadline = time.time() + 5  # step counts arrive with the next heartbeat (every second)
    while srv.get_json("/stats")["workers"][0]["steps"] == 0 and time.time() < deadline:
        time.sleep(0.1)
    assert srv.get_json("/stats")["workers"][0]["steps"] > 0


def metric(srv, name):
    """A Prometheus metric on /metrics, summed over its labels."""
    import urllib.request
    with urllib.request.urlopen(srv.base + "/metrics", timeout=5) as r:
        values = [float(line.rsplit(" ", 1)[1]) for line in r.read().decode().splitlines()
                  if line.startswith(name + " ") or line.startswith(name + "{")]
    assert values, f"{name} not in /metrics"
    return sum(values)


def test_killed_worker_costs_latency_not_the_request(make_server):
    """kill -9 the worker in the middle of a stream: the launcher restarts
    it, the coordinator reloads the model, and the scheduler recomputes the
    stream from its prompt and the tokens already sent, so the client gets
    exactly the greedy text it gets without the crash."""
    srv = make_server("--model", TINY, "--step-timeout", "2s")
    c = client(srv)
    prompt = "Once upon a time"
    alone = c.completions.create(model="tiny", prompt=prompt, max_tokens=300, temperature=0)
    (worker,) = workers_of(srv.proc.pid)
    start = time.time()
    text, killed = [], False
    for i, ch in enumerate(c.completions.create(model="tiny", prompt=prompt, max_tokens=300, temperature=0, stream=True)):
        if ch.choices:
            text.append(ch.choices[0].text)
            finish = ch.choices[0].finish_reason
        if i == 3:
            os.kill(worker, signal.SIGKILL)
            killed = True
    assert killed and "".join(text) == alone.choices[0].text, srv.logs()[-3000:]
    assert finish == alone.choices[0].finish_reason
    assert time.time() - start < 30
    assert metric(srv, "gptoss_step_failures_total") >= 1
    assert metric(srv, "gptoss_sequences_retried_total") >= 1
    assert metric(srv, "gptoss_sequences_refused_total") == 0
    (w,) = srv.get_json("/health")["workers"]
    assert w["restarts"] == 1 and w["pid"] != worker
    assert serves_again(srv, max_tokens=4).usage.completion_tokens <= 4


def test_workers_exit_with_the_coordinator(make_server):
    srv = make_server("--model", TINY)
    workers = workers_of(srv.proc.pid)
    assert workers
    srv.proc.kill()  # SIGKILL: no chance to clean up
    srv.proc.wait()
    deadline = time.time() + 10
    while time.time() < deadline and any(os.path.exists(f"/proc/{w}") and "zombie" not in open(f"/proc/{w}/status").read().lower() for w in workers):
        time.sleep(0.1)
    alive = [w for w in workers if os.path.exists(f"/proc/{w}") and "zombie" not in open(f"/proc/{w}/status").read().lower()]
    assert not alive, f"workers outlived the coordinator: {alive}"


def test_tensor_parallel_workers_agree(make_server):
    """tp=2 and tp=4 (that many worker processes, joined by the NATS
    collective) give the same greedy text as tp=1."""
    texts = {}
    for tp in (1, 2, 4):
        srv = make_server("--model", TINY, "--tp", str(tp), "--step-timeout", "20s")
        health = srv.get_json("/health")
        assert len(health["workers"]) == tp, health["workers"]
        r = client(srv).chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Tell me a story"}],
                                                max_tokens=16, temperature=0)
        texts[tp] = (r.choices[0].message.content, r.usage.completion_tokens)
        srv.stop()
    assert texts[2] == texts[1] and texts[4] == texts[1], texts


def test_external_nats_restart(make_server):
    """The coordinator and its workers on an external nats-server survive
    a restart of that server: both reconnect and serve again."""
    import shutil
    from conftest import free_port
    if not shutil.which("nats-server"):
        pytest.skip("needs nats-server (Debian nats-server)")
    port = free_port()

    def nats():
        return subprocess.Popen(["nats-server", "-a", "127.0.0.1", "-p", str(port), "--auth", "restart-test"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = nats()
    try:
        srv = make_server("--model", TINY, "--nats-url", f"nats://127.0.0.1:{port}", "--step-timeout", "3s",
                          env={"GPTOSS_NATS_TOKEN": "restart-test"})
        c = client(srv)
        assert c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=3).usage
        # This nats-server runs without JetStream: the stored responses stay
        # in memory, said in the log and in /health.
        assert srv.get_json("/health")["response_store"] == "memory" and "STORED RESPONSES IN MEMORY" in srv.logs()
        server.terminate()
        server.wait(timeout=10)
        time.sleep(1)
        server = nats()
        r = serves_again(srv, max_tokens=3)
        assert r.usage.completion_tokens <= 3
        assert srv.get_json("/health")["workers"][0]["restarts"] == 0  # reconnected, not restarted
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_64_concurrent_streams_match_alone(make_server):
    """64 concurrent streamed requests through a worker process each get
    the same greedy text as when sent alone (the kernels are
    batch-invariant)."""
    import concurrent.futures
    srv = make_server("--model", TINY, "--step-timeout", "30s", "--profile", "balanced")
    c = client(srv)

    def ask(i, stream):
        msgs = [{"role": "user", "content": f"Request number {i}: say something"}]
        if not stream:
            r = c.chat.completions.create(model="tiny", messages=msgs, max_tokens=12, temperature=0)
            return r.choices[0].message.content or ""
        return "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(
            model="tiny", messages=msgs, max_tokens=12, temperature=0, stream=True) if ch.choices)

    with concurrent.futures.ThreadPoolExecutor(max_workers=64) as pool:
        together = list(pool.map(lambda i: ask(i, True), range(64)))
    alone = [ask(i, False) for i in range(64)]
    assert together == alone
    assert len(set(alone)) > 1  # different prompts, different texts


def test_fast_cpu_kernels_are_batch_invariant(make_server):
    """--cpu-kernels fast reaches the launched worker (it logs which fast
    kernels this CPU runs), and its rounded products are still
    batch-invariant: 16 concurrent requests get their greedy text alone."""
    import concurrent.futures
    srv = make_server("--model", TINY, "--step-timeout", "30s", "--cpu-kernels", "fast")
    assert "CPU kernels: fast" in srv.logs(), srv.logs()[-3000:]
    c = client(srv)

    def ask(i):
        msgs = [{"role": "user", "content": f"Request number {i}: say something"}]
        r = c.chat.completions.create(model="tiny", messages=msgs, max_tokens=12, temperature=0)
        return r.choices[0].message.content or ""

    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        together = list(pool.map(ask, range(16)))
    alone = [ask(i) for i in range(16)]
    assert together == alone
    assert len(set(alone)) > 1


def test_disconnect_mid_stream_frees_blocks(make_server):
    """A client that goes away mid-stream: its sequence leaves the batch
    within a step, its KV blocks go back to the scheduler's pools and the
    worker forgets it."""
    srv = make_server("--model", TINY, "--step-timeout", "5s")
    c = client(srv)
    stream = c.completions.create(model="tiny", prompt="Tell me everything", max_tokens=3000, temperature=0, stream=True)
    for i, _ in enumerate(stream):
        if i == 5:
            break
    kv = srv.get_json("/health")["kv_cache"]
    assert kv["blocks_used"] > 0  # it was holding blocks
    stream.close()  # the connection goes away
    deadline = time.time() + 10
    while True:
        h = srv.get_json("/health")
        kv = h["kv_cache"]
        if kv["blocks_used"] == 0 and kv["sequences"] == 0 and h["workers"][0]["sequences"] == 0:
            break
        assert time.time() < deadline, h
        time.sleep(0.1)
    assert h["active_requests"] == 0
    assert metric(srv, "gptoss_requests_cancelled_total") >= 1


def test_dummy_weights_without_a_checkpoint(make_server):
    """--load-format dummy serves random weights of a preset's shapes (the
    GPU benchmarks' mode) with no checkpoint on disk."""
    srv = make_server("--model", "tiny", "--load-format", "dummy", "--backend", "cpu")
    h = srv.get_json("/health")
    assert h["mode"] == "real" and "dummy" in h["mode_reason"], h
    r = client(srv).completions.create(model="gpt-oss-tiny", prompt="Hello", max_tokens=5, temperature=0)
    assert r.usage.completion_tokens <= 5 and r.choices[0].finish_reason in ("length", "stop")


def check_chat_logprobs(entries, content, top):
    """The content tokens' logprobs, greedy: each token is its own top-1."""
    assert entries, "no logprob entries"
    for e in entries:
        assert e.logprob <= 0 and len(e.top_logprobs) == top
        assert bytes(e.bytes).decode("utf-8", errors="replace") == e.token
        alts = [a.logprob for a in e.top_logprobs]
        assert alts == sorted(alts, reverse=True) and all(a <= 0 for a in alts)
        assert e.top_logprobs[0].logprob == e.logprob and e.top_logprobs[0].token == e.token
    assert b"".join(bytes(e.bytes) for e in entries).decode("utf-8", errors="replace") == content
    if not any("\ufffd" in e.token for e in entries):
        assert "".join(e.token for e in entries) == content


def test_logprobs(make_server):
    """logprobs from the workers' sampler, in OpenAI's shapes, streamed and
    not, on chat (content tokens) and completions."""
    srv = make_server("--model", TINY, "--step-timeout", "10s")
    c = client(srv)
    msgs = [{"role": "user", "content": "Tell me a story"}]
    for max_tokens in (20, 90):  # the random model's text is salvaged at the end, or once its header overflows
        r = c.chat.completions.create(model="tiny", messages=msgs, max_tokens=max_tokens, temperature=0,
                                      logprobs=True, top_logprobs=3)
        content = r.choices[0].message.content or ""
        entries = r.choices[0].logprobs.content
        check_chat_logprobs(entries, content, 3)
        streamed, sentries = "", []
        for ch in c.chat.completions.create(model="tiny", messages=msgs, max_tokens=max_tokens, temperature=0,
                                            logprobs=True, top_logprobs=3, stream=True):
            if ch.choices and ch.choices[0].delta.content:
                streamed += ch.choices[0].delta.content
                sentries += ch.choices[0].logprobs.content
        assert streamed == content
        assert [(e.token, e.logprob) for e in sentries] == [(e.token, e.logprob) for e in entries]
    # A stop string inside the text: the listed tokens stay a prefix of it.
    cut = len(content) // 2
    stop = content[cut:cut + 3]
    r = c.chat.completions.create(model="tiny", messages=msgs, max_tokens=90, temperature=0, logprobs=True, stop=[stop])
    short = r.choices[0].message.content or ""
    assert short == content[:content.index(stop)]
    listed = b"".join(bytes(e.bytes) for e in r.choices[0].logprobs.content)
    assert short.encode().startswith(listed) and all(e.top_logprobs == [] for e in r.choices[0].logprobs.content)

    r = c.completions.create(model="tiny", prompt="Once upon a time", max_tokens=40, temperature=0, logprobs=3)
    text, lp = r.choices[0].text, r.choices[0].logprobs
    n = len(lp.tokens)
    assert n > 0 and len(lp.token_logprobs) == n and len(lp.top_logprobs) == n and len(lp.text_offset) == n
    for tok, v, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert v <= 0 and max(top.values()) == v and top[tok] == v
        assert len(top) == 3 or "\ufffd" in top  # byte tokens share one text
    assert lp.text_offset[0] == 0 and lp.text_offset == sorted(lp.text_offset)
    for tok, off in zip(lp.tokens, lp.text_offset):
        if "\ufffd" not in tok:
            assert text[off:off + len(tok)] == tok
    if not any("\ufffd" in t for t in lp.tokens):
        assert "".join(lp.tokens) == text
    stokens, slps, soffsets, stext = [], [], [], ""
    for ch in c.completions.create(model="tiny", prompt="Once upon a time", max_tokens=40, temperature=0, logprobs=3,
                                   stream=True):
        if ch.choices and ch.choices[0].logprobs:
            stext += ch.choices[0].text
            stokens += ch.choices[0].logprobs.tokens
            slps += ch.choices[0].logprobs.token_logprobs
            soffsets += ch.choices[0].logprobs.text_offset
    assert (stext, stokens, slps, soffsets) == (text, lp.tokens, lp.token_logprobs, lp.text_offset)


def ready_status(srv):
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(srv.base + "/ready", timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_frozen_worker_is_killed_and_replaced(make_server):
    """SIGSTOP a worker: it stops heartbeating but lives on. The coordinator
    says the truth meanwhile (/ready 503, /health degraded), kills it, the
    launcher starts a new one, the model is reloaded and requests are served
    again. (A frozen worker used to stay Lost for good, with /ready 200.)"""
    srv = make_server("--model", TINY, "--step-timeout", "5s")
    assert serves_again(srv, max_tokens=2).usage.completion_tokens <= 2
    (worker,) = workers_of(srv.proc.pid)
    os.kill(worker, signal.SIGSTOP)
    try:
        deadline = time.time() + 15
        while ready_status(srv) != 503:
            assert time.time() < deadline, "/ready stayed 200 with a frozen worker"
            time.sleep(0.2)
        assert srv.get_json("/health")["status"] == "degraded"
        deadline = time.time() + 30
        while True:
            (w,) = srv.get_json("/health")["workers"]
            if w["restarts"] == 1 and w["pid"] != worker and ready_status(srv) == 200:
                break
            assert time.time() < deadline, srv.logs()[-3000:]
            time.sleep(0.2)
        # The frozen process is gone (SIGKILL ends a stopped process too).
        assert subprocess.run(["kill", "-0", str(worker)], capture_output=True).returncode != 0
    finally:
        try:
            os.kill(worker, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert srv.get_json("/health")["status"] == "ok"
    assert serves_again(srv, max_tokens=3).usage.completion_tokens <= 3


def test_step_deadline_scales_with_tokens(make_server):
    """A long prompt's prefill chunk takes longer than a decode step: its
    deadline grows with its tokens (--step-timeout-per-token), so a short
    --step-timeout does not kill the worker on it. (A 2,048-token chunk on a
    busy CPU used to fail as a 500 "engine failed twice".)"""
    srv = make_server("--model", TINY, "--step-timeout", "50ms", "--step-timeout-per-token", "20ms")
    words = " ".join(["token"] * 1500)
    r = client(srv).completions.create(model="tiny", prompt=words, max_tokens=3, temperature=0)
    assert r.usage.prompt_tokens >= 1500 and r.usage.completion_tokens == 3
    assert metric(srv, "gptoss_step_failures_total") == 0, srv.logs()[-3000:]


def test_steps_past_their_deadline_are_a_retryable_503(make_server):
    """When every step runs past its deadline (here an impossible 1 ms), the
    request is retried, then refused with a retryable 503 that says why,
    never a 500."""
    srv = make_server("--model", TINY, "--step-timeout", "1ms", "--step-timeout-per-token", "1ns")
    with pytest.raises(openai.APIStatusError) as e:
        client(srv).completions.create(model="tiny", prompt="Hello there", max_tokens=3)
    assert e.value.status_code == 503, e.value
    assert e.value.response.headers.get("retry-after"), e.value.response.headers
    assert e.value.body["code"] == "engine_timeout", e.value.body
