"""Reusable constructs the stacks compose."""

from stacks.constructs.hardened_bucket import HardenedBucket
from stacks.constructs.pipeline_function import PipelineFunction
from stacks.constructs.queue_with_dlq import QueueWithDlq

__all__ = ["HardenedBucket", "PipelineFunction", "QueueWithDlq"]
