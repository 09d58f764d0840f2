"""Subject names: one format, every token validated."""

from __future__ import annotations

import pytest

from edgeloom.runtime.subjects import subject


def test_subject_format_lowercases_the_kind() -> None:
    assert subject("team-a", "SplitTrainingJob", "mnist1d-run", "features") == (
        "edgeloom.team-a.splittrainingjob.mnist1d-run.features"
    )


def test_several_channel_tokens_are_joined_with_dots() -> None:
    assert subject("default", "HatInferenceService", "chat", "worker", "w_3", "grads") == (
        "edgeloom.default.hatinferenceservice.chat.worker.w_3.grads"
    )


def test_a_channel_is_required() -> None:
    with pytest.raises(ValueError, match="at least one channel"):
        subject("default", "SplitTrainingJob", "job")


@pytest.mark.parametrize("bad", ["a.b", "a b", "*", ">", "", "a*", "x>", "tab\t", "é"])
@pytest.mark.parametrize("position", ["namespace", "kind", "name", "channel"])
def test_bad_tokens_are_refused_in_every_position(bad: str, position: str) -> None:
    tokens = {
        "namespace": "default",
        "kind": "SplitTrainingJob",
        "name": "job",
        "channel": "features",
    }
    tokens[position] = bad

    with pytest.raises(ValueError, match="invalid subject token"):
        subject(tokens["namespace"], tokens["kind"], tokens["name"], tokens["channel"])


def test_bad_token_in_a_later_channel_position_is_refused() -> None:
    with pytest.raises(ValueError, match="invalid subject token"):
        subject("default", "SplitTrainingJob", "job", "worker", "*")


def test_token_with_trailing_newline_is_refused() -> None:
    with pytest.raises(ValueError, match="invalid subject token"):
        subject("default", "SplitTrainingJob", "job\n", "features")
