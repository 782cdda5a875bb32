"""Bad configuration input gets one clear paragraph, from Python (ConfigError) and from the CLI (exit 2).

Each case is checked twice: ``load_config`` raises a ConfigError whose message names the culprit, and
``rlhfkit config`` prints the same message as one line and exits with status 2, with no traceback.
"""

from __future__ import annotations

import codecs
import errno
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from rlhfkit.cli import EXIT_USER_ERROR, main
from rlhfkit.config import Config, RewardConfig, load_config
from rlhfkit.errors import ConfigError

REWARD_MODEL = "reward:\n  rewards:\n    - kind: reward_model\n      path: runs/reward\n"


def write(tmp_path, content: str | bytes, name: str = "cfg.yaml") -> str:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return str(path)


def cli_args(files=(), overrides=()) -> list[str]:
    args = ["config"]
    for f in files:
        args += ["--config", str(f)]
    for o in overrides:
        args += ["--set", o]
    return args


def assert_rejected(capsys, files=(), overrides=(), fragments=(), schema=Config) -> str:
    """Both ways in give one line naming every fragment; returns the message."""
    with pytest.raises(ConfigError) as e:
        load_config(files, overrides, schema=schema)
    message = str(e.value)
    for fragment in fragments:
        assert fragment in message, message
    assert "\n" not in message, message
    if schema is Config:
        assert main(cli_args(files, overrides)) == EXIT_USER_ERROR
        err = capsys.readouterr().err
        assert "Traceback" not in err and message in err, err
    return message


# --------------------------------------------------------------------------------------------------
# 1. a section (or the whole file) that is not a mapping


@pytest.mark.parametrize(
    "text, got",
    [("ppo: [1, 2]\n", "a list"), ("ppo: 3\n", "a number"), ("ppo: fast\n", "a string")],
)
def test_a_section_that_is_not_a_mapping_names_the_file_and_section(tmp_path, capsys, text, got):
    f = write(tmp_path, text)
    message = assert_rejected(capsys, [f], fragments=[f, "'ppo'", "mapping of keys", got])
    assert "steps" in message  # shows what belongs there


@pytest.mark.parametrize("text, got", [("- 1\n- 2\n", "a list"), ("just a string\n", "a string"), ("3\n", "a number")])
def test_a_file_that_is_not_a_mapping_says_what_it_holds(tmp_path, capsys, text, got):
    f = write(tmp_path, text)
    assert_rejected(capsys, [f], fragments=[f, "mapping of keys", got, "run", "model"])


def test_a_nested_section_and_a_list_entry_must_be_mappings(tmp_path, capsys):
    f = write(tmp_path, "data:\n  synthetic: [1]\n")
    assert_rejected(capsys, [f], fragments=[f, "'data.synthetic'", "mapping of keys", "a list"])
    f = write(tmp_path, "reward:\n  rewards: [3]\n", "entry.yaml")
    assert_rejected(capsys, [f], fragments=[f, "'reward.rewards[0]'", "mapping of keys", "a number"])
    f = write(tmp_path, "reward:\n  rewards: lexicon\n", "nolist.yaml")
    assert_rejected(capsys, [f], fragments=[f, "'reward.rewards'", "list", "a string"])


def test_overrides_that_replace_a_section_with_a_value(capsys):
    assert_rejected(capsys, overrides=["ppo=3"], fragments=["ppo=3", "'ppo'", "mapping of keys"])
    assert_rejected(capsys, overrides=["eval.toxicity=[1]"], fragments=["'eval.toxicity'", "mapping of keys"])


def test_the_reward_schema_names_its_own_keys(tmp_path, capsys):
    f = write(tmp_path, "- kind: lexicon\n")
    assert_rejected(capsys, [f], fragments=[f, "mapping of keys", "rewards"], schema=RewardConfig)
    f = write(tmp_path, "rewards: 3\n", "three.yaml")
    assert_rejected(capsys, [f], fragments=[f, "'rewards'", "list"], schema=RewardConfig)


# --------------------------------------------------------------------------------------------------
# 2. files that are not UTF-8 text


