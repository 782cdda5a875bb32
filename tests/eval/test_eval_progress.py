"""`rlhfkit eval` shows a bar with an ETA while it samples and scores each policy, and none with --no-progress."""

from __future__ import annotations

from rlhfkit.cli import main

SMALL = ["data.synthetic.size=300", "generation.max_new_tokens=8", "eval.prompts=6", "eval.bootstrap_resamples=100",
         "model.name_or_path=preset:tiny-t5"]  # fmt: skip


def _eval(tmp_path, *flags: str) -> int:
    sets = [arg for o in SMALL for arg in ("--set", o)]
    return main(["eval", "-p", "base", "-p", "again=base", "-o", str(tmp_path / "eval"), *flags, *sets])


def test_sampling_and_scoring_show_bars_only_when_progress_is_on(tmp_path, capfd, _preset_cache):
    assert _eval(tmp_path, "--no-progress") == 0
    assert "eta" not in capfd.readouterr().err
    assert _eval(tmp_path) == 0
    err = capfd.readouterr().err
    # not a terminal here, so rich prints each finished bar once: one per policy sampled, one per measure
    assert "sample base" in err and "sample again" in err and "6/6" in err and "eta" in err
    assert "score toxicity" in err and "2/2" in err
