"""`rlhfkit demo`: the whole RLHF loop on the built-in synthetic task, offline, on a laptop.

    1. build tiny-t5 and its tokenizer         5. train a reward model on the labels
    2. SFT with LoRA                           6. PPO against the reward model (KL to the SFT model)
    3. sample comparison pairs from SFT        7. `rlhfkit eval` of SFT vs PPO → report.html
    4. annotators label them (simulated, or a person with --human)

Human feedback enters at step 4 and reaches the policy only through the reward model of step 5. The
judge of the evaluation, the insult lexicon, is never shown to the reward model: it learns what the
annotators prefer from their labels alone (the simulated annotators consult the lexicon, with errors).

Each finished stage leaves a marker in ``<out>/.stages`` holding a hash of its settings and of the stages
before it, so a rerun (after a crash, or with changed settings) redoes only what changed; an interrupted
PPO stage resumes from its last checkpoint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Sequence

from rich.console import Console
from rich.table import Table

from rlhfkit.config import Config, RewardSpec, RewardTrainConfig, load_config, replace, to_yaml
from rlhfkit.data.lexicon import LexiconJudge
from rlhfkit.errors import ConfigError, RlhfkitError
from rlhfkit.io import write_json_atomic
from rlhfkit.models.presets import ensure_preset


@dataclass(frozen=True)
class DemoFeedbackConfig:
    prompts: int = 400
    """Training prompts whose SFT samples are compared."""
    samples_per_prompt: int = 4
    """Responses sampled per prompt; every pair of them becomes an item to label."""
    annotators: int = 3
    """Simulated annotators."""
    overlap: int = 1
    """Annotators per item."""
    error_rate: float = 0.1
    """Chance that a simulated annotator answers wrongly (real annotators disagree on 20-30% of pairs)."""
    tie_rule: str = "tie"
    """Simulated answer when both candidates are equally toxic: tie (left out of training) or random."""
    human_prompts: int = 25
    """With --human: prompts whose two samples a person compares in the labeling app."""
    human_min_labels: int = 10
    """With --human: fewest decisive labels (not ties) needed to train a reward model."""
    port: int = 8765
    """With --human: port of the labeling app on localhost."""


@dataclass(frozen=True)
class DemoConfig(Config):
    feedback: DemoFeedbackConfig = field(default_factory=DemoFeedbackConfig)
    """Stages 3-4: sampling comparison pairs and labeling them."""
    reward_model: RewardTrainConfig = field(default_factory=RewardTrainConfig)
    """Stage 5: the reward model trained on the labels (data.train_files is filled in by the demo)."""
    allow_weak_reward_model: bool = False
    """Go on to PPO even when the reward model fails the quality gate (too few or chance-level held-out pairs)."""
    kl_comparison: bool = False
    """Also run PPO with beta = 0 and evaluate it beside the default, to show what the KL penalty does."""

    def validate(self) -> None:
        super().validate()
        p: list[str] = []
        fb = self.feedback
        if fb.prompts < 2 or fb.samples_per_prompt < 2 or fb.annotators < 1 or fb.human_prompts < 2:
            p.append("feedback.prompts and feedback.human_prompts must be >= 2, feedback.samples_per_prompt >= 2, "
                     "feedback.annotators >= 1")  # fmt: skip
        if not 1 <= fb.overlap <= fb.annotators:
            p.append(f"feedback.overlap ({fb.overlap}) must be between 1 and feedback.annotators ({fb.annotators})")
        if not 0.0 <= fb.error_rate <= 1.0:
            p.append(f"feedback.error_rate must be in [0, 1], got {fb.error_rate}")
        if fb.tie_rule not in ("tie", "random"):
            p.append(f"feedback.tie_rule must be tie or random, got {fb.tie_rule!r}")
        if p:
            raise ConfigError("invalid demo configuration:\n  - " + "\n  - ".join(p))
        # the training file is the demo's own export; check everything else now, before any work
        replace(self.reward_model, **{"data.train_files": ["feedback/preferences.jsonl"]}).validate()


def pipeline_config(cfg: DemoConfig) -> Config:
    """The sections every other command understands, so that each stage's saved config.yaml reloads on its own."""
    return Config(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(Config)})


def demo_recipe_path() -> Path:
    """The packaged YAML recipe the demo starts from."""
    return Path(str(resources.files("rlhfkit.recipes").joinpath("demo.yaml")))


