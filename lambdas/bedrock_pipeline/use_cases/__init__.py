"""The pipeline's use cases, one module each: `ingest`, `run_item`, `finalize` (and the shared `fan_out`).

Each is plain Python over the interfaces in `bedrock_pipeline.ports`; the handlers call one function
per record, and the unit tests run them on in-memory fakes.
"""
