"""Thin Lambda handlers: validate the environment, parse the event, call the core."""

import os

from bedrock_pipeline.settings import OFFLINE_ENVIRONMENT

# Before any module of this package imports mlflow (see settings.OFFLINE_ENVIRONMENT).
for _name, _value in OFFLINE_ENVIRONMENT.items():
    os.environ.setdefault(_name, _value)
