"""Evaluation jobs: answer a dataset with several models through the runner's core, score the answers
with `mlflow.genai.evaluate`, and compare the models (quality, latency, cost) in the job's parent run."""
