"""Structured output (constrained decoding) end to end, over raw HTTP: chat
`response_format` json_object / json_schema, strict tools, `tool_choice`
"required" and named, `max_reasoning_tokens`, /v1/completions with
`response_format`, vLLM's `structured_outputs` (json, regex, choice,
grammar) and its older `guided_*` fields, the Responses API's
`text.format`, and the errors for schemas the decoder cannot compile.
test_structured_clients.py drives the same features through client
libraries.

Most tests run the real engine on the tiny random-weights checkpoint
(models/tiny) at temperature 1 with a seed: its text is noise, so whatever
structure comes out is the decoder's doing, and every output that finishes
must validate. Outputs that run out of tokens ("length") must still be a
prefix of JSON. Random weights do not always finish in the token budget;
the MIN_*_STOP fractions below say how many must (calibrated on the tiny
model with some margin, so that a decoder that lets the model wander fails
them). The mock engine (--mock) runs the whole corpus too: its outputs are
deterministic, so every one must finish and validate.

The schemas come from structured_corpus.json: pydantic model_json_schema()
outputs, OpenAI strict-mode schemas and tool parameter schemas, as clients
send them. Validation is jsonschema's Draft 2020-12 validator without
format checking (the decoder enforces formats, but not every validator
agrees on them)."""
import concurrent.futures
import json
import os
import re
import urllib.error
import urllib.request

import jsonschema
import pytest

from conftest import Coordinator

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
TINY = os.path.join(ROOT, "models", "tiny")
HAVE_TINY = os.path.exists(os.path.join(TINY, "model.safetensors"))
needs_tiny = pytest.mark.skipif(not HAVE_TINY, reason="models/tiny missing: run `make tiny` (make test-e2e does)")

with open(os.path.join(os.path.dirname(__file__), "structured_corpus.json")) as f:
    CORPUS = json.load(f)["schemas"]
BY_NAME = {e["name"]: e for e in CORPUS}
TOOL_ENTRIES = [e for e in CORPUS if "tool" in e]

TINY_MODEL = "tiny"
MOCK_MODEL = "gpt-oss-20b"

# Budgets on the tiny model: a short reasoning, then room for the JSON.
REASONING = 16
MAX_TOKENS = 512

# Calibrated on the tiny model (see the module docstring): the least
# fraction of requests that must finish ("stop", or "tool_calls" for a
# forced call) rather than run out of tokens.
# Measured (5 seed sets over the corpus, 40 seeds elsewhere): the corpus
# 0.51-0.59 finished, json_object 0.28 (chat) and 0.42 (completions),
# forced calls 0.62 (required) and 0.72 (named), grammars 0.83, completions
# json 0.58. Outputs that do not finish ran into an unbounded string, number
# or additional property of the schema: random weights seldom close them.
MIN_SCHEMA_STOP = 0.35
MIN_JSON_OBJECT_STOP = 0.1
MIN_TOOL_STOP = 0.35
MIN_GRAMMAR_STOP = 0.5

PARALLEL = 8


# ---------------------------------------------------------------- servers


@pytest.fixture(scope="module")
def tiny():
    if not HAVE_TINY:
        pytest.skip("models/tiny missing: run `make tiny` (make test-e2e does)")
    c = Coordinator("--model", TINY, timeout=60)
    yield c
    c.stop()


@pytest.fixture(scope="module")
def mock():
    c = Coordinator("--mock")
    yield c
    c.stop()


def model_of(srv):
    return TINY_MODEL if "tiny" in " ".join(srv.proc.args) else MOCK_MODEL


# ---------------------------------------------------------------- HTTP


def post(srv, path, body, timeout=180):
    """POSTs JSON; returns (status, parsed body)."""
    req = urllib.request.Request(srv.base + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", "Authorization": "Bearer unused"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, {"raw": raw.decode("utf-8", "replace")}


def stream(srv, path, body, timeout=180):
    """POSTs a streamed request; returns (status, [data objects]) of the SSE
    stream (the error body instead of the list when the status is not 200)."""
    req = urllib.request.Request(srv.base + path, data=json.dumps({**body, "stream": True}).encode(), method="POST",
                                 headers={"Content-Type": "application/json", "Authorization": "Bearer unused"})
    try:
        r = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())
    events, data = [], []
    with r:
        for raw in r:
            line = raw.decode("utf-8").rstrip("\r\n")
            if line == "":
                if data and "\n".join(data) != "[DONE]":
                    events.append(json.loads("\n".join(data)))
                data = []
            elif line.startswith("data:"):
                v = line[len("data:"):]
                data.append(v[1:] if v.startswith(" ") else v)
        if data and "\n".join(data) != "[DONE]":
            events.append(json.loads("\n".join(data)))
    return r.status, events


