"""End-to-end tests: the official openai Python SDK against a running
coordinator (mock engine). They assert on what the SDK returns, so they
fail if our wire format drifts from what OpenAI clients parse."""
import json

import openai
import pytest


def client(server, key="unused", **kw):
    return openai.OpenAI(base_url=server.base + "/v1", api_key=key, max_retries=0, **kw)


def test_models(server):
    models = client(server).models.list()
    ids = [m.id for m in models.data]
    assert ids == ["gpt-oss-20b"]
    card = models.data[0]
    assert card.object == "model" and card.owned_by == "openai"
    assert card.model_extra["context_length"] == 131072


def test_chat_non_streaming(server):
    r = client(server).chat.completions.create(
        model="gpt-oss-20b",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is Python?"}],
        max_tokens=100, temperature=0,
    )
    assert r.object == "chat.completion"
    assert r.model == "gpt-oss-20b"
    assert r.id.startswith("chatcmpl-")
    choice = r.choices[0]
    assert choice.message.role == "assistant"
    assert choice.finish_reason in ("stop", "length")
    assert "mock reply" in choice.message.content
    assert "What is Python?" in choice.message.content
    # Harmony markup never leaks; reasoning is separated from the answer.
    assert "<|" not in choice.message.content
    assert choice.message.model_extra["reasoning_content"]
    u = r.usage
    assert u.prompt_tokens > 20  # the Harmony system message is counted
    assert 0 < u.completion_tokens <= 100
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    assert 0 < u.completion_tokens_details.reasoning_tokens < u.completion_tokens


def test_chat_streaming_with_usage_matches_non_streaming(server):
    c = client(server)
    kwargs = dict(model="gpt-oss-20b", messages=[{"role": "user", "content": "Count from 1 to 10"}],
                  max_tokens=60, temperature=0)
    whole = c.chat.completions.create(**kwargs)
    stream = c.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    content = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    reasoning = "".join((ch.choices[0].delta.model_extra or {}).get("reasoning_content") or ""
                        for ch in chunks if ch.choices)
    assert len(chunks) > 5  # delivered incrementally, not in one piece
    finals = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finals == [whole.choices[0].finish_reason]
    assert content == whole.choices[0].message.content
    assert reasoning == whole.choices[0].message.model_extra["reasoning_content"]
    # Usage: only the last chunk has it, with no choices; the others carry null.
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.completion_tokens == whole.usage.completion_tokens
    assert last.usage.prompt_tokens == whole.usage.prompt_tokens
    assert all(ch.usage is None for ch in chunks[:-1])


def test_streaming_without_usage_has_no_usage(server):
    chunks = list(client(server).chat.completions.create(
        model="gpt-oss-20b", messages=[{"role": "user", "content": "Hi"}], max_tokens=10, stream=True))
    assert all(ch.usage is None for ch in chunks)
    assert chunks[-1].choices[0].finish_reason == "length"


def test_completions(server):
    c = client(server)
    r = c.completions.create(model="gpt-oss-20b", prompt="Once upon a time", max_tokens=12, temperature=0)
    assert r.object == "text_completion"
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 12
    streamed = "".join(ch.choices[0].text for ch in c.completions.create(
        model="gpt-oss-20b", prompt="Once upon a time", max_tokens=12, temperature=0, stream=True) if ch.choices)
    assert streamed == r.choices[0].text
    toks = c.completions.create(model="gpt-oss-20b", prompt=[1, 2, 3, 4], max_tokens=3)
    assert toks.usage.prompt_tokens == 4


def test_stop_sequence(server):
    c = client(server)
    full = c.chat.completions.create(model="gpt-oss-20b", messages=[{"role": "user", "content": "stop test"}],
                                     max_tokens=80, temperature=0).choices[0].message.content
    stop = full[20:26]
    r = c.chat.completions.create(model="gpt-oss-20b", messages=[{"role": "user", "content": "stop test"}],
                                  max_tokens=80, temperature=0, stop=[stop])
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].message.content == full[:full.index(stop)]


