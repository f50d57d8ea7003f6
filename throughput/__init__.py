"""Measurements of the pipeline's throughput against the tracking server's ceiling, its cold start, and
the soak test (make throughput, make soak; docs/PERFORMANCE.md, docs/RELIABILITY.md).

Not the benchmark feature (lambdas/bedrock_pipeline/benchmark/, make benchmark), which scores models.
"""