def run_all(fn, items, workers=PARALLEL):
    """fn over items, a few at a time (the scheduler batches them: every
    sequence keeps its own decoder state); results in order."""
    with concurrent.futures.ThreadPoolExecutor(workers) as ex:
        return list(ex.map(fn, items))


# ---------------------------------------------------------------- checking


def _no_constants(name):
    raise ValueError(f"{name} is not JSON")


def loads_strict(text):
    """json.loads without Python's NaN/Infinity extensions."""
    return json.loads(text, parse_constant=_no_constants)


def schema_errors(schema, value):
    """jsonschema's complaints (Draft 2020-12, formats not checked)."""
    v = jsonschema.Draft202012Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message[:200]}" for e in v.iter_errors(value)]


def json_problems(text, schema=None, *, want_object=False):
    """What is wrong with a finished output: empty list if text is one JSON
    value (an object when asked) valid for schema."""
    try:
        value = loads_strict(text)
    except ValueError as e:
        return [f"not JSON ({e}): {text[:300]!r}"]
    if want_object and not isinstance(value, dict):
        return [f"not a JSON object: {text[:300]!r}"]
    if schema is not None:
        errs = schema_errors(schema, value)
        if errs:
            return errs[:5] + [f"output: {text[:400]!r}"]
    return []


class _Incomplete(Exception):
    pass


_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_NUMBER_PREFIX = re.compile(r"-?|-?(?:0|[1-9][0-9]*)(?:\.[0-9]*)?(?:[eE][+-]?[0-9]*)?")


class _PrefixParser:
    """A JSON parser that tells a cut-off document (a prefix of some JSON
    value) from a broken one."""

    def __init__(self, text):
        self.s, self.i = text, 0

    def peek(self):
        if self.i >= len(self.s):
            raise _Incomplete
        return self.s[self.i]

    def ws(self):
        while self.i < len(self.s) and self.s[self.i] in " \t\r\n":
            self.i += 1

    def expect(self, c):
        self.ws()
        if self.peek() != c:
            raise ValueError(f"expected {c!r} at {self.i}")
        self.i += 1

    def value(self):
        self.ws()
        c = self.peek()
        if c == "{":
            self.i += 1
            self.ws()
            if self.peek() == "}":
                self.i += 1
                return
            while True:
                self.ws()
                if self.peek() != '"':
                    raise ValueError(f"expected a key at {self.i}")
                self.string()
                self.expect(":")
                self.value()
                self.ws()
                c = self.peek()
                self.i += 1
                if c == "}":
                    return
                if c != ",":
                    raise ValueError(f"expected , or }} at {self.i - 1}")
        elif c == "[":
            self.i += 1
            self.ws()
            if self.peek() == "]":
                self.i += 1
                return
            while True:
                self.value()
                self.ws()
                c = self.peek()
                self.i += 1
                if c == "]":
                    return
                if c != ",":
                    raise ValueError(f"expected , or ] at {self.i - 1}")
        elif c == '"':
            self.string()
        elif c == "-" or c.isdigit():
            start = self.i
            while self.i < len(self.s) and self.s[self.i] in "+-0123456789.eE":
                self.i += 1
            tok = self.s[start:self.i]
            if self.i == len(self.s) and _NUMBER_PREFIX.fullmatch(tok):
                raise _Incomplete
            if not _NUMBER.fullmatch(tok):
                raise ValueError(f"bad number {tok!r}")
        else:
            for word in ("true", "false", "null"):
                rest = self.s[self.i:self.i + len(word)]
                if rest == word:
                    self.i += len(word)
                    return
                if len(rest) < len(word) and self.i + len(rest) == len(self.s) and word.startswith(rest):
                    raise _Incomplete
            raise ValueError(f"unexpected {c!r} at {self.i}")

    def string(self):
        self.i += 1
        while True:
            c = self.peek()
            self.i += 1
            if c == '"':
                return
            if c == "\\":
                e = self.peek()
                self.i += 1
                if e == "u":
                    for _ in range(4):
                        if self.peek() not in "0123456789abcdefABCDEF":
                            raise ValueError(f"bad \\u escape at {self.i}")
                        self.i += 1
                elif e not in '"\\/bfnrt':
                    raise ValueError(f"bad escape \\{e}")
            elif ord(c) < 0x20:
                raise ValueError(f"control character {c!r} in a string")


def is_json_prefix(text):
    """True if text is a JSON value or a prefix of one."""
    p = _PrefixParser(text)
    try:
        p.value()
        p.ws()
        return p.i == len(text)
    except _Incomplete:
        return True
    except ValueError:
        return False


