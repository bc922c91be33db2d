"""Soak: a few thousand requests against the tiny model through two worker
processes (tp 2), with one worker killed in the middle. Bounded in time and
count, loopback only. What must hold:
  - errors are limited to the requests in flight when the worker died (the
    scheduler recomputes those, so in practice there are none);
  - afterwards no KV block is allocated (the scheduler owns the tables) and
    no worker holds sequence state, and the coordinator's goroutines and
    memory do not grow from one round to the next.
"""
import concurrent.futures
import os
import signal
import threading
import time

import openai
import pytest

from test_real_engine import TINY, client, metric, workers_of

pytestmark = pytest.mark.skipif(not os.path.exists(os.path.join(TINY, "model.safetensors")),
                                reason="models/tiny missing: run `make tiny` (make test-e2e does)")

REQUESTS = int(os.environ.get("SOAK_REQUESTS", "2000"))
CONCURRENCY = 32


def settle(what, cond, within=15):
    """Waits for cond() to return None; otherwise it returns what is wrong."""
    deadline = time.time() + within
    while (wrong := cond()) is not None:
        assert time.time() < deadline, f"{what}: {wrong}"
        time.sleep(0.2)


def test_soak_with_a_worker_killed(make_server):
    """Two rounds of REQUESTS/2: the first with rank 1 killed a quarter of
    the way through, the second undisturbed. Leaks show as growth that the
    second round repeats: KV blocks, goroutines and memory are compared
    after each round."""
    srv = make_server("--model", TINY, "--tp", "2", "--step-timeout", "3s", "--profile", "balanced")
    with client(srv) as warm:
        warm.completions.create(model="tiny", prompt="warm up", max_tokens=4)
    time.sleep(0.5)  # its connection closes
    goroutines0 = metric(srv, "go_goroutines")

    victim = workers_of(srv.proc.pid)[1]
    errors = []
    lock = threading.Lock()
    state = {"done": 0, "in_flight_at_kill": None}
    kill_at = REQUESTS // 4

    def one(c, i):
        # Varied prompts and lengths, greedy and sampled; every 7th streams.
        prompt = f"Request {i}: " + "tell me more " * (i % 13)
        kw = dict(model="tiny", prompt=prompt, max_tokens=4 + i % 9, temperature=0 if i % 2 else 0.8, seed=i)
        try:
            if i % 7 == 0:
                list(c.completions.create(stream=True, **kw))
            else:
                c.completions.create(**kw)
        except openai.APIError as e:
            errors.append((i, repr(e)))
        with lock:
            state["done"] += 1
            if state["done"] != kill_at:
                return
        state["in_flight_at_kill"] = srv.get_json("/health")["active_requests"]
        os.kill(victim, signal.SIGKILL)

    def round_(ids):
        c = client(srv).with_options(timeout=60)  # a hang fails the test, not CI's clock
        with concurrent.futures.ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
            list(pool.map(lambda i: one(c, i), ids))
        c.close()  # its keep-alive connections hold a goroutine each on the server

    def kv_free():
        # The scheduler's pools are whole again and the workers hold no
        # sequence state (their next heartbeat reports it).
        h = srv.get_json("/health")
        kv, ws = h["kv_cache"], h["workers"]
        # (Blocks the prefix cache keeps are not in use: they go to the
        # first reservation that needs them.)
        ok = (kv["blocks_used"] == 0 and kv["sliding_blocks_used"] == 0
              and kv["blocks_free"] + kv["blocks_cached"] == kv["blocks"]
              and kv["sequences"] == 0 and len(ws) == 2 and all(w["sequences"] == 0 for w in ws))
        return None if ok else {"kv_cache": kv, "worker_sequences": [w["sequences"] for w in ws]}

    def goroutines():
        n = metric(srv, "go_goroutines")
        return None if n <= goroutines0 + 10 else f"{n:.0f} goroutines, {goroutines0:.0f} before"

    def quiet():
        # Every KV block is free again and the goroutines are back near
        # the start.
        settle("KV blocks still allocated", kv_free)
        settle("goroutine leak", goroutines)
        return metric(srv, "process_resident_memory_bytes")

    start = time.time()
    round_(range(REQUESTS // 2))
    rss1 = quiet()
    round_(range(REQUESTS // 2, REQUESTS))
    rss2 = quiet()
    took = time.time() - start

    # Only requests in flight when the worker died may fail (the scheduler
    # recomputes those, so usually none do).
    assert state["in_flight_at_kill"] is not None
    assert len(errors) <= state["in_flight_at_kill"], errors[:5]
    # The killed rank restarts; rank 0, stuck in a collective with the dead
    # one, may be restarted by its step watchdog too.
    restarts = {w["rank"]: w["restarts"] for w in srv.get_json("/health")["workers"]}
    assert restarts[1] == 1 and restarts[0] <= 1, restarts
    assert metric(srv, "gptoss_step_failures_total") >= 1
    # The first round grows the heap to its working size; the second must
    # not grow it again by a comparable amount. RSS between rounds of this
    # size moves by ±25 MiB with no leak (five rounds of 1 000 measured
    # 176–201 MiB, heap in use 69–116 MiB, with no trend), so the bound is
    # 64 MiB: a leak of 64 KiB a request trips it.
    assert rss2 < rss1 + 64 * 2**20, f"coordinator RSS grew from {rss1/2**20:.0f} MiB to {rss2/2**20:.0f} MiB in the second round"
    print(f"soak: {REQUESTS} requests in {took:.1f}s, {len(errors)} errors, {state['in_flight_at_kill']} in flight "
          f"at the kill; RSS {rss1/2**20:.0f} -> {rss2/2**20:.0f} MiB")
