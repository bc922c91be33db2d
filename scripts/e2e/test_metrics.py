"""/metrics as dashboards and autoscalers built for vLLM read it: the
coordinator on the tiny real model (models/tiny, one CPU worker process),
a few chat requests, then the exposition parsed by prometheus_client's
text-format parser, the way a scraper reads it. Checks vLLM's names and
labels, counts that agree with the usage the requests got back, the
per-worker series of rank 0, and the --pprof-addr listener and its
loopback rule."""
import collections
import os
import socket
import time
import urllib.request

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
TINY = os.path.join(ROOT, "models", "tiny")

pytestmark = pytest.mark.skipif(not os.path.exists(os.path.join(TINY, "model.safetensors")),
                                reason="models/tiny missing: run `make tiny` (make test-e2e does)")

# vLLM's series (vllm/v1/metrics/loggers.py), by the family name the parser
# gives them (counters without _total) and their type.
VLLM = {
    "vllm:num_requests_running": "gauge",
    "vllm:num_requests_waiting": "gauge",
    "vllm:kv_cache_usage_perc": "gauge",
    "vllm:prefix_cache_queries": "counter",
    "vllm:prefix_cache_hits": "counter",
    "vllm:prompt_tokens": "counter",
    "vllm:generation_tokens": "counter",
    "vllm:request_success": "counter",
    "vllm:num_preemptions": "counter",
    "vllm:time_to_first_token_seconds": "histogram",
    "vllm:inter_token_latency_seconds": "histogram",
    "vllm:e2e_request_latency_seconds": "histogram",
    "vllm:request_queue_time_seconds": "histogram",
    "vllm:request_prefill_time_seconds": "histogram",
    "vllm:request_decode_time_seconds": "histogram",
    "vllm:request_inference_time_seconds": "histogram",
    "vllm:request_prompt_tokens": "histogram",
    "vllm:request_generation_tokens": "histogram",
}

WORKER = ["gptoss_worker_memory_total_bytes", "gptoss_worker_memory_used_bytes", "gptoss_worker_kv_blocks",
          "gptoss_worker_kv_blocks_used", "gptoss_worker_steps", "gptoss_worker_step_seconds",
          "gptoss_worker_last_step_seconds", "gptoss_worker_sequences", "gptoss_worker_state",
          "gptoss_worker_restarts", "gptoss_worker_weights_loaded_bytes", "gptoss_worker_weights_bytes"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(srv):
    with urllib.request.urlopen(srv.base + "/metrics", timeout=5) as r:
        text = r.read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(fams, sample_name, **labels):
    """The samples of one name (e.g. vllm:prompt_tokens_total) whose labels include labels."""
    family = sample_name
    for suffix in ("_total", "_bucket", "_count", "_sum", "_created"):
        if sample_name.endswith(suffix) and sample_name not in fams:
            family = sample_name[: -len(suffix)]
            break
    f = fams.get(family) or fams.get(sample_name)
    assert f is not None, f"{sample_name} not in /metrics"
    return [s for s in f.samples if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items())]


def one(fams, sample_name, **labels):
    got = samples(fams, sample_name, **labels)
    assert len(got) == 1, f"{sample_name}{labels}: {got}"
    return got[0].value


