"""The offline twin: moto (S3, SQS, DynamoDB), an MLflow server, the Bedrock emulator and an event pump."""
