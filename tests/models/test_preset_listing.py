"""`rlhfkit presets` says which presets are built (cached) and where; `reward backbones` lines do the same."""

from __future__ import annotations

from rlhfkit.cli import main


def _fake_build(folder):
    """A cached preset as the listing sees it: the folder with its marker, written last by a real build."""
    folder.mkdir(parents=True)
    (folder / "rlhfkit_preset.json").write_text("{}")


def test_presets_listing_shows_built_and_not_built_with_the_folder(tmp_path, monkeypatch, capsys):
    from rlhfkit.models.presets import is_built, preset_folder

    monkeypatch.setenv("RLHFKIT_HOME", str(tmp_path))  # a cache of its own, whatever the session built
    _fake_build(preset_folder("tiny-llama"))
    (preset_folder("tiny-t5")).mkdir(parents=True)  # a half build (no marker) is not built
    assert is_built("tiny-llama") and not is_built("tiny-t5")
    assert main(["presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    row = {line.split()[0]: line for line in lines if line.startswith("  ") and line.split()[0] != "in"}
    assert "not built" in row["tiny-t5"] and "not built" in row["flan-t5-base-shape"]
    assert " built " in row["tiny-llama"] and "not built" not in row["tiny-llama"]
    assert any(line.strip() == f"in {preset_folder('tiny-llama')}" for line in lines)
    assert str(tmp_path / "presets") in lines[0]


def test_backbone_listing_shows_built_and_not_built_with_the_folder(tmp_path, monkeypatch):
    from rlhfkit.rewards.tiny_backbones import BUILT_MARKER, backbone_folder, describe_backbones

    monkeypatch.setenv("RLHFKIT_HOME", str(tmp_path))
    folder = backbone_folder("tiny-bert")
    folder.mkdir(parents=True)
    (folder / BUILT_MARKER).write_text("{}")
    lines = describe_backbones()
    row = {line.split()[0]: line for line in lines if line.startswith("  backbone:")}
    assert " built " in row["backbone:tiny-bert"] and "not built" in row["backbone:tiny-roberta"]
    assert any(line.strip() == f"in {folder}" for line in lines)
    assert "backbone:minilm" in row
