"""The bedrock-runtime emulator: Converse and ConverseStream over the REST-JSON wire protocol botocore uses.

Model calls:   POST /model/{modelId}/converse, POST /model/{modelId}/converse-stream
Control plane: GET /foundation-models (ListFoundationModels), GET /inference-profiles (ListInferenceProfiles),
               batch inference jobs (Create/Get/List/StopModelInvocationJob: batch_jobs, batch_runner)
Admin (JSON):  GET /_emulator/health, GET|POST /_emulator/config, POST /_emulator/reset, GET /_emulator/stats

This module is the HTTP side (routing, JSON and event-stream responses, the server thread); what a
call is answered with comes from ``model``, and config, faults, token usage with prompt caching and
statistics live in ``state``.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import IO, Any
from urllib.parse import parse_qs, unquote, urlsplit

from bedrock_pipeline.tokenizer import count_tokens
from local_stack.bedrock_emulator import batch_jobs, batch_runner, catalog, features, reasoning, validation
from local_stack.bedrock_emulator.behaviour import DEFAULT_MODEL_KEY
from local_stack.bedrock_emulator.errors import BedrockError
from local_stack.bedrock_emulator.eventstream import EVENTSTREAM_CONTENT_TYPE, encode_event
from local_stack.bedrock_emulator.model import Reply, request_rng, respond
from local_stack.bedrock_emulator.state import EmulatorState

_MODEL_PATH = re.compile(r"^/model/(?P<model>[^/]+)/(?P<operation>converse|converse-stream)$")
_CONTROL_PLANE = ("/foundation-models", "/inference-profiles")
# SigV4's credential scope names the region the client signed for: .../20250101/us-east-1/bedrock/aws4_request
_SIGNED_REGION = re.compile(r"Credential=[^/]+/\d{8}/(?P<region>[a-z0-9-]+)/")


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # concurrent runners connect in bursts

    def __init__(
        self, address: tuple[str, int], state: EmulatorState, batch: batch_jobs.BatchJobs, log: IO[str] | None
    ) -> None:
        self.state = state
        self.batch = batch
        self.log = log
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: botocore reuses pooled connections
    disable_nagle_algorithm = True  # without it every response waits ~40 ms for the delayed ACK
    server: _HTTPServer
    server_version = "BedrockEmulator/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        return  # one line per model call is written by _log_call instead

    # --- plumbing ---
    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send_json(self, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, error: BedrockError, request_id: str) -> None:
        headers = {"x-amzn-ErrorType": f"{error.name}:http://internal.amazon.com/coral/com.amazon.bedrock/"}
        self._send_json(error.status, error.body(), headers | {"x-amzn-RequestId": request_id})

    def _log_call(self, text: str) -> None:
        if self.server.log is not None:
            stamp = time.strftime("%H:%M:%S")
            print(f"{stamp} {text}", file=self.server.log, flush=True)

    # --- routing ---
    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def _route(self, method: str) -> None:
        url = urlsplit(self.path)
        path = url.path
        body = self._read_body()
        if method == "POST" and (match := _MODEL_PATH.match(path)):
            self._model_call(unquote(match.group("model")), match.group("operation"), body)
        elif method == "GET" and path in _CONTROL_PLANE:
            self._control_plane(path, {k: v[-1] for k, v in parse_qs(url.query).items()})
        elif path.startswith("/model-invocation-job"):
            self._batch(method, path, {k: v[-1] for k, v in parse_qs(url.query).items()}, body)
        elif path.startswith("/_emulator/"):
            self._admin(method, path.removeprefix("/_emulator/"), body)
        else:
            self._send_json(
                404,
                {"message": f"No route for {method} {path}"},
                {"x-amzn-ErrorType": "UnknownOperationException"},
            )

    def _admin(self, method: str, name: str, body: bytes) -> None:
        state = self.server.state
        try:
            payload = json.loads(body) if body.strip() else {}
            if not isinstance(payload, dict):
                raise ValueError("expected a JSON object")
            if (method, name) == ("GET", "health"):
                self._send_json(200, {"status": "ok"})
            elif (method, name) == ("GET", "config"):
                self._send_json(200, state.config() | {"batch": self.server.batch.config()})
            elif (method, name) == ("POST", "config"):
                batch = self.server.batch.settings_now().merged(payload.pop("batch", None) or {})
                config = state.merge_config(payload)  # both validated before either changes
                self._send_json(200, config | {"batch": self.server.batch.replace_settings(batch)})
            elif (method, name) == ("POST", "reset"):
                state.reset(payload.get("seed"))
                self.server.batch.reset()
                self._send_json(200, {"status": "reset", "seed": state.seed})
            elif (method, name) == ("GET", "stats"):
                self._send_json(200, state.stats())
            else:
                self._send_json(404, {"message": f"No admin route {method} /_emulator/{name}"})
        except (ValueError, TypeError) as exc:
            self._send_json(400, {"message": str(exc)})

    # --- the control plane (what ingest's model check reads) ---
    def _control_plane(self, path: str, query: dict[str, str]) -> None:
        request_id = str(uuid.uuid4())
        signed = _SIGNED_REGION.search(self.headers.get("Authorization", ""))
        region = signed.group("region") if signed else "us-east-1"
        try:
            if path == "/foundation-models":
                models = catalog.foundation_model_summaries(region, self.server.state.extra_models())
                self._send_json(200, {"modelSummaries": models}, {"x-amzn-RequestId": request_id})
                return
            type_equals = query.get("type")
            if type_equals not in (None, "SYSTEM_DEFINED", "APPLICATION"):
                raise BedrockError("ValidationException", f"Invalid value for typeEquals: {type_equals}")
            size = int(query.get("maxResults", catalog.PROFILES_PAGE_SIZE))
            start = int(query.get("nextToken", "0"))
            if not 1 <= size <= 1000 or start < 0:
                raise BedrockError("ValidationException", "maxResults must be 1..1000 and nextToken valid")
        except ValueError:
            self._send_error(
                BedrockError("ValidationException", "invalid maxResults or nextToken"), request_id
            )
            return
        except BedrockError as error:
            self._send_error(error, request_id)
            return
        profiles = catalog.inference_profile_summaries(region, type_equals)
        page: dict[str, Any] = {"inferenceProfileSummaries": profiles[start : start + size]}
        if start + size < len(profiles):
            page["nextToken"] = str(start + size)  # opaque to clients, as Bedrock's
        self._send_json(200, page, {"x-amzn-RequestId": request_id})

    # --- batch inference jobs (the control plane's model-invocation-job routes) ---
    def _batch(self, method: str, path: str, query: dict[str, str], raw: bytes) -> None:
        request_id = str(uuid.uuid4())
        signed = _SIGNED_REGION.search(self.headers.get("Authorization", ""))
        region = signed.group("region") if signed else "us-east-1"
        try:
            body = validation.parse_body(raw) if raw.strip() else {}
            extra_models = self.server.state.extra_models()
            answer = batch_jobs.handle(self.server.batch, method, path, query, body, region, extra_models)
        except BedrockError as error:
            self._send_error(error, request_id)
            self._log_call(f"batch {method} {path} {error.status} {error.name}: {error.message}")
            return
        status, headers = (200, {"x-amzn-RequestId": request_id}) if answer is not None else (404, {})
        self._send_json(
            status, answer if answer is not None else {"message": f"No route for {path}"}, headers
        )

    # --- Converse / ConverseStream ---
    def _model_call(self, model: str, operation: str, raw: bytes) -> None:
        state = self.server.state
        request_id = str(uuid.uuid4())
        digest = hashlib.sha256(model.encode() + b"\x00" + raw).hexdigest()
        started = time.perf_counter()
        try:
            body = validation.parse_body(raw)
            info = catalog.resolve(model, state.extra_models())
            if info is None:
                raise BedrockError("ValidationException", catalog.INVALID_MODEL_MESSAGE)
            validation.validate_converse(body, info)
            plan = features.prepare(body, info)  # thinking, guardrail, service tier
            behaviour = state.behaviour(model, info.model_id)
            if fault := state.draw_fault(behaviour):
                raise BedrockError(fault, **self._fault_fields(fault, model))
            admission = state.admit(model, info, body, behaviour)  # ThrottlingException over quota
            reply = respond(body, info.model_id, state.seed, behaviour.accuracy)
            reply, extra = features.finish(
                plan, body, reply, request_rng(state.seed + 2, info.model_id, body)
            )
            usage = state.usage(body, info.model_id, reply.output_tokens)
            latency_rng = request_rng(state.seed + 1, info.model_id, body)
            first_ms = behaviour.base_latency_ms(latency_rng)
            latency_ms = first_ms + behaviour.ms_per_output_token * reply.output_tokens
            metrics = {"latencyMs": round(latency_ms)}
        except BedrockError as error:
            state.record(model, operation, error.outcome, error.name, digest)
            self._send_error(error, request_id)
            self._log_call(f"{operation} {model} {error.status} {error.name}: {error.message}")
            return
        except Exception as exc:  # a bug in the emulator must still answer the client
            traceback.print_exc()
            error = BedrockError("InternalServerException", f"emulator failure: {exc}")
            state.record(model, operation, "error", error.name, digest)
            self._send_error(error, request_id)
            return
        state.record(model, operation, "ok", None, digest)
        if operation == "converse":
            if latency_ms > 0:
                time.sleep(latency_ms / 1000)
            response = {
                "output": {"message": {"role": "assistant", "content": reply.content}},
                "stopReason": reply.stop_reason,
                "usage": usage,
                "metrics": metrics,
                **extra,
            }
            self._send_json(200, response, {"x-amzn-RequestId": request_id})
        else:
            metadata = {"usage": usage, "metrics": metrics, **extra}
            self._stream(reply, metadata, first_ms, behaviour.ms_per_output_token, request_id)
        state.settle(admission, usage)  # after the reply or the whole stream, as Bedrock settles
        elapsed = (time.perf_counter() - started) * 1000
        self._log_call(
            f"{operation} {model} 200 {reply.stop_reason} in={usage['inputTokens']} "
            f"out={usage['outputTokens']} latency={metrics['latencyMs']}ms served={elapsed:.1f}ms"
        )

    @staticmethod
    def _fault_fields(name: str, model: str) -> dict[str, Any]:
        if name == "ModelErrorException":
            return {"originalStatusCode": 500, "resourceName": model}
        return {}

    def _stream(
        self,
        reply: Reply,
        metadata: dict[str, Any],
        first_ms: float,
        ms_per_token: float,
        request_id: str,
    ) -> None:
        self.send_response(200)
        self.send_header("Content-Type", EVENTSTREAM_CONTENT_TYPE)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("x-amzn-RequestId", request_id)
        self.end_headers()
        pending: list[bytes] = [encode_event("messageStart", {"role": "assistant"})]
        if first_ms > 0:
            # As Bedrock: the stream opens at once and the first delta waits for the model (time to
            # first token); the rest of the latency is spread over the chunks (ms_per_output_token).
            self._flush(pending)
            time.sleep(first_ms / 1000)

        def emit(event: bytes, generated: str = "") -> None:
            pending.append(event)
            if ms_per_token > 0 and generated:  # otherwise one write for the whole stream
                self._flush(pending)
                time.sleep(ms_per_token * count_tokens(generated) / 1000)

        for index, block in enumerate(reply.content):
            if "toolUse" in block:
                tool = block["toolUse"]
                start = {"toolUse": {"toolUseId": tool["toolUseId"], "name": tool["name"]}}
                emit(encode_event("contentBlockStart", {"start": start, "contentBlockIndex": index}))
                text = json.dumps(tool["input"])
                pieces = [text[i : i + 24] for i in range(0, len(text), 24)] or [""]
                for piece in pieces:
                    delta = {"delta": {"toolUse": {"input": piece}}, "contentBlockIndex": index}
                    emit(encode_event("contentBlockDelta", delta), piece)
            elif "reasoningContent" in block:
                for part, generated in reasoning.stream_deltas(block):
                    emit(
                        encode_event("contentBlockDelta", {"delta": part, "contentBlockIndex": index}),
                        generated,
                    )
            else:
                for piece in reply.text_chunks:
                    delta = {"delta": {"text": piece}, "contentBlockIndex": index}
                    emit(encode_event("contentBlockDelta", delta), piece)
            emit(encode_event("contentBlockStop", {"contentBlockIndex": index}))
        emit(encode_event("messageStop", {"stopReason": reply.stop_reason}))
        emit(encode_event("metadata", metadata))
        self._flush(pending)
        self.wfile.write(b"0\r\n\r\n")

    def _flush(self, pending: list[bytes]) -> None:
        if pending:
            data = b"".join(pending)
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            pending.clear()


class EmulatorServer:
    """The emulator in a background thread.

    ``with EmulatorServer(seed=0) as emu: boto3.client("bedrock-runtime", endpoint_url=emu.url, ...)``
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 0,
        config: Mapping[str, Any] | None = None,
        quiet: bool = True,
        log: IO[str] | None = None,
        aws_endpoint: str | None = None,
    ) -> None:
        """``aws_endpoint``: the local AWS (moto) batch jobs read and write S3 on and send events to."""
        config = dict(config or {})
        batch = (config.pop("batch", None) or {}) | ({"aws_endpoint": aws_endpoint} if aws_endpoint else {})
        self.state = EmulatorState(seed, {**config, "seed": seed})
        self.batch = batch_runner.batch_jobs_for(self.state, batch)
        self._httpd = _HTTPServer(
            (host, port), self.state, self.batch, None if quiet else (log or sys.stderr)
        )
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return str(self._httpd.server_address[0])

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> EmulatorServer:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, name="bedrock-emulator", daemon=True
            )
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread (the CLI); returns after ``stop()`` from another thread."""
        self._httpd.serve_forever()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def configure(self, model: str = DEFAULT_MODEL_KEY, **settings: Any) -> dict[str, Any]:
        """Merge settings for one model key ("*" for all); returns the whole config."""
        return self.state.merge_config({"models": {model: settings}})

    def configure_batch(self, **settings: Any) -> dict[str, Any]:
        """Merge batch-job settings (batch_settings.BatchSettings); returns them all."""
        return self.batch.configure(settings)

    def config(self) -> dict[str, Any]:
        return self.state.config() | {"batch": self.batch.config()}

    def stats(self) -> dict[str, Any]:
        return self.state.stats()

    def reset(self, seed: int | None = None) -> None:
        """Back to the start-up config and seed (or ``seed``); clears stats, prompt-cache memory, batch jobs."""
        self.state.reset(seed)
        self.batch.reset()

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
