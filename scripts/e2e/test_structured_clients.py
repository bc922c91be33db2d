"""Structured output through the client libraries people use for it, as
they use them: openai-python's chat.completions.parse and its stream helper,
responses.parse; LangChain's with_structured_output (json_schema and
function_calling); instructor's default mode (a forced tool call); the
OpenAI Agents SDK's Agent(output_type=...) on its default Responses model
and on OpenAIChatCompletionsModel. Each test checks what the library hands
its caller (a validated pydantic object) and what it sent (the request body,
recorded with an HTTP client event hook), so that a library quietly falling
back to another mode is noticed.

Where it runs: the tiny random-weights model (models/tiny) with
max_reasoning_tokens (through each library's way of passing extra body
fields) and output models whose every field is bounded (enums, ranges,
strings with max_length), so that the constrained answer always finishes;
the mock engine (--mock) where noted, for routes where the reasoning budget
is not a request field the library can pass.

The versions are pinned in scripts/requirements-e2e.txt (instructor, whose
metadata refuses openai 3, in requirements-e2e-nodeps.txt)."""
import asyncio
import json
from typing import Literal, Optional

import openai
import pytest
from pydantic import BaseModel, ConfigDict, Field

from conftest import Coordinator
# offline: test_clients' autouse fixture, imported so that it applies here too
# (quiet client libraries, and a test fails if one reaches for the network).
from test_clients import offline  # noqa: F401
from test_structured import HAVE_TINY, TINY, json_problems

