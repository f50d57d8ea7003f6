"""The emulator's judge skill: a deterministic verdict for an LLM-as-judge prompt.

A prompt that carries ``[EXPECTED ANSWER]`` and ``[CANDIDATE ANSWER]`` sections and asks for a
``VERDICT:`` line (the format bedrock_pipeline.evaluation.scorers sends) is answered with
``VERDICT: yes|no`` and a ``REASON:`` line: "yes" when the candidate contains the expected answer
(case, spacing and trailing punctuation aside), so pipelines can check a judge end to end offline.
"""

from __future__ import annotations

import re

_SECTION = re.compile(
    r"\[(?P<name>[A-Z ]+)\]\n(?P<body>.*?)(?=\n\n\[[A-Z ]+\]\n|\n\n[A-Z][^\n]*\?|\Z)", re.DOTALL
)


def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().rstrip(".!").strip().casefold()


def judge_reply(user_text: str) -> str | None:
    """The verdict text for a judge prompt, or None when the text is not one."""
    if "VERDICT:" not in user_text or "[CANDIDATE ANSWER]" not in user_text:
        return None
    sections = {m["name"]: m["body"] for m in _SECTION.finditer(user_text)}
    expected = _normalise(sections.get("EXPECTED ANSWER", ""))
    candidate = _normalise(sections.get("CANDIDATE ANSWER", ""))
    if expected and expected in candidate:
        return "VERDICT: yes\nREASON: The candidate answer states the expected answer."
    return "VERDICT: no\nREASON: The candidate answer does not state the expected answer."
