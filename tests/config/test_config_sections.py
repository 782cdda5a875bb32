"""Each section validates itself; the top-level configurations only collect (docs/config.md, "Adding a section")."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pytest

from rlhfkit.config import (
    Config,
    LoraSettings,
    RewardConfig,
    RewardSpec,
    RewardTrainConfig,
    RunConfig,
    explain,
    field_docs,
    load_config,
)
from rlhfkit.config.reward_model import RewardLoraConfig
from rlhfkit.config.sections import check, problems_of
from rlhfkit.errors import ConfigError

TOP_LEVEL = [Config, RewardTrainConfig]


@pytest.mark.parametrize("schema", TOP_LEVEL, ids=lambda s: s.__name__)
def test_every_section_has_its_own_problems(schema):
    for f in dataclasses.fields(schema):
        section = getattr(schema(), f.name)
        assert callable(getattr(section, "problems", None)), f"{schema.__name__}.{f.name} has no problems()"
        assert isinstance(section.problems(), list)


def test_the_default_sections_are_valid():
    assert Config().problems() == []
    only = RewardTrainConfig().problems()  # the one rule the defaults break: no preference files yet
    assert len(only) == 1 and only[0].startswith("data.train_files is empty: give preference files")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["run.device=tpu"], "run.device must be 'auto', 'cpu' or 'cuda[:N]', got 'tpu'"),
        (['model.name_or_path=""'], "model.name_or_path is empty: give a hub id, a folder, or preset:NAME"),
        (["lora.r=0"], "lora.r and lora.alpha must be positive, got r=0, alpha=32"),
        (["data.synthetic.size=1"], "data.synthetic.size must be at least 2"),
        (["generation.top_p=0"], "generation.top_k must be >= 0 and top_p in (0, 1], got 0, 0.0"),
        (["sft.warmup_ratio=1"], "sft.warmup_ratio must be in [0, 1), got 1.0"),
        (["ppo.mini_batch_size=3", "ppo.micro_batch_size=1"], "ppo.mini_batch_size (3) must divide ppo.batch_size (16)"),
        (["reward.rewards=[{kind: callable, path: x}]"],
         "reward.rewards[0].path must look like package.module:function, got 'x'"),
        (["eval.split=dev"], "eval.split must be train or test, got 'dev'"),
    ],
)  # fmt: skip
def test_each_section_reports_its_rules_with_full_keys(overrides, message):
    with pytest.raises(ConfigError) as e:
        load_config(overrides=overrides)
    assert str(e.value) == f"invalid configuration:\n  - {message}"


def test_problems_come_in_section_order_and_all_at_once():
    cfg = load_config(overrides=["eval.prompts=1"])
    broken = dataclasses.replace(cfg, run=RunConfig(num_threads=-1), eval=dataclasses.replace(cfg.eval, prompts=0))
    assert broken.problems() == ["run.num_threads must be >= 0", "eval.prompts must be positive, got 0"]


def test_a_cross_section_rule_lives_with_its_section():
    # ppo's response-length sampler falls back to the generation section's lengths
    with pytest.raises(ConfigError, match=r"response-length sampler needs 0 <= min_new_tokens \(40\) <= max_new_tokens \(10\)"):
        load_config(overrides=["generation.min_new_tokens=40", "ppo.max_new_tokens=10"])
    cfg = load_config(overrides=["generation.min_new_tokens=40", "ppo.min_new_tokens=4", "ppo.max_new_tokens=10"])
    assert cfg.ppo.cross_problems(cfg) == []


def test_the_reward_section_may_be_empty_but_a_reward_file_may_not():
    assert RewardConfig().problems() == []  # SFT needs no reward
    assert RewardConfig(rewards=[RewardSpec(kind="nope")]).problems()[0].startswith("reward.rewards[0].kind")
    with pytest.raises(ConfigError, match="invalid reward configuration:\n  - rewards is empty"):
        RewardConfig().validate()


def test_the_reward_model_lora_section_is_the_lora_section_switched_off():
    assert issubclass(RewardLoraConfig, LoraSettings)
    assert RewardLoraConfig(r=0, dropout=1.0).problems() == []  # off: nothing to check
    on = RewardLoraConfig(enabled=True, r=0, dropout=1.0)
    assert on.problems() == LoraSettings(r=0, dropout=1.0).problems() == [
        "lora.r and lora.alpha must be positive, got r=0, alpha=32",
        "lora.dropout must be in [0, 1), got 1.0",
    ]
    assert RewardLoraConfig().r == 16 and field_docs(RewardLoraConfig)["r"] == "LoRA rank of the reward model's adapters."
    assert field_docs(RewardLoraConfig)["alpha"] == field_docs(LoraSettings)["alpha"]  # inherited with its docstring
    for key, _value, doc in explain(RewardTrainConfig()):
        assert doc and "\n" not in doc, f"{key} lacks a one-line docstring"


# --------------------------------------------------------------------------------------------------
# A new algorithm: one section with its own problems(), one field on a top-level configuration


@dataclass(frozen=True)
class _DPOConfig:
    beta: float = 0.1
    """Strength of the implicit KL constraint."""

    def problems(self) -> list[str]:
        return [] if self.beta > 0 else [f"dpo.beta must be > 0, got {self.beta}"]


@dataclass(frozen=True)
class _WithDPO:
    run: RunConfig = field(default_factory=RunConfig)
    """Where outputs go."""
    dpo: _DPOConfig = field(default_factory=_DPOConfig)
    """Direct preference optimisation."""

    def validate(self) -> None:
        check(self)


def test_a_new_section_is_loaded_explained_and_checked_with_no_central_change():
    assert load_config(overrides=["dpo.beta=0.5"], schema=_WithDPO).dpo.beta == 0.5
    assert ("dpo.beta", 0.1, "Strength of the implicit KL constraint.") in explain(_WithDPO())
    with pytest.raises(ConfigError, match=r"invalid configuration:\n  - run.precision .*\n  - dpo.beta must be > 0"):
        load_config(overrides=["dpo.beta=0", "run.precision=fp8"], schema=_WithDPO)
    assert problems_of(_WithDPO()) == []
