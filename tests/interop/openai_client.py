"""The official OpenAI Python SDK, unchanged, talking through warrant's egress proxy.

usage: openai_client.py BASE_URL TASK_TOKEN
The task token is the SDK's api_key; the proxy swaps it for the real key.
Prints a JSON object: a normal completion, a streamed one, and what the SDK
raises for a request the policy denies.
"""
import json
import sys

import openai
from openai import OpenAI

base_url, token = sys.argv[1], sys.argv[2]
client = OpenAI(base_url=base_url, api_key=token, max_retries=0, timeout=30)
out = {}

r = client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
out["content"] = r.choices[0].message.content
out["usage"] = r.usage.total_tokens

deltas = []
stream = client.chat.completions.create(
    model="gpt-test", messages=[{"role": "user", "content": "hi"}], stream=True
)
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        deltas.append(chunk.choices[0].delta.content)
out["streamed"] = deltas

try:
    client.embeddings.create(model="e", input="x")
    out["denied"] = None
except openai.PermissionDeniedError as e:
    out["denied"] = {"status": e.status_code, "body": e.body, "message": e.message}

bad = OpenAI(base_url=base_url, api_key="not-a-task-token", max_retries=0, timeout=30)
try:
    bad.chat.completions.create(model="gpt-test", messages=[])
    out["unauthenticated"] = None
except openai.AuthenticationError as e:
    out["unauthenticated"] = {"status": e.status_code}

print(json.dumps(out))
