"""The pipeline's core: plain Python that knows nothing of Lambda events."""
