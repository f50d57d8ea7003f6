"""Prompt files (UTF-8 JSON Lines) -> work items; the format is described in ``parser``."""

from bedrock_pipeline.prompt_file.parser import (
    CONVERSE_BODY_KEYS,
    EXCERPT_CHARS,
    MAX_MODEL_ID_CHARS,
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
    parse_prompt_file,
)

__all__ = [
    "CONVERSE_BODY_KEYS",
    "EXCERPT_CHARS",
    "MAX_MODEL_ID_CHARS",
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
    "parse_prompt_file",
]