def test_json_prefix_checker():
    """The checker the "length" outputs go through."""
    for ok in ['{"a": [1, 2.5e', '{"a": "x\\u00', '{"a": tr', '{', '', '{"a": {"b": []}, "c": -', '[1, 2]', '{"a":1}  ']:
        assert is_json_prefix(ok), ok
    for bad in ['{"a" 1', '{"a": [1,, 2', '{"a": 01', '{"a": tru}', '{"a": "x"}}', '{"a": 1} x', '{a: 1}',
                '{"a": "\x01"', '{"a": 1.}']:
        assert not is_json_prefix(bad), bad


def usage_reasoning(body):
    details = (body.get("usage") or {}).get("completion_tokens_details") or {}
    return details.get("reasoning_tokens")


# ---------------------------------------------------------------- chat: the corpus


def schema_format(entry):
    return {"type": "json_schema",
            "json_schema": {"name": entry["name"], "schema": entry["schema"], "strict": entry["strict"]}}


def chat_body(model, entry, seed, **kw):
    body = {"model": model, "messages": [{"role": "user", "content": entry["prompt"]}],
            "response_format": schema_format(entry), "temperature": 1, "seed": seed,
            "max_tokens": MAX_TOKENS, "max_reasoning_tokens": REASONING}
    body.update(kw)
    return body


def check_chat_output(name, status, body, schema, *, budget=REASONING, want_object=False):
    """One chat completion with a JSON format: returns (finish_reason or
    None, [problems])."""
    if status != 200:
        return None, [f"{name}: HTTP {status}: {json.dumps(body)[:400]}"]
    ch = body["choices"][0]
    msg, finish = ch["message"], ch["finish_reason"]
    content = msg.get("content") or ""
    problems = []
    if msg.get("tool_calls"):
        problems.append(f"tool calls without tools: {msg['tool_calls']}")
    if "<|" in content:
        problems.append(f"Harmony tokens in the content: {content[:200]!r}")
    rt = usage_reasoning(body)
    if rt is None or rt > budget:
        problems.append(f"reasoning_tokens {rt} over the budget {budget}")
    if finish == "stop":
        problems += json_problems(content, schema, want_object=want_object)
    elif finish == "length":
        if not is_json_prefix(content):
            problems.append(f"cut off, but not a prefix of JSON: {content[:400]!r}")
    else:
        problems.append(f"finish_reason {finish!r}")
    return finish, [f"{name}: {p}" for p in problems]


def summarize(results):
    finishes = [f for f, _ in results]
    problems = [p for _, ps in results for p in ps]
    return finishes, problems


@needs_tiny
@pytest.mark.parametrize("seed_base", [1000, 7000])
def test_corpus_chat_json_schema_tiny(tiny, seed_base):
    """Every corpus schema through chat response_format json_schema on random
    weights, under two seed sets (two random walks through each grammar):
    whatever finishes validates, whatever is cut off is a JSON prefix, the
    reasoning stays in its budget."""
    def one(args):
        i, entry = args
        status, body = post(tiny, "/v1/chat/completions", chat_body(TINY_MODEL, entry, seed=seed_base + i))
        return check_chat_output(entry["name"], status, body, entry["schema"])

    finishes, problems = summarize(run_all(one, list(enumerate(CORPUS))))
    assert not problems, "\n".join(problems)
    stops = finishes.count("stop")
    assert stops >= MIN_SCHEMA_STOP * len(CORPUS), f"only {stops}/{len(CORPUS)} finished: {finishes}"


STREAMED = ["invoice", "pet_owner_discriminated", "support_ticket", "org_chart_recursive", "query_builder_defs",
            "contact_nullable_types", "survey_response_deep", "geojson_point_feature", "score_map", "get_weather"]


def collect_chat_stream(events):
    """The content, reasoning, finish reason and usage of a chat stream."""
    content, reasoning, finish, usage, tool_deltas = [], [], None, None, []
    for ev in events:
        if ev.get("usage"):
            usage = ev["usage"]
        for ch in ev.get("choices") or []:
            d = ch.get("delta") or {}
            content.append(d.get("content") or "")
            reasoning.append(d.get("reasoning_content") or "")
            tool_deltas += d.get("tool_calls") or []
            if ch.get("finish_reason"):
                finish = ch["finish_reason"]
    return "".join(content), "".join(reasoning), finish, usage, tool_deltas