def test_vllm_metrics_and_worker_gauges(make_server):
    pprof, worker_pprof = free_port(), free_port()
    # The launched worker inherits the coordinator's environment.
    srv = make_server("--model", TINY, "--step-timeout", "5s", "--pprof-addr", f"127.0.0.1:{pprof}",
                      env={"GPTOSS_WORKER_PPROF_ADDR": f"127.0.0.1:{worker_pprof}"})
    c = openai.OpenAI(base_url=srv.base + "/v1", api_key="x", max_retries=0)
    prompt_sum = completion_sum = 0
    reasons = collections.Counter()
    # The same long prompt twice: the second finds the first's blocks in
    # the prefix cache.
    long = "Tell me a story about a lighthouse keeper who finds a message in a bottle, please."
    for content, max_tokens in [(long, 6), (long, 6), ("Hi", 12), ("What is 2+2?", 1)]:
        r = c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": content}],
                                      max_tokens=max_tokens, temperature=0)
        prompt_sum += r.usage.prompt_tokens
        completion_sum += r.usage.completion_tokens
        reasons[r.choices[0].finish_reason] += 1
    chunks = list(c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Stream"}], max_tokens=5,
                                            stream=True, stream_options={"include_usage": True}))
    prompt_sum += chunks[-1].usage.prompt_tokens
    completion_sum += chunks[-1].usage.completion_tokens
    reasons[next(ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason)] += 1
    n = sum(reasons.values())

    # A request is recorded as its response ends, and the step counts
    # arrive with the workers' next heartbeat (every second): poll.
    deadline = time.time() + 10
    while True:
        fams = scrape(srv)
        try:
            assert one(fams, "vllm:request_success_total", model_name="tiny", finished_reason="length") + \
                one(fams, "vllm:request_success_total", model_name="tiny", finished_reason="stop") == n
            assert one(fams, "gptoss_worker_steps_total", rank="0") > 0
            break
        except AssertionError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)

    for name, typ in VLLM.items():
        f = fams.get(name)
        assert f is not None, f"{name} not in /metrics"
        assert f.type == typ, (name, f.type)
        assert f.samples and all(s.labels.get("model_name") == "tiny" and s.labels.get("engine") == "0"
                                 for s in f.samples), name

    # Counts agree with what the requests got back.
    assert one(fams, "vllm:prompt_tokens_total", model_name="tiny") == prompt_sum
    assert one(fams, "vllm:generation_tokens_total", model_name="tiny") == completion_sum
    for reason in ("stop", "length", "abort", "error", "repetition"):
        assert one(fams, "vllm:request_success_total", model_name="tiny", finished_reason=reason) == reasons.get(reason, 0)
    assert one(fams, "vllm:e2e_request_latency_seconds_count", model_name="tiny") == n
    assert one(fams, "vllm:request_queue_time_seconds_count", model_name="tiny") == n
    assert one(fams, "vllm:time_to_first_token_seconds_count", model_name="tiny") == n  # every request got a token
    assert one(fams, "vllm:request_prompt_tokens_sum", model_name="tiny") == prompt_sum
    assert one(fams, "vllm:request_generation_tokens_sum", model_name="tiny") == completion_sum
    ttft_inf = one(fams, "vllm:time_to_first_token_seconds_bucket", model_name="tiny", le="+Inf")
    assert ttft_inf == n and samples(fams, "vllm:time_to_first_token_seconds_bucket", model_name="tiny", le="2560")  # vLLM's top bucket
    assert one(fams, "vllm:num_requests_running", model_name="tiny") >= 0
    assert one(fams, "vllm:num_requests_waiting", model_name="tiny") >= 0

    # The KV cache, in vLLM's units: usage a fraction, prefix lookups and
    # hits in tokens (whole blocks).
    kv = srv.get_json("/health")["kv_cache"]
    assert 0 <= one(fams, "vllm:kv_cache_usage_perc", model_name="tiny") <= 1
    queries = one(fams, "vllm:prefix_cache_queries_total", model_name="tiny")
    hits = one(fams, "vllm:prefix_cache_hits_total", model_name="tiny")
    assert queries == kv["prefix_cache_lookups"] * kv["block_size"] and hits == kv["prefix_cache_hits"] * kv["block_size"]
    assert 0 < hits <= queries  # the repeated prompt hit

    # The per-worker series of the one CPU worker.
    for name in WORKER:
        assert name in fams, f"{name} not in /metrics"
        assert all(s.labels.get("rank") == "0" and s.labels.get("device") == "cpu" for s in fams[name].samples), name
    assert one(fams, "gptoss_worker_state", rank="0", state="ready") == 1
    assert sum(s.value for s in samples(fams, "gptoss_worker_state", rank="0")) == 1
    assert one(fams, "gptoss_worker_memory_total_bytes", rank="0") > 0
    assert one(fams, "gptoss_worker_kv_blocks", rank="0") == kv["blocks"]
    assert one(fams, "gptoss_worker_step_seconds_total", rank="0") > 0
    # Several requests, several forward steps: the worker waited between them.
    assert one(fams, "gptoss_worker_idle_seconds_total", rank="0") > 0
    assert one(fams, "gptoss_worker_last_step_seconds", rank="0") > 0
    assert one(fams, "gptoss_worker_restarts_total", rank="0") == 0

    # The gptoss_* series are still there, and agree.
    assert sum(s.value for s in samples(fams, "gptoss_prompt_tokens_total")) == prompt_sum

    # pprof, on its own loopback port.
    with urllib.request.urlopen(f"http://127.0.0.1:{pprof}/debug/pprof/cmdline", timeout=5) as r:
        assert b"--pprof-addr" in r.read()
    with urllib.request.urlopen(f"http://127.0.0.1:{pprof}/debug/pprof/goroutine?debug=1", timeout=5) as r:
        assert b"goroutine" in r.read()
    with urllib.request.urlopen(f"http://127.0.0.1:{worker_pprof}/debug/pprof/cmdline", timeout=5) as r:
        assert r.read().split(b"\0")[0].endswith(b"worker")


def test_pprof_refuses_a_non_loopback_address(make_server):
    with pytest.raises(RuntimeError) as e:
        make_server("--pprof-addr", f"0.0.0.0:{free_port()}")
    assert "loopback only" in str(e.value)
