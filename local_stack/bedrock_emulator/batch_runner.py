"""Running one batch job: Bedrock's states, the input read from S3, the output written back.

States (ModelInvocationJobSummary ``status``): Submitted -> Validating -> Scheduled -> InProgress ->
Completed; Failed from Validating (unreadable input, too few or too many records: "Your files fulfill
the requirements for file size and number of records"); Expired from Scheduled ("scheduled but didn't
begin before the set timeout duration"); Stopping -> Stopped after StopModelInvocationJob;
PartiallyCompleted when records could not all be processed. Each change is one EventBridge event.

Output ("View the results of a batch inference job", batch-inference-results): under
``<outputS3Uri>/<job id>/``, one ``<input file name>.out`` per input ``.jsonl`` file, each line
``{"recordId", "modelInput", "modelOutput"}`` or, for a record that failed, ``"error": {"errorCode",
"errorMessage"}`` in place of ``modelOutput``; and ``manifest.json.out`` with totalRecordCount,
processedRecordCount, successRecordCount, errorRecordCount, inputTokenCount, outputTokenCount.
A record without ``recordId`` gets one, as Bedrock adds it ("Format and upload your batch inference
data"). Messages of failed jobs and of records failed by the partial fault are the emulator's words.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from local_stack.bedrock_emulator import batch_events, catalog, validation
from local_stack.bedrock_emulator.batch_formats import RecordError, family, to_converse, to_native
from local_stack.bedrock_emulator.batch_jobs import BatchJob, BatchJobs
from local_stack.bedrock_emulator.batch_settings import BatchSettings
from local_stack.bedrock_emulator.errors import BedrockError
from local_stack.bedrock_emulator.model import Reply, respond
from local_stack.bedrock_emulator.state import EmulatorState

logger = logging.getLogger(__name__)
Answer = Callable[[str, dict[str, Any]], tuple[Reply, dict[str, int]]]
PARTIAL_FAULT_MESSAGE = "The record was not processed before the job ended."
_INPUT_SUFFIX = ".jsonl"


def answerer(state: EmulatorState) -> Answer:
    """Answer a Converse request for a base model id exactly as the emulator's Converse does."""

    def answer(model_id: str, body: dict[str, Any]) -> tuple[Reply, dict[str, int]]:
        info = catalog.resolve(model_id, state.extra_models())
        if info is None:
            raise BedrockError("ValidationException", catalog.INVALID_MODEL_MESSAGE)
        validation.validate_converse(body, info)
        behaviour = state.behaviour(model_id, info.model_id)
        reply = respond(body, info.model_id, state.seed, behaviour.accuracy)
        return reply, state.usage(body, info.model_id, reply.output_tokens)

    return answer


def batch_jobs_for(state: EmulatorState, settings: Mapping[str, Any]) -> BatchJobs:
    """The emulator's batch jobs, answering records from ``state`` (the server's)."""
    return BatchJobs(functools.partial(start, answer=answerer(state)), settings)


def start(jobs: BatchJobs, job: BatchJob, *, answer: Answer) -> None:
    """Run ``job`` in a daemon thread (BatchJobs' ``start``)."""
    thread = threading.Thread(target=_Run(jobs, job, answer).run, name=f"batch-job-{job.job_id}", daemon=True)
    thread.start()