@needs_tiny
def test_corpus_chat_streaming_matches_tiny(tiny):
    """Streaming gives the same guarantees: the concatenated content deltas
    validate, and with the same seed they are exactly the non-streamed
    content (the decoder's state follows the same tokens)."""
    def one(args):
        i, name = args
        entry = BY_NAME[name]
        body = chat_body(TINY_MODEL, entry, seed=3000 + i, stream_options={"include_usage": True})
        status, events = stream(tiny, "/v1/chat/completions", body)
        if status != 200:
            return None, [f"{name}: HTTP {status}: {json.dumps(events)[:400]}"]
        content, reasoning, finish, usage, tools = collect_chat_stream(events)
        problems = []
        if tools:
            problems.append(f"tool call deltas without tools: {tools}")
        rt = ((usage or {}).get("completion_tokens_details") or {}).get("reasoning_tokens")
        if rt is None or rt > REASONING:
            problems.append(f"streamed usage reasoning_tokens {rt} over {REASONING}")
        if finish == "stop":
            problems += json_problems(content, entry["schema"])
        elif finish == "length":
            if not is_json_prefix(content):
                problems.append(f"cut off, but not a JSON prefix: {content[:300]!r}")
        else:
            problems.append(f"finish_reason {finish!r}")
        body.pop("stream_options")
        status, whole = post(tiny, "/v1/chat/completions", body)
        if status != 200:
            problems.append(f"non-streamed: HTTP {status}: {json.dumps(whole)[:300]}")
        else:
            m = whole["choices"][0]["message"]
            if (m.get("content") or "") != content or whole["choices"][0]["finish_reason"] != finish:
                problems.append(f"streamed {finish} {content[:200]!r} but non-streamed "
                                f"{whole['choices'][0]['finish_reason']} {(m.get('content') or '')[:200]!r}")
            if (m.get("reasoning_content") or "") != reasoning:
                problems.append("streamed reasoning differs from the non-streamed reasoning_content")
        return finish, [f"{name}: {p}" for p in problems]

    finishes, problems = summarize(run_all(one, list(enumerate(STREAMED))))
    assert not problems, "\n".join(problems)
    assert finishes.count("stop") >= MIN_SCHEMA_STOP * len(STREAMED), finishes


@needs_tiny
def test_constraints_stay_with_their_sequence_tiny(tiny):
    """Batched together, constrained and unconstrained sequences each get
    exactly the tokens they get alone (same seeds): no mask reaches a
    neighbour, and the plain request stays free text."""
    plain = {"model": TINY_MODEL, "messages": [{"role": "user", "content": "Tell me a story."}], "temperature": 1,
             "seed": 41, "max_tokens": 120}
    reqs = [plain] + [chat_body(TINY_MODEL, BY_NAME[n], seed=42 + i)
                      for i, n in enumerate(["order_status_enums", "get_stock_price", "matrix_2d", "sentiment",
                                             "set_thermostat", "geojson_point_feature", "contact_nullable_types"])]

    def one(body):
        status, out = post(tiny, "/v1/chat/completions", body)
        assert status == 200, out
        ch = out["choices"][0]
        return ch["finish_reason"], ch["message"].get("content"), ch["message"].get("reasoning_content")

    alone = [one(b) for b in reqs]
    together = run_all(one, reqs, workers=len(reqs))
    assert together == alone
    with pytest.raises(ValueError):
        loads_strict(alone[0][1] or "")  # the unconstrained answer is not JSON
    for (finish, content, _), body in zip(alone[1:], reqs[1:]):
        if finish == "stop":
            assert not json_problems(content, body["response_format"]["json_schema"]["schema"]), content


@needs_tiny
def test_json_schema_with_n_choices_tiny(tiny):
    """n > 1: every choice is its own sequence with its own decoder state."""
    entry = BY_NAME["support_ticket"]
    status, body = post(tiny, "/v1/chat/completions", chat_body(TINY_MODEL, entry, seed=11, n=4))
    assert status == 200, body
    assert len(body["choices"]) == 4
    problems, stops = [], 0
    for ch in body["choices"]:
        content = ch["message"].get("content") or ""
        if ch["finish_reason"] == "stop":
            stops += 1
            problems += json_problems(content, entry["schema"])
        else:
            assert ch["finish_reason"] == "length", ch
            assert is_json_prefix(content), content
    assert not problems, problems
    assert stops >= 1, [c["finish_reason"] for c in body["choices"]]
    outs = [c["message"].get("content") for c in body["choices"]]
    assert len(set(outs)) > 1, "the choices are all the same"


@needs_tiny
def test_json_object_tiny(tiny):
    """response_format json_object: the content is a JSON object."""
    def one(seed):
        status, body = post(tiny, "/v1/chat/completions", {
            "model": TINY_MODEL, "messages": [{"role": "user", "content": "List three colours as JSON."}],
            "response_format": {"type": "json_object"}, "temperature": 1, "seed": seed,
            "max_tokens": MAX_TOKENS, "max_reasoning_tokens": REASONING})
        return check_chat_output(f"seed {seed}", status, body, None, want_object=True)

    seeds = list(range(200, 216))
    finishes, problems = summarize(run_all(one, seeds))
    assert not problems, "\n".join(problems)
    assert finishes.count("stop") >= MIN_JSON_OBJECT_STOP * len(seeds), finishes


