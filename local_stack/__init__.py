"""The offline twin: moto (S3, SQS, DynamoDB), an MLflow server, the Bedrock emulator and an event pump."""

import os

from bedrock_pipeline.settings import OFFLINE_ENVIRONMENT

# Before any module of this package imports mlflow (see settings.OFFLINE_ENVIRONMENT).
for _name, _value in OFFLINE_ENVIRONMENT.items():
    os.environ.setdefault(_name, _value)