def test_n_choices(server):
    r = client(server).chat.completions.create(model="gpt-oss-20b", messages=[{"role": "user", "content": "Hi"}],
                                                max_tokens=8, n=3)
    assert [ch.index for ch in r.choices] == [0, 1, 2]
    assert r.usage.completion_tokens == 24


def test_errors(server):
    c = client(server)
    with pytest.raises(openai.NotFoundError) as e:
        c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Hi"}])
    assert e.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="gpt-oss-20b", messages=[])
    assert e.value.code == "empty_array" and e.value.param == "messages"
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="gpt-oss-20b", messages=[{"role": "user", "content": "Hi"}], max_tokens=10000)
    assert e.value.param == "max_tokens" and "too large" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="gpt-oss-20b", messages=[{"role": "user", "content": "Hi"}], temperature=3)
    assert e.value.param == "temperature"
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="gpt-oss-20b", messages=[{"role": "user", "content": "Hi"}],
                                  tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
                                  tool_choice={"type": "function", "function": {"name": "g"}})
    assert e.value.code == "invalid_value" and e.value.param == "tool_choice.function.name"
    # The server is unharmed.
    assert c.chat.completions.create(model="gpt-oss-20b", messages=[{"role": "user", "content": "Hi"}],
                                     max_tokens=5).choices[0].finish_reason == "length"


def test_api_key(make_server):
    srv = make_server("--api-key", "sk-right", "--api-key", "sk-other")
    with pytest.raises(openai.AuthenticationError) as e:
        client(srv, key="sk-wrong").models.list()
    assert e.value.code == "invalid_api_key"
    assert client(srv, key="sk-other").models.list().data[0].id == "gpt-oss-20b"
    assert srv.get_json("/health")["status"] == "ok"  # /health stays public


def test_streaming_disabled_by_env(make_server):
    srv = make_server(env={"ENABLE_STREAMING": "false"})
    c = client(srv)
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="gpt-oss-20b", messages=[{"role": "user", "content": "Hi"}], stream=True)
    assert e.value.code == "streaming_disabled"
    r = c.chat.completions.create(model="gpt-oss-20b", messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
    assert r.usage.completion_tokens == 4 and r.choices[0].finish_reason == "length"


WEATHER = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name"},
                           "unit": {"type": "string", "enum": ["c", "f"]}},
            "required": ["city"],
        },
    },
}]


def test_tool_call_round_trip(server):
    c = client(server)
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    r = c.chat.completions.create(model="gpt-oss-20b", messages=messages, tools=WEATHER, max_tokens=200)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.model_extra["reasoning_content"]
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("call_")
    args = json.loads(call.function.arguments)
    assert "city" in args
    # Send the result back as a client would; the model answers with it.
    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temp_c": 21})})
    r2 = c.chat.completions.create(model="gpt-oss-20b", messages=messages, tools=WEATHER, max_tokens=200)
    assert r2.choices[0].finish_reason == "stop"
    assert "temp_c" in r2.choices[0].message.content
    assert not r2.choices[0].message.tool_calls


def test_tool_call_streaming(server):
    chunks = list(client(server).chat.completions.create(
        model="gpt-oss-20b", messages=[{"role": "user", "content": "Weather in Seoul?"}],
        tools=WEATHER, max_tokens=200, stream=True))
    reasoning = "".join((ch.choices[0].delta.model_extra or {}).get("reasoning_content") or ""
                        for ch in chunks if ch.choices)
    calls = [tc for ch in chunks if ch.choices for tc in (ch.choices[0].delta.tool_calls or [])]
    assert reasoning
    assert calls[0].id.startswith("call_") and calls[0].function.name == "get_weather"
    assert all(tc.index == 0 for tc in calls)
    assert all(tc.id is None for tc in calls[1:])
    assert "city" in json.loads("".join(tc.function.arguments or "" for tc in calls))
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason] == ["tool_calls"]


def test_reasoning_field_choice(server):
    c = client(server)
    r = c.chat.completions.create(model="gpt-oss-20b", messages=[{"role": "user", "content": "Hi"}],
                                  max_tokens=30, extra_body={"reasoning_field": "reasoning"})
    extra = r.choices[0].message.model_extra
    assert extra.get("reasoning") and "reasoning_content" not in extra