@needs_tiny
def test_json_object_streaming_tiny(tiny):
    status, events = stream(tiny, "/v1/chat/completions", {
        "model": TINY_MODEL, "messages": [{"role": "user", "content": "Describe a cat as JSON."}],
        "response_format": {"type": "json_object"}, "temperature": 1, "seed": 5,
        "max_tokens": MAX_TOKENS, "max_reasoning_tokens": REASONING})
    assert status == 200, events
    content, _, finish, _, _ = collect_chat_stream(events)
    assert finish in ("stop", "length")
    if finish == "stop":
        assert not json_problems(content, None, want_object=True), content
    else:
        assert is_json_prefix(content), content


@needs_tiny
def test_reasoning_stays_free_text_tiny(tiny):
    """The schema constrains the final answer only: the reasoning before it
    is the model's own text (random tokens here, nothing like JSON), within
    its budget, and the answer after it still validates. Random weights pick
    the analysis channel first now and then: enough of them do here."""
    def one(args):
        i, entry = args
        status, body = post(tiny, "/v1/chat/completions", chat_body(TINY_MODEL, entry, seed=1000 + i,
                                                                    max_reasoning_tokens=40))
        finish, problems = check_chat_output(entry["name"], status, body, entry["schema"], budget=40)
        if status != 200:
            return 0, problems
        msg = body["choices"][0]["message"]
        reasoning = msg.get("reasoning_content") or ""
        if usage_reasoning(body) and not reasoning:
            problems.append(f"{entry['name']}: reasoning_tokens {usage_reasoning(body)} but no reasoning_content")
        if "<|" in reasoning:
            problems.append(f"{entry['name']}: Harmony tokens in the reasoning: {reasoning[:200]!r}")
        try:
            looks_json = isinstance(loads_strict(reasoning), (dict, list))
        except ValueError:
            looks_json = False
        if looks_json:
            problems.append(f"{entry['name']}: the reasoning is JSON, as if constrained: {reasoning[:200]!r}")
        return usage_reasoning(body) or 0, problems

    results = run_all(one, list(enumerate(CORPUS)))
    problems = [p for _, ps in results for p in ps]
    assert not problems, "\n".join(problems)
    reasoned = [rt for rt, _ in results if rt]
    assert len(reasoned) >= 3, [rt for rt, _ in results]
    assert max(reasoned) > REASONING  # a budget of 40 is not one of 16


def test_corpus_chat_json_schema_mock(mock):
    """The mock honours the format too: deterministic, so every schema must
    finish and validate, streamed and not."""
    def one(args):
        i, entry = args
        body = chat_body(MOCK_MODEL, entry, seed=i, max_tokens=2000, max_reasoning_tokens=64)
        status, out = post(mock, "/v1/chat/completions", body)
        finish, problems = check_chat_output(entry["name"], status, out, entry["schema"], budget=64)
        if finish is not None and finish != "stop":
            problems.append(f"{entry['name']}: mock finished with {finish}")
        return finish, problems

    _, problems = summarize(run_all(one, list(enumerate(CORPUS))))
    assert not problems, "\n".join(problems)


def test_corpus_chat_streaming_mock(mock):
    def one(name):
        entry = BY_NAME[name]
        status, events = stream(mock, "/v1/chat/completions",
                                chat_body(MOCK_MODEL, entry, seed=1, max_tokens=2000, max_reasoning_tokens=64))
        if status != 200:
            return [f"{name}: HTTP {status}: {events}"]
        content, _, finish, _, _ = collect_chat_stream(events)
        if finish != "stop":
            return [f"{name}: finish {finish}"]
        return [f"{name}: {p}" for p in json_problems(content, entry["schema"])]

    problems = [p for ps in run_all(one, STREAMED) for p in ps]
    assert not problems, "\n".join(problems)


def test_json_object_mock(mock):
    status, body = post(mock, "/v1/chat/completions", {
        "model": MOCK_MODEL, "messages": [{"role": "user", "content": "Give me a JSON object."}],
        "response_format": {"type": "json_object"}, "max_tokens": 2000})
    assert status == 200, body
    assert body["choices"][0]["finish_reason"] == "stop"
    assert not json_problems(body["choices"][0]["message"]["content"], None, want_object=True)


# ---------------------------------------------------------------- chat: tools


def tool_def(entry, strict=None):
    fn = {"name": entry["tool"]["name"], "description": entry["tool"]["description"], "parameters": entry["schema"]}
    s = entry["strict"] if strict is None else strict
    if s:
        fn["strict"] = True
    return {"type": "function", "function": fn}