def demo_config(output_dir: str, seed: int = 0, overrides: Sequence[str] = ()) -> DemoConfig:
    """The demo's configuration: the packaged recipe, the seed and output folder, then user overrides."""
    cfg = load_config([demo_recipe_path()], overrides, schema=DemoConfig)
    out = Path(output_dir)
    return replace(cfg, **{"run.output_dir": str(out / "sft"), "run.seed": seed,
                           "reward_model.run.output_dir": str(out / "reward"), "reward_model.run.seed": seed})  # fmt: skip


@dataclass
class DemoResult:
    output_dir: Path
    stages: dict[str, dict[str, Any]]
    """Each stage's result record (what .stages/<name>.json holds)."""
    report: Path
    headline: dict[str, Any]
    """SFT → PPO on the held-out prompts: toxicity, ROUGE-L and KL with their intervals."""


class StageCache:
    """Markers of finished stages: ``<out>/.stages/<name>.json`` holding the stage's key and result."""

    def __init__(self, root: Path) -> None:
        self.root = root / ".stages"

    @staticmethod
    def key(*parts: Any) -> str:
        """A hash of the settings (dataclasses or strings) a stage depends on, upstream keys included."""
        text = "\n".join(p if isinstance(p, str) else to_yaml(p) for p in parts)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def load(self, name: str, key: str) -> dict[str, Any] | None:
        path = self.root / f"{name}.json"
        if not path.is_file():
            return None
        record = json.loads(path.read_text())
        return record["result"] if record.get("key") == key else None

    def save(self, name: str, key: str, result: dict[str, Any]) -> None:
        write_json_atomic(self.root / f"{name}.json", {"key": key, "result": result})