def split_s3_uri(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


@dataclass
class _InputFile:
    key: str
    output_key: str
    records: list[dict[str, Any]]


class _JobFailed(Exception):
    pass


class _Run:
    def __init__(self, jobs: BatchJobs, job: BatchJob, answer: Answer) -> None:
        self.jobs = jobs
        self.job = job
        self.answer = answer
        self.settings: BatchSettings = jobs.settings_now()
        self.output_bucket = split_s3_uri(job.output_uri)[0]
        self.outputs: dict[str, list[dict[str, Any]]] = {}
        self.tokens = [0, 0]  # input (cache reads and writes included), output

    # --- plumbing ---
    def _s3(self) -> Any:
        if not self.settings.aws_endpoint:
            raise _JobFailed("The emulator has no S3 endpoint (batch.aws_endpoint) to read the input from.")
        return batch_events.aws_client("s3", self.settings.aws_endpoint, self.job.region)

    def _move(self, status: str, message: str | None = None) -> bool:
        """The job in ``status`` and its event sent; False when it was reset away. A stopping job stays
        Stopping (its runner reaches Stopped at its next step)."""
        moved = self.jobs.transition(self.job, status, message=message)
        if moved is None:
            return False
        if moved and self.settings.events == "eventbridge" and self.settings.aws_endpoint:
            detail = batch_events.state_change_detail(self.job)
            batch_events.put_state_change(self.settings.aws_endpoint, self.job, detail)
        return True

    def _wait(self) -> bool:
        """Sleep one state's delay; True when the job was stopped (or reset) meanwhile."""
        return self.job.stop_requested.wait(self.settings.state_delay_seconds)

    def _stopped(self, files: list[_InputFile] | None = None, done: int = 0) -> None:
        if not self.jobs.current(self.job):
            return  # reset away: no state, no events
        self._move("Stopping")
        if files is not None:
            self._write(files, done)
        self._move("Stopped")

    # --- the job ---
    def run(self) -> None:
        try:
            self._run()
            with self.jobs.lock:
                stopping = self.job.status == "Stopping"
            if stopping:  # a stop that came after the runner's last check
                self._move("Stopped")
        except _JobFailed as failure:
            self._move("Failed", str(failure))
        except Exception as exc:  # a bug in the emulator must still end the job
            logger.exception("batch job %s crashed", self.job.job_id)
            self._move("Failed", f"Internal error in the emulator: {exc}")

    def _run(self) -> None:
        self._move("Submitted")
        if self._wait():
            return self._stopped()
        if not self._move("Validating"):
            return None
        fault = self.settings.fault_for(self.job.name)
        if fault == "fail":
            raise _JobFailed("Emulated failure (batch fault 'fail').")
        files = self._read_inputs()
        if self._wait():
            return self._stopped()
        self._move("Scheduled")
        if self._wait():
            return self._stopped()
        if fault == "expire":
            self._move("Expired", "The job was not started before its timeout (batch fault 'expire').")
            return None
        self._move("InProgress")
        done = self._process(files, partial=fault == "partial")
        if self.job.stop_requested.is_set():
            return self._stopped(files, done)
        counts = self._write(files, done)
        if counts["error"] and fault == "partial":
            self._move("PartiallyCompleted", f"{counts['error']} of {counts['total']} records failed.")
        else:
            self._move("Completed")
        return None

    def _read_inputs(self) -> list[_InputFile]:
        s3 = self._s3()
        bucket, key = split_s3_uri(self.job.input_uri)
        try:
            if key.endswith(_INPUT_SUFFIX):
                keys = [key]
                prefix = key.rsplit("/", 1)[0] + "/" if "/" in key else ""
            else:
                prefix = key if not key or key.endswith("/") else key + "/"
                pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
                keys = sorted(
                    item["Key"]
                    for page in pages
                    for item in page.get("Contents", [])
                    if item["Key"].endswith(_INPUT_SUFFIX)
                )
            bodies = {k: s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}
        except Exception as exc:
            raise _JobFailed(f"Unable to read the input from {self.job.input_uri}: {exc}") from None
        if not keys:
            raise _JobFailed(f"No .jsonl input files were found at {self.job.input_uri}.")
        out_key = split_s3_uri(self.job.output_uri)[1]
        out_prefix = f"{out_key.rstrip('/')}/" if out_key.strip("/") else ""
        files = []
        for input_key in keys:
            records = self._parse(input_key, bodies[input_key])
            relative = input_key[len(prefix) :] if input_key.startswith(prefix) else input_key
            files.append(_InputFile(input_key, f"{out_prefix}{self.job.job_id}/{relative}.out", records))
        total = sum(len(f.records) for f in files)
        if total < self.settings.minimum_records:
            raise _JobFailed(
                f"The job has {total} records, fewer than the minimum of {self.settings.minimum_records} "
                "records per batch inference job."
            )
        if total > self.settings.max_records_per_job:
            raise _JobFailed(
                f"The job has {total} records, more than the maximum of "
                f"{self.settings.max_records_per_job} records per batch inference job."
            )
        self.jobs.set_counts(self.job, {"total": total, "processed": 0, "success": 0, "error": 0})
        return files

    def _parse(self, key: str, body: bytes) -> list[dict[str, Any]]:
        records = []
        for number, line in enumerate(body.decode("utf-8", errors="replace").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise _JobFailed(f"Line {number} of {key} is not valid JSON.") from None
            if not isinstance(record, dict) or "modelInput" not in record:
                raise _JobFailed(f"Line {number} of {key} is not a record with a modelInput.")
            if "recordId" not in record:
                digest = hashlib.sha256(f"{key}\x00{number}".encode()).hexdigest().upper()
                record = {"recordId": digest[:11], **record}
            records.append(record)
        if len(records) > self.settings.max_records_per_file:
            raise _JobFailed(
                f"{key} has {len(records)} records, more than the maximum of "
                f"{self.settings.max_records_per_file} records per input file."
            )
        return records

    def _process(self, files: list[_InputFile], *, partial: bool) -> int:
        """Answer records in order until all are done or the job is stopped; returns how many."""
        native = "converse" if self.job.invocation_type == "Converse" else family(self.job.model_id)
        rng = random.Random(self.job.job_id)
        self.outputs = {f.key: [] for f in files}
        total = sum(len(f.records) for f in files)
        done = errors = 0
        for input_file in files:
            for record in input_file.records:
                if self.job.stop_requested.is_set():
                    return done
                if self.settings.ms_per_record:
                    time.sleep(self.settings.ms_per_record / 1000)
                line: dict[str, Any] = {"recordId": record["recordId"], "modelInput": record["modelInput"]}
                if partial and rng.random() < self.settings.partial_error_rate:
                    line["error"] = {"errorCode": 500, "errorMessage": PARTIAL_FAULT_MESSAGE}
                else:
                    line.update(self._answer(str(native), record["modelInput"]))
                self.outputs[input_file.key].append(line)
                done += 1
                errors += "error" in line
                # Progress, as GetModelInvocationJob shows it while the job runs.
                progress = {"total": total, "processed": done, "success": done - errors, "error": errors}
                self.jobs.set_counts(self.job, progress)
        return done

    def _answer(self, native: str, model_input: Any) -> dict[str, Any]:
        try:
            body = to_converse(native, model_input)
            reply, usage = self.answer(self.job.model_id, body)
        except RecordError as error:
            return {"error": {"errorCode": 400, "errorMessage": str(error)}}
        except BedrockError as error:
            return {"error": {"errorCode": error.status, "errorMessage": error.message}}
        self.tokens[0] += usage["inputTokens"] + usage.get("cacheReadInputTokens", 0)
        self.tokens[0] += usage.get("cacheWriteInputTokens", 0)
        self.tokens[1] += usage["outputTokens"]
        return {"modelOutput": to_native(native, self.job.model_id, reply, usage, body)}

    def _write(self, files: list[_InputFile], done: int) -> dict[str, int]:
        """The .out files (records answered so far) and manifest.json.out; returns the counts."""
        s3 = self._s3()
        lines = [line for f in files for line in self.outputs.get(f.key, [])]
        errors = sum(1 for line in lines if "error" in line)
        counts = {"total": sum(len(f.records) for f in files), "processed": done}
        counts |= {"success": done - errors, "error": errors}
        for input_file in files:
            written = list(self.outputs.get(input_file.key, []))
            if self.settings.shuffle_output:
                random.Random(f"{self.job.job_id}/{input_file.key}").shuffle(written)
            body = "".join(json.dumps(line) + "\n" for line in written)
            s3.put_object(Bucket=self.output_bucket, Key=input_file.output_key, Body=body.encode())
        manifest = {
            "totalRecordCount": counts["total"],
            "processedRecordCount": counts["processed"],
            "successRecordCount": counts["success"],
            "errorRecordCount": counts["error"],
            "inputTokenCount": self.tokens[0],
            "outputTokenCount": self.tokens[1],
        }
        # The job-id folder: every output key is <prefix><job id>/<relative>.out
        manifest_key = self._job_folder(files[0].output_key) + "manifest.json.out"
        s3.put_object(Bucket=self.output_bucket, Key=manifest_key, Body=json.dumps(manifest).encode())
        self.jobs.set_counts(self.job, counts)
        return counts

    def _job_folder(self, output_key: str) -> str:
        marker = f"{self.job.job_id}/"
        return output_key[: output_key.index(marker) + len(marker)]
