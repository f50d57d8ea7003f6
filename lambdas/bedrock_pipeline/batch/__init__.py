"""Bedrock batch inference as an execution mode (issue 20): eligibility, the model families' own
request formats, batch input files, and turning a finished job's records into traced runs."""