pytestmark = [pytest.mark.filterwarnings("ignore:.*ReadOnly. qualifier:UserWarning"),
              pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince211")]

REASONING = 16
EXTRA = {"max_reasoning_tokens": REASONING}


# ---------------------------------------------------------------- output models (every field bounded)
# extra="forbid" (additionalProperties false): without it a schema allows
# other keys, and random weights wander off into one (a key is an unbounded
# string) where the libraries send the schema as it is (function calling).


class Weather(BaseModel):
    """The weather in a city."""
    model_config = ConfigDict(extra="forbid")
    city: str = Field(max_length=24)
    unit: Literal["celsius", "fahrenheit"]
    temperature: int = Field(ge=-50, le=50)
    conditions: list[Literal["sunny", "cloudy", "rain", "snow", "wind"]] = Field(max_length=3)


class Attendee(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=20)
    optional: bool


class Meeting(BaseModel):
    """A meeting to put on the calendar."""
    model_config = ConfigDict(extra="forbid")
    title: str = Field(max_length=30)
    day: Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    hour: int = Field(ge=0, le=23)
    attendees: list[Attendee] = Field(max_length=2)
    location: Optional[str] = Field(default=None, max_length=20)


def check_weather(w):
    assert isinstance(w, Weather), type(w)
    assert len(w.city) <= 24 and -50 <= w.temperature <= 50 and len(w.conditions) <= 3


def check_meeting(m):
    assert isinstance(m, Meeting), type(m)
    assert len(m.title) <= 30 and 0 <= m.hour <= 23 and len(m.attendees) <= 2
    assert m.location is None or len(m.location) <= 20


# ---------------------------------------------------------------- servers, clients, no network


@pytest.fixture(scope="module")
def tiny(offline):
    if not HAVE_TINY:
        pytest.skip("models/tiny missing: run `make tiny` (make test-e2e does)")
    c = Coordinator("--model", TINY, timeout=60)
    c.model = "tiny"
    yield c
    c.stop()


@pytest.fixture(scope="module")
def mock(offline):
    c = Coordinator("--mock")
    c.model = "gpt-oss-20b"
    yield c
    c.stop()


class Recorder:
    """The JSON bodies a client sent, by path."""

    def __init__(self):
        self.sent = []

    def hook(self, request):
        if request.method == "POST":
            self.sent.append((request.url.path, json.loads(request.content or b"null")))

    async def ahook(self, request):
        self.hook(request)

    def bodies(self, suffix):
        return [b for p, b in self.sent if p.endswith(suffix)]


def sync_client(srv, rec):
    return openai.OpenAI(base_url=srv.base + "/v1", api_key="unused", max_retries=0, timeout=120,
                         http_client=openai.DefaultHttpxClient(event_hooks={"request": [rec.hook]}))


def async_client(srv, rec):
    return openai.AsyncOpenAI(base_url=srv.base + "/v1", api_key="unused", max_retries=0, timeout=120,
                              http_client=openai.DefaultAsyncHttpxClient(event_hooks={"request": [rec.ahook]}))


def sent_schema(body):
    """The JSON schema a chat body carries in response_format."""
    rf = body.get("response_format") or {}
    assert rf.get("type") == "json_schema", body
    return rf["json_schema"]["schema"]


# ---------------------------------------------------------------- openai-python


def test_openai_chat_parse(tiny):
    rec = Recorder()
    c = sync_client(tiny, rec)
    r = c.chat.completions.parse(model=tiny.model, messages=[{"role": "user", "content": "Weather in Oslo?"}],
                                 response_format=Weather, temperature=1, seed=1, max_tokens=512, extra_body=EXTRA)
    msg = r.choices[0].message
    check_weather(msg.parsed)
    assert r.choices[0].finish_reason == "stop"
    assert msg.parsed == Weather.model_validate_json(msg.content)
    assert r.usage.completion_tokens_details.reasoning_tokens <= REASONING
    (body,) = rec.bodies("/chat/completions")
    assert body["response_format"]["json_schema"]["strict"] is True and body["max_reasoning_tokens"] == REASONING
    assert not json_problems(msg.content, sent_schema(body))


def test_openai_chat_parse_nested_model(tiny):
    rec = Recorder()
    c = sync_client(tiny, rec)
    for seed in (2, 3, 4):
        r = c.chat.completions.parse(model=tiny.model,
                                     messages=[{"role": "user", "content": "Book a sync with Ann on Monday at 10."}],
                                     response_format=Meeting, temperature=1, seed=seed, max_tokens=512, extra_body=EXTRA)
        check_meeting(r.choices[0].message.parsed)
        assert not json_problems(r.choices[0].message.content, sent_schema(rec.bodies("/chat/completions")[-1]))


def test_openai_chat_stream_helper(tiny):
    """client.chat.completions.stream: content deltas, the SDK's partial
    parses along the way, and the parsed final message."""
    rec = Recorder()
    c = sync_client(tiny, rec)
    deltas, kinds = [], set()
    with c.chat.completions.stream(model=tiny.model, messages=[{"role": "user", "content": "Weather in Rome?"}],
                                   response_format=Weather, temperature=1, seed=5, max_tokens=512,
                                   extra_body=EXTRA) as stream:
        for event in stream:
            kinds.add(event.type)
            if event.type == "content.delta":
                deltas.append(event.delta)
        final = stream.get_final_completion()
    assert "content.delta" in kinds and "content.done" in kinds, kinds
    msg = final.choices[0].message
    check_weather(msg.parsed)
    assert "".join(deltas) == msg.content
    assert rec.bodies("/chat/completions")[0]["stream"] is True


def test_openai_chat_stream_helper_mock(mock):
    rec = Recorder()
    with sync_client(mock, rec).chat.completions.stream(
            model=mock.model, messages=[{"role": "user", "content": "Plan a meeting."}],
            response_format=Meeting, max_tokens=2000) as stream:
        final = stream.get_final_completion()
    check_meeting(final.choices[0].message.parsed)


def test_openai_chat_parse_mock(mock):
    rec = Recorder()
    r = sync_client(mock, rec).chat.completions.parse(
        model=mock.model, messages=[{"role": "user", "content": "Plan a meeting."}], response_format=Meeting,
        max_tokens=2000)
    check_meeting(r.choices[0].message.parsed)
    assert r.system_fingerprint.startswith("mock_")


def test_openai_chat_parse_strict_tool(tiny):
    """parse() with openai.pydantic_function_tool: a strict tool; forced
    with tool_choice, its parsed_arguments are the model."""
    rec = Recorder()
    c = sync_client(tiny, rec)
    r = c.chat.completions.parse(model=tiny.model, messages=[{"role": "user", "content": "Weather in Lima?"}],
                                 tools=[openai.pydantic_function_tool(Weather)],
                                 tool_choice={"type": "function", "function": {"name": "Weather"}},
                                 temperature=1, seed=6, max_tokens=512, extra_body=EXTRA)
    assert r.choices[0].finish_reason == "tool_calls"
    (call,) = r.choices[0].message.tool_calls
    assert call.function.name == "Weather"
    check_weather(call.function.parsed_arguments)
    assert rec.bodies("/chat/completions")[0]["tools"][0]["function"]["strict"] is True


def test_openai_responses_parse_mock(mock):
    """responses.parse(text_format=...): on the mock, since the reasoning
    budget is a chat field."""
    rec = Recorder()
    r = sync_client(mock, rec).responses.parse(model=mock.model, input="Plan a meeting.", text_format=Meeting,
                                               max_output_tokens=2000)
    assert r.status == "completed"
    check_meeting(r.output_parsed)
    (body,) = rec.bodies("/responses")
    assert body["text"]["format"]["type"] == "json_schema" and body["text"]["format"]["strict"] is True


def test_openai_responses_parse_tiny(tiny):
    """responses.parse on random weights, the reasoning budget in extra_body."""
    rec = Recorder()
    r = sync_client(tiny, rec).responses.parse(model=tiny.model, input="Weather in Kyiv?", text_format=Weather,
                                               temperature=1, max_output_tokens=512, extra_body=EXTRA)
    assert r.status == "completed", r
    check_weather(r.output_parsed)
    assert r.usage.output_tokens_details.reasoning_tokens <= REASONING


def test_openai_responses_stream_helper_mock(mock):
    rec = Recorder()
    with sync_client(mock, rec).responses.stream(model=mock.model, input="Weather?", text_format=Weather,
                                                 max_output_tokens=2000) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    check_weather(final.output_parsed)
    assert "".join(deltas) == final.output_text


# ---------------------------------------------------------------- LangChain


@pytest.fixture(scope="module")
def ChatOpenAI(offline):
    from langchain_openai import ChatOpenAI as cls
    return cls


def langchain_llm(ChatOpenAI, srv, rec, **kw):
    return ChatOpenAI(base_url=srv.base + "/v1", api_key="unused", model=srv.model, max_retries=0, timeout=120,
                      http_client=openai.DefaultHttpxClient(event_hooks={"request": [rec.hook]}), **kw)


def test_langchain_json_schema(tiny, ChatOpenAI):
    rec = Recorder()
    llm = langchain_llm(ChatOpenAI, tiny, rec, temperature=1, seed=7, max_tokens=512, extra_body=EXTRA)
    out = llm.with_structured_output(Meeting, method="json_schema").invoke("Lunch with Bo on Friday at noon.")
    check_meeting(out)
    (body,) = rec.bodies("/chat/completions")
    assert body["response_format"]["type"] == "json_schema" and "tools" not in body
    assert body["max_reasoning_tokens"] == REASONING


def test_langchain_json_schema_include_raw(tiny, ChatOpenAI):
    rec = Recorder()
    llm = langchain_llm(ChatOpenAI, tiny, rec, temperature=1, seed=8, max_tokens=512, extra_body=EXTRA)
    out = llm.with_structured_output(Weather, method="json_schema", include_raw=True).invoke("Weather in Quito?")
    assert out["parsing_error"] is None
    check_weather(out["parsed"])
    assert out["raw"].response_metadata["finish_reason"] == "stop"


def test_langchain_function_calling(tiny, ChatOpenAI):
    """with_structured_output's function_calling method: the model as a tool,
    forced with a named tool_choice."""
    rec = Recorder()
    llm = langchain_llm(ChatOpenAI, tiny, rec, temperature=1, seed=9, max_tokens=512, extra_body=EXTRA)
    out = llm.with_structured_output(Weather, method="function_calling").invoke("Weather in Cairo?")
    check_weather(out)
    (body,) = rec.bodies("/chat/completions")
    assert body["tool_choice"]["function"]["name"] == "Weather" and body["tools"][0]["function"]["name"] == "Weather"


def test_langchain_function_calling_strict(tiny, ChatOpenAI):
    rec = Recorder()
    llm = langchain_llm(ChatOpenAI, tiny, rec, temperature=1, seed=10, max_tokens=512, extra_body=EXTRA)
    out = llm.with_structured_output(Meeting, method="function_calling", strict=True).invoke("Stand-up Tuesday 9.")
    check_meeting(out)
    (body,) = rec.bodies("/chat/completions")
    assert body["tools"][0]["function"]["strict"] is True


# ---------------------------------------------------------------- instructor


@pytest.fixture(scope="module")
def instructor(offline):
    import instructor as mod
    return mod


def test_instructor_default_mode(tiny, instructor):
    """instructor.from_openai's default (a tool named after the model, forced
    by name); max_retries=0: no re-asking, the first answer must validate."""
    rec = Recorder()
    client = instructor.from_openai(sync_client(tiny, rec))
    out = client.chat.completions.create(model=tiny.model, response_model=Meeting, max_retries=0,
                                         messages=[{"role": "user", "content": "Retro on Thursday at 4pm with Kai."}],
                                         temperature=1, seed=11, max_tokens=512, extra_body=EXTRA)
    check_meeting(out)
    (body,) = rec.bodies("/chat/completions")
    assert body["tool_choice"]["type"] == "function" and body["tool_choice"]["function"]["name"] == "Meeting"


def test_instructor_several_seeds(tiny, instructor):
    rec = Recorder()
    client = instructor.from_openai(sync_client(tiny, rec))
    for seed in (12, 13, 14):
        out = client.chat.completions.create(model=tiny.model, response_model=Weather, max_retries=0,
                                             messages=[{"role": "user", "content": "Weather in Lagos?"}],
                                             temperature=1, seed=seed, max_tokens=512, extra_body=EXTRA)
        check_weather(out)
    assert len(rec.bodies("/chat/completions")) == 3  # no retries


def test_instructor_json_schema_mode(tiny, instructor):
    rec = Recorder()
    client = instructor.from_openai(sync_client(tiny, rec), mode=instructor.Mode.JSON_SCHEMA)
    out = client.chat.completions.create(model=tiny.model, response_model=Weather, max_retries=0,
                                         messages=[{"role": "user", "content": "Weather in Lima?"}],
                                         temperature=1, seed=15, max_tokens=512, extra_body=EXTRA)
    check_weather(out)
    assert rec.bodies("/chat/completions")[0]["response_format"]["type"] == "json_schema"


# ---------------------------------------------------------------- OpenAI Agents SDK


@pytest.fixture(scope="module")
def agents(offline):
    import agents as mod
    mod.set_tracing_disabled(True)
    return mod


def run_agent(agents, srv, model_cls, output_type, question, **settings):
    rec = Recorder()

    async def go():
        aclient = async_client(srv, rec)
        try:
            model = model_cls(model=srv.model, openai_client=aclient)
            agent = agents.Agent(name="Extractor", instructions="Answer with the requested structure.", model=model,
                                 output_type=output_type, model_settings=agents.ModelSettings(**settings))
            return await agents.Runner.run(agent, question)
        finally:
            await aclient.close()

    return asyncio.run(go()), rec


def test_agents_output_type_responses_model_mock(mock, agents):
    """Agent(output_type=...) on the SDK's default model (Responses API):
    text.format json_schema, strict. On the mock: the reasoning budget is a
    chat request field."""
    result, rec = run_agent(agents, mock, agents.OpenAIResponsesModel, Meeting, "Plan a meeting.", max_tokens=2000)
    check_meeting(result.final_output)
    (body,) = rec.bodies("/responses")
    assert body["text"]["format"]["type"] == "json_schema" and body["text"]["format"]["strict"] is True


def test_agents_output_type_responses_model_tiny(tiny, agents):
    result, rec = run_agent(agents, tiny, agents.OpenAIResponsesModel, Weather, "Weather in Seoul?",
                            temperature=1, max_tokens=512, extra_body=EXTRA)
    check_weather(result.final_output)


def test_agents_output_type_chat_completions_model(tiny, agents):
    result, rec = run_agent(agents, tiny, agents.OpenAIChatCompletionsModel, Weather, "Weather in Lima?",
                            temperature=1, max_tokens=512, extra_body=EXTRA)
    check_weather(result.final_output)
    (body,) = rec.bodies("/chat/completions")
    assert body["response_format"]["type"] == "json_schema" and body["max_reasoning_tokens"] == REASONING


def test_agents_output_type_chat_completions_model_mock(mock, agents):
    result, _ = run_agent(agents, mock, agents.OpenAIChatCompletionsModel, Meeting, "Plan a meeting.", max_tokens=2000)
    check_meeting(result.final_output)


def test_agents_tool_choice_required_mock(mock, agents):
    """ModelSettings(tool_choice="required") with a function tool: the
    agent's first turn is a call (the mock then answers with the result)."""
    calls = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """Get the weather for a city.

        Args:
            city: The city.
        """
        calls.append(city)
        return "Sunny, 21 C"

    async def go():
        rec = Recorder()
        aclient = async_client(mock, rec)
        try:
            agent = agents.Agent(name="W", instructions="Use tools.", tools=[get_weather],
                                 model=agents.OpenAIResponsesModel(model=mock.model, openai_client=aclient),
                                 model_settings=agents.ModelSettings(tool_choice="required", max_tokens=2000),
                                 tool_use_behavior="stop_on_first_tool")
            return await agents.Runner.run(agent, "Weather in Oslo?"), rec
        finally:
            await aclient.close()

    result, rec = asyncio.run(go())
    assert len(calls) == 1 and isinstance(calls[0], str)
    assert result.final_output == "Sunny, 21 C"
    assert rec.bodies("/responses")[0]["tool_choice"] == "required"