ALL_TOOLS = [tool_def(e) for e in TOOL_ENTRIES]
TOOL_SCHEMAS = {e["tool"]["name"]: e["schema"] for e in TOOL_ENTRIES}


def check_forced_call(label, status, body, allowed, *, budget=REASONING):
    """A reply that must be a call to one of allowed (names): returns
    (finish_reason or None, [problems])."""
    if status != 200:
        return None, [f"{label}: HTTP {status}: {json.dumps(body)[:400]}"]
    ch = body["choices"][0]
    finish, msg = ch["finish_reason"], ch["message"]
    problems = []
    rt = usage_reasoning(body)
    if rt is None or rt > budget:
        problems.append(f"reasoning_tokens {rt} over the budget {budget}")
    calls = msg.get("tool_calls") or []
    if finish == "tool_calls":
        if len(calls) != 1:
            problems.append(f"{len(calls)} tool calls: {calls}")
        for call in calls:
            fn = call["function"]
            if call.get("type") != "function" or not call.get("id"):
                problems.append(f"malformed call {call}")
            if fn["name"] not in allowed:
                problems.append(f"called {fn['name']!r}, not one of {sorted(allowed)}")
                continue
            problems += json_problems(fn["arguments"], TOOL_SCHEMAS[fn["name"]], want_object=True)
        if msg.get("content"):
            problems.append(f"content next to a forced call: {msg['content'][:200]!r}")
    elif finish == "length":
        # Cut off inside the arguments: whatever came out is a JSON prefix.
        for call in calls:
            if call["function"]["name"] not in allowed:
                problems.append(f"called {call['function']['name']!r}, not one of {sorted(allowed)}")
            if not is_json_prefix(call["function"].get("arguments") or ""):
                problems.append(f"cut-off arguments are not a JSON prefix: {call['function']['arguments'][:300]!r}")
        if msg.get("content"):
            problems.append(f"a text answer instead of the forced call: {msg['content'][:200]!r}")
    else:
        problems.append(f"finish_reason {finish!r}, not tool_calls: {msg}")
    return finish, [f"{label}: {p}" for p in problems]


def tool_body(model, prompt, tool_choice, seed, tools=None, **kw):
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "tools": tools or ALL_TOOLS,
            "tool_choice": tool_choice, "temperature": 1, "seed": seed, "max_tokens": MAX_TOKENS,
            "max_reasoning_tokens": REASONING}
    body.update(kw)
    return body


@needs_tiny
def test_tool_choice_required_tiny(tiny):
    """"required": the answer is a call to one of the tools, with arguments
    valid for that tool's parameters."""
    names = set(TOOL_SCHEMAS)

    def one(seed):
        status, body = post(tiny, "/v1/chat/completions",
                            tool_body(TINY_MODEL, "Help me plan my day.", "required", seed))
        return check_forced_call(f"seed {seed}", status, body, names)

    seeds = list(range(300, 316))
    finishes, problems = summarize(run_all(one, seeds))
    assert not problems, "\n".join(problems)
    assert finishes.count("tool_calls") >= MIN_TOOL_STOP * len(seeds), finishes


@needs_tiny
def test_tool_choice_named_tiny(tiny):
    """A named function: a call to exactly that one, valid arguments, for
    every tool schema of the corpus (all tools offered each time)."""
    def one(args):
        i, entry = args
        name = entry["tool"]["name"]
        status, body = post(tiny, "/v1/chat/completions", tool_body(
            TINY_MODEL, entry["prompt"], {"type": "function", "function": {"name": name}}, 400 + i))
        return check_forced_call(name, status, body, {name})

    items = list(enumerate(TOOL_ENTRIES)) * 2
    items = [(i, e) for i, (_, e) in enumerate(items)]
    finishes, problems = summarize(run_all(one, items))
    assert not problems, "\n".join(problems)
    assert finishes.count("tool_calls") >= MIN_TOOL_STOP * len(items), finishes


