"""Helpers for the Responses API end-to-end tests (test_responses.py,
test_agents_sdk.py, test_openai_node.py): clients, a raw SSE reader, a
checker of an event stream against OpenAI's documented event order, and
validation of raw JSON with the official SDK's own types (pydantic models
that the SDK itself only constructs, never validates)."""
import json
import urllib.error
import urllib.request

import typing

import openai
import pydantic
from openai.types.responses import Response, ResponseItem, ResponseStreamEvent

MODEL = "gpt-oss-20b"

# The mock engine calls the first tool offered, with every top-level
# parameter set to the last user message (clipped to 40 characters).
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather for a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "description": "City name"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}

# A budget the mock's longest reply fits in (it writes up to ~450 tokens).
ROOMY = 2000

TERMINAL = ("response.completed", "response.incomplete", "response.failed")


def client(server, **kw):
    return openai.OpenAI(base_url=server.base + "/v1", api_key="unused", max_retries=0, **kw)


def request(server, method, path, body=None, timeout=30):
    """A plain HTTP request; returns (status, headers, parsed JSON or None)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(server.base + path, data=data, method=method,
                                 headers={"Content-Type": "application/json", "Authorization": "Bearer unused"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            return r.status, r.headers, (json.loads(raw) if raw.strip() else None)
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, e.headers, (json.loads(raw) if raw.strip() else None)


def sse(server, body, timeout=60):
    """POSTs a streamed /v1/responses request and parses the SSE wire format
    by hand. Returns (content type, [(event name or None, data dict)])."""
    req = urllib.request.Request(server.base + "/v1/responses", data=json.dumps({**body, "stream": True}).encode(),
                                 method="POST",
                                 headers={"Content-Type": "application/json", "Authorization": "Bearer unused"})
    out = []
    with urllib.request.urlopen(req, timeout=timeout) as r:
        assert r.status == 200
        ctype = r.headers.get("Content-Type", "")
        name, data = None, []
        for raw in r:
            line = raw.decode("utf-8").rstrip("\n").rstrip("\r")
            if line == "":
                if data:
                    payload = "\n".join(data)
                    if payload != "[DONE]":
                        out.append((name, json.loads(payload)))
                name, data = None, []
            elif line.startswith(":"):
                continue
            elif line.startswith("event:"):
                name = line[len("event:"):].strip()
            elif line.startswith("data:"):
                v = line[len("data:"):]
                data.append(v[1:] if v.startswith(" ") else v)
        if data and "\n".join(data) != "[DONE]":
            out.append((name, json.loads("\n".join(data))))
    return ctype, out


def _members(alias):
    """The model classes of an SDK union alias, by their "type" literal."""
    while typing.get_origin(alias) is typing.Annotated:
        alias = typing.get_args(alias)[0]
    out = {}
    for cls in typing.get_args(alias):
        for lit in typing.get_args(cls.model_fields["type"].annotation):
            out.setdefault(lit, []).append(cls)
    return out


_UNIONS = {}


def sdk_errors(model, value):
    """Validates a raw JSON value against an SDK type (a model class, or a
    union alias whose members are told apart by "type", as the SDK does);
    returns pydantic's errors, empty when the value conforms."""
    if not (isinstance(model, type) and issubclass(model, pydantic.BaseModel)):
        members = _UNIONS.setdefault(id(model), _members(model))
        kind = value.get("type") if isinstance(value, dict) else None
        if kind not in members:
            return [f"type {kind!r} is not one the SDK knows here ({len(members)} types)"]
        errs = [sdk_errors(cls, value) for cls in members[kind]]
        return [] if any(not e for e in errs) else errs[0]
    try:
        model.model_validate(value)
    except pydantic.ValidationError as e:
        return [f"{'.'.join(map(str, err['loc']))}: {err['msg']} (got {err.get('input')!r:.80})"
                for err in _relevant(e.errors(), value)]
    return []


def _at(value, loc):
    """Follows an error location into the value; union member labels
    (class names pydantic puts in the path) are skipped. Returns (the value
    there, whether the location's last element is such a label)."""
    label = False
    for part in loc:
        label = False
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and isinstance(part, int) and part < len(value):
            value = value[part]
        else:
            label = True  # a union member's name: same value
    return value, label


