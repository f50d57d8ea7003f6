"""The offline cl100k_base tokenizer: known counts, no network, no download, lazy and cached."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bedrock_pipeline import tokenizer

# Runs in a fresh interpreter: sockets and DNS raise, no tiktoken cache dir is configured and the temp
# dir (tiktoken's default cache) is empty, so only the vendored file can make the counts come out right.
_OFFLINE_PROBE = """
import json, os, socket, sys
def refuse(*args, **kwargs):
    raise OSError("network disabled by test")
socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.getaddrinfo = refuse
socket.create_connection = refuse
from bedrock_pipeline import tokenizer
loaded_at_import = tokenizer.encoding.cache_info().currsize
counts = [tokenizer.count_tokens(t) for t in ("hello world", "tiktoken is great!", "")]
try:
    socket.socket().connect(("127.0.0.1", 9))
    guard = "off"
except OSError as exc:
    guard = str(exc)
print(json.dumps({
    "counts": counts,
    "name": tokenizer.encoding().name,
    "loaded_at_import": loaded_at_import,
    "guard": guard,
    "env_after": os.environ.get("TIKTOKEN_CACHE_DIR"),
    "tmp_files": os.listdir(os.environ["TMPDIR"]),
}))
"""


def test_given_no_network_and_no_cache_when_counting_then_vendored_cl100k_gives_known_counts(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR")}
    env["TMPDIR"] = str(tmp_path)

    result = subprocess.run(
        [sys.executable, "-c", _OFFLINE_PROBE],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    probe = json.loads(result.stdout)
    assert probe["guard"] == "network disabled by test"  # the guard was live during the load
    assert probe["counts"] == [2, 6, 0]
    assert probe["name"] == "cl100k_base"
    assert probe["loaded_at_import"] == 0  # lazy: nothing loaded until first use
    assert probe["env_after"] is None  # the temporary cache-dir override is undone
    assert probe["tmp_files"] == []  # nothing was downloaded or copied into tiktoken's default cache


def test_given_the_encoding_then_it_is_built_once_and_round_trips_text() -> None:
    assert tokenizer.encoding() is tokenizer.encoding()
    text = "Bedrock costs $3.00 per 1M input tokens."
    assert tokenizer.encoding().decode(tokenizer.encoding().encode(text)) == text


def test_given_a_corrupted_vendored_file_when_loading_then_it_fails_instead_of_downloading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corrupted = tmp_path / "cl100k"
    corrupted.write_bytes(b"not the encoding")
    monkeypatch.setattr(tokenizer, "ENCODING_FILE", corrupted)

    with pytest.raises(tokenizer.TokenizerDataError, match="sha256"):
        tokenizer.encoding.__wrapped__()


def test_given_a_converse_request_when_estimating_then_system_messages_tools_and_results_all_count() -> None:
    tool_spec = {
        "name": "get_weather",
        "description": "Current weather",
        "inputSchema": {"json": {"type": "object", "properties": {"city": {"type": "string"}}}},
    }
    request = {
        "modelId": "amazon.nova-lite-v1:0",
        "system": [{"text": "You are terse."}, {"cachePoint": {"type": "default"}}],
        "toolConfig": {"tools": [{"toolSpec": tool_spec}]},
        "messages": [
            {"role": "user", "content": [{"text": "Weather in Paris?"}]},
            {
                "role": "assistant",
                "content": [
                    {"toolUse": {"toolUseId": "t1", "name": "get_weather", "input": {"city": "Paris"}}}
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "toolResult": {
                            "toolUseId": "t1",
                            "content": [{"json": {"temp_c": 21}}, {"text": "sunny"}],
                        }
                    }
                ],
            },
        ],
    }
    count = tokenizer.count_tokens
    expected = (
        count(json.dumps(tool_spec))
        + count("You are terse.")
        + count("Weather in Paris?")
        + count("get_weather")
        + count(json.dumps({"city": "Paris"}))
        + count(json.dumps({"temp_c": 21}))
        + count("sunny")
    )

    assert tokenizer.count_message_tokens(request) == expected
    assert tokenizer.request_segments(request).count(None) == 1  # the cachePoint position is kept
    assert tokenizer.count_message_tokens({"messages": []}) == 0
