"""The OpenAI Agents SDK (openai-agents) against the coordinator's Responses
API (mock engine): an Agent with one function tool, run through
OpenAIResponsesModel, the SDK's default model class, with and without
streaming, and with server-side conversation state. The Agents SDK sends
what a real agent sends: instructions, strict function tools, include=[],
the previous turn's output items (reasoning included) back as input, and it
parses the stream with its own state machine.

The mock engine calls the first tool with every top-level parameter set to
the last user message, then answers "... using the tool result: <output>"."""
import asyncio
import json

from agents import (Agent, ItemHelpers, MessageOutputItem, ModelSettings, OpenAIResponsesModel, Runner, ToolCallItem,
                    ToolCallOutputItem, function_tool, set_tracing_disabled)
from openai import AsyncOpenAI

from responseskit import MODEL, client

set_tracing_disabled(True)

QUESTION = "What's the weather in Paris?"


def make_agent(server, calls, **settings):
    @function_tool
    def get_weather(city: str) -> str:
        """Get the current weather for a city.

        Args:
            city: The city to look up.
        """
        calls.append(city)
        return f"Sunny and 21 C in {city}"

    aclient = AsyncOpenAI(base_url=server.base + "/v1", api_key="unused", max_retries=0)
    model = OpenAIResponsesModel(model=MODEL, openai_client=aclient)
    agent = Agent(name="Weather", instructions="Use the tools to answer.", model=model, tools=[get_weather],
                  model_settings=ModelSettings(**settings))
    return agent, aclient


def check_run(result, calls):
    # the tool ran once, with the arguments the mock gives
    assert calls == [QUESTION]
    kinds = [type(item) for item in result.new_items]
    assert ToolCallItem in kinds and ToolCallOutputItem in kinds and kinds[-1] is MessageOutputItem, kinds
    call = next(item for item in result.new_items if isinstance(item, ToolCallItem)).raw_item
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": QUESTION}
    assert call.call_id.startswith("call_")
    output = next(item for item in result.new_items if isinstance(item, ToolCallOutputItem))
    assert output.output == f"Sunny and 21 C in {QUESTION}"
    assert isinstance(result.final_output, str)
    assert "using the tool result" in result.final_output
    assert f"Sunny and 21 C in {QUESTION}"[:100] in result.final_output
    assert len(result.raw_responses) == 2
    for r in result.raw_responses:
        assert r.response_id.startswith("resp_")
        assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0
    assert result.raw_responses[1].usage.input_tokens > result.raw_responses[0].usage.input_tokens


async def _run(server, settings=None, **kw):
    calls = []
    agent, aclient = make_agent(server, calls, **(settings or {}))
    try:
        result = await Runner.run(agent, QUESTION, **kw)
    finally:
        await aclient.close()
    return result, calls


def test_agent_runs_a_function_tool(server):
    result, calls = asyncio.run(_run(server))
    check_run(result, calls)
    # Without previous_response_id the SDK sends the whole history back: the
    # second request's input was the question, the first response's items
    # (reasoning and function_call, ids and all) and the tool's output.
    first, second = (r.response_id for r in result.raw_responses)
    items = client(server).responses.input_items.list(second, order="asc").data
    assert [it.type for it in items] == ["message", "reasoning", "function_call", "function_call_output"]
    assert items[0].role == "user" and items[0].content[0].text == QUESTION
    sent = [it.id for it in items[1:3]]
    assert sent == [item.id for item in client(server).responses.retrieve(first).output]
    assert items[3].output == f"Sunny and 21 C in {QUESTION}"


def test_agent_with_server_side_state(server):
    """auto_previous_response_id: the second turn sends only the tool
    output and previous_response_id; the server supplies the rest."""
    result, calls = asyncio.run(_run(server, auto_previous_response_id=True))
    check_run(result, calls)


def test_agent_stateless_with_encrypted_reasoning(server):
    """store=False and include=["reasoning.encrypted_content"], the setup
    of agents that keep no server-side state: the SDK sends the reasoning
    item back with its encrypted_content."""
    result, calls = asyncio.run(_run(server, settings=dict(store=False,
                                                           response_include=["reasoning.encrypted_content"])))
    check_run(result, calls)
    first = result.raw_responses[0].output
    assert first[0].type == "reasoning" and first[0].encrypted_content


def test_agent_streamed(server):
    async def go():
        calls = []
        agent, aclient = make_agent(server, calls)
        try:
            result = Runner.run_streamed(agent, QUESTION)
            raw_types, deltas, run_items = [], [], []
            async for event in result.stream_events():
                if event.type == "raw_response_event":
                    raw_types.append(event.data.type)
                    if event.data.type == "response.output_text.delta":
                        deltas.append(event.data.delta)
                elif event.type == "run_item_stream_event":
                    run_items.append(event.name)
        finally:
            await aclient.close()
        return result, calls, raw_types, deltas, run_items

    result, calls, raw_types, deltas, run_items = asyncio.run(go())
    check_run(result, calls)
    assert raw_types.count("response.created") == 2 and raw_types.count("response.completed") == 2
    assert "response.function_call_arguments.delta" in raw_types
    assert "response.reasoning_text.delta" in raw_types
    assert len(deltas) > 3  # the final answer arrived token by token
    assert "".join(deltas) == result.final_output
    assert ItemHelpers.text_message_outputs(result.new_items) == result.final_output
    for name in ("tool_called", "tool_output", "message_output_created"):
        assert name in run_items, run_items
