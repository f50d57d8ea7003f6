"""Bedrock batch inference jobs on the control plane: Create/Get/List/StopModelInvocationJob.

Request validation follows the ``bedrock`` service model botocore ships (the API reference's patterns
and ranges for jobName, roleArn, clientRequestToken, the S3 URIs, timeoutDurationInHours), worded as
AWS's validation errors are ("1 validation error detected: Value 'x' at 'roleArn' failed to satisfy
constraint: ..."). A repeated clientRequestToken returns the job it created before, with no error
(CreateModelInvocationJob, API reference: "If this token matches a previous request, Amazon Bedrock
ignores the request, but does not return an error"). A job then runs in a background thread
(``batch_runner``) through Bedrock's states (ModelInvocationJobSummary ``status``).
"""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

from local_stack.bedrock_emulator import catalog
from local_stack.bedrock_emulator.batch_formats import family
from local_stack.bedrock_emulator.batch_settings import BatchSettings
from local_stack.bedrock_emulator.errors import BedrockError

# Patterns and ranges of the bedrock service model (CreateModelInvocationJob / ListModelInvocationJobs).
_JOB_NAME = r"[a-zA-Z0-9]{1,63}(-*[a-zA-Z0-9\+\-\.]){0,63}"
_ROLE_ARN = r"arn:aws(-[^:]+)?:iam::([0-9]{12})?:role/.+"
_TOKEN = r"[a-zA-Z0-9]{1,256}(-*[a-zA-Z0-9]){0,256}"
_S3_URI = r"s3://[a-z0-9][-.a-z0-9]{1,61}[a-z0-9](?:/[-!_*'().a-z0-9A-Z]+(?:/[-!_*'().a-z0-9A-Z]+)*)?/?"
_JOB_IDENTIFIER = re.compile(
    r"^(?:arn:aws(?:-[^:]+)?:bedrock:[a-z0-9-]{1,20}:[0-9]{12}:model-invocation-job/)?(?P<id>[a-z0-9]{12})$"
)
STATUSES = (
    "Submitted",
    "InProgress",
    "Completed",
    "Failed",
    "Stopping",
    "Stopped",
    "PartiallyCompleted",
    "Expired",
    "Validating",
    "Scheduled",
)
TERMINAL = frozenset({"Completed", "PartiallyCompleted", "Failed", "Stopped", "Expired"})
DEFAULT_TIMEOUT_HOURS = 24  # the service model's minimum; Bedrock's default when none is given
_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _parse_time(value: str, name: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BedrockError("ValidationException", f"Invalid timestamp for {name}: {value}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class _Violations:
    """AWS's validation-error wording, collected over a whole request."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def pattern(self, value: Any, where: str, pattern: str, *, required: bool = True) -> None:
        if value is None:
            if required:
                self.items.append(
                    f"Value null at '{where}' failed to satisfy constraint: Member must not be null"
                )
        elif not isinstance(value, str) or not re.fullmatch(pattern, value):
            self.items.append(
                f"Value '{value}' at '{where}' failed to satisfy constraint: "
                f"Member must satisfy regular expression pattern: {pattern}"
            )

    def check(self) -> None:
        if self.items:
            count = len(self.items)
            noun = "error" if count == 1 else "errors"
            raise BedrockError(
                "ValidationException", f"{count} validation {noun} detected: " + "; ".join(self.items)
            )


class BatchJob:
    """One job: what was asked, where it is, and its counts (mutated only under BatchJobs' lock)."""

    def __init__(self, request: Mapping[str, Any], model_id: str, region: str, timeout_hours: int) -> None:
        self.job_id = "".join(secrets.choice(_ALPHABET) for _ in range(12))
        self.region = region
        self.arn = f"arn:aws:bedrock:{region}:{catalog.ACCOUNT_ID}:model-invocation-job/{self.job_id}"
        self.request = dict(request)
        self.name: str = request["jobName"]
        self.model_identifier: str = request["modelId"]
        self.model_id = model_id  # the base foundation model id
        self.invocation_type: str = request.get("modelInvocationType") or "InvokeModel"
        self.input_uri: str = request["inputDataConfig"]["s3InputDataConfig"]["s3Uri"]
        self.output_uri: str = request["outputDataConfig"]["s3OutputDataConfig"]["s3Uri"]
        self.timeout_hours = timeout_hours
        self.submit_time = datetime.now(UTC)
        self.last_modified = self.submit_time
        self.end_time: datetime | None = None
        self.expiration_time: datetime | None = None
        self.status = "Submitted"
        self.message: str | None = None
        # total/processed/success/error record counts: 0 until Validating has counted the input, as
        # Bedrock reports them (totalRecordCount 0 while Validating; BerriAI/litellm#38744, against AWS).
        self.counts = dict.fromkeys(("total", "processed", "success", "error"), 0)
        self.stop_requested = threading.Event()

    def describe(self) -> dict[str, Any]:
        """GetModelInvocationJob's response (and, the same fields, a ListModelInvocationJobs summary)."""
        body: dict[str, Any] = {
            "jobArn": self.arn,
            "jobName": self.name,
            "modelId": self.model_identifier,
            "roleArn": self.request["roleArn"],
            "status": self.status,
            "submitTime": iso(self.submit_time),
            "lastModifiedTime": iso(self.last_modified),
            "inputDataConfig": self.request["inputDataConfig"],
            "outputDataConfig": self.request["outputDataConfig"],
            "timeoutDurationInHours": self.timeout_hours,
            "modelInvocationType": self.invocation_type,
        }
        if token := self.request.get("clientRequestToken"):
            body["clientRequestToken"] = token
        if self.message is not None:
            body["message"] = self.message
        if self.end_time is not None:
            body["endTime"] = iso(self.end_time)
        if self.expiration_time is not None:
            body["jobExpirationTime"] = iso(self.expiration_time)
        for key in ("total", "processed", "success", "error"):
            body[f"{key}RecordCount"] = self.counts[key]
        return body


JobStarter = Callable[["BatchJobs", BatchJob], None]


class BatchJobs:
    """Every batch job of the emulator, its settings, and the API over them (thread-safe).

    ``start`` runs a created job (``batch_runner.start``); tests of the API alone can pass a no-op.
    """

    def __init__(self, start: JobStarter, settings: Mapping[str, Any] | None = None) -> None:
        self.lock = threading.Lock()
        self._start = start
        self._initial = BatchSettings().merged(settings or {})
        self.settings = self._initial
        self._jobs: dict[str, BatchJob] = {}
        self._tokens: dict[str, str] = {}

    # --- admin ---
    def configure(self, update: Mapping[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.settings = self.settings.merged(update)
            return self.settings.as_dict()

    def config(self) -> dict[str, Any]:
        with self.lock:
            return self.settings.as_dict()

    def replace_settings(self, settings: BatchSettings) -> dict[str, Any]:
        with self.lock:
            self.settings = settings
            return settings.as_dict()

    def settings_now(self) -> BatchSettings:
        with self.lock:
            return self.settings

    def reset(self) -> None:
        """Start-up settings, no jobs; running jobs stop at their next step."""
        with self.lock:
            for job in self._jobs.values():
                job.stop_requested.set()
            self._jobs = {}
            self._tokens = {}
            self.settings = self._initial

    def current(self, job: BatchJob) -> bool:
        with self.lock:
            return self._jobs.get(job.job_id) is job

    # --- the API ---
    def create(self, request: Mapping[str, Any], region: str, extra_models: frozenset[str]) -> dict[str, Any]:
        violations = _Violations()
        violations.pattern(request.get("jobName"), "jobName", _JOB_NAME)
        violations.pattern(request.get("roleArn"), "roleArn", _ROLE_ARN)
        violations.pattern(request.get("clientRequestToken"), "clientRequestToken", _TOKEN, required=False)
        for side, config_key in (("input", "s3InputDataConfig"), ("output", "s3OutputDataConfig")):
            s3 = (request.get(f"{side}DataConfig") or {}).get(config_key) or {}
            where = f"{side}DataConfig.{config_key}"
            violations.pattern(s3.get("s3Uri"), f"{where}.s3Uri", _S3_URI)
            violations.pattern(s3.get("s3BucketOwner"), f"{where}.s3BucketOwner", "[0-9]{12}", required=False)
        input_format = ((request.get("inputDataConfig") or {}).get("s3InputDataConfig") or {}).get(
            "s3InputFormat"
        )
        if input_format not in (None, "JSONL"):
            violations.items.append(
                f"Value '{input_format}' at 'inputDataConfig.s3InputDataConfig.s3InputFormat' failed to "
                "satisfy constraint: Member must satisfy enum value set: [JSONL]"
            )
        timeout = request.get("timeoutDurationInHours", DEFAULT_TIMEOUT_HOURS)
        if not isinstance(timeout, int) or not 24 <= timeout <= 168:
            violations.items.append(
                f"Value '{timeout}' at 'timeoutDurationInHours' failed to satisfy constraint: "
                "Member must have value between 24 and 168"
            )
        invocation_type = request.get("modelInvocationType") or "InvokeModel"
        if invocation_type not in ("InvokeModel", "Converse"):
            violations.items.append(
                f"Value '{invocation_type}' at 'modelInvocationType' failed to satisfy constraint: "
                "Member must satisfy enum value set: [InvokeModel, Converse]"
            )
        violations.check()
        info = catalog.resolve(str(request.get("modelId") or ""), extra_models)
        if info is None:
            raise BedrockError("ValidationException", catalog.INVALID_MODEL_MESSAGE)
        if invocation_type == "InvokeModel" and family(info.model_id) is None:
            # The emulator has native batch formats for Anthropic, Nova and Llama only (batch_formats);
            # the words are AWS's for a model without batch support (probed against AWS in
            # stdapi-ai/stdapi.ai#292).
            raise BedrockError(
                "ValidationException", "Batch inference is not supported for the requested model"
            )
        token = request.get("clientRequestToken")
        with self.lock:
            if token and token in self._tokens:
                return {"jobArn": self._jobs[self._tokens[token]].arn}
            job = BatchJob(request, info.model_id, region, timeout)
            self._jobs[job.job_id] = job
            if token:
                self._tokens[token] = job.job_id
        self._start(self, job)
        return {"jobArn": job.arn}

    def job(self, identifier: str) -> BatchJob:
        match = _JOB_IDENTIFIER.match(identifier)
        if match is None:
            raise BedrockError(
                "ValidationException",
                f"1 validation error detected: Value '{identifier}' at 'jobIdentifier' failed to satisfy "
                "constraint: Member must satisfy regular expression pattern: "
                "((arn:aws(-[^:]+)?:bedrock:[a-z0-9-]{1,20}:[0-9]{12}:model-invocation-job/)?[a-z0-9]{12})",
            )
        with self.lock:
            job = self._jobs.get(match.group("id"))
        if job is None:
            raise BedrockError("ResourceNotFoundException", f"Could not find job {identifier}")
        return job

    def get(self, identifier: str) -> dict[str, Any]:
        job = self.job(identifier)
        with self.lock:
            return job.describe()

    def stop(self, identifier: str) -> dict[str, Any]:
        job = self.job(identifier)
        with self.lock:
            if job.status in TERMINAL or job.status == "Stopping":
                # Bedrock answers a ValidationException whose message ends "State was: Completed"
                # (apache/airflow's Bedrock batch system test, run against AWS, matches on that text).
                raise BedrockError(
                    "ValidationException", f"Job {job.arn} cannot be stopped. State was: {job.status}"
                )
            job.status = "Stopping"
            job.last_modified = datetime.now(UTC)
        job.stop_requested.set()  # the runner moves it to Stopped (and emits both state changes)
        return {}

    def list(self, query: Mapping[str, str]) -> dict[str, Any]:
        status = query.get("statusEquals")
        if status is not None and status not in STATUSES:
            raise BedrockError(
                "ValidationException",
                f"1 validation error detected: Value '{status}' at 'statusEquals' failed to satisfy "
                f"constraint: Member must satisfy enum value set: [{', '.join(STATUSES)}]",
            )
        try:
            size = int(query.get("maxResults", "1000"))
            start = int(query.get("nextToken", "0"))
        except ValueError:
            raise BedrockError("ValidationException", "Invalid maxResults or nextToken") from None
        if not 1 <= size <= 1000 or start < 0:
            raise BedrockError("ValidationException", "maxResults must be between 1 and 1000")
        after = (
            _parse_time(query["submitTimeAfter"], "submitTimeAfter") if "submitTimeAfter" in query else None
        )
        before = (
            _parse_time(query["submitTimeBefore"], "submitTimeBefore")
            if "submitTimeBefore" in query
            else None
        )
        name = query.get("nameContains")
        with self.lock:
            jobs = [
                job
                for job in self._jobs.values()
                if (status is None or job.status == status)
                and (name is None or name in job.name)
                and (after is None or job.submit_time > after)
                and (before is None or job.submit_time < before)
            ]
            jobs.sort(
                key=lambda j: j.submit_time, reverse=query.get("sortOrder", "Descending") != "Ascending"
            )
            page: dict[str, Any] = {
                "invocationJobSummaries": [j.describe() for j in jobs[start : start + size]]
            }
        if start + size < len(jobs):
            page["nextToken"] = str(start + size)  # opaque to clients, as Bedrock's
        return page

    # --- transitions (the runner's) ---
    def transition(self, job: BatchJob, status: str, *, message: str | None = None) -> bool | None:
        """Move ``job`` to ``status``: True if moved, False if kept (a stop was asked for: only Stopping,
        Stopped or Failed follow), None when the job was reset away."""
        with self.lock:
            if self._jobs.get(job.job_id) is not job:
                return None
            if job.status == "Stopping" and status not in ("Stopping", "Stopped", "Failed"):
                return False
            now = datetime.now(UTC)
            job.status = status
            job.last_modified = now
            if message is not None:
                job.message = message
            if status in TERMINAL:
                job.end_time = now
            if status == "Scheduled":
                job.expiration_time = now + timedelta(hours=job.timeout_hours)
        return True

    def set_counts(self, job: BatchJob, counts: Mapping[str, int]) -> None:
        with self.lock:
            job.counts = dict(counts)


def handle(
    jobs: BatchJobs,
    method: str,
    path: str,
    query: Mapping[str, str],
    body: Mapping[str, Any],
    region: str,
    extra_models: frozenset[str],
) -> dict[str, Any] | None:
    """Route one control-plane request (the bedrock service model's request URIs); None if not ours."""
    if (method, path) == ("POST", "/model-invocation-job"):
        return jobs.create(body, region, extra_models)
    if (method, path) == ("GET", "/model-invocation-jobs"):
        return jobs.list(query)
    # botocore percent-encodes the identifier (an ARN's ":" and "/"): split first, then decode.
    parts = [unquote(part) for part in path.split("/")]  # "", "model-invocation-job", id[, "stop"]
    if len(parts) == 3 and parts[1] == "model-invocation-job" and method == "GET":
        return jobs.get(parts[2])
    if len(parts) == 4 and parts[1] == "model-invocation-job" and parts[3] == "stop" and method == "POST":
        return jobs.stop(parts[2])
    return None
