"""The client libraries people point at an OpenAI-compatible server, against
a running coordinator (mock engine, gpt-oss-20b): LangChain (langchain-openai
ChatOpenAI), LiteLLM (the openai/ and hosted_vllm/ providers) and LlamaIndex
(OpenAILike). Each test asserts on what the library hands its caller, so a
wire-format drift that one of them parses differently fails here.

The mock answers with reasoning, then text that quotes the last user
message; offered tools, it calls the first one with arguments naming its
parameters, and given a tool result, it answers with the result.

No test reaches the network: the libraries' telemetry and downloads are
turned off below, before they are imported, and every connection or name
look-up to anything but loopback is refused and recorded; the module fails
if any was tried. The versions are pinned in scripts/requirements-e2e.txt
(LlamaIndex's two packages in requirements-e2e-nodeps.txt: they declare
openai<3, so make installs them without dependencies).

Structured output (LangChain's with_structured_output, LlamaIndex's
structured_predict) forces the schema's tool with tool_choice, which the
server refuses for now: those tests are expected failures until it does.
"""
import ipaddress
import json
import socket

import openai
import pytest

from conftest import Coordinator

# Set (for this module only) before any of the libraries is imported: the
# fixtures below import them.
QUIET_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # else litellm fetches its cost map at import
    "LITELLM_TELEMETRY": "False",
    "LANGSMITH_TRACING": "false",
    "LANGCHAIN_TRACING_V2": "false",
    "LANGCHAIN_TRACING": "false",
    "DO_NOT_TRACK": "1",
    "ANONYMIZED_TELEMETRY": "False",
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
}

