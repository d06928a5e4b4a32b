"""The official provider SDKs, unchanged, talking through warrant's egress proxy.

usage: provider_sdks.py EDGE TASK_TOKEN
EDGE is http://host:port of the edge; each SDK gets the base URL of its
route (/openai/v1, /anthropic, /gemini, /mistral, /cohere) and the task
token where it puts its API key, nothing else. For each SDK this prints:
a normal answer, a streamed one, what the SDK raises for a request the
edge refuses (403) and for a token that is not a task token (401).
"""
import json
import sys

edge, token = sys.argv[1], sys.argv[2]
WRONG = "not-a-task-token"
out = {}


def refused(call, *classes):
    """What the SDK raised: its exception class and status."""
    try:
        call()
    except classes as e:
        status = getattr(e, "status_code", None) or getattr(e, "code", None)
        return {"class": type(e).__name__, "status": status, "text": str(e)[:2000]}
    return None


def run(name, fn):
    try:
        out[name] = fn()
    except Exception as e:  # reported, so the test names the SDK that broke
        out[name] = {"crashed": f"{type(e).__name__}: {e}"[:2000]}


def openai_sdk():
    import openai

    c = openai.OpenAI(base_url=f"{edge}/openai/v1", api_key=token, max_retries=0, timeout=30)
    msgs = [{"role": "user", "content": "hi"}]
    r = c.chat.completions.create(model="gpt-test", messages=msgs)
    s = c.chat.completions.create(model="gpt-test", messages=msgs, stream=True)
    bad = openai.OpenAI(base_url=f"{edge}/openai/v1", api_key=WRONG, max_retries=0, timeout=30)
    return {
        "text": r.choices[0].message.content,
        "streamed": [ch.choices[0].delta.content for ch in s if ch.choices and ch.choices[0].delta.content],
        "denied": refused(lambda: c.embeddings.create(model="e", input="x"), openai.PermissionDeniedError),
        "unauthenticated": refused(lambda: bad.chat.completions.create(model="gpt-test", messages=msgs),
                                   openai.AuthenticationError),
    }


def anthropic_sdk():
    import anthropic

    c = anthropic.Anthropic(base_url=f"{edge}/anthropic", api_key=token, max_retries=0, timeout=30)
    msgs = [{"role": "user", "content": "hi"}]
    r = c.messages.create(model="claude-test", max_tokens=16, messages=msgs)
    streamed = []
    with c.messages.stream(model="claude-test", max_tokens=16, messages=msgs) as s:
        for text in s.text_stream:
            streamed.append(text)
    bad = anthropic.Anthropic(base_url=f"{edge}/anthropic", api_key=WRONG, max_retries=0, timeout=30)
    return {
        "text": r.content[0].text,
        "streamed": streamed,
        "denied": refused(lambda: c.messages.count_tokens(model="claude-test", messages=msgs),
                          anthropic.PermissionDeniedError),
        "unauthenticated": refused(lambda: bad.messages.create(model="claude-test", max_tokens=16, messages=msgs),
                                   anthropic.AuthenticationError),
    }


def gemini_sdk():
    from google import genai
    from google.genai import errors, types

    opts = types.HttpOptions(base_url=f"{edge}/gemini/", timeout=30_000)
    c = genai.Client(api_key=token, http_options=opts)
    r = c.models.generate_content(model="gemini-test", contents="hi")
    streamed = [ch.text for ch in c.models.generate_content_stream(model="gemini-test", contents="hi") if ch.text]
    bad = genai.Client(api_key=WRONG, http_options=opts)
    return {
        "text": r.text,
        "streamed": streamed,
        "denied": refused(lambda: c.models.generate_content(model="gemini-denied", contents="hi"),
                          errors.ClientError),
        "unauthenticated": refused(lambda: bad.models.generate_content(model="gemini-test", contents="hi"),
                                   errors.ClientError),
    }


def mistral_sdk():
    from mistralai.client import Mistral
    from mistralai.client.errors import MistralError

    c = Mistral(api_key=token, server_url=f"{edge}/mistral", timeout_ms=30_000)
    msgs = [{"role": "user", "content": "hi"}]
    r = c.chat.complete(model="mistral-test", messages=msgs)
    streamed = [e.data.choices[0].delta.content for e in c.chat.stream(model="mistral-test", messages=msgs)
                if e.data.choices and e.data.choices[0].delta.content]
    bad = Mistral(api_key=WRONG, server_url=f"{edge}/mistral", timeout_ms=30_000)
    return {
        "text": r.choices[0].message.content,
        "streamed": streamed,
        "denied": refused(lambda: c.embeddings.create(model="e", inputs=["x"]), MistralError),
        "unauthenticated": refused(lambda: bad.chat.complete(model="mistral-test", messages=msgs), MistralError),
    }


def cohere_sdk():
    import cohere
    from cohere.errors import ForbiddenError, UnauthorizedError

    c = cohere.ClientV2(api_key=token, base_url=f"{edge}/cohere", timeout=30)
    msgs = [{"role": "user", "content": "hi"}]
    r = c.chat(model="command-test", messages=msgs)
    streamed = [e.delta.message.content.text for e in c.chat_stream(model="command-test", messages=msgs)
                if e.type == "content-delta"]
    bad = cohere.ClientV2(api_key=WRONG, base_url=f"{edge}/cohere", timeout=30)
    return {
        "text": r.message.content[0].text,
        "streamed": streamed,
        "denied": refused(lambda: c.embed(model="e", texts=["x"], input_type="search_query",
                                          embedding_types=["float"]), ForbiddenError),
        "unauthenticated": refused(lambda: bad.chat(model="command-test", messages=msgs), UnauthorizedError),
    }


run("openai", openai_sdk)
run("anthropic", anthropic_sdk)
run("gemini", gemini_sdk)
run("mistral", mistral_sdk)
run("cohere", cohere_sdk)
print(json.dumps(out))
