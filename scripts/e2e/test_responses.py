"""The Responses API (POST /v1/responses and the stored responses) end to
end with the official openai Python SDK, against a real coordinator (mock
engine unless said otherwise). The reference is OpenAI's API as the SDK
types it: raw JSON is validated with the SDK's own models
(responseskit.assert_*_type), and the SDK's helpers (output_text, the
stream helper, pagination) are used as users use them.

The mock engine writes a reasoning (analysis) text, then a final answer
that quotes the last user message ("You said: ..."); with function tools
offered and a user message last, it calls the first tool with every
top-level parameter set to that message; after a function_call_output it
answers "... using the tool result: <output>"."""
import json
import os
import time

import openai
import pytest

from responseskit import (MODEL, ROOMY, WEATHER_TOOL, assert_events_typed, assert_item_type, assert_response_type,
                          check_stream, client, message_text, request, sse, without_parsed)

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
TINY = os.path.join(ROOT, "models", "tiny")


def kinds(r):
    return [item.type for item in r.output]


def check_usage(u, *, reasoning=True):
    assert isinstance(u.input_tokens, int) and u.input_tokens > 0
    assert isinstance(u.output_tokens, int) and u.output_tokens > 0
    assert u.total_tokens == u.input_tokens + u.output_tokens
    assert isinstance(u.input_tokens_details.cached_tokens, int)
    assert 0 <= u.input_tokens_details.cached_tokens <= u.input_tokens
    rt = u.output_tokens_details.reasoning_tokens
    assert isinstance(rt, int) and rt <= u.output_tokens
    if reasoning:
        assert rt > 0


def check_reasoning_item(item):
    assert item.type == "reasoning"
    assert item.id.startswith("rs_"), item.id
    assert item.summary == []
    assert [c.type for c in item.content] == ["reasoning_text"]
    assert item.content[0].text.strip()


def check_message_item(item, *, status="completed"):
    assert item.type == "message"
    assert item.id.startswith("msg_"), item.id
    assert item.role == "assistant" and item.status == status
    assert [c.type for c in item.content] == ["output_text"]
    assert item.content[0].annotations == []
    assert "<|" not in item.content[0].text


def check_function_call(item, name, arguments):
    assert item.type == "function_call"
    assert item.id.startswith("fc_"), item.id
    assert item.call_id.startswith("call_"), item.call_id
    assert item.name == name
    assert item.status == "completed"
    assert isinstance(item.arguments, str)
    assert json.loads(item.arguments) == arguments


def dump(r):
    return without_parsed(r.model_dump(mode="json"))


# -- create ---------------------------------------------------------------

def test_create_non_streaming(server):
    c = client(server)
    q = "What is the capital of France?"
    before = time.time()
    r = c.responses.create(model=MODEL, input=q, instructions="Answer briefly.", max_output_tokens=ROOMY,
                           temperature=0.5, top_p=0.9, metadata={"run": "e2e", "case": "create"},
                           reasoning={"effort": "low"})
    assert r.object == "response"
    assert r.id.startswith("resp_")
    assert r.status == "completed"
    assert r.error is None and r.incomplete_details is None
    assert before - 2 <= r.created_at <= time.time() + 2
    assert r.model == MODEL
    assert kinds(r) == ["reasoning", "message"]
    check_reasoning_item(r.output[0])
    check_message_item(r.output[1])
    # output_text is the SDK's own property over the message items.
    assert r.output_text == r.output[1].content[0].text
    assert "mock reply" in r.output_text and q in r.output_text
    check_usage(r.usage)
    # the request's parameters, echoed
    assert r.instructions == "Answer briefly."
    assert r.max_output_tokens == ROOMY
    assert r.temperature == 0.5 and r.top_p == 0.9
    assert r.metadata == {"run": "e2e", "case": "create"}
    assert r.reasoning.effort == "low"
    assert r.tools == [] and r.tool_choice == "auto"
    assert r.parallel_tool_calls is True
    assert r.previous_response_id is None
    assert r.text.format.type == "text"
    assert r.model_extra.get("store") is True  # not in the SDK's model; in OpenAI's JSON
    assert r.background in (None, False)