def _relevant(errors, value):
    """Pydantic reports a failed union member by member; the members whose
    "type" literal is not the value's type are noise. Keeps the errors of
    the member(s) of the right type, or says that no member has that type."""
    wrong = {tuple(err["loc"][:-1]) for err in errors
             if err["loc"] and err["loc"][-1] == "type" and err["type"] == "literal_error"
             and _at(value, err["loc"][:-1])[1]}
    kept = [err for err in errors if not any(tuple(err["loc"][:len(w)]) == w for w in wrong)]
    for parent in sorted({w[:-1] for w in wrong}, key=len, reverse=True):
        if not any(tuple(err["loc"][:len(parent)]) == parent for err in kept):
            got, _ = _at(value, parent)
            kept.append({"loc": parent, "msg": f"type {got.get('type') if isinstance(got, dict) else got!r} "
                                              "is none of the SDK's types here", "input": got})
    return kept


def assert_sdk_type(model, value, what):
    errs = sdk_errors(model, value)
    name = model.__name__ if isinstance(model, type) else "types"
    assert not errs, f"{what} does not match the SDK's {name}:\n" + "\n".join(errs[:20])


def assert_response_type(value, what="response"):
    assert_sdk_type(Response, value, what)


def assert_event_type(value):
    assert_sdk_type(ResponseStreamEvent, value, f"event {value.get('type')}")


def assert_events_typed(events):
    """Every event of a stream as the SDK types it; one message for all."""
    problems = {}
    for ev in events:
        for err in sdk_errors(ResponseStreamEvent, ev):
            problems.setdefault(f"{ev.get('type')}: {err}", None)
    assert not problems, "events that do not match the SDK's types:\n" + "\n".join(problems)


def without_parsed(value):
    """A dump of an SDK object less the "parsed" keys that the SDK's parse
    helpers add (they are not on the wire)."""
    if isinstance(value, dict):
        return {k: without_parsed(v) for k, v in value.items() if k != "parsed"}
    if isinstance(value, list):
        return [without_parsed(v) for v in value]
    return value


def assert_item_type(value):
    assert_sdk_type(ResponseItem, value, f"input item {value.get('type')}")


