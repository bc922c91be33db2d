"""Schemas the decoder cannot compile, and malformed structured output
parameters: a 400 in OpenAI's error shape naming the parameter (and the
offending keyword), on every route that takes a schema; the server keeps
serving afterwards."""
import re

import pytest

from test_structured import (ALL_TOOLS, BY_NAME, MOCK_MODEL, mock, model_of, needs_tiny, post, schema_format, tiny)

__all__ = ["mock", "tiny"]  # the fixtures, shared with test_structured.py


# ---------------------------------------------------------------- errors


# Schemas the decoder cannot compile, and the keyword the error must name.
IF_THEN_ELSE = {
    "type": "object",
    "properties": {"country": {"enum": ["US", "CA"]}, "postal_code": {"type": "string"}},
    "required": ["country", "postal_code"],
    "if": {"properties": {"country": {"const": "US"}}},
    "then": {"properties": {"postal_code": {"pattern": "^[0-9]{5}$"}}},
    "else": {"properties": {"postal_code": {"pattern": "^[A-Z][0-9][A-Z] [0-9][A-Z][0-9]$"}}},
}
MISSING_REF = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/Address"}},
    "required": ["name", "address"],
    "$defs": {"Person": {"type": "object", "properties": {"name": {"type": "string"}}}},
}
BAD_SCHEMAS = [
    ("if_then_else", IF_THEN_ELSE, re.compile(r"(^|[^A-Za-z])(if|then|else)([^A-Za-z]|$)")),
    ("missing_ref", MISSING_REF, re.compile(r"\$ref|\$defs/Address")),
]


def check_error(status, body, params, pattern, label):
    assert status == 400, (label, status, body)
    err = body.get("error")
    assert isinstance(err, dict), (label, body)
    assert set(err) >= {"message", "type", "param", "code"}, (label, err)
    assert err["type"] == "invalid_request_error", (label, err)
    assert err["param"] in params or any(err["param"].startswith(p + ".") or err["param"].startswith(p + "[")
                                         for p in params if err["param"]), (label, err)
    assert isinstance(err["message"], str) and pattern.search(err["message"]), (label, err["message"])


def bad_requests(model, schema):
    """(label, path, body, accepted params) for one uncompilable schema on
    every route that takes a schema."""
    msgs = [{"role": "user", "content": "Hi"}]
    weather = {"type": "function", "function": {"name": "lookup", "description": "Look up.", "parameters": schema}}
    return [
        ("chat response_format", "/v1/chat/completions",
         {"model": model, "messages": msgs, "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}}},
         {"response_format"}),
        ("chat response_format, not strict", "/v1/chat/completions",
         {"model": model, "messages": msgs, "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}},
         {"response_format"}),
        ("chat strict tool", "/v1/chat/completions",
         {"model": model, "messages": msgs, "tools": [{**weather, "function": {**weather["function"], "strict": True}}]},
         {"tools"}),
        ("chat named tool", "/v1/chat/completions",
         {"model": model, "messages": msgs, "tools": [weather], "tool_choice": {"type": "function", "function": {"name": "lookup"}}},
         {"tools", "tool_choice"}),
        ("chat required tool", "/v1/chat/completions",
         {"model": model, "messages": msgs, "tools": [weather], "tool_choice": "required"},
         {"tools", "tool_choice"}),
        ("completions structured_outputs", "/v1/completions",
         {"model": model, "prompt": "x", "structured_outputs": {"json": schema}}, {"structured_outputs"}),
        ("completions guided_json", "/v1/completions",
         {"model": model, "prompt": "x", "guided_json": schema}, {"guided_json", "structured_outputs"}),
        ("completions response_format", "/v1/completions",
         {"model": model, "prompt": "x", "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}},
         {"response_format"}),
        ("responses text.format", "/v1/responses",
         {"model": model, "input": "Hi", "text": {"format": {"type": "json_schema", "name": "x", "schema": schema, "strict": True}}},
         {"text.format", "text"}),
        ("responses strict tool", "/v1/responses",
         {"model": model, "input": "Hi", "tools": [{"type": "function", "name": "lookup", "description": "Look up.",
                                                    "parameters": schema, "strict": True}]},
         {"tools"}),
    ]


def ok_request(srv):
    status, body = post(srv, "/v1/chat/completions", {
        "model": model_of(srv), "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 40,
        "max_reasoning_tokens": 8, "response_format": schema_format(BY_NAME["order_status_enums"])})
    assert status == 200, body
    assert body["choices"][0]["finish_reason"] in ("stop", "length")


@pytest.mark.parametrize("engine", ["mock", pytest.param("tiny", marks=needs_tiny)])
@pytest.mark.parametrize("bad", BAD_SCHEMAS, ids=[b[0] for b in BAD_SCHEMAS])
def test_uncompilable_schema_is_a_400(request, engine, bad):
    """An uncompilable schema is the client's error, on every route, with
    the parameter and the offending keyword named; the server keeps
    serving."""
    srv = request.getfixturevalue(engine)
    _, schema, pattern = bad
    for label, path, body, params in bad_requests(model_of(srv), schema):
        status, out = post(srv, path, body)
        check_error(status, out, params, pattern, label)
    ok_request(srv)


def test_bad_structured_outputs_are_400s(mock):
    cases = [
        ("two kinds at once", {"structured_outputs": {"json": {"type": "object"}, "regex": "[a-z]+"}}, "structured_outputs"),
        ("none of the kinds", {"structured_outputs": {}}, "structured_outputs"),
        ("unbalanced regex", {"structured_outputs": {"regex": "([a-z]+"}}, "structured_outputs"),
        ("empty choice", {"structured_outputs": {"choice": []}}, "structured_outputs"),
        ("broken grammar", {"structured_outputs": {"grammar": "start: (\"a\" | \n"}}, "structured_outputs"),
        ("grammar without start", {"structured_outputs": {"grammar": "foo: \"a\"\n"}}, "structured_outputs"),
        ("unbalanced guided_regex", {"guided_regex": "([a-z]+"}, "guided_regex"),
        ("guided_choice not a list", {"guided_choice": "yes"}, "guided_choice"),
    ]
    for label, extra, param in cases:
        status, body = post(mock, "/v1/completions", {"model": MOCK_MODEL, "prompt": "x", "max_tokens": 8, **extra})
        assert status == 400, (label, body)
        err = body["error"]
        assert err["type"] == "invalid_request_error", (label, err)
        assert err["param"] == param or err["param"].startswith(param + ".") or \
            (param.startswith("guided_") and err["param"].startswith("structured_outputs")), (label, err)
    ok_request(mock)


def test_response_format_shape_errors(mock):
    cases = [
        ("json_schema without json_schema", {"type": "json_schema"}),
        ("schema not an object", {"type": "json_schema", "json_schema": {"name": "x", "schema": "object"}}),
        ("unknown type", {"type": "yaml"}),
    ]
    for label, rf in cases:
        status, body = post(mock, "/v1/chat/completions", {
            "model": MOCK_MODEL, "messages": [{"role": "user", "content": "Hi"}], "response_format": rf})
        assert status == 400, (label, body)
        assert body["error"]["param"].startswith("response_format"), (label, body)


def test_tool_choice_names_an_unknown_function(mock):
    status, body = post(mock, "/v1/chat/completions", {
        "model": MOCK_MODEL, "messages": [{"role": "user", "content": "Hi"}], "tools": ALL_TOOLS,
        "tool_choice": {"type": "function", "function": {"name": "no_such_tool"}}})
    assert status == 400, body
    assert body["error"]["param"].startswith("tool_choice") and "no_such_tool" in body["error"]["message"], body