def test_create_response_json_matches_the_sdk_types(server):
    """The raw JSON of a create, a retrieve and a function call response,
    validated with the SDK's pydantic models (the SDK itself never
    validates: a missing required field only shows up in user code)."""
    status, _, body = request(server, "POST", "/v1/responses",
                              {"model": MODEL, "input": "Hello there", "max_output_tokens": ROOMY})
    assert status == 200, body
    assert_response_type(body, "POST /v1/responses")
    status, _, got = request(server, "GET", f"/v1/responses/{body['id']}")
    assert status == 200, got
    assert_response_type(got, "GET /v1/responses/{id}")
    assert got == body
    status, _, call = request(server, "POST", "/v1/responses",
                              {"model": MODEL, "input": "Weather in Oslo?", "tools": [WEATHER_TOOL]})
    assert status == 200, call
    assert_response_type(call, "a function call response")
    # OpenAI's JSON has no output_text (the SDKs compute it) but does have store.
    assert body["store"] is True and "output_text" not in body


def test_input_message_shapes(server):
    """Every message shape of the contract in one input list: roles
    developer/system/user/assistant, content strings and parts."""
    c = client(server)
    r = c.responses.create(model=MODEL, max_output_tokens=ROOMY, input=[
        {"role": "system", "content": "You are terse."},
        {"role": "developer", "content": [{"type": "input_text", "text": "Answer in English."}]},
        {"role": "user", "content": [{"type": "input_text", "text": "Hello"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hi! How can I help?"}]},
        {"type": "message", "role": "user", "content": "Tell me about tensors"},
    ])
    assert r.status == "completed"
    assert kinds(r) == ["reasoning", "message"]
    assert "Tell me about tensors" in r.output_text  # the last user message is what the model answers
    short = c.responses.create(model=MODEL, input="Tell me about tensors", max_output_tokens=ROOMY)
    assert r.usage.input_tokens > short.usage.input_tokens + 10  # the earlier turns reached the prompt


def test_tool_choice_none_answers_in_text(server):
    r = client(server).responses.create(model=MODEL, input="What's the weather in Paris?", tools=[WEATHER_TOOL],
                                        tool_choice="none", max_output_tokens=ROOMY)
    assert r.status == "completed"
    assert kinds(r) == ["reasoning", "message"]
    assert r.tool_choice == "none"
    assert [t.name for t in r.tools] == ["get_weather"]


def test_max_output_tokens_and_metadata_are_echoed(server):
    c = client(server)
    r = c.responses.create(model=MODEL, input="Hi", max_output_tokens=777, metadata={"user": "u1", "trace": "t-9"},
                           parallel_tool_calls=False, store=True)
    assert r.max_output_tokens == 777
    assert r.metadata == {"user": "u1", "trace": "t-9"}
    assert r.parallel_tool_calls is False
    got = c.responses.retrieve(r.id)
    assert got.max_output_tokens == 777 and got.metadata == {"user": "u1", "trace": "t-9"}


def test_profile_extension(server):
    c = client(server)
    r = c.responses.create(model=MODEL, input="Hi", extra_body={"profile": "balanced"}, max_output_tokens=ROOMY)
    assert r.status == "completed" and r.output_text
    with pytest.raises(openai.BadRequestError) as e:
        c.responses.create(model=MODEL, input="Hi", extra_body={"profile": "no-such-profile"})
    assert e.value.body["param"] == "profile"


# -- streaming ------------------------------------------------------------

def test_stream_wire_format_and_event_order(server):
    """The SSE stream as the wire carries it: every event typed as the SDK
    types it, named by its event: line, in OpenAI's order, the deltas
    token by token and adding up to the done texts and to the final
    response, which is also what GET returns."""
    q = "Count from one to ten"
    ctype, raw = sse(server, {"model": MODEL, "input": q, "max_output_tokens": ROOMY})
    assert ctype.startswith("text/event-stream"), ctype
    for name, ev in raw:
        assert name == ev.get("type"), f"event: line {name!r} for data type {ev.get('type')!r}"
    events = [ev for _, ev in raw]
    final, groups = check_stream(events, min_deltas=2)
    assert [e["type"] for e in events][-1] == "response.completed"
    assert final["status"] == "completed"
    assert [g["kind"] for g in groups] == ["reasoning", "message"]
    assert len(groups[1]["deltas"]) > 5  # token by token, not in one piece
    assert q in groups[1]["text"]
    assert message_text(final) == groups[1]["text"]
    assert final["output"][0]["content"][0]["text"] == groups[0]["text"]
    assert final["usage"]["output_tokens"] >= len(groups[0]["deltas"]) + len(groups[1]["deltas"])
    status, _, got = request(server, "GET", f"/v1/responses/{final['id']}")
    assert status == 200
    assert got == final
    assert_events_typed(events)


def test_stream_with_sdk_create(server):
    """stream=True through the SDK: the same grammar seen through its event
    classes, and the completed response equals a GET of its id."""
    c = client(server)
    events = list(c.responses.create(model=MODEL, input="Name three colours", stream=True, max_output_tokens=ROOMY,
                                     metadata={"case": "stream"}))
    as_dicts = [ev.to_dict() for ev in events]
    final, groups = check_stream(as_dicts, min_deltas=2)
    done = events[-1]
    assert done.type == "response.completed"
    text = "".join(ev.delta for ev in events if ev.type == "response.output_text.delta")
    reasoning = "".join(ev.delta for ev in events if ev.type == "response.reasoning_text.delta")
    assert text and text == done.response.output_text
    assert reasoning == done.response.output[0].content[0].text
    assert done.response.metadata == {"case": "stream"}
    check_usage(done.response.usage)
    assert dump(c.responses.retrieve(done.response.id)) == dump(done.response)


def test_stream_helper(server):
    """client.responses.stream(): the SDK's accumulating helper, its text
    delta events with snapshots, and get_final_response()."""
    c = client(server)
    deltas, snapshots, done_texts = [], [], []
    with c.responses.stream(model=MODEL, input="Say something about latency", max_output_tokens=ROOMY) as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
                snapshots.append(event.snapshot)
            elif event.type == "response.output_text.done":
                done_texts.append(event.text)
        final = stream.get_final_response()
    assert len(deltas) > 5
    assert snapshots[-1] == "".join(deltas)
    assert all(b.startswith(a) for a, b in zip(snapshots, snapshots[1:]))
    assert done_texts == ["".join(deltas)]
    assert final.status == "completed"
    assert final.output_text == "".join(deltas)
    assert "Say something about latency" in final.output_text
    assert dump(c.responses.retrieve(final.id)) == dump(final)


def test_stream_function_call(server):
    ctype, raw = sse(server, {"model": MODEL, "input": "Weather in Rome?", "tools": [WEATHER_TOOL]})
    events = [ev for _, ev in raw]
    final, groups = check_stream(events)
    assert [g["kind"] for g in groups] == ["reasoning", "function_call"]
    call = groups[1]
    assert len(call["deltas"]) > 1  # arguments streamed token by token too
    assert json.loads(call["text"]) == {"city": "Weather in Rome?"}
    assert call["item"]["name"] == "get_weather" and call["item"]["call_id"].startswith("call_")
    assert final["status"] == "completed"
    assert_events_typed(events)


def test_stream_helper_function_call(server):
    """The SDK's stream helper accumulates function call arguments onto the
    item that output_item.added announced (arguments "" there, as OpenAI
    sends it), and parses them for a strict tool."""
    c = client(server)
    deltas, snapshots = [], []
    with c.responses.stream(model=MODEL, input="Weather in Rome?", tools=[WEATHER_TOOL]) as stream:
        for event in stream:
            if event.type == "response.function_call_arguments.delta":
                deltas.append(event.delta)
                snapshots.append(event.snapshot)
        final = stream.get_final_response()
    assert len(deltas) > 1
    assert snapshots[-1] == "".join(deltas)
    assert kinds(final) == ["reasoning", "function_call"]
    call = final.output[1]
    assert call.arguments == "".join(deltas)
    assert call.parsed_arguments == {"city": "Weather in Rome?"}


# -- function calling -----------------------------------------------------

def first_call(c, **kw):
    q = "What's the weather in Paris?"
    r1 = c.responses.create(model=MODEL, input=kw.pop("input", q), tools=[WEATHER_TOOL], **kw)
    assert r1.status == "completed"
    assert kinds(r1) == ["reasoning", "function_call"], kinds(r1)
    check_reasoning_item(r1.output[0])
    check_function_call(r1.output[1], "get_weather", {"city": q})
    assert r1.output_text == ""
    check_usage(r1.usage)
    return r1


TOOL_RESULT = json.dumps({"city": "Paris", "temperature_c": 21, "sky": "clear"})


def test_function_call_round_trip_with_previous_response_id(server):
    c = client(server)
    r1 = first_call(c)
    call = r1.output[1]
    r2 = c.responses.create(model=MODEL, previous_response_id=r1.id, tools=[WEATHER_TOOL],
                            input=[{"type": "function_call_output", "call_id": call.call_id, "output": TOOL_RESULT}])
    assert r2.status == "completed"
    assert r2.previous_response_id == r1.id
    assert kinds(r2) == ["reasoning", "message"]
    check_message_item(r2.output[1])
    assert "using the tool result" in r2.output_text
    assert TOOL_RESULT in r2.output_text
    check_usage(r2.usage)
    assert r2.usage.input_tokens > r1.usage.input_tokens  # the first turn is in the prompt
    # input_items of the second response: the function_call_output it was given
    items = c.responses.input_items.list(r2.id, order="asc").data
    outputs = [it for it in items if it.type == "function_call_output"]
    assert len(outputs) == 1
    assert outputs[0].call_id == call.call_id and outputs[0].output == TOOL_RESULT


def test_function_call_round_trip_store_false_full_history(server):
    """Stateless: store=False, and the caller sends the whole history back
    (the first output's reasoning and function_call items as the SDK
    returned them, then the function_call_output). Same answer, same
    prompt, as the previous_response_id flow; neither response is stored."""
    c = client(server)
    q = "What's the weather in Paris?"
    history = [{"role": "user", "content": q}]
    r1 = first_call(c, input=history, store=False)
    assert r1.model_extra.get("store") is False
    history += r1.output  # the documented pattern: output items go back in as they came
    history.append({"type": "function_call_output", "call_id": r1.output[1].call_id, "output": TOOL_RESULT})
    r2 = c.responses.create(model=MODEL, input=history, tools=[WEATHER_TOOL], store=False)
    assert r2.status == "completed"
    assert kinds(r2) == ["reasoning", "message"]
    assert "using the tool result" in r2.output_text and TOOL_RESULT in r2.output_text
    streamed = list(c.responses.create(model=MODEL, input="Hi", store=False, stream=True, max_output_tokens=ROOMY))
    assert streamed[-1].type == "response.completed"
    for rid in (r1.id, r2.id, streamed[-1].response.id):
        with pytest.raises(openai.NotFoundError):
            c.responses.retrieve(rid)
    with pytest.raises(openai.NotFoundError):
        c.responses.create(model=MODEL, input="and tomorrow?", previous_response_id=r1.id)
    # The stored flow renders the same conversation: the same prompt and answer.
    s1 = first_call(c, input=[{"role": "user", "content": q}])
    s2 = c.responses.create(model=MODEL, previous_response_id=s1.id, tools=[WEATHER_TOOL],
                            input=[{"type": "function_call_output", "call_id": s1.output[1].call_id,
                                    "output": TOOL_RESULT}])
    assert s2.output_text == r2.output_text
    assert s2.usage.input_tokens == r2.usage.input_tokens


def test_stateless_with_encrypted_reasoning(server):
    """store=False with include=["reasoning.encrypted_content"]: the
    reasoning item comes back with encrypted_content, and a client that
    returns only that (no readable content, as stateless agents do) gets
    the same prompt as one that returns the content. Content the server did
    not make is refused."""
    c = client(server)
    q = "What's the weather in Paris?"
    r1 = first_call(c, input=[{"role": "user", "content": q}], store=False, include=["reasoning.encrypted_content"])
    reasoning = r1.output[0]
    assert isinstance(reasoning.encrypted_content, str) and reasoning.encrypted_content
    opaque = {"type": "reasoning", "id": reasoning.id, "summary": [], "encrypted_content": reasoning.encrypted_content}
    out = {"type": "function_call_output", "call_id": r1.output[1].call_id, "output": "sunny"}
    answers = []
    for item in (opaque, reasoning):
        r2 = c.responses.create(model=MODEL, tools=[WEATHER_TOOL], store=False,
                                input=[{"role": "user", "content": q}, item, r1.output[1], out])
        assert "using the tool result: sunny" in r2.output_text
        answers.append(r2)
    assert answers[0].usage.input_tokens == answers[1].usage.input_tokens
    with pytest.raises(openai.BadRequestError) as e:
        c.responses.create(model=MODEL, tools=[WEATHER_TOOL], store=False, input=[
            {"role": "user", "content": q}, dict(opaque, encrypted_content="bm90IG91cnM="), r1.output[1], out])
    check_error(e.value, "input[1]")


def test_hand_built_history(server):
    """A history written by hand, as non-SDK callers do: a function_call
    item without id or status, then its output."""
    r = client(server).responses.create(model=MODEL, tools=[WEATHER_TOOL], store=False, input=[
        {"role": "user", "content": "What's the weather in Paris?"},
        {"type": "function_call", "call_id": "call_manual1", "name": "get_weather", "arguments": '{"city":"Paris"}'},
        {"type": "function_call_output", "call_id": "call_manual1", "output": "sunny, 23 C"},
    ])
    assert r.status == "completed"
    assert kinds(r) == ["reasoning", "message"]
    assert "using the tool result: sunny, 23 C" in r.output_text


def test_instructions_are_not_carried_over(server):
    """OpenAI: with previous_response_id, the earlier response's
    instructions do not carry over to the next one."""
    c = client(server)
    long = "Always answer in a formal register and cite the weather service. " * 10
    with_ins = first_call(c, instructions=long)
    without = first_call(c)
    assert with_ins.instructions == long
    assert with_ins.usage.input_tokens > without.usage.input_tokens + 50
    seconds = []
    for r1 in (with_ins, without):
        r2 = c.responses.create(model=MODEL, previous_response_id=r1.id, tools=[WEATHER_TOOL],
                                input=[{"type": "function_call_output", "call_id": r1.output[1].call_id,
                                        "output": "sunny"}])
        assert r2.instructions is None
        seconds.append(r2)
    assert seconds[0].usage.input_tokens == seconds[1].usage.input_tokens
    assert seconds[0].output_text == seconds[1].output_text


def test_conversation_with_previous_response_id(server):
    c = client(server)
    r1 = c.responses.create(model=MODEL, input="My name is Ada.", max_output_tokens=ROOMY)
    r2 = c.responses.create(model=MODEL, input="What is my name?", previous_response_id=r1.id, max_output_tokens=ROOMY)
    assert r2.status == "completed" and r2.previous_response_id == r1.id
    assert "What is my name?" in r2.output_text
    # The whole first turn (input and its answer) is in the second prompt.
    assert r2.usage.input_tokens > r1.usage.input_tokens + len(r1.output_text) // 8
    r3 = c.responses.create(model=MODEL, input="And my surname?", previous_response_id=r2.id, max_output_tokens=ROOMY)
    assert r3.usage.input_tokens > r2.usage.input_tokens


# -- stored responses -----------------------------------------------------

def test_retrieve_and_delete(server):
    c = client(server)
    r = c.responses.create(model=MODEL, input="Remember this", max_output_tokens=ROOMY, metadata={"k": "v"})
    got = c.responses.retrieve(r.id)
    assert dump(got) == dump(r)
    status, _, body = request(server, "DELETE", f"/v1/responses/{r.id}")
    assert status == 200, body
    assert body == {"id": r.id, "object": "response", "deleted": True}
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError):
        c.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        c.responses.input_items.list(r.id)
    # and through the SDK's delete (returns None on success)
    r2 = c.responses.create(model=MODEL, input="Forget this", max_output_tokens=ROOMY)
    assert c.responses.delete(r2.id) is None
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(r2.id)


def test_input_items(server):
    c = client(server)
    given = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": [{"type": "input_text", "text": "second question"}]},
    ]
    r = c.responses.create(model=MODEL, input=given, max_output_tokens=ROOMY)

    status, _, raw = request(server, "GET", f"/v1/responses/{r.id}/input_items?order=asc")
    assert status == 200, raw
    assert raw["object"] == "list"
    for it in raw["data"]:
        assert_item_type(it)  # content is a list of parts, whatever shape the input had

    asc = c.responses.input_items.list(r.id, order="asc")
    assert [(it.type, it.role) for it in asc.data] == [("message", "developer"), ("message", "user"),
                                                       ("message", "assistant"), ("message", "user")]
    texts = [it.content[0].text for it in asc.data]
    assert texts == ["Be brief.", "first question", "first answer", "second question"]
    assert [it.content[0].type for it in asc.data] == ["input_text", "input_text", "output_text", "input_text"]
    ids = [it.id for it in asc.data]
    assert all(ids) and len(set(ids)) == 4
    assert asc.has_more is False
    assert asc.first_id == ids[0] and asc.last_id == ids[-1]

    desc = c.responses.input_items.list(r.id)  # default order: desc
    assert [it.id for it in desc.data] == ids[::-1]
    assert desc.first_id == ids[-1] and desc.last_id == ids[0]

    page = c.responses.input_items.list(r.id, order="asc", limit=2)
    assert [it.id for it in page.data] == ids[:2]
    assert page.has_more is True and page.first_id == ids[0] and page.last_id == ids[1]
    rest = c.responses.input_items.list(r.id, order="asc", limit=2, after=page.last_id)
    assert [it.id for it in rest.data] == ids[2:]
    assert rest.has_more is False
    desc_after = c.responses.input_items.list(r.id, limit=3, after=ids[-1])
    assert [it.id for it in desc_after.data] == ids[-2::-1]
    # The SDK's auto-pagination follows after=last id until has_more is false.
    assert [it.id for it in c.responses.input_items.list(r.id, order="asc", limit=1)] == ids
    # A string input is one user message with one input_text part.
    s = c.responses.create(model=MODEL, input="just a string", max_output_tokens=ROOMY)
    (only,) = c.responses.input_items.list(s.id).data
    assert only.type == "message" and only.role == "user"
    assert [(p.type, p.text) for p in only.content] == [("input_text", "just a string")]


def test_restart_keeps_stored_responses(make_server, tmp_path):
    env = {"GPTOSS_DATA_DIR": str(tmp_path / "data")}
    first = make_server(env=env)
    c = client(first)
    r = c.responses.create(model=MODEL, input="Persist me", max_output_tokens=ROOMY, metadata={"k": "kept"})
    call = c.responses.create(model=MODEL, input="Weather in Lima?", tools=[WEATHER_TOOL])
    items = dump(c.responses.input_items.list(r.id))
    first.stop()
    second = make_server(env=env)
    c2 = client(second)
    assert dump(c2.responses.retrieve(r.id)) == dump(r)
    assert dump(c2.responses.input_items.list(r.id)) == items
    # and a stored conversation goes on across the restart
    follow = c2.responses.create(model=MODEL, previous_response_id=call.id, tools=[WEATHER_TOOL],
                                 input=[{"type": "function_call_output", "call_id": call.output[-1].call_id,
                                         "output": "cloudy"}])
    assert "using the tool result: cloudy" in follow.output_text


# -- errors ---------------------------------------------------------------

def check_error(exc, param=None):
    body = exc.body  # the SDK unwraps {"error": {...}}
    assert isinstance(body, dict) and body.get("message"), body
    assert set(body) >= {"message", "type", "param", "code"}, body
    if param is not None:
        assert body["param"] == param or (body["param"] or "").startswith(param + "."), body


def test_errors(server):
    c = client(server)
    with pytest.raises(openai.NotFoundError) as e:
        c.responses.create(model=MODEL, input="Hi", previous_response_id="resp_doesnotexist0000")
    check_error(e.value, "previous_response_id")
    with pytest.raises(openai.NotFoundError) as e:
        c.responses.retrieve("resp_doesnotexist0000")
    check_error(e.value)
    assert "resp_doesnotexist0000" in e.value.body["message"]
    with pytest.raises(openai.NotFoundError):
        c.responses.input_items.list("resp_doesnotexist0000")
    with pytest.raises(openai.BadRequestError) as e:
        c.responses.create(model=MODEL, input="Hi", background=True)
    check_error(e.value, "background")
    # A schema the decoder cannot enforce, and a forced call to no tool.
    with pytest.raises(openai.BadRequestError) as e:
        c.responses.create(model=MODEL, input="Hi", text={"format": {
            "type": "json_schema", "name": "answer", "strict": True,
            "schema": {"type": "object", "if": {}, "then": {}}}})
    check_error(e.value, "text")
    with pytest.raises(openai.BadRequestError) as e:
        c.responses.create(model=MODEL, input="Weather?", tools=[WEATHER_TOOL],
                           tool_choice={"type": "function", "name": "get_time"})
    check_error(e.value, "tool_choice")
    # errors of a streamed request come back as HTTP errors before any event
    with pytest.raises(openai.BadRequestError):
        c.responses.create(model=MODEL, input="Hi", background=True, stream=True)


def test_function_call_output_without_its_call(server):
    """OpenAI refuses a function_call_output whose call_id no function_call
    in the conversation has (400, "No tool call found for function call
    output with call_id ..."), naming the Responses field, call_id."""
    with pytest.raises(openai.BadRequestError) as e:
        client(server).responses.create(model=MODEL, tools=[WEATHER_TOOL], input=[
            {"role": "user", "content": "Weather?"},
            {"type": "function_call_output", "call_id": "call_nope", "output": "x"}])
    check_error(e.value)
    assert "call_nope" in e.value.body["message"]
    assert e.value.body["param"] in ("input", "input[1]", "input[1].call_id"), e.value.body


def test_metadata_limits(server):
    """metadata, as OpenAI documents it: at most 16 pairs, keys up to 64
    characters, values up to 512; more is a 400 naming metadata."""
    c = client(server)
    for bad in ({f"k{i}": "v" for i in range(17)}, {"k" * 65: "v"}, {"k": "v" * 513}):
        with pytest.raises(openai.BadRequestError) as e:
            c.responses.create(model=MODEL, input="Hi", metadata=bad)
        check_error(e.value, "metadata")
    ok = {f"k{i}": "v" * 512 for i in range(16)}
    assert c.responses.create(model=MODEL, input="Hi", metadata=ok, max_output_tokens=ROOMY).metadata == ok


def test_max_output_tokens_incomplete(server):
    c = client(server)
    r = c.responses.create(model=MODEL, input="Write a long story", max_output_tokens=16)
    assert r.status == "incomplete"
    assert r.incomplete_details is not None and r.incomplete_details.reason == "max_output_tokens"
    assert 0 < r.usage.output_tokens <= 16
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    assert r.output and r.output[0].type == "reasoning"
    assert dump(c.responses.retrieve(r.id)) == dump(r)
    # streamed: the terminal event is response.incomplete
    events = [ev.to_dict() for ev in c.responses.create(model=MODEL, input="Write a long story",
                                                        max_output_tokens=16, stream=True)]
    final, _ = check_stream(events)
    assert events[-1]["type"] == "response.incomplete"
    assert final["incomplete_details"] == {"reason": "max_output_tokens"}
    assert final["usage"]["output_tokens"] <= 16


# -- the real engine ------------------------------------------------------

def test_real_engine_create_and_stream(make_server):
    """The tiny random-weight checkpoint through a worker process: the text
    is noise, the path and the shapes are what is tested."""
    srv = make_server("--model", TINY, "--step-timeout", "5s")
    c = client(srv)
    r = c.responses.create(model="tiny", input="Hello", max_output_tokens=16, temperature=0)
    assert r.id.startswith("resp_") and r.object == "response"
    assert r.status in ("completed", "incomplete")
    if r.status == "incomplete":
        assert r.incomplete_details.reason == "max_output_tokens"
    assert 0 < r.usage.output_tokens <= 16
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    for item in r.output:
        assert item.type in ("reasoning", "message", "function_call")
        for part in getattr(item, "content", None) or []:
            assert "<|" not in part.text
    status, _, raw = request(srv, "GET", f"/v1/responses/{r.id}")
    assert status == 200
    events = [ev.to_dict() for ev in c.responses.create(model="tiny", input="Hello", max_output_tokens=16,
                                                        temperature=0, stream=True)]
    final, groups = check_stream(events, min_deltas=0)  # noise may end an item at once
    assert final["usage"]["output_tokens"] <= 16
    # greedy: the stream says what the non-streamed create said
    assert [g["kind"] for g in groups] == [item.type for item in r.output]
    assert message_text(final) == r.output_text
    status, _, got = request(srv, "GET", f"/v1/responses/{final['id']}")
    assert got == final
    assert_response_type(raw)
    assert_events_typed(events)


def test_input_tokens_count(server):
    """The SDK's responses.input_tokens.count answers what a create with the
    same input is charged."""
    c = client(server)
    kw = dict(input="What is the weather in Paris?", instructions="Be brief.", tools=[WEATHER_TOOL])
    counted = c.responses.input_tokens.count(model=MODEL, **kw)
    created = c.responses.create(model=MODEL, max_output_tokens=ROOMY, **kw)
    assert counted.object == "response.input_tokens"
    assert counted.input_tokens == created.usage.input_tokens > 0