def test_a_binary_file_is_not_utf8_text_yaml(tmp_path, capsys):
    png = write(tmp_path, b"\x89PNG\r\n\x1a\n" + bytes(range(256)), "image.png")
    assert_rejected(capsys, [png], fragments=[png, "not UTF-8 text YAML"])
    noise = bytes(random.Random(0).randrange(128, 256) for _ in range(300))  # no NUL, never valid UTF-8
    f = write(tmp_path, noise, "noise.yaml")
    assert_rejected(capsys, [f], fragments=[f, "not UTF-8 text YAML"])
    control = write(tmp_path, b"ppo:\n  steps: \x01\x02\n", "control.yaml")
    assert_rejected(capsys, [control], fragments=[control, "not UTF-8 text YAML"])


@pytest.mark.parametrize("encoding, shown", [("utf-16", "UTF-16"), ("utf-32", "UTF-32"), ("utf-16-le", "UTF-16")])
def test_a_utf16_file_is_asked_to_be_saved_as_utf8(tmp_path, capsys, encoding, shown):
    f = tmp_path / "wide.yaml"
    f.write_text("ppo:\n  steps: 3\n", encoding=encoding)  # utf-16 / utf-32 write a BOM, utf-16-le does not
    assert_rejected(capsys, [str(f)], fragments=[str(f), shown, "re-save it as UTF-8"])


def test_a_utf8_byte_order_mark_is_accepted(tmp_path):
    f = tmp_path / "bom.yaml"
    f.write_bytes(codecs.BOM_UTF8 + b"ppo:\n  steps: 3\n")
    assert load_config([f]).ppo.steps == 3


# --------------------------------------------------------------------------------------------------
# 3. wrong types inside lists of dataclasses (and everywhere else): the key, the type, the value


@pytest.mark.parametrize(
    "line, key, expected, shown",
    [
        ("weight: heavy", "reward.rewards[0].weight", "float", '"heavy"'),
        ("weight: [1, 2]", "reward.rewards[0].weight", "float", "[1, 2]"),
        ("batch_size: 1.5", "reward.rewards[0].batch_size", "int", "1.5"),
        ("clip_min: low", "reward.rewards[0].clip_min", "float or null", '"low"'),
        ("name: [1]", "reward.rewards[0].name", "string or null", "[1]"),
        ("max_length: {a: 1}", "reward.rewards[0].max_length", "int or null", '{"a": 1}'),
    ],
)
def test_a_wrong_type_in_a_reward_spec_names_key_type_and_value(tmp_path, capsys, line, key, expected, shown):
    f = write(tmp_path, REWARD_MODEL + f"      {line}\n")
    message = assert_rejected(capsys, [f], fragments=[f, repr(key), expected, shown])
    assert "None" not in message


def test_a_wrong_type_in_a_reward_spec_given_by_override(capsys):
    item = "reward.rewards=[{kind: reward_model, path: x}, {kind: lexicon, weight: heavy}]"
    assert_rejected(capsys, overrides=[item], fragments=[item, "'reward.rewards[1].weight'", "float", '"heavy"'])


def test_an_unknown_key_in_a_reward_spec_lists_the_spec_keys(tmp_path, capsys):
    f = write(tmp_path, REWARD_MODEL + "      wieght: 2\n")
    assert_rejected(capsys, [f], fragments=["'reward.rewards[0].wieght'", "reward.rewards[0].weight", "did you mean"])


def test_a_wrong_type_in_the_reward_schema_and_in_the_eval_toxicity_spec(tmp_path, capsys):
    f = write(tmp_path, "rewards:\n  - kind: lexicon\n    weight: heavy\n")
    assert_rejected(capsys, [f], fragments=[f, "'rewards[0].weight'", "float", '"heavy"'], schema=RewardConfig)
    assert_rejected(capsys, overrides=["eval.toxicity.weight=x"], fragments=["'eval.toxicity.weight'", "float"])


