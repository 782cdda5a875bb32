"""The reward protocol's checks, weighted sums, fixed and running normalisation, clipping."""

from __future__ import annotations

import math

import pytest

from rlhfkit.errors import RlhfkitError
from rlhfkit.rewards.base import Reward, check_inputs, check_scores, reward_stats
from rlhfkit.rewards.length import LengthReward
from rlhfkit.rewards.transforms import (
    Clipped,
    Normalized,
    RunningNormalized,
    WeightedSum,
    measure_offset_scale,
    offset_scale,
    running_normalizers,
)


class Fixed:
    """A reward that returns prepared scores in order, one per response."""

    def __init__(self, scores, name="fixed"):
        self.scores = list(scores)
        self.name = name

    def __call__(self, prompts, responses):
        out, self.scores = self.scores[: len(responses)], self.scores[len(responses) :]
        return out


def test_protocol_is_structural():
    assert isinstance(LengthReward(), Reward)
    assert isinstance(Fixed([1.0]), Reward)


def test_check_scores_masks_non_finite_values():
    assert check_scores([1.0, float("nan"), float("inf"), -2], 4) == [False, True, True, False]


def test_check_scores_refuses_wrong_count_and_non_numbers():
    with pytest.raises(RlhfkitError, match="returned 2 scores for 3 responses"):
        check_scores([1.0, 2.0], 3, "mine")
    with pytest.raises(RlhfkitError, match="'abc' for response 1"):
        check_scores([1.0, "abc"], 2)
    with pytest.raises(RlhfkitError, match="not a list"):
        check_scores(3.0, 1)


def test_check_inputs_needs_one_prompt_per_response():
    with pytest.raises(RlhfkitError, match="2 prompts but 1 responses"):
        check_inputs(["a", "b"], ["x"], "r")
    with pytest.raises(RlhfkitError, match="response 0 has type int"):
        check_inputs(["a"], [3], "r")


def test_weighted_sum_of_classifier_like_score_and_length():
    # not-hate logit − 0.01 × length: 2.0 − 0.01·3 words = 1.97 and −1.0 − 0.01·1 = −1.01
    total = WeightedSum([(Fixed([2.0, -1.0], "nothate"), 1.0), (LengthReward(), -0.01)])
    assert total(["p", "p"], ["one two three", "four"]) == pytest.approx([1.97, -1.01])
    assert total.last_components == {"nothate": [2.0, -1.0], "length:words": [3.0, 1.0]}
    assert total.name == "1*nothate + -0.01*length:words"


def test_weighted_sum_refuses_empty_and_broken_terms():
    with pytest.raises(RlhfkitError, match="at least one"):
        WeightedSum([])
    with pytest.raises(RlhfkitError, match="finite"):
        WeightedSum([(LengthReward(), float("nan"))])
    with pytest.raises(RlhfkitError, match="returned 1 scores for 2"):
        WeightedSum([(Fixed([1.0]), 1.0)])(["a", "b"], ["x", "y"])


def test_fixed_normalisation():
    r = Normalized(Fixed([3.0, 5.0]), offset=4.0, scale=2.0)
    assert r(["", ""], ["a", "b"]) == [-0.5, 0.5]
    with pytest.raises(RlhfkitError, match="scale > 0"):
        Normalized(Fixed([]), 0.0, 0.0)


def test_measure_offset_scale_on_reference_samples():
    offset, scale = measure_offset_scale(Fixed([1.0, 2.0, 3.0, float("nan")]), [""] * 4, ["a", "b", "c", "d"])
    assert offset == pytest.approx(2.0)
    assert scale == pytest.approx(math.sqrt(2 / 3))  # population std of 1, 2, 3
    with pytest.raises(RlhfkitError, match="no spread"):
        offset_scale([2.0, 2.0, 2.0])
    with pytest.raises(RlhfkitError, match="only 1 finite"):
        offset_scale([1.0, float("inf")])


def test_running_normalisation_uses_every_score_seen_so_far():
    r = RunningNormalized(Fixed([1.0, 2.0, 3.0, 4.0, 5.0]), eps=0.0)
    first = r([""] * 3, ["a", "b", "c"])  # mean 2, population std sqrt(2/3)
    assert first == pytest.approx([-1 / math.sqrt(2 / 3), 0.0, 1 / math.sqrt(2 / 3)])
    second = r([""] * 2, ["d", "e"])  # now over 1..5: mean 3, std sqrt(2)
    assert (r.count, r.mean, r.std) == (5, pytest.approx(3.0), pytest.approx(math.sqrt(2)))
    assert second == pytest.approx([1 / math.sqrt(2), 2 / math.sqrt(2)])
    state = r.state_dict()
    resumed = RunningNormalized(Fixed([]))
    resumed.load_state_dict(state)
    assert (resumed.count, resumed.mean, resumed.std) == (5, pytest.approx(3.0), pytest.approx(math.sqrt(2)))


def test_running_normalisation_skips_non_finite_scores_in_its_statistics():
    r = RunningNormalized(Fixed([1.0, float("nan"), 3.0]), eps=0.0)
    out = r([""] * 3, ["a", "b", "c"])
    assert r.count == 2 and r.mean == pytest.approx(2.0)
    assert math.isnan(out[1]) and out[0] == pytest.approx(-1.0) and out[2] == pytest.approx(1.0)


def test_running_normalisation_of_a_single_score_divides_by_one():
    r = RunningNormalized(Fixed([7.0]), eps=0.0)
    assert r([""], ["a"]) == [0.0]


def test_clipping_counts_and_keeps_nan():
    r = Clipped(Fixed([-10.0, 0.5, 10.0, float("nan")]), -1.0, 1.0)
    out = r([""] * 4, list("abcd"))
    assert out[:3] == [-1.0, 0.5, 1.0] and math.isnan(out[3])
    assert reward_stats(r) == {"clipped": 2.0}
    with pytest.raises(RlhfkitError, match="low < high"):
        Clipped(Fixed([]), 1.0, 1.0)


def test_length_reward_units():
    assert LengthReward()(["", ""], ["a b  c", ""]) == [3.0, 0.0]
    assert LengthReward("characters")([""], ["abcd"]) == [4.0]
    with pytest.raises(RlhfkitError, match="unit"):
        LengthReward("tokens")


def test_running_normalizers_are_found_through_sums_and_clipping():
    inner = RunningNormalized(Fixed([]))
    other = RunningNormalized(Fixed([]))
    reward = Clipped(WeightedSum([(Clipped(inner, -1, 1), 1.0), (LengthReward(), 0.1), (other, 2.0)]), -5, 5)
    assert running_normalizers(reward) == [inner, other]
    assert running_normalizers(LengthReward()) == []
