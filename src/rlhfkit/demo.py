"""`rlhfkit demo`: the loop on the built-in synthetic task, offline, on a laptop.

Stages so far: build the tiny-t5 preset (tokenizer trained on the fly) → generate the synthetic corpus
→ LoRA SFT → show sample summaries with their lexicon toxicity. Each finished stage leaves a marker
with the hash of its configuration in the output folder, so a rerun after a crash (or a rerun with the
same settings) resumes after the last finished stage.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Sequence

from rich.console import Console
from rich.table import Table

from rlhfkit.config import Config, load_config, replace, to_yaml
from rlhfkit.data.lexicon import LexiconJudge
from rlhfkit.io import write_json_atomic
from rlhfkit.models.presets import ensure_preset


def demo_recipe_path() -> Path:
    """The packaged YAML recipe the demo starts from."""
    return Path(str(resources.files("rlhfkit.recipes").joinpath("demo.yaml")))


def demo_config(output_dir: str, seed: int = 0, overrides: Sequence[str] = ()) -> Config:
    """The demo's configuration: the packaged recipe, the seed and output folder, then user overrides."""
    cfg = load_config([demo_recipe_path()], overrides)
    return replace(cfg, **{"run.output_dir": str(Path(output_dir) / "sft"), "run.seed": seed})


@dataclass
class DemoResult:
    output_dir: Path
    sft: dict[str, Any]
    """Final SFT evaluation (rougeL, toxic_fraction, ...) and wall times."""
    samples: list[dict[str, Any]]


class StageCache:
    """Markers of finished stages: ``<out>/.stages/<name>.json`` holding the stage's config hash."""

    def __init__(self, root: Path) -> None:
        self.root = root / ".stages"

    @staticmethod
    def key(cfg: Any) -> str:
        return hashlib.sha256(to_yaml(cfg).encode()).hexdigest()[:16]

    def load(self, name: str, key: str) -> dict[str, Any] | None:
        path = self.root / f"{name}.json"
        if not path.is_file():
            return None
        record = json.loads(path.read_text())
        return record["result"] if record.get("key") == key else None

    def save(self, name: str, key: str, result: dict[str, Any]) -> None:
        write_json_atomic(self.root / f"{name}.json", {"key": key, "result": result})


def run_demo(output_dir: str = "runs/demo", seed: int = 0, overrides: Sequence[str] = (), progress: bool = True,
             console: Console | None = None) -> DemoResult:  # fmt: skip
    """Run the demo's stages into ``output_dir`` and print what happened."""
    from rlhfkit.train.sft import run_sft

    console = console or Console()
    out = Path(output_dir)
    cfg = demo_config(output_dir, seed, overrides)
    cache = StageCache(out)
    started = time.perf_counter()

    def stage(title: str, name: str, key: str, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        cached = cache.load(name, key)
        if cached is not None:
            console.print(f"[bold]{title}[/bold]: done earlier, reusing {out / name}")
            return cached
        console.rule(f"[bold]{title}")
        t0 = time.perf_counter()
        result = {**work(), "stage_seconds": time.perf_counter() - t0}
        cache.save(name, key, result)
        return result

    preset = cfg.model.name_or_path
    stage("1. build the model preset and its tokenizer", "preset", preset,
          lambda: {"folder": str(ensure_preset(preset))})  # fmt: skip

    def sft() -> dict[str, Any]:
        console.print(f"LoRA SFT of {preset} on the synthetic corpus ({cfg.data.synthetic.size} dialogues, "
                      f"{cfg.data.synthetic.toxic_fraction:.0%} of reference summaries insulting)")  # fmt: skip
        result = run_sft(cfg, progress=progress)
        return {**result.final, "steps": result.steps, "train_seconds": result.train_seconds,
                "adapter": str(result.adapter_dir), "samples": result.samples}  # fmt: skip

    sft_result = stage("2. supervised fine-tuning with LoRA", "sft", StageCache.key(cfg), sft)
    samples = sft_result.pop("samples")
    _print_samples(console, samples[:6])
    console.rule("[bold]result")
    console.print(
        f"SFT policy: ROUGE-L {sft_result['rougeL']:.3f} (greedy) on {cfg.sft.eval_examples} held-out dialogues, "
        f"{sft_result['toxic_fraction']:.1%} of sampled summaries toxic by the lexicon judge "
        f"(the problem RLHF will fix). Training took {sft_result['train_seconds']:.0f} s; "
        f"demo total {time.perf_counter() - started:.0f} s."
    )
    console.print(f"Adapter: {sft_result['adapter']}   metrics: {Path(cfg.run.output_dir) / 'metrics.jsonl'}")
    return DemoResult(out, sft_result, samples)


def _print_samples(console: Console, samples: list[dict[str, Any]]) -> None:
    judge = LexiconJudge()
    table = Table(title="held-out dialogues: reference vs sampled SFT summary", show_lines=True)
    table.add_column("reference summary", ratio=1)
    table.add_column("sampled summary", ratio=1)
    table.add_column("toxic words", justify="right")
    for s in samples:
        n = judge.count(s["sampled"])
        table.add_row(s["reference"], s["sampled"], f"[red]{n}[/red]" if n else "0")
    console.print(table)