# The libraries' own warnings about pydantic (ReadOnly TypedDicts, V2.11
# deprecations) say nothing about the server.
pytestmark = [pytest.mark.filterwarnings("ignore:.*ReadOnly. qualifier:UserWarning"),
              pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince211")]

MODEL = "gpt-oss-20b"
KEY = "sk-client-test"

WEATHER_DOC = "Get the current weather in a city."


# ---------------------------------------------------------------- no network


class _Blocked:
    """Refuses connections and name look-ups that leave loopback, and
    remembers them, so that a library phoning home fails the module."""

    def __init__(self):
        self.tries = []
        self._connect = socket.socket.connect
        self._connect_ex = socket.socket.connect_ex
        self._getaddrinfo = socket.getaddrinfo

    @staticmethod
    def _local(host):
        if host in (None, "", "localhost") or (isinstance(host, str) and host.endswith(".localhost")):
            return True
        try:
            return ipaddress.ip_address(host.split("%")[0] if isinstance(host, str) else host).is_loopback
        except ValueError:
            return False

    def _check(self, sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not self._local(address[0]):
            self.tries.append(f"connect {address[0]}:{address[1]}")
            raise ConnectionRefusedError(f"test_clients: the network is off for client tests ({address[0]})")

    def install(self, mp):
        blocked = self

        def connect(sock, address):
            blocked._check(sock, address)
            return blocked._connect(sock, address)

        def connect_ex(sock, address):
            blocked._check(sock, address)
            return blocked._connect_ex(sock, address)

        def getaddrinfo(host, *args, **kw):
            h = host.decode() if isinstance(host, bytes) else host
            if not blocked._local(h):
                blocked.tries.append(f"resolve {h}")
                raise socket.gaierror(socket.EAI_NONAME, f"test_clients: the network is off for client tests ({h})")
            return blocked._getaddrinfo(host, *args, **kw)

        mp.setattr(socket.socket, "connect", connect)
        mp.setattr(socket.socket, "connect_ex", connect_ex)
        mp.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture(scope="module", autouse=True)
def offline():
    blocked = _Blocked()
    with pytest.MonkeyPatch.context() as mp:
        for k, v in QUIET_ENV.items():
            mp.setenv(k, v)
        blocked.install(mp)
        yield blocked
    assert not blocked.tries, f"a client library tried to reach the network: {blocked.tries}"


@pytest.fixture(scope="module")
def srv(offline):
    """The mock server, with an API key: every client must send it."""
    c = Coordinator("--api-key", KEY)
    yield c
    c.stop()


# ---------------------------------------------------------------- LangChain


@pytest.fixture(scope="module")
def lc(offline):
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def get_weather(city: str, unit: str = "c") -> str:
        """Get the current weather in a city."""
        return json.dumps({"temp_c": 21})

    return ChatOpenAI, get_weather


def chat_openai(srv, lc, **kw):
    ChatOpenAI, _ = lc
    return ChatOpenAI(base_url=srv.base + "/v1", api_key=KEY, model=MODEL, max_retries=0, timeout=20,
                      temperature=0, **kw)


def test_langchain_invoke(srv, lc):
    msg = chat_openai(srv, lc, max_tokens=80, reasoning_effort="low").invoke("What is Python?")
    assert "mock reply" in msg.content and "What is Python?" in msg.content and "<|" not in msg.content
    assert msg.response_metadata["model_name"] == MODEL
    assert msg.response_metadata["finish_reason"] in ("stop", "length")
    u = msg.usage_metadata
    assert u["input_tokens"] > 20 and 0 < u["output_tokens"] <= 80
    assert u["total_tokens"] == u["input_tokens"] + u["output_tokens"]
    assert 0 < u["output_token_details"]["reasoning"] < u["output_tokens"]


def test_langchain_stream(srv, lc):
    llm = chat_openai(srv, lc, max_tokens=60, stream_usage=True)
    whole = llm.invoke("Count from 1 to 10")
    chunks = list(llm.stream("Count from 1 to 10"))
    assert len(chunks) > 5
    full = chunks[0]
    for c in chunks[1:]:
        full += c
    assert full.content == whole.content
    assert full.response_metadata["finish_reason"] == whole.response_metadata["finish_reason"]
    assert full.usage_metadata["output_tokens"] == whole.usage_metadata["output_tokens"]
    assert full.usage_metadata["input_tokens"] == whole.usage_metadata["input_tokens"]


def test_langchain_bind_tools_round_trip(srv, lc):
    from langchain_core.messages import HumanMessage, ToolMessage

    _, get_weather = lc
    llm = chat_openai(srv, lc, max_tokens=200).bind_tools([get_weather])
    history = [HumanMessage("What is the weather in Paris?")]
    ai = llm.invoke(history)
    assert not ai.invalid_tool_calls
    (call,) = ai.tool_calls
    assert call["name"] == "get_weather" and call["id"].startswith("call_") and "city" in call["args"]
    assert ai.response_metadata["finish_reason"] == "tool_calls"
    # The tool's result goes back as LangChain sends it; the model answers with it.
    history += [ai, ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"])]
    answer = llm.invoke(history)
    assert not answer.tool_calls and "temp_c" in answer.content
    assert answer.response_metadata["finish_reason"] == "stop"


def test_langchain_stream_tool_call(srv, lc):
    _, get_weather = lc
    chunks = list(chat_openai(srv, lc, max_tokens=200).bind_tools([get_weather]).stream("Weather in Seoul?"))
    full = chunks[0]
    for c in chunks[1:]:
        full += c
    (call,) = full.tool_calls
    assert call["name"] == "get_weather" and call["id"].startswith("call_") and "city" in call["args"]


# with_structured_output's default for a model it does not know: a tool named
# after the schema, forced with tool_choice {"type": "function", ...}.
def test_langchain_structured_output(srv, lc):
    from pydantic import BaseModel

    class City(BaseModel):
        """A city."""
        city: str

    out = chat_openai(srv, lc, max_tokens=200).with_structured_output(City, method="function_calling").invoke("Paris")
    assert isinstance(out, City) and out.city


def test_langchain_wrong_key(srv, lc):
    ChatOpenAI, _ = lc
    llm = ChatOpenAI(base_url=srv.base + "/v1", api_key="sk-wrong", model=MODEL, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        llm.invoke("Hi")


# ---------------------------------------------------------------- LiteLLM


@pytest.fixture(scope="module")
def litellm(offline):
    import litellm as mod
    mod.telemetry = False
    mod.suppress_debug_info = True
    return mod


PROVIDERS = ["openai", "hosted_vllm"]


def litellm_call(litellm, srv, provider, **kw):
    kw.setdefault("messages", [{"role": "user", "content": "What is Python?"}])
    return litellm.completion(model=f"{provider}/{MODEL}", api_base=srv.base + "/v1", api_key=KEY,
                              num_retries=0, timeout=20, temperature=0, **kw)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_litellm_completion(srv, litellm, provider):
    r = litellm_call(litellm, srv, provider, max_tokens=80, reasoning_effort="low")
    msg = r.choices[0].message
    assert msg.role == "assistant" and "mock reply" in msg.content and "What is Python?" in msg.content
    # LiteLLM carries the server's reasoning_content through to its message.
    assert msg.reasoning_content and "<|" not in msg.reasoning_content
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 20 and 0 < r.usage.completion_tokens <= 80
    assert 0 < r.usage.completion_tokens_details.reasoning_tokens < r.usage.completion_tokens


@pytest.mark.parametrize("provider", PROVIDERS)
def test_litellm_reasoning_effort_reaches_the_server(srv, litellm, provider):
    # Forwarded as is: the server's validation answers, through LiteLLM's error.
    with pytest.raises(litellm.BadRequestError, match="reasoning_effort"):
        litellm_call(litellm, srv, provider, max_tokens=10, reasoning_effort="extreme")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_litellm_streaming(srv, litellm, provider):
    whole = litellm_call(litellm, srv, provider, max_tokens=60, reasoning_effort="low")
    chunks = list(litellm_call(litellm, srv, provider, max_tokens=60, reasoning_effort="low", stream=True,
                               stream_options={"include_usage": True}))
    assert len(chunks) > 5
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    reasoning = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert reasoning == whole.choices[0].message.reasoning_content
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == [whole.choices[0].finish_reason]
    usage = [c.usage for c in chunks if getattr(c, "usage", None)]
    assert usage and usage[-1].completion_tokens == whole.usage.completion_tokens


@pytest.mark.parametrize("provider", PROVIDERS)
def test_litellm_tool_call(srv, litellm, provider):
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": WEATHER_DOC,
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    r = litellm_call(litellm, srv, provider, max_tokens=200, tools=tools,
                     messages=[{"role": "user", "content": "Weather in Paris?"}])
    assert r.choices[0].finish_reason == "tool_calls"
    (call,) = r.choices[0].message.tool_calls
    assert call.function.name == "get_weather" and call.id.startswith("call_")
    assert "city" in json.loads(call.function.arguments)


def test_litellm_wrong_key(srv, litellm):
    with pytest.raises(litellm.AuthenticationError):
        litellm.completion(model=f"openai/{MODEL}", api_base=srv.base + "/v1", api_key="sk-wrong", num_retries=0,
                           messages=[{"role": "user", "content": "Hi"}], max_tokens=5)


# ---------------------------------------------------------------- LlamaIndex


@pytest.fixture(scope="module")
def li(offline):
    # llama-index-llms-openai (under OpenAILike) declares openai<3; installed
    # without its dependencies it runs on the openai 3 SDK pinned here.
    from llama_index.core.llms import ChatMessage
    from llama_index.llms.openai_like import OpenAILike

    def make(srv, **kw):
        return OpenAILike(model=MODEL, api_base=srv.base + "/v1", api_key=KEY, context_window=131072,
                          max_retries=0, timeout=20, temperature=0, **kw)

    return make, ChatMessage


def test_llamaindex_chat(srv, li):
    make, ChatMessage = li
    llm = make(srv, is_chat_model=True, max_tokens=60)
    r = llm.chat([ChatMessage(role="system", content="Be brief."), ChatMessage(role="user", content="What is Python?")])
    assert r.message.role == "assistant"
    assert "mock reply" in r.message.content and "What is Python?" in r.message.content
    assert r.raw.choices[0].finish_reason in ("stop", "length")
    streamed = list(llm.stream_chat([ChatMessage(role="system", content="Be brief."),
                                     ChatMessage(role="user", content="What is Python?")]))
    assert len(streamed) > 5 and streamed[-1].message.content == r.message.content


def test_llamaindex_complete(srv, li):
    make, _ = li
    # A chat model: complete() goes through /v1/chat/completions.
    r = make(srv, is_chat_model=True, max_tokens=60).complete("What is Python?")
    assert "mock reply" in r.text and "What is Python?" in r.text
    assert r.additional_kwargs["completion_tokens"] > 0
    # A completion model: /v1/completions, as is and streamed.
    llm = make(srv, is_chat_model=False, max_tokens=20)
    r = llm.complete("Once upon a time")
    assert r.text and "<|" not in r.text
    streamed = list(llm.stream_complete("Once upon a time"))
    assert len(streamed) > 3 and streamed[-1].text == r.text


# structured_predict on a function-calling model: the schema as a tool, forced
# with tool_choice "required".
def test_llamaindex_structured_predict(srv, li):
    from pydantic import BaseModel
    from llama_index.core.prompts import PromptTemplate

    class City(BaseModel):
        """A city."""
        city: str

    make, _ = li
    llm = make(srv, is_chat_model=True, is_function_calling_model=True, max_tokens=200)
    out = llm.structured_predict(City, PromptTemplate("Name the city in: {text}"), text="Paris")
    assert isinstance(out, City) and out.city
