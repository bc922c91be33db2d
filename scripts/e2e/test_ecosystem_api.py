"""What users of vLLM expect, against a real coordinator process (mock
engine): a browser's CORS preflight, /tokenize -> /detokenize, /version,
and the model card's vLLM fields."""
import json
import urllib.error
import urllib.request

ORIGIN = "https://app.example"
KEY = "sk-e2e"


def call(srv, method, path, body=None, headers=None):
    """(status, headers, parsed JSON or None) of one request."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(srv.base + path, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read()
            return r.status, r.headers, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, e.headers, json.loads(raw) if raw else None


def test_cors_preflight_and_responses(make_server):
    srv = make_server("--cors-origins", ORIGIN + ",http://localhost:3000", "--api-key", KEY)
    # The preflight a browser sends before the openai SDK's POST: no key.
    status, h, _ = call(srv, "OPTIONS", "/v1/chat/completions", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os"})
    assert status == 204
    assert h["Access-Control-Allow-Origin"] == ORIGIN
    assert "POST" in h["Access-Control-Allow-Methods"]
    assert "x-stainless-os" in h["Access-Control-Allow-Headers"].lower()
    assert int(h["Access-Control-Max-Age"]) > 0
    # Another origin gets no CORS headers.
    status, h, _ = call(srv, "OPTIONS", "/tokenize", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert not [k for k in h if k.lower().startswith("access-control-")]
    # The real request carries the origin and the headers a page may read.
    status, h, body = call(srv, "POST", "/v1/chat/completions",
                           {"model": "gpt-oss-20b", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3},
                           {"Origin": ORIGIN, "Authorization": "Bearer " + KEY})
    assert status == 200 and body["choices"]
    assert h["Access-Control-Allow-Origin"] == ORIGIN
    assert "X-Request-Id" in h["Access-Control-Expose-Headers"]
    # Preflights are no requests in the stats.
    stats = srv.get_json("/stats")["stats"]["total"]
    assert stats["requests_total"] == 1, stats


def test_cors_off_by_default(server):
    status, h, _ = call(server, "OPTIONS", "/v1/chat/completions", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
    assert not [k for k in h if k.lower().startswith("access-control-")]


def test_cors_wildcard_with_credentials_refused(make_server):
    try:
        make_server("--cors-origins", "*", "--cors-allow-credentials")
    except RuntimeError as e:
        assert "cors" in str(e).lower()
    else:
        raise AssertionError("the coordinator started with --cors-origins '*' and --cors-allow-credentials")


def test_tokenize_detokenize_version(server):
    text = "Hello, wörld! 🦀"
    status, _, tok = call(server, "POST", "/tokenize", {"model": "gpt-oss-20b", "prompt": text, "return_token_strs": True})
    assert status == 200 and tok["count"] == len(tok["tokens"]) > 0
    assert tok["max_model_len"] == 131072 and len(tok["token_strs"]) == tok["count"]
    status, _, detok = call(server, "POST", "/detokenize", {"tokens": tok["tokens"]})
    assert status == 200 and detok == {"prompt": text}
    status, _, err = call(server, "POST", "/detokenize", {"tokens": [1, 10**7]})
    assert status == 400 and err["error"]["param"] == "tokens"

    # The messages form counts what the chat request is charged.
    messages = [{"role": "user", "content": "What is 2+2?"}]
    status, _, chat_tok = call(server, "POST", "/tokenize", {"messages": messages, "reasoning_effort": "high"})
    status2, _, chat = call(server, "POST", "/v1/chat/completions",
                            {"model": "gpt-oss-20b", "messages": messages, "reasoning_effort": "high", "max_tokens": 2})
    assert status == status2 == 200 and chat["usage"]["prompt_tokens"] == chat_tok["count"]

    status, _, version = call(server, "GET", "/version")
    assert status == 200 and version["version"] and version["version"] == server.get_json("/health")["version"]

    card = server.get_json("/v1/models")["data"][0]
    assert card["root"] == "openai/gpt-oss-20b" and card["parent"] is None and card["permission"] == []
    assert card["max_model_len"] == 131072
