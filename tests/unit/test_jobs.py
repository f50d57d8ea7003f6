"""Job identity and experiment naming."""

from bedrock_pipeline.domain import experiment_for, job_id_for


def test_given_the_same_object_version_when_ids_are_derived_then_they_are_equal():
    assert job_id_for("incoming/a/b.jsonl", "etag1") == job_id_for("incoming/a/b.jsonl", "etag1")


def test_given_a_new_version_or_another_key_when_ids_are_derived_then_they_differ():
    base = job_id_for("incoming/a/b.jsonl", "etag1")
    assert job_id_for("incoming/a/b.jsonl", "etag2") != base
    assert job_id_for("incoming/c/b.jsonl", "etag1") != base


def test_job_ids_are_readable_slugs_of_the_file_name():
    job_id = job_id_for("incoming/team/My Prompts (v2).jsonl", "x")
    assert job_id.startswith("my-prompts-v2-")
    assert all(c.isalnum() or c == "-" for c in job_id)


def test_experiment_is_the_folder_under_incoming_unless_the_job_names_one():
    assert experiment_for("incoming/team-a/x.jsonl", None) == "bedrock-batch/team-a"
    assert experiment_for("incoming/x.jsonl", None) == "bedrock-batch"
    assert experiment_for("incoming/team-a/x.jsonl", "my-exp") == "my-exp"