def check_stream(events, *, min_deltas=1):
    """Checks a list of Responses stream events (dicts) against OpenAI's
    event grammar, and returns (final response, groups), one group per
    output item: {"kind", "item" (from output_item.done), "deltas", "text"}.

    created, in_progress, then per output item, in output_index order and
    not interleaved:
      output_item.added
        message:   content_part.added, output_text.delta+, output_text.done, content_part.done
        reasoning: [content_part.added], reasoning_text.delta+, reasoning_text.done, [content_part.done]
        function_call: function_call_arguments.delta+, function_call_arguments.done
      output_item.done
    and one terminal event: completed, incomplete or failed.
    """
    assert events, "no events"
    types = [e.get("type") for e in events]
    seq = [e.get("sequence_number") for e in events]
    assert all(isinstance(s, int) for s in seq), f"sequence_number missing: {seq}"
    assert seq[0] in (0, 1), f"first sequence_number {seq[0]}"
    assert all(b > a for a, b in zip(seq, seq[1:])), f"sequence_number not increasing: {seq}"
    assert "error" not in types, [e for e in events if e.get("type") == "error"]
    assert types[:2] == ["response.created", "response.in_progress"], types[:5]
    assert types[-1] in TERMINAL, types[-5:]
    assert sum(t in TERMINAL for t in types) == 1, types
    created, progress, final = events[0]["response"], events[1]["response"], events[-1]["response"]
    assert created["id"] == progress["id"] == final["id"]
    assert created["status"] == "in_progress" and progress["status"] == "in_progress"
    assert created["output"] == []
    assert final["status"] == types[-1].split(".")[1], (final["status"], types[-1])
    incomplete = types[-1] != "response.completed"

    body = events[2:-1]
    groups = []
    i = 0
    while i < len(body):
        added = body[i]
        assert added["type"] == "response.output_item.added", f"expected output_item.added at {i + 2}: {types}"
        index = len(groups)
        assert added["output_index"] == index, (added["output_index"], index)
        item = added["item"]
        kind, item_id = item["type"], item.get("id")
        assert kind in ("reasoning", "message", "function_call"), kind
        assert item_id, f"{kind} item without id: {item}"
        if kind != "reasoning":
            assert item.get("status") == "in_progress", item
        j = i + 1
        while j < len(body) and body[j]["type"] != "response.output_item.done":
            j += 1
        assert j < len(body), f"output item {index} never done: {types}"
        done = body[j]
        assert done["output_index"] == index and done["item"]["id"] == item_id and done["item"]["type"] == kind
        inner = body[i + 1:j]
        for ev in inner:
            assert ev.get("output_index") == index, ev
            assert ev.get("item_id") == item_id, ev
        names = [ev["type"] for ev in inner]
        g = {"kind": kind, "item": done["item"], "deltas": [], "text": None}
        if kind == "message":
            assert names[0] == "response.content_part.added" and names[-1] == "response.content_part.done", names
            assert names[-2] == "response.output_text.done", names
            assert set(names[1:-2]) <= {"response.output_text.delta"}, names
            part0, part1 = inner[0], inner[-1]
            assert part0["content_index"] == 0 and part0["part"]["type"] == "output_text"
            assert part0["part"]["text"] == "", part0
            g["deltas"] = [ev["delta"] for ev in inner[1:-2]]
            g["text"] = inner[-2]["text"]
            assert all(ev["content_index"] == 0 for ev in inner[1:-1])
            assert part1["part"]["type"] == "output_text" and part1["part"]["text"] == g["text"]
            content = done["item"]["content"]
            assert [c["type"] for c in content] == ["output_text"] and content[0]["text"] == g["text"]
            assert done["item"]["role"] == "assistant"
            assert done["item"]["status"] in (("completed", "incomplete") if incomplete else ("completed",))
        elif kind == "reasoning":
            k = 0
            if names and names[0] == "response.content_part.added":
                assert inner[0]["part"]["type"] == "reasoning_text", inner[0]
                k = 1
            end = len(names)
            if names and names[-1] == "response.content_part.done":
                assert k == 1, "content_part.done without content_part.added"
                end -= 1
            else:
                assert k == 0, "content_part.added without content_part.done"
            assert end > k and names[end - 1] == "response.reasoning_text.done", names
            assert set(names[k:end - 1]) <= {"response.reasoning_text.delta"}, names
            g["deltas"] = [ev["delta"] for ev in inner[k:end - 1]]
            g["text"] = inner[end - 1]["text"]
            if k:
                assert inner[-1]["part"]["text"] == g["text"]
            content = done["item"].get("content") or []
            assert [c["type"] for c in content] == ["reasoning_text"] and content[0]["text"] == g["text"], content
            assert done["item"].get("summary") == []
        else:
            assert names and names[-1] == "response.function_call_arguments.done", names
            assert set(names[:-1]) <= {"response.function_call_arguments.delta"}, names
            g["deltas"] = [ev["delta"] for ev in inner[:-1]]
            g["text"] = inner[-1]["arguments"]
            assert done["item"]["arguments"] == g["text"]
            assert done["item"]["status"] in (("completed", "incomplete") if incomplete else ("completed",))
            assert added["item"]["call_id"] == done["item"]["call_id"] and added["item"]["name"] == done["item"]["name"]
        assert "".join(g["deltas"]) == g["text"], (kind, g["deltas"], g["text"])
        if not incomplete:
            assert len(g["deltas"]) >= min_deltas, (kind, g["deltas"])
        groups.append(g)
        i = j + 1

    assert len(final["output"]) == len(groups), (final["output"], [g["kind"] for g in groups])
    for idx, g in enumerate(groups):
        assert final["output"][idx] == g["item"], f"output[{idx}] differs from its output_item.done"
    return final, groups


def message_text(response):
    """The output_text of a response dict, as the SDKs compute it."""
    return "".join(c["text"] for item in response["output"] if item["type"] == "message"
                   for c in item["content"] if c["type"] == "output_text")
