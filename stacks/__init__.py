"""CDK stacks of the platform: network, data, MLflow service, pipeline (one module each)."""