def test_an_override_can_set_one_field_of_a_list_entry_from_a_file(tmp_path, capsys):
    f = write(tmp_path, "rewards:\n  - kind: lexicon\n  - kind: length\n")
    cfg = load_config([f], ["rewards.1.weight=-0.5"], schema=RewardConfig)  # the example `reward score --help` shows
    assert [r.weight for r in cfg.rewards] == [1.0, -0.5] and cfg.rewards[1].kind == "length"
    assert_rejected(capsys, [f], ["rewards.1.weight=heavy"], ["'rewards[1].weight'", "float", '"heavy"'],
                    schema=RewardConfig)  # fmt: skip
    assert_rejected(capsys, [f], ["rewards.2.weight=1"], ["'rewards'", "2 entries"], schema=RewardConfig)
    assert_rejected(capsys, overrides=["reward.rewards.0.weight=2"], fragments=["'reward.rewards'", "is empty"])
    assert_rejected(capsys, overrides=["reward.rewards.x.weight=2"], fragments=["'reward.rewards'", "number"])


@pytest.mark.parametrize(
    "text, key, expected, shown",
    [
        ("run:\n  seed: abc\n", "run.seed", "int", '"abc"'),
        ("run:\n  seed: null\n", "run.seed", "int", "null"),
        ("run:\n  seed: true\n", "run.seed", "int", "true"),
        ("lora:\n  target_modules: q\n", "lora.target_modules", "list of strings or null", '"q"'),
        ("run:\n  output_dir: 2024-01-01\n", "run.output_dir", "string", "2024-01-01"),
        ("ppo:\n  adaptive_kl: maybe\n", "ppo.adaptive_kl", "true or false", '"maybe"'),
    ],
)
def test_a_wrong_type_at_the_top_level_names_the_file(tmp_path, capsys, text, key, expected, shown):
    f = write(tmp_path, text)
    assert_rejected(capsys, [f], fragments=[f, repr(key), expected, shown])


def test_a_wrong_type_by_override_names_the_override(capsys):
    assert_rejected(capsys, overrides=["run.seed=abc"], fragments=["override 'run.seed=abc'", "'run.seed'", "int"])
    assert_rejected(capsys, overrides=["run.seed.x=1"], fragments=["'run.seed'", "single value"])


@pytest.mark.parametrize("item", ["ppo.learning_rate=nan", "ppo.kl_coef=inf", "reward.rewards=[{kind: lexicon, weight: .nan}]"])
def test_non_finite_numbers_are_rejected(capsys, item):
    assert_rejected(capsys, overrides=[item], fragments=["finite"])


# --------------------------------------------------------------------------------------------------
# 4. other input that used to end in a traceback or a misleading message


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n", "ppo:\n", "ppo: null\n", "ppo:\n  # steps: 3\n"])
def test_empty_files_and_empty_sections_change_nothing(tmp_path, capsys, text):
    f = write(tmp_path, text)
    assert load_config([f]) == load_config()
    assert main(cli_args([f])) == 0


def test_a_missing_file_and_a_folder(tmp_path, capsys):
    assert_rejected(capsys, [str(tmp_path / "missing.yaml")], fragments=["missing.yaml", "does not exist"])
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("ppo:\n  steps: 3\n")
    assert_rejected(capsys, [str(run)], fragments=[str(run), "is a folder", str(run / "config.yaml")])


def test_a_file_too_large_to_be_a_config(tmp_path, capsys):
    f = tmp_path / "model.safetensors"
    with open(f, "wb") as out:
        out.truncate(64 * 2**20)  # sparse: costs no disk
    assert_rejected(capsys, [str(f)], fragments=[str(f), "MiB"])


def test_an_unreadable_file(tmp_path, capsys, monkeypatch):
    f = write(tmp_path, "ppo:\n  steps: 3\n")
    os.chmod(f, 0)
    if os.geteuid() == 0:  # root reads any file (CI runs as root): refuse it the way the kernel would refuse others
        import builtins

        import rlhfkit.config.files as files

        def refuse(path, *args, **kwargs):
            if Path(path) == Path(f):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
            return builtins.open(path, *args, **kwargs)

        monkeypatch.setattr(files, "open", refuse, raising=False)
    assert_rejected(capsys, [f], fragments=[f, "could not be read", "Permission denied"])


