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


# The port is re-exported: ingest names it for its dependency from here.
__all__ = ["ModelCatalog", "drop_unknown_models"]