@needs_tiny
def test_tool_choice_required_streaming_tiny(tiny):
    """The streamed forced call: the argument deltas join into valid JSON
    for the tool that was named in the first delta."""
    def one(seed):
        status, events = stream(tiny, "/v1/chat/completions",
                                tool_body(TINY_MODEL, "Book something.", "required", seed,
                                          stream_options={"include_usage": True}))
        if status != 200:
            return None, [f"seed {seed}: HTTP {status}: {events}"]
        content, _, finish, usage, deltas = collect_chat_stream(events)
        problems = []
        names = [d["function"]["name"] for d in deltas if (d.get("function") or {}).get("name")]
        args = "".join((d.get("function") or {}).get("arguments") or "" for d in deltas)
        if content:
            problems.append(f"content in a forced call: {content[:200]!r}")
        if finish == "tool_calls":
            if len(names) != 1 or names[0] not in TOOL_SCHEMAS:
                problems.append(f"tool names in the deltas: {names}")
            else:
                problems += json_problems(args, TOOL_SCHEMAS[names[0]], want_object=True)
        elif finish == "length":
            if not is_json_prefix(args):
                problems.append(f"cut-off arguments are not a JSON prefix: {args[:300]!r}")
        else:
            problems.append(f"finish_reason {finish!r}")
        rt = ((usage or {}).get("completion_tokens_details") or {}).get("reasoning_tokens")
        if rt is None or rt > REASONING:
            problems.append(f"reasoning_tokens {rt}")
        return finish, [f"seed {seed}: {p}" for p in problems]

    seeds = list(range(500, 508))
    finishes, problems = summarize(run_all(one, seeds))
    assert not problems, "\n".join(problems)
    assert finishes.count("tool_calls") >= MIN_TOOL_STOP * len(seeds), finishes


@needs_tiny
def test_tool_choice_none_tiny(tiny):
    """"none": no call, whatever the model writes."""
    for seed in (600, 601, 602):
        status, body = post(tiny, "/v1/chat/completions",
                            tool_body(TINY_MODEL, "What's the weather in Paris?", "none", seed, max_tokens=128))
        assert status == 200, body
        ch = body["choices"][0]
        assert not ch["message"].get("tool_calls"), ch
        assert ch["finish_reason"] in ("stop", "length"), ch


@needs_tiny
def test_strict_tools_auto_tiny(tiny):
    """Strict tools with tool_choice auto: random weights seldom decide to
    call, but any call they make has arguments valid for its tool, and a
    text answer is plain text."""
    tools = [tool_def(e, strict=True) for e in TOOL_ENTRIES if e["strict"]]
    strict_names = {t["function"]["name"] for t in tools}

    def one(seed):
        status, body = post(tiny, "/v1/chat/completions",
                            tool_body(TINY_MODEL, "What's the weather in Paris?", "auto", seed, tools=tools,
                                      max_tokens=256))
        if status != 200:
            return None, [f"seed {seed}: HTTP {status}: {body}"]
        ch = body["choices"][0]
        problems = []
        if ch["finish_reason"] == "tool_calls":
            for call in ch["message"]["tool_calls"]:
                if call["function"]["name"] not in strict_names:
                    problems.append(f"called unknown {call['function']['name']!r}")
                else:
                    problems += json_problems(call["function"]["arguments"], TOOL_SCHEMAS[call["function"]["name"]],
                                              want_object=True)
        elif ch["finish_reason"] not in ("stop", "length"):
            problems.append(f"finish_reason {ch['finish_reason']!r}")
        return ch["finish_reason"], [f"seed {seed}: {p}" for p in problems]

    _, problems = summarize(run_all(one, list(range(700, 708))))
    assert not problems, "\n".join(problems)


def test_forced_calls_mock(mock):
    """The mock's forced calls: required and named, every tool schema,
    always finished, always valid."""
    names = set(TOOL_SCHEMAS)

    def one(args):
        choice, allowed = args
        status, body = post(mock, "/v1/chat/completions",
                            tool_body(MOCK_MODEL, "Do it.", choice, 1, max_tokens=2000, max_reasoning_tokens=64))
        finish, problems = check_forced_call(json.dumps(choice), status, body, allowed, budget=64)
        if finish is not None and finish != "tool_calls":
            problems.append(f"{choice}: mock finished with {finish}")
        return finish, problems

    items = [("required", names)] + [({"type": "function", "function": {"name": n}}, {n}) for n in sorted(names)]
    _, problems = summarize(run_all(one, items))
    assert not problems, "\n".join(problems)


def test_strict_tool_auto_mock(mock):
    """The mock calls the first tool offered; with strict it must fill in
    arguments valid for the schema (not the user's text in every field)."""
    problems = []
    for entry in TOOL_ENTRIES:
        status, body = post(mock, "/v1/chat/completions", {
            "model": MOCK_MODEL, "messages": [{"role": "user", "content": entry["prompt"]}],
            "tools": [tool_def(entry, strict=True)], "max_tokens": 2000})
        assert status == 200, body
        ch = body["choices"][0]
        calls = ch["message"].get("tool_calls") or []
        if ch["finish_reason"] != "tool_calls" or len(calls) != 1:
            problems.append(f"{entry['name']}: {ch['finish_reason']} {str(calls)[:150]}")
            continue
        assert calls[0]["function"]["name"] == entry["tool"]["name"]
        problems += [f"{entry['name']}: {p}" for p in
                     json_problems(calls[0]["function"]["arguments"], entry["schema"], want_object=True)]
    assert not problems, "\n".join(problems)