def test_invalid_yaml_is_one_line_with_the_position(tmp_path, capsys):
    f = write(tmp_path, "ppo:\n  steps: [1\nsft:\n  max_steps: 2\n")
    assert_rejected(capsys, [f], fragments=[f, "not valid YAML", "line"])
    f = write(tmp_path, "ppo: !!python/object:os.system {}\n", "tag.yaml")
    assert_rejected(capsys, [f], fragments=[f, "not valid YAML"])


@pytest.mark.parametrize("value", ["!!float", "!!timestamp x", "!!int abc", "!!bool maybe"])
def test_a_malformed_explicitly_tagged_value(tmp_path, capsys, value):  # PyYAML raises plain Python errors here
    f = write(tmp_path, f"run:\n  seed: {value}\n")
    assert_rejected(capsys, [f], fragments=[f, "not valid YAML", value.split()[0]])
    assert_rejected(capsys, overrides=[f"run.seed={value}"], fragments=["could not parse", value.split()[0]])


@pytest.mark.parametrize(
    "item, fragments",
    [
        ("sft.learning_rate", ["section.key=value"]),
        ("=3", ["section.key=value"]),
        ("run..seed=1", ["'run..seed'", "empty part"]),
        ("data.template=[unclosed", ["data.template=[unclosed", "could not parse", "Quote"]),
        ("run.output_dir=${oops}", ["run.output_dir", "oops"]),
    ],
)
def test_malformed_overrides(capsys, item, fragments):
    assert_rejected(capsys, overrides=[item], fragments=fragments)


def test_a_single_path_or_override_given_as_a_string(tmp_path):
    f = write(tmp_path, "ppo:\n  steps: 3\n")
    cfg = load_config(f, "sft.max_steps=2")
    assert cfg.ppo.steps == 3 and cfg.sft.max_steps == 2


def test_overrides_apply_in_order_and_merge_into_sections(capsys):
    cfg = load_config(overrides=["reward.rewards=[{kind: lexicon}]", "reward.rewards.0.weight=2",
                                 "eval.toxicity={label: toxic}", "run.seed=3", "run.seed=4"])  # fmt: skip
    assert cfg.reward.rewards[0].weight == 2.0 and cfg.reward.rewards[0].kind == "lexicon"
    assert cfg.eval.toxicity.label == "toxic" and cfg.eval.toxicity.kind == "lexicon"  # merged, not replaced
    assert cfg.run.seed == 4 and math.isfinite(cfg.ppo.learning_rate)


def test_the_command_line_prints_one_paragraph_and_exits_2(tmp_path):
    bad = [write(tmp_path, "ppo: [1, 2]\n", "list.yaml"), write(tmp_path, b"\xff\xfep\x00p\x00o\x00", "u16.yaml")]
    for f in bad:
        done = subprocess.run([sys.executable, "-m", "rlhfkit", "config", "--config", f],
                              capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
        assert done.returncode == EXIT_USER_ERROR, done.stderr
        assert "Traceback" not in done.stderr and f in done.stderr
        assert done.stderr.startswith("rlhfkit config: error: ") and done.stderr.count("\n") == 1


def test_the_reward_clip_rule_names_the_keys_with_their_section():
    with pytest.raises(ConfigError) as e:
        load_config(overrides=["reward.rewards=[{kind: lexicon}]", "reward.clip_min=1", "reward.clip_max=0"])
    assert "reward.clip_min (1.0) must be below reward.clip_max (0.0)" in str(e.value)
    with pytest.raises(ConfigError, match=r"- clip_min \(1.0\) must be below clip_max"):
        load_config(overrides=["rewards=[{kind: lexicon}]", "clip_min=1", "clip_max=0"], schema=RewardConfig)


def test_an_unknown_key_points_at_both_explanations(capsys):
    # the demo has sections of its own (feedback.*, reward_model.*): the hint names where they are explained
    message = assert_rejected(capsys, overrides=["feedback.prompts=3"], fragments=["unknown config key 'feedback'"])
    assert "`rlhfkit config --explain`" in message and "`rlhfkit config --demo --explain`" in message
