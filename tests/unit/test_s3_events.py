"""S3 notifications as the ingest queue delivers them."""

import json
from urllib.parse import quote_plus

from hypothesis import given
from hypothesis import strategies as st

from handlers.s3_events import objects_in_message


def _event(*keys: str, event_name: str = "ObjectCreated:Put", bucket: str = "b") -> str:
    return json.dumps(
        {
            "Records": [
                {"eventName": event_name, "s3": {"bucket": {"name": bucket}, "object": {"key": key}}}
                for key in keys
            ]
        }
    )


def test_a_test_event_yields_nothing():
    body = json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "b"})
    assert objects_in_message(body) == []


def test_url_encoded_keys_are_decoded_and_every_record_of_a_message_counts():
    body = _event("incoming%2Fteam+a%2Fmy+file.jsonl", "incoming/b.jsonl")
    assert objects_in_message(body) == [("b", "incoming/team a/my file.jsonl"), ("b", "incoming/b.jsonl")]


def test_objects_outside_incoming_and_deletions_are_ignored():
    assert objects_in_message(_event("results/x.jsonl")) == []
    assert objects_in_message(_event("incoming/x.jsonl", event_name="ObjectRemoved:Delete")) == []


@given(st.text(min_size=1, max_size=60).filter(lambda s: not s.endswith("/")))
def test_any_key_survives_s3_url_encoding(name: str):
    key = "incoming/" + name
    assert objects_in_message(_event(quote_plus(key))) == [("b", key)]