def run_demo(output_dir: str = "runs/demo", seed: int = 0, overrides: Sequence[str] = (), progress: bool = True,
             human: bool = False, kl_comparison: bool = False, console: Console | None = None) -> DemoResult:  # fmt: skip
    """Run the demo's stages into ``output_dir``, printing what happens and the headline figures."""
    console = console or Console()
    out = Path(output_dir)
    cfg = demo_config(output_dir, seed, overrides)
    if kl_comparison:
        cfg = replace(cfg, kl_comparison=True)
    cache = StageCache(out)
    started = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    reused: list[str] = []

    def stage(title: str, name: str, key: str, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        cached = cache.load(name, key)
        if cached is not None:
            console.print(f"[bold]{title}[/bold]: done earlier, reusing it", soft_wrap=True)
            results[name] = cached
            reused.append(name)
            return cached
        console.rule(f"[bold]{title}")
        t0 = time.perf_counter()
        result = {**work(), "stage_seconds": round(time.perf_counter() - t0, 1)}
        cache.save(name, key, result)
        console.print(f"[dim]{title}: {result['stage_seconds']:.0f} s[/dim]")
        results[name] = result
        return result

    preset = cfg.model.name_or_path
    k_preset = StageCache.key(preset)
    stage("1. build the model preset and its tokenizer", "preset", k_preset,
          lambda: {"folder": str(ensure_preset(preset))})  # fmt: skip

    k_sft = StageCache.key(k_preset, cfg.model, cfg.lora, cfg.data, cfg.sft, cfg.generation, f"seed={seed}")
    sft = stage("2. supervised fine-tuning with LoRA", "sft", k_sft, lambda: _sft(cfg, console, progress))
    adapter = sft["adapter"]
    if "samples" in sft:
        _print_samples(console, sft["samples"][:4])

    mode, fb = ("human" if human else "simulated"), cfg.feedback
    # the pairs depend only on how they are sampled; the labeling settings (annotators, errors, ties) key stage 4
    k_pairs = StageCache.key(k_sft, mode, f"prompts={fb.prompts} samples={fb.samples_per_prompt} "
                             f"human_prompts={fb.human_prompts} overlap={fb.overlap}")  # fmt: skip
    items = out / "feedback" / "items.sqlite"
    stage("3. sample comparison pairs from the SFT policy", "pairs", k_pairs,
          lambda: _sample_pairs(cfg, adapter, items, human, progress))  # fmt: skip

    labels = out / "feedback" / "labels.sqlite"
    k_labels = StageCache.key(k_pairs, fb)
    label_work = (lambda: _label_by_person(cfg, items, labels, console)) if human else (
        lambda: _label_simulated(cfg, items, labels))  # fmt: skip
    stage("4. annotators label the pairs" + (" (you, in the browser)" if human else " (simulated)"), "labels",
          k_labels, label_work)  # fmt: skip

    k_rm = StageCache.key(k_labels, cfg.reward_model)
    rm = stage("5. train a reward model on the labels", "reward_model", k_rm,
               lambda: _train_reward_model(cfg, labels, out, progress))  # fmt: skip
    _check_reward_model(rm, cfg, human, console)

    ppo_cfg = _ppo_config(cfg, out, adapter, rm["model_dir"])
    k_ppo = _ppo_key(k_rm, ppo_cfg)
    stage("6. PPO against the reward model, KL-penalised towards the SFT model", "ppo", k_ppo,
          lambda: _ppo(ppo_cfg, cache, "ppo", k_ppo, progress))  # fmt: skip
    policies = [f"sft={adapter}", f"ppo={out / 'ppo' / 'adapter'}"]
    k_eval_upstream = k_ppo
    if cfg.kl_comparison:
        beta0 = replace(ppo_cfg, **{"run.output_dir": str(out / "ppo-beta0"), "ppo.kl_coef": 0.0,
                                    "ppo.adaptive_kl": False})  # fmt: skip
        k_beta0 = _ppo_key(k_rm, beta0)
        stage("6b. the same PPO without the KL penalty (beta = 0)", "ppo_beta0", k_beta0,
              lambda: _ppo(beta0, cache, "ppo_beta0", k_beta0, progress))  # fmt: skip
        policies.append(f"ppo-beta0={out / 'ppo-beta0' / 'adapter'}")
        k_eval_upstream = StageCache.key(k_ppo, k_beta0)

    eval_cfg = replace(ppo_cfg, **{"run.output_dir": str(out / "eval"), "eval.policies": policies})
    k_eval = StageCache.key(k_eval_upstream, eval_cfg.eval, eval_cfg.generation)
    evaluation = stage(f"7. evaluate SFT vs PPO on {cfg.eval.prompts} held-out prompts", "eval", k_eval,
                       lambda: _evaluate(eval_cfg, progress))  # fmt: skip

    from rlhfkit.eval.cli import print_headline

    full = json.loads((out / "eval" / "results.json").read_text())
    console.rule("[bold]result")
    print_headline(full, console)
    headline = evaluation["headline"]
    # print_headline ends with the verdict, every policy against SFT, as report.html shows it
    console.print("Toxicity (lexicon judge, never seen by the reward model) is the judge of the verdict above; the "
                  f"reward model learned from the labels alone. {_total_time(results, reused, time.perf_counter() - started)}")  # fmt: skip
    report = out / "eval" / "report.html"
    console.print(f"Report: {report}", soft_wrap=True)
    return DemoResult(out, results, report, headline)


# --------------------------------------------------------------------------------------------------
# The stages


def _sft(cfg: DemoConfig, console: Console, progress: bool) -> dict[str, Any]:
    from rlhfkit.algos.sft import run_sft

    console.print(f"LoRA SFT of {cfg.model.name_or_path} on the synthetic corpus ({cfg.data.synthetic.size} "
                  f"dialogues, {cfg.data.synthetic.toxic_fraction:.0%} of reference summaries insulting)")  # fmt: skip
    result = run_sft(pipeline_config(cfg), progress=progress)
    return {**result.final, "steps": result.steps, "train_seconds": result.train_seconds,
            "adapter": str(result.adapter_dir), "samples": result.samples}  # fmt: skip


def _sample_pairs(cfg: DemoConfig, adapter: str, items: Path, human: bool, progress: bool) -> dict[str, Any]:
    from rlhfkit.feedback.generate import generate_into_store
    from rlhfkit.feedback.store import FeedbackStore

    fb = cfg.feedback
    shutil.rmtree(items.parent, ignore_errors=True)
    items.parent.mkdir(parents=True)
    FeedbackStore.create(items, overlap=1 if human else fb.overlap, name="demo: which summary is better?").close()
    n, k = (fb.human_prompts, 2) if human else (fb.prompts, fb.samples_per_prompt)
    result = generate_into_store(str(items), cfg, [adapter], n, k=k, split="train", seed=cfg.run.seed,
                                 progress=progress)
    return {"store": str(items), "items": len(result.item_ids), "prompts": n, "samples_per_prompt": k,
            "identical_skipped": result.identical_skipped}  # fmt: skip


def _fresh_copy(items: Path, labels: Path) -> None:
    """Labels go into a copy of the unlabeled store, so relabeling starts from the same items."""
    labels.unlink(missing_ok=True)
    shutil.copyfile(items, labels)


def _label_simulated(cfg: DemoConfig, items: Path, labels: Path) -> dict[str, Any]:
    from rlhfkit.feedback.simulate import simulate
    from rlhfkit.feedback.store import FeedbackStore

    fb = cfg.feedback
    _fresh_copy(items, labels)
    with FeedbackStore.open(labels) as store:
        summary = simulate(store, n_annotators=fb.annotators, error_rate=fb.error_rate, seed=cfg.run.seed,
                           tie_rule=fb.tie_rule)  # fmt: skip
    print(f"{summary.labels} labels from {len(summary.annotators)} simulated annotators; "
          f"{summary.decisive_labels} on pairs with a truly less toxic side, "
          f"{summary.accuracy or 0:.1%} of those right (error rate {fb.error_rate:.0%})")  # fmt: skip
    return {"store": str(labels), "labels": summary.labels, "decisive_labels": summary.decisive_labels,
            "annotator_accuracy": summary.accuracy}  # fmt: skip


def _label_by_person(cfg: DemoConfig, items: Path, labels: Path, console: Console) -> dict[str, Any]:
    from rlhfkit.feedback.human import label_in_browser

    started_marker = labels.with_suffix(".human")
    if not (labels.is_file() and started_marker.is_file()):  # keep a person's labels across a crash
        _fresh_copy(items, labels)
        started_marker.touch()
    decisive = label_in_browser(labels, port=cfg.feedback.port, min_labels=cfg.feedback.human_min_labels,
                                console=console)  # fmt: skip
    return {"store": str(labels), "labels": decisive, "decisive_labels": decisive}


def _train_reward_model(cfg: DemoConfig, labels: Path, out: Path, progress: bool) -> dict[str, Any]:
    from rlhfkit.feedback.export import export_pairs
    from rlhfkit.feedback.store import FeedbackStore
    from rlhfkit.rewards.quality import WeakRewardModelWarning
    from rlhfkit.rewards.train import run_reward_training

    pairs = out / "feedback" / "preferences.jsonl"
    with FeedbackStore.open(labels) as store:
        count = export_pairs(store, pairs, aggregate="label", complete_only=False)
    print(f"exported {count} preference pairs (ties and 'both bad' answers left out) to {pairs}")
    rm_cfg = replace(cfg.reward_model, **{"data.train_files": [str(pairs)], "data.format": "rlhfkit"})
    with warnings.catch_warnings():  # the demo reports a failed gate itself, before PPO (_check_reward_model)
        warnings.simplefilter("ignore", WeakRewardModelWarning)
        result = run_reward_training(rm_cfg, progress=progress)
    h = result.heldout
    accuracy = "n/a" if h["accuracy"] is None else f"{h['accuracy']:.1%}"
    print(f"reward model: held-out pairwise accuracy {accuracy} (95% CI {h['ci_low']:.1%}-{h['ci_high']:.1%}, "
          f"n={h['n']}); trained {result.steps} steps in {result.train_seconds:.1f} s")  # fmt: skip
    if result.quality is not None and result.quality.ok:  # a failure is reported before PPO, from the record
        print(result.quality.describe())
    return {"model_dir": str(result.model_dir), "pairs": count, "heldout_accuracy": h["accuracy"],
            "ci_low": h["ci_low"], "ci_high": h["ci_high"], "n": h["n"],
            "quality": result.quality.to_dict() if result.quality else None}  # fmt: skip


def _check_reward_model(rm: dict[str, Any], cfg: DemoConfig, human: bool, console: Console) -> None:
    """The quality gate between stage 5 and PPO: stop (exit status 2) when the reward model failed it, unless
    allow_weak_reward_model is set, in which case warn and go on."""
    from rlhfkit.rewards.quality import judge_reward_model

    quality = rm.get("quality")
    if quality is None:  # a stage record from before the gate: judge what it holds (no spread was recorded)
        n = rm.get("n") or 0
        quality = judge_reward_model((rm.get("heldout_accuracy") or 0.0) * n, n).to_dict()
    if quality["ok"]:
        return
    problems = " ".join(p[0].upper() + p[1:] for p in quality["problems"])
    if cfg.allow_weak_reward_model:
        console.print(f"[bold red]warning:[/bold red] the reward model failed the quality gate. {problems} Going on "
                      "to PPO because allow_weak_reward_model is true: PPO will optimise whatever the model "
                      "scores, which may be noise.", soft_wrap=True)  # fmt: skip
        return
    more = ("label more pairs: --set feedback.human_prompts=300 gives 300 pairs to label (a new set), of which "
            "about 30 are held out to judge the model" if human else
            "label more pairs (--set feedback.prompts=N), or make the simulated annotators err less "
            "(feedback.error_rate)")  # fmt: skip
    raise RlhfkitError(
        f"stopped before PPO: the reward model of stage 5 failed the quality gate. {problems} PPO against it would "
        f"optimise noise, and the demo's result would say nothing about your labels. To fix it, {more}; the "
        "verdict is in reward/report.json (the settings it names take the prefix reward_model. here, e.g. --set "
        "reward_model.data.test_size=0.3). To run PPO anyway, for a look at the rest of the loop, rerun with "
        "--set allow_weak_reward_model=true (the finished stages are reused)."
    )


def _total_time(results: dict[str, dict[str, Any]], reused: list[str], seconds: float) -> str:
    """How long the demo took this time, saying which stages were reused rather than reporting their 0 s."""
    if not reused:
        return f"Demo total {seconds:.0f} s."
    earlier = sum(float(results[name].get("stage_seconds", 0.0)) for name in reused)
    if len(reused) == len(results):
        return (f"Every stage was reused from an earlier run: {seconds:.1f} s spent now (the stages took "
                f"{earlier:.0f} s when they ran).")  # fmt: skip
    return (f"Demo total {seconds:.0f} s, with {len(reused)} of {len(results)} stages reused from an earlier run "
            f"(they took {earlier:.0f} s when they ran).")  # fmt: skip


def _ppo_config(cfg: DemoConfig, out: Path, sft_adapter: str, reward_model: str) -> Config:
    reward = [RewardSpec(kind="reward_model", path=reward_model, name="reward model")]
    return replace(pipeline_config(cfg), **{"run.output_dir": str(out / "ppo"), "ppo.sft_adapter": sft_adapter,
                           "reward.rewards": reward})  # fmt: skip


def _ppo_key(upstream: str, cfg: Config) -> str:
    """The key of a PPO stage: the reward-model stage's key and the settings PPO reads."""
    return StageCache.key(upstream, cfg.ppo, cfg.lora, cfg.reward, cfg.generation)


def _ppo(cfg: Config, cache: StageCache, name: str, key: str, progress: bool) -> dict[str, Any]:
    """PPO; an interrupted run with the same settings resumes from its last checkpoint instead of restarting."""
    from rlhfkit.algos.ppo.run import run_ppo
    from rlhfkit.engine.checkpoint import list_checkpoints

    folder = Path(cfg.run.output_dir)
    marker = cache.root / f"{name}.started"
    resume = marker.is_file() and marker.read_text() == key and bool(list_checkpoints(folder))
    if resume:
        print(f"resuming the interrupted PPO run in {folder}")
    else:
        shutil.rmtree(folder, ignore_errors=True)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(key)
    result = run_ppo(cfg, resume=resume, progress=progress)
    ran = [h for h in result.history if not h.get("skipped")]
    first, last = (ran[0], ran[-1]) if ran else ({}, {})
    return {"adapter": str(result.adapter_dir), "steps": result.steps, "skipped_steps": result.skipped_steps,
            "first_score": first.get("score/mean"), "last_score": last.get("score/mean"),
            "last_kl": last.get("kl/k1")}  # fmt: skip


def _evaluate(cfg: Config, progress: bool) -> dict[str, Any]:
    from rlhfkit.eval.evaluate import run_eval

    result = run_eval(cfg, progress=progress)
    return {"report": str(result.report), "headline": headline_figures(result.results)}


def headline_figures(results: dict[str, Any], a: str = "sft", b: str = "ppo") -> dict[str, Any]:
    """Means of toxicity, ROUGE-L and KL for policies a and b, and b − a with its interval and p-value."""
    comparison = next(c for c in results["comparisons"] if c["a"] == a and c["b"] == b)
    figures: dict[str, Any] = {}
    for key in ("toxicity", "rougeL", "kl"):
        diff = comparison["measures"][key]
        figures[key] = {a: results["policies"][a]["measures"][key]["mean"],
                        b: results["policies"][b]["measures"][key]["mean"],
                        "difference": diff["mean_difference"], "ci_low": diff["ci"]["low"],
                        "ci_high": diff["ci"]["high"], "p_value": diff["p_value"]}  # fmt: skip
    return figures


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
