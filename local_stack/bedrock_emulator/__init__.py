"""A local bedrock-runtime server that real boto3 clients talk to through endpoint_url."""
