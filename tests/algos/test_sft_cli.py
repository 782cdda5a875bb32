"""`rlhfkit sft` end to end on tiny models, through the real CLI entry point (the demo: test_demo.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rlhfkit.cli import main
from rlhfkit.config import load_config
from rlhfkit.engine.metrics import read_metrics

REPO = Path(__file__).resolve().parents[2]
FAST = ["sft.max_steps=12", "sft.eval_examples=8", "sft.log_every=4", "data.synthetic.size=300",
        "generation.max_new_tokens=16"]  # fmt: skip


def _sets(overrides):
    return [arg for o in overrides for arg in ("--set", o)]


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["sft-tiny-t5.yaml", "sft-tiny-llama.yaml"])
def test_sft_end_to_end_writes_adapter_config_and_metrics(tmp_path, capsys, recipe):
    out = tmp_path / "run"
    rc = main(["sft", "--config", str(REPO / "configs" / recipe), "-o", str(out), "--no-progress", *_sets(FAST)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "ROUGE-1/2/L" in printed and str(out / "adapter") in printed
    # the resolved config next to the outputs reproduces the run's settings
    resolved = load_config([out / "config.yaml"])
    assert resolved.sft.max_steps == 12 and resolved.run.output_dir == str(out)
    assert (out / "adapter" / "adapter_config.json").is_file() and (out / "adapter" / "tokenizer.json").is_file()
    records = read_metrics(out / "metrics.jsonl")
    train = [r for r in records if r["event"] == "train"]
    assert [r["step"] for r in train] == [4, 8, 12]
    assert all(r["loss"] > 0 for r in train)
    final = json.loads((out / "final_metrics.json").read_text())
    assert {"eval_loss", "rouge1", "rouge2", "rougeL", "toxic_fraction"} <= set(final)
    assert train[-1]["loss"] < train[0]["loss"]  # it learns
    # the saved adapter continues training from the CLI (lora.adapter_path)
    again = tmp_path / "again"
    rc = main(["sft", "--config", str(REPO / "configs" / recipe), "-o", str(again), "--no-progress",
               *_sets(FAST + ["sft.max_steps=2", f"lora.adapter_path={out / 'adapter'}"])])  # fmt: skip
    assert rc == 0
    first_loss = next(r for r in read_metrics(again / "metrics.jsonl") if r["event"] == "eval")["eval_loss"]
    assert first_loss < final["eval_loss"] + 0.5  # started from the trained adapter, not from scratch


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["model.name_or_path=./does/not/exist"], "does not exist"),
        (["model.name_or_path=preset:tiny-bert"], "unknown preset"),
        (["sft.batch_size=10", "sft.gradient_accumulation_steps=4"], "must divide"),
        (["sft.learning_rat=1"], "Valid keys here"),
    ],
)
def test_bad_input_gives_one_paragraph_and_exit_2(tmp_path, capsys, overrides, fragment):
    rc = main(["sft", "-o", str(tmp_path / "x"), "--no-progress", *_sets(overrides)])
    err = capsys.readouterr().err
    assert rc == 2 and fragment in err and "Traceback" not in err and err.startswith("rlhfkit sft: error:")


def test_dataset_problems_through_the_cli(tmp_path, capsys):
    no_col = _write_jsonl(tmp_path / "a.jsonl", [{"text": "x" * 300, "summary": "s"}] * 4)
    assert main(["sft", "--no-progress", "--set", f"data.source={no_col}"]) == 2
    assert "data.dialogue_column" in capsys.readouterr().err
    short = _write_jsonl(tmp_path / "b.jsonl", [{"dialogue": "hi", "summary": "s"}] * 4)
    assert main(["sft", "--no-progress", "--set", f"data.source={short}"]) == 2
    assert "after the length filter" in capsys.readouterr().err


def test_adapter_for_another_base_model_via_cli(tmp_path, capsys):
    from rlhfkit.config import LoraConfig, ModelConfig
    from rlhfkit.models.loading import load_base_model
    from rlhfkit.models.lora import attach_lora, save_adapter

    t5 = attach_lora(load_base_model(ModelConfig(name_or_path="preset:tiny-t5")), LoraConfig())
    save_adapter(t5.model, t5.tokenizer, tmp_path / "adapter", t5.source)
    rc = main(["sft", "--no-progress", "-o", str(tmp_path / "run"), "--set", "model.name_or_path=preset:tiny-llama",
               "--set", f"lora.adapter_path={tmp_path / 'adapter'}"])  # fmt: skip
    assert rc == 2 and "different base model" in capsys.readouterr().err


def test_console_script_help_and_config_explain(tmp_path):
    exe = Path(sys.executable).parent / "rlhfkit"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "rlhfkit"]
    for sub in ([], ["sft"], ["ppo"], ["demo"], ["presets"], ["config"], ["data"], ["feedback"], ["reward"], ["eval"]):
        done = subprocess.run([*cmd, *sub, "--help"], capture_output=True, text=True, check=True)
        assert "usage: rlhfkit" in done.stdout
    explained = subprocess.run([*cmd, "config", "--explain"], capture_output=True, text=True, check=True).stdout
    assert "sft.learning_rate = 0.001" in explained and "Peak AdamW learning rate" in explained
    shown = subprocess.run([*cmd, "config", "--set", "sft.max_steps=5"], capture_output=True, text=True, check=True)
    assert yaml.safe_load(shown.stdout)["sft"]["max_steps"] == 5
    listed = subprocess.run([*cmd, "presets"], capture_output=True, text=True, check=True).stdout
    assert "tiny-t5" in listed and "flan-t5-base-shape" in listed


def test_a_refused_run_writes_nothing_and_an_earlier_run_is_left_alone(tmp_path, capsys):
    # refused for its data before any training: no folder that looks like a run (config.yaml) is left behind
    no_col = _write_jsonl(tmp_path / "a.jsonl", [{"text": "x" * 300, "summary": "s"}] * 4)
    out = tmp_path / "run"
    assert main(["sft", "--no-progress", "-o", str(out), "--set", f"data.source={no_col}"]) == 2
    assert "data.dialogue_column" in capsys.readouterr().err
    assert not out.exists()
    # refused after the model is loaded (too few examples for one batch): still nothing written
    assert main(["sft", "--no-progress", "-o", str(out), "--set", "data.synthetic.size=300",
                 "--set", "sft.batch_size=4096"]) == 2  # fmt: skip
    assert "fewer than sft.batch_size" in capsys.readouterr().err
    assert not out.exists()
    # a folder holding an earlier run keeps its files as they were
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "config.yaml").write_text("sft: {max_steps: 7}\n")
    (earlier / "metrics.jsonl").write_text('{"event": "start"}\n')
    assert main(["sft", "--no-progress", "-o", str(earlier), "--set", f"data.source={no_col}"]) == 2
    assert (earlier / "config.yaml").read_text() == "sft: {max_steps: 7}\n"
    assert (earlier / "metrics.jsonl").read_text() == '{"event": "start"}\n'