def test_legacy_named_function_call_mock(mock):
    """The deprecated functions / function_call {"name": ...} pair forces
    the call the same way."""
    entry = BY_NAME["get_weather"]
    status, body = post(mock, "/v1/chat/completions", {
        "model": MOCK_MODEL, "messages": [{"role": "user", "content": "Weather?"}],
        "functions": [{"name": "get_weather", "description": "Weather.", "parameters": entry["schema"]},
                      {"name": "web_search", "description": "Search.", "parameters": BY_NAME["web_search"]["schema"]}],
        "function_call": {"name": "web_search"}, "max_tokens": 2000})
    assert status == 200, body
    ch = body["choices"][0]
    assert ch["finish_reason"] == "function_call", ch
    fc = ch["message"]["function_call"]
    assert fc["name"] == "web_search"
    assert not json_problems(fc["arguments"], BY_NAME["web_search"]["schema"], want_object=True), fc


# ---------------------------------------------------------------- reasoning budget


@needs_tiny
@pytest.mark.parametrize("budget", [0, 5, 40])
def test_max_reasoning_tokens_tiny(tiny, budget):
    """max_reasoning_tokens N: at most N reasoning tokens, then the answer
    (random weights never end their reasoning alone: without the budget
    they would reason until max_tokens)."""
    entry = BY_NAME["order_status_enums"]
    plain = {"model": TINY_MODEL, "messages": [{"role": "user", "content": "Hello"}], "temperature": 1, "seed": 31,
             "max_tokens": 200, "max_reasoning_tokens": budget}
    bodies = {
        "plain": plain,
        "json_schema": {**plain, "max_tokens": MAX_TOKENS, "response_format": schema_format(entry)},
        "required": tool_body(TINY_MODEL, "Hello", "required", 31, max_reasoning_tokens=budget),
    }
    for kind, req in bodies.items():
        status, body = post(tiny, "/v1/chat/completions", req)
        assert status == 200, (kind, body)
        ch = body["choices"][0]
        msg = ch["message"]
        rt = usage_reasoning(body)
        assert rt is not None and rt <= budget, (kind, body["usage"])
        if budget == 0:
            assert not msg.get("reasoning_content"), (kind, msg)
        assert body["usage"]["completion_tokens"] > rt, (kind, body["usage"])  # tokens after the reasoning
        if kind == "required":
            assert ch["finish_reason"] in ("tool_calls", "length"), (kind, ch)
            assert msg.get("tool_calls"), (kind, msg)
        else:
            assert ch["finish_reason"] in ("stop", "length"), (kind, ch)
            assert msg.get("content"), (kind, msg)
            if kind == "json_schema" and ch["finish_reason"] == "stop":
                assert not json_problems(msg["content"], entry["schema"]), msg["content"]


@needs_tiny
def test_max_reasoning_tokens_streaming_tiny(tiny):
    status, events = stream(tiny, "/v1/chat/completions", {
        "model": TINY_MODEL, "messages": [{"role": "user", "content": "Hello"}], "temperature": 1, "seed": 32,
        "max_tokens": 100, "max_reasoning_tokens": 5, "stream_options": {"include_usage": True}})
    assert status == 200, events
    content, reasoning, finish, usage, _ = collect_chat_stream(events)
    assert usage["completion_tokens_details"]["reasoning_tokens"] <= 5
    assert content and finish in ("stop", "length")


def test_max_reasoning_tokens_mock(mock):
    """The mock writes a long reasoning; the budget cuts it."""
    status, free = post(mock, "/v1/chat/completions", {
        "model": MOCK_MODEL, "messages": [{"role": "user", "content": "Explain tensors."}], "max_tokens": 2000})
    assert status == 200 and usage_reasoning(free) > 8, free
    status, body = post(mock, "/v1/chat/completions", {
        "model": MOCK_MODEL, "messages": [{"role": "user", "content": "Explain tensors."}], "max_tokens": 2000,
        "max_reasoning_tokens": 8})
    assert status == 200, body
    assert usage_reasoning(body) <= 8
    assert body["choices"][0]["finish_reason"] == "stop" and body["choices"][0]["message"]["content"]


@pytest.mark.parametrize("value", [-1, 1.5, "ten"])
def test_max_reasoning_tokens_out_of_range(mock, value):
    status, body = post(mock, "/v1/chat/completions", {
        "model": MOCK_MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_reasoning_tokens": value})
    assert status == 400, body
    assert body["error"]["param"] == "max_reasoning_tokens", body
