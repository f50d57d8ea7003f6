"""Parse a prompt file (UTF-8 JSON Lines) into work items: one per (record, model).

Format
------
One JSON object per line. Blank lines are skipped. A UTF-8 BOM and CRLF line endings are accepted.

* **Job header** (optional, first non-blank line only)::

      {"job": {"models": ["..."], "experiment": "...", "budget_usd": 1.5,
               "inference": {"max_tokens": 512, "temperature": 0.1, "top_p": 0.9},
               "stream": false, "tags": {"team": "search"}, "reasoning": {"budget_tokens": 2048},
               "mode": "auto"}}

  ``mode`` (``on_demand``, ``batch``, ``auto``; None: the deployment's default) says whether the
  records run as Converse calls or as Bedrock batch inference (``bedrock_pipeline.batch``). It overrides the caller's ``JobDefaults`` field by field (``inference`` sub-field by sub-field,
  ``tags`` key by key). Unknown fields or wrong types in the header reject the whole file, because
  a silently ignored header (models, budget) would run the wrong job.

* **Simple record**: ``{"id", "prompt", "model", "system", "max_tokens", "temperature", "top_p",
  "stream", "tags", "tools", "tool_choice"}``; only ``prompt`` is required. ``tools`` is a list of
  Converse tool specs ``{"name", "description", "inputSchema": {"json": {...}}}`` (a
  ``{"toolSpec": {...}}`` wrapper is accepted too); ``tool_choice`` is ``"auto"``, ``"any"`` or a
  tool name. ``reasoning`` (``{"budget_tokens": N}``, also in the header) becomes each model's own
  field (``bedrock_pipeline.reasoning``): a model without one, or a request breaking its rules, is a
  line error. From the header it also reaches Bedrock records that set no thinking of their own.

* **Bedrock batch-inference record**: ``{"recordId": "...", "modelInput": {...}}`` where
  ``modelInput`` is a Converse request body (``messages``, ``system``, ``inferenceConfig``,
  ``toolConfig``, ``additionalModelRequestFields``, ...) sent unchanged, or an Anthropic Messages
  body (``anthropic_version``, ``max_tokens``, ``system`` string, ``{"type": "text"}`` content
  blocks), which is converted to Converse: text, ``tool_use``/``tool_result`` blocks, tools and
  tool_choice map to their Converse equivalents, ``cache_control`` becomes a ``cachePoint``,
  ``top_k``/``thinking`` go to ``additionalModelRequestFields``; images and documents are not
  converted (use the Converse shape for those). Media ``source.bytes`` (image, document, video,
  audio) are base64 strings, checked here (valid base64, not empty, an image of its ``format``,
  Bedrock's size limits) and kept as base64 in the item; ``bedrock_pipeline.media`` says why.

Precedence: record values > job header > caller defaults. Job ``inference`` settings also fill
keys a Bedrock record's ``inferenceConfig`` leaves unset. Fan-out: a simple record with ``model``
runs on that model only; every other record runs on each job model, or, when the job names none,
on the caller's ``default_models``. A Bedrock record may also carry ``stream`` and ``tags`` next to
``recordId`` and ``modelInput`` (an extension of Bedrock's batch format). Record ids default to
``line-<n>``; a duplicate id in one file is an error.

Errors: a bad line (invalid UTF-8 or JSON, not an object, neither shape, empty prompt, wrong
types, line or work item too large, duplicate id, no model) becomes a ``LineError`` with its
1-based physical line number and never stops the other lines. Unknown top-level fields of a
record are ignored (so files can carry extra data such as expected answers); unknown keys inside
a Converse ``modelInput`` are errors, since Bedrock would reject every call. Tag values must be
strings, numbers or booleans (stored as strings; booleans as ``true``/``false``). Exceeding the
file size or record count limits, or a bad job header, rejects the whole file (``rejected``).

Work items (`domain.WorkItem`, bound to their job at ingest) travel as SQS message bodies, or by
reference when larger than one (``work_queue.ItemBodies``); ``Limits.max_item_bytes`` bounds one
serialized item either way.

Whole files: ``read_prompt_file`` (what ingest and ``pipeline_cli estimate`` call) adds the
whole-file checks (empty, UTF-16/32, binary) and rejects a file with no valid record left, with one
reason. A record's reserved tags (``pipeline.*``, ``mlflow.*``) are dropped and listed in
``warnings``; JSON nested deeper than ``MAX_NESTING_DEPTH`` is a line error saying so.

Modules: ``schema`` (result types, limits, the record shapes a line is validated against),
``parser`` (``parse_prompt_file``), ``whole_file`` (``read_prompt_file``, ``file_problem``),
``anthropic`` (Anthropic Messages bodies -> Converse).
Import from the package: its names below are the public ones.
"""

from bedrock_pipeline.prompt_file.parser import parse_prompt_file
from bedrock_pipeline.prompt_file.schema import (
    CONVERSE_BODY_KEYS,
    EXCERPT_CHARS,
    MAX_MODEL_ID_CHARS,
    MAX_NESTING_DEPTH,
    MAX_RECORD_ID_CHARS,
    MAX_TAG_KEY_CHARS,
    MAX_TAG_VALUE_CHARS,
    InferenceSettings,
    JobDefaults,
    Limits,
    LineError,
    ParsedPromptFile,
    WorkItem,
    coerce_tags,
)
from bedrock_pipeline.prompt_file.whole_file import file_problem, read_prompt_file

__all__ = [
    "CONVERSE_BODY_KEYS",
    "EXCERPT_CHARS",
    "MAX_MODEL_ID_CHARS",
    "MAX_NESTING_DEPTH",
    "MAX_RECORD_ID_CHARS",
    "MAX_TAG_KEY_CHARS",
    "MAX_TAG_VALUE_CHARS",
    "InferenceSettings",
    "JobDefaults",
    "Limits",
    "LineError",
    "ParsedPromptFile",
    "WorkItem",
    "coerce_tags",
    "file_problem",
    "parse_prompt_file",
    "read_prompt_file",
]
