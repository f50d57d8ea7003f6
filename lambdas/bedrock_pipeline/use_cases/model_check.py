"""Part of ingest: a record on a model the account does not offer is a line error, not a Bedrock call.

Without the check such a record costs a work message, a runner invocation, an MLflow run and a
ValidationException from Bedrock before it is reported; with it, it is reported with the file's
other bad lines (results/<job>/errors.jsonl) and nothing is called.
"""

from __future__ import annotations

from bedrock_pipeline.ports import ModelCatalog
from bedrock_pipeline.prompt_file import ParsedPromptFile
from bedrock_pipeline.prompt_file.schema import LineError


def drop_unknown_models(catalog: ModelCatalog | None, parsed: ParsedPromptFile) -> ParsedPromptFile:
    """``parsed`` without the items on unknown models, each reported as an error of its line."""
    if catalog is None or not parsed.items:
        return parsed
    unknown = catalog.unknown({item.model_id for item in parsed.items})
    if not unknown:
        return parsed
    kept = [item for item in parsed.items if item.model_id not in unknown]
    dropped = [
        LineError(line_number=item.line_number, reason=f"model {item.model_id!r}: {unknown[item.model_id]}")
        for item in parsed.items
        if item.model_id in unknown
    ]
    errors = sorted([*parsed.errors, *dropped], key=lambda error: error.line_number)
    return parsed.model_copy(update={"items": kept, "errors": errors})


def resolve_profiles(catalog: ModelCatalog | None, parsed: ParsedPromptFile) -> ParsedPromptFile:
    """``parsed`` with each item on an application inference profile ARN given the foundation model it
    routes to (``resolved_model_id``: what it is priced as). ``model_id`` stays as the user wrote it.
    An ARN the catalogue cannot resolve stays unresolved: the call decides, and it is not priced."""
    if catalog is None or not any(is_application_profile(item.model_id) for item in parsed.items):
        return parsed
    resolved = {
        model_id: catalog.resolve_profile(model_id)
        for model_id in {item.model_id for item in parsed.items}
        if is_application_profile(model_id)
    }
    items = [
        item.model_copy(update={"resolved_model_id": resolved[item.model_id]})
        if resolved.get(item.model_id)
        else item
        for item in parsed.items
    ]
    return parsed.model_copy(update={"items": items})


def is_application_profile(model_id: str) -> bool:
    """An application inference profile ARN (arn:aws:bedrock:<region>:<account>:application-inference-profile/<id>)."""
    return model_id.startswith("arn:") and ":application-inference-profile/" in model_id


# The port is re-exported: ingest names it for its dependency from here.
__all__ = ["ModelCatalog", "drop_unknown_models", "is_application_profile", "resolve_profiles"]
