"""Config merging (defaults < YAML < --set), type checking, cross-field rules, docs for every field."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from rlhfkit.config import Config, explain, field_docs, load_config, replace, save_config
from rlhfkit.errors import ConfigError


def test_defaults_are_valid_and_follow_the_lab():
    cfg = load_config()
    assert cfg.lora.r == 32 and cfg.lora.alpha == 32 and cfg.lora.dropout == 0.05
    assert cfg.data.min_chars == 200 and cfg.data.max_chars == 1000
    assert cfg.data.template.startswith("Summarize the following conversation.")


def test_yaml_then_overrides_later_layers_win(tmp_path):
    a = tmp_path / "a.yaml"
    a.write_text(yaml.safe_dump({"sft": {"learning_rate": 0.01, "batch_size": 8}, "model": {"name_or_path": "x/y"}}))
    b = tmp_path / "b.yaml"
    b.write_text(yaml.safe_dump({"sft": {"batch_size": 4}}))
    cfg = load_config([a, b], ["sft.learning_rate=1e-4", "lora.target_modules=[q,k,v]"])
    assert cfg.sft.learning_rate == pytest.approx(1e-4)  # --set beats both files
    assert cfg.sft.batch_size == 4  # the second file beats the first
    assert cfg.model.name_or_path == "x/y"  # the first file beats the default
    assert cfg.lora.target_modules == ["q", "k", "v"]
    assert isinstance(cfg, Config) and dataclasses.is_dataclass(cfg.sft)


def test_unknown_key_lists_the_valid_keys():
    with pytest.raises(ConfigError) as e:
        load_config(overrides=["sft.learnin_rate=1e-4"])
    msg = str(e.value)
    assert "sft.learnin_rate" in msg and "sft.learning_rate" in msg and "sft.batch_size" in msg


def test_unknown_section_lists_the_sections():
    with pytest.raises(ConfigError) as e:
        load_config(overrides=["trainer.lr=1"])
    assert "'trainer'" in str(e.value) and "sft" in str(e.value) and "model" in str(e.value)


def test_wrong_type_names_the_key_and_the_type():
    with pytest.raises(ConfigError) as e:
        load_config(overrides=["sft.batch_size=many"])
    msg = str(e.value)
    assert "sft.batch_size" in msg and "int" in msg and "\n" not in msg


def test_wrong_type_in_a_yaml_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("lora:\n  dropout: lots\n")
    with pytest.raises(ConfigError, match=r"lora\.dropout.*float"):
        load_config([f])


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["sft.batch_size=10", "sft.gradient_accumulation_steps=3"], "must divide sft.batch_size"),
        (["data.min_chars=500", "data.max_chars=400"], "data.min_chars"),
        (["data.template=no placeholder here"], "{dialogue}"),
        (["generation.temperature=0"], "temperature"),
        (["data.test_size=1.5"], "test_size"),
        (["run.precision=fp8"], "run.precision"),
        (["lora.dropout=1.0"], "lora.dropout"),
        (["generation.min_new_tokens=10", "generation.max_new_tokens=5"], "min_new_tokens"),
    ],
)
def test_cross_field_rules_are_checked_up_front(overrides, fragment):
    with pytest.raises(ConfigError) as e:
        load_config(overrides=overrides)
    assert fragment in str(e.value)


def test_bad_files_and_overrides(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config([tmp_path / "missing.yaml"])
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just a string\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config([scalar])
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(overrides=["sft.learning_rate"])


def test_resolved_config_round_trips_through_yaml(tmp_path):
    cfg = load_config(overrides=["sft.max_steps=7", "data.synthetic.size=50"])
    path = save_config(cfg, tmp_path / "run")
    assert path.name == "config.yaml"
    again = load_config([path])
    assert again == cfg


def test_every_field_has_a_one_line_docstring():
    for key, _value, doc in explain(load_config()):
        assert doc and "\n" not in doc, f"{key} lacks a one-line docstring"
    assert set(field_docs(Config)) == {f.name for f in dataclasses.fields(Config)}


def test_dataclasses_are_frozen_and_replace_takes_dotted_keys():
    cfg = load_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.sft.learning_rate = 1.0  # type: ignore[misc]
    changed = replace(cfg, **{"sft.max_steps": 3, "run.seed": 5})
    assert changed.sft.max_steps == 3 and changed.run.seed == 5 and cfg.sft.max_steps == 0
