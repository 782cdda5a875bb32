"""Library progress bars stay out of logs: saving a preset or a backbone shows no transformers tqdm bar."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers.utils import logging as hf_logging

from rlhfkit.engine.runtime import library_bars_off


@pytest.fixture
def bars_on():
    """Library bars on, as in a fresh process that has not called quiet_libraries; restored afterwards."""
    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.enable_progress_bar()
    yield
    if not was_on:
        hf_logging.disable_progress_bar()


def test_building_a_preset_writes_no_library_bar(tmp_path: Path, capfd: pytest.CaptureFixture[str], bars_on):
    from rlhfkit.models.presets import build_preset

    build_preset("tiny-llama", tmp_path / "preset")
    err = capfd.readouterr().err
    assert "Writing model shards" not in err and "it/s" not in err
    assert hf_logging.is_progress_bar_enabled(), "the caller's setting is restored"


def test_building_a_backbone_writes_no_library_bar(tmp_path: Path, capfd: pytest.CaptureFixture[str], bars_on):
    from rlhfkit.rewards.tiny_backbones import BACKBONES, build_backbone

    build_backbone(next(iter(BACKBONES)), tmp_path / "backbone")
    err = capfd.readouterr().err
    assert "Writing model shards" not in err and "it/s" not in err


def test_the_bars_come_back_as_they_were(bars_on):
    with library_bars_off():
        assert not hf_logging.is_progress_bar_enabled()
    assert hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    with library_bars_off():
        pass
    assert not hf_logging.is_progress_bar_enabled()
