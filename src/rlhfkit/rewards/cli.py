"""`rlhfkit reward ...`: make synthetic pairs, train a reward model, score texts, list backbones.

``register(subparsers)`` adds the ``reward`` command to the main parser (:mod:`rlhfkit.cli`). Each
handler is a thin layer over the Python API and returns the exit status.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from rlhfkit.errors import RlhfkitError


def _add_config_args(p: argparse.ArgumentParser, example: str) -> None:
    p.add_argument("--config", "-c", action="append", default=[], metavar="FILE",
                   help="YAML config file; repeat to layer several (later files win)")  # fmt: skip
    p.add_argument("--set", "-s", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help=f"override one setting, e.g. --set {example} (repeatable)")  # fmt: skip


# --------------------------------------------------------------------------------------------------
# make-pairs


def _cmd_make_pairs(args: argparse.Namespace) -> int:
    from rlhfkit.data.preferences import write_jsonl_atomic
    from rlhfkit.rewards.synthetic_pairs import make_synthetic_pairs

    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    records = make_synthetic_pairs(size=args.size, seed=args.seed, flip=args.flip, annotators=args.annotators,
                                   kinds=kinds)  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    n = write_jsonl_atomic(records, out)
    noise = f", each label flipped with probability {args.flip:g}" if args.flip else ", clean labels"
    who = f", {args.annotators} simulated annotators per pair" if args.annotators > 1 else ""
    print(f"wrote {n} preference pairs from {args.size} synthetic dialogues ({', '.join(kinds)}{noise}{who}) to {out}")
    return 0


# --------------------------------------------------------------------------------------------------
# train


def _cmd_train(args: argparse.Namespace) -> int:
    from rlhfkit.config import load_config, replace
    from rlhfkit.engine.distributed import is_main_process
    from rlhfkit.config import RewardTrainConfig
    from rlhfkit.rewards.train import run_reward_training

    if args.explain:
        from rlhfkit.config import explain

        for key, value, doc in explain(RewardTrainConfig()):
            print(f"{key} = {value!r}\n    {doc}")
        return 0
    files = []  # --data / --eval-data fill the file lists; --set still wins
    if args.data:
        files.append("data.train_files=[" + ",".join(json.dumps(f) for f in args.data) + "]")
    if args.eval_data:
        files.append("data.eval_files=[" + ",".join(json.dumps(f) for f in args.eval_data) + "]")
    cfg = load_config(args.config, files + list(args.overrides), schema=RewardTrainConfig)
    if args.output_dir:
        cfg = replace(cfg, **{"run.output_dir": args.output_dir})
    result = run_reward_training(cfg, progress=not args.no_progress)
    if is_main_process():  # under accelerate launch one summary, from the main process
        print(format_training_summary(result))
    return 0


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def format_training_summary(result: Any) -> str:
    """The lines `reward train` prints: data, held-out accuracy with its interval, buckets, where saved."""
    h, d = result.heldout, result.data
    lines = [f"data: read {d.read} examples, kept {d.kept} ({result.kind})"]
    lines += [f"  warning: {w}" for w in d.warnings()]
    if any(result.truncated.values()):
        lines.append(f"  warning: texts truncated to the maximum length: {result.truncated['train']} in training, "
                     f"{result.truncated['heldout']} held out")  # fmt: skip
    what = "pairwise accuracy" if result.kind == "pairs" else "accuracy (reward > 0 means good)"
    lines.append(f"trained {result.steps} steps on {result.train_examples} examples in {result.train_seconds:.1f} s "
                 f"({result.pairs_per_second:.1f} per second)")  # fmt: skip
    lines.append(f"held-out {what}: {_pct(h['accuracy'])} (95% CI {_pct(h['ci_low'])}-{_pct(h['ci_high'])}, "
                 f"n={h['n']}), loss {h['loss']:.4f}")  # fmt: skip
    for b in h.get("by_bucket", []):
        lines.append(f"  {b['bucket']}: {_pct(b['accuracy'])} (n={b['n']})")
    if result.agreement:
        a = result.agreement
        lines.append(f"annotator agreement: {_pct(a['pairwise_agreement'])} of annotator pairs agree on "
                     f"{a['units']} comparisons ({a['annotators']} annotators); the model's accuracy against "
                     "single labels cannot be expected to exceed it")  # fmt: skip
    lines.append(f"normalised: reward = (logit - {result.offset:.4g}) / {result.scale:.4g}")
    lines.append(f"reward model saved to {result.model_dir} (report.json, metrics.jsonl, loss_curve.png in "
                 f"{result.output_dir})")  # fmt: skip
    if getattr(result, "quality", None) is not None:
        lines += quality_lines(result.quality)
    return "\n".join(lines)


def quality_lines(verdict: Any) -> list[str]:
    """The quality gate's verdict: one line when it passes, a framed warning block when it fails (printed last,
    so it is what the user sees when the command ends)."""
    if verdict.ok:
        return [verdict.describe()]
    bar = "!" * 100
    return [bar, ("WARNING: this reward model failed the quality gate. Do not train a policy against it (PPO "
                  "would optimise noise) before fixing this:"), *[f"  - {p}" for p in verdict.problems],
            "The verdict is saved as 'quality' in report.json.", bar]  # fmt: skip


# --------------------------------------------------------------------------------------------------
# score


def _reward_from_args(args: argparse.Namespace) -> Any:
    from rlhfkit.config import RewardConfig, RewardSpec
    from rlhfkit.rewards.factory import build_reward

    chosen = [x for x in (args.reward_model, args.classifier, args.config or None) if x]
    if len(chosen) != 1:
        raise RlhfkitError("name exactly one reward: --reward-model DIR, --classifier ID_OR_DIR (with --label), or "
                           "--config rewards.yaml.")  # fmt: skip
    if args.config:
        from rlhfkit.config import load_config

        return build_reward(load_config(args.config, args.overrides, schema=RewardConfig))
    if args.reward_model:
        spec = RewardSpec(kind="reward_model", path=args.reward_model, batch_size=args.batch_size)
    else:
        spec = RewardSpec(kind="classifier", path=args.classifier, label=args.label, output=args.output,
                          input=args.input, batch_size=args.batch_size, max_length=args.max_length)  # fmt: skip
    return build_reward(RewardConfig(rewards=[spec]))


def _read_scoring_file(path: str) -> list[dict[str, Any]]:
    from rlhfkit.data.preference_readers import iter_json_lines

    rows = []
    for line, obj in iter_json_lines(path):
        response = next((obj[k] for k in ("response", "completion", "summary", "text") if isinstance(obj.get(k), str)), None)
        if response is None:
            raise RlhfkitError(f"{path}:{line}: no text to score; give a 'response' (or 'completion', 'summary', "
                               f"'text') field. The line has: {', '.join(sorted(obj)) or 'nothing'}.")  # fmt: skip
        prompt = obj.get("prompt", "")
        if not isinstance(prompt, str):
            raise RlhfkitError(f"{path}:{line}: field 'prompt' must be a string.")
        rows.append({**obj, "_prompt": prompt, "_response": response})
    return rows


def _summary(scores: list[float], reward: Any) -> str:
    from rlhfkit.rewards.base import reward_stats

    finite = [s for s in scores if math.isfinite(s)]
    if not finite:
        return f"{len(scores)} texts, none with a finite score"
    mean = sum(finite) / len(finite)
    std = math.sqrt(sum((s - mean) ** 2 for s in finite) / len(finite))
    text = (f"{len(scores)} texts: mean {mean:.4f}, std {std:.4f}, min {min(finite):.4f}, max {max(finite):.4f}"
            f"; non-finite {len(scores) - len(finite)}")  # fmt: skip
    truncated = {k: v for k, v in reward_stats(reward).items() if k.endswith("truncated") and v}
    if truncated:
        text += "; truncated " + ", ".join(f"{k}={v:g}" for k, v in truncated.items())
    return text + f"\n(for fixed normalisation on these samples: offset: {mean:.6g}, scale: {std:.6g})"


def _cmd_score(args: argparse.Namespace) -> int:
    from rlhfkit.engine.runtime import quiet_libraries
    from rlhfkit.rewards.base import check_scores

    quiet_libraries()
    sources = [x for x in (args.text, args.file, args.pairs) if x]
    if len(sources) != 1:
        raise RlhfkitError("give the texts to score with exactly one of --text, --file or --pairs.")
    reward = _reward_from_args(args)
    if args.pairs:
        return _score_pairs(reward, args.pairs)
    if args.text:
        prompts, responses = [args.prompt] * len(args.text), list(args.text)
        scores = reward(prompts, responses)
        check_scores(scores, len(responses), reward.name)
        for s, r in zip(scores, responses):
            print(f"{s:.6g}\t{r}")
        return 0
    rows = _read_scoring_file(args.file)
    scores = reward([r["_prompt"] for r in rows], [r["_response"] for r in rows])
    check_scores(scores, len(rows), reward.name)
    if args.out:
        from rlhfkit.data.preferences import write_jsonl_atomic

        out = [{**{k: v for k, v in r.items() if not k.startswith("_")}, "score": s} for r, s in zip(rows, scores)]
        write_jsonl_atomic(out, args.out)
        print(f"wrote {len(out)} scored rows to {args.out}")
    print(f"{reward.name}: {_summary([float(s) for s in scores], reward)}")
    return 0


def _score_pairs(reward: Any, path: str) -> int:
    import torch

    from rlhfkit.data.preference_sources import load_preferences
    from rlhfkit.rewards.evaluation import pairwise_report

    data = load_preferences([path], ties="half")
    if data.kind != "pairs":
        raise RlhfkitError(f"{path} holds unpaired labels; --pairs needs preference pairs.")
    cs = data.comparisons
    prompts = [c.prompt for c in cs] * 2
    scores = reward(prompts, [c.chosen for c in cs] + [c.rejected for c in cs])
    t = torch.tensor([float(s) for s in scores])
    report = pairwise_report(t[: len(cs)], t[len(cs) :], torch.tensor([c.margin for c in cs]),
                             torch.tensor([0.5 if c.tie else 1.0 for c in cs]))  # fmt: skip
    for w in data.report.warnings():
        print(f"warning: {w}")
    print(f"{reward.name} on {path}: pairwise accuracy {_pct(report['accuracy'])} (95% CI {_pct(report['ci_low'])}-"
          f"{_pct(report['ci_high'])}, n={report['n']}), mean gap {report['mean_gap']:.4f}")  # fmt: skip
    return 0


# --------------------------------------------------------------------------------------------------
# backbones


def _cmd_backbones(args: argparse.Namespace) -> int:
    from rlhfkit.rewards.tiny_backbones import build_backbone, describe_backbones, ensure_backbone

    if args.build:
        folder = build_backbone(args.build, args.out) if args.out else ensure_backbone(args.build)
        print(f"backbone {args.build} is in {folder}")
        return 0
    print("\n".join(describe_backbones()))
    return 0


# --------------------------------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    """Add ``reward`` and its subcommands to the main parser's subparsers."""
    reward = subparsers.add_parser("reward", help="reward models: make pairs, train, score",
                                   description="Train reward models from preferences and score texts with any "
                                   "reward (a trained reward model, a classifier by label name, a YAML spec).")  # fmt: skip
    sub = reward.add_subparsers(dest="reward_command", metavar="SUBCOMMAND")
    sub.required = True

    p = sub.add_parser("make-pairs", help="write synthetic preference pairs from the built-in corpus",
                       description="Clean reference summary vs a toxic version of it, and vs a quality-only flaw "
                       "(another dialogue's summary, or a truncated one), as TRL preference JSONL.")  # fmt: skip
    p.add_argument("--out", "-o", required=True, help="JSONL file to write")
    p.add_argument("--size", type=int, default=500, help="number of dialogues (two pairs each; default 500)")
    p.add_argument("--seed", type=int, default=0, help="corpus seed; use another seed for a held-out file")
    p.add_argument("--flip", type=float, default=0.0, help="probability of flipping each label (label noise)")
    p.add_argument("--annotators", type=int, default=1, help="simulated annotators per pair (adds 'annotator')")
    p.add_argument("--kinds", default="toxic,off_topic,truncated", help="pair kinds, comma-separated")
    p.set_defaults(func=_cmd_make_pairs)

    p = sub.add_parser("train", help="train a reward model from preference data (Bradley-Terry)",
                       description="Train, evaluate (held-out pairwise accuracy with a 95%% CI), normalise and save "
                       "a reward model. Formats: TRL JSONL/Parquet, TRL unpaired, hh-rlhf, summarize-from-feedback, "
                       "the feedback store's export, hub datasets.")  # fmt: skip
    _add_config_args(p, "train.learning_rate=1e-4")
    p.add_argument("--data", action="append", default=[], metavar="FILE", help="training file (sets data.train_files)")
    p.add_argument("--eval-data", action="append", default=[], metavar="FILE", help="held-out file (data.eval_files)")
    p.add_argument("--output-dir", "-o", help="where to write outputs (overrides run.output_dir)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--explain", action="store_true", help="print every setting with its default and meaning, then exit")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("score", help="score texts with a reward (reward model, classifier by label, YAML spec)",
                       description="Score texts and print them, or a JSONL file and summarise (mean, std: the offset "
                       "and scale for fixed normalisation), or preference pairs and report pairwise accuracy.")  # fmt: skip
    p.add_argument("--reward-model", metavar="DIR", help="output folder of `rlhfkit reward train`")
    p.add_argument("--classifier", metavar="ID_OR_DIR", help="sequence classifier (hub id or folder)")
    p.add_argument("--label", help="class of the classifier to reward, by name (e.g. nothate)")
    p.add_argument("--output", default="logit", choices=("logit", "prob", "logprob"), help="classifier score")
    p.add_argument("--input", default="response", choices=("response", "prompt+response"), help="what the classifier reads")
    p.add_argument("--max-length", type=int, default=None, help="classifier max tokens (default: its own limit)")
    p.add_argument("--batch-size", type=int, default=32, help="texts per forward pass")
    _add_config_args(p, "rewards.0.weight=0.5")
    p.add_argument("--text", action="append", metavar="TEXT", help="a response to score (repeatable)")
    p.add_argument("--prompt", default="", help="the prompt for --text responses (default: empty)")
    p.add_argument("--file", metavar="JSONL", help="rows with 'prompt' and 'response' (or completion/summary/text)")
    p.add_argument("--out", metavar="JSONL", help="with --file: write the rows with a 'score' field")
    p.add_argument("--pairs", metavar="FILE", help="preference pairs (any supported format): pairwise accuracy")
    p.set_defaults(func=_cmd_score)

    p = sub.add_parser("backbones", help="list or build the offline reward-model backbones",
                       description="Tiny encoders built from a config (random weights, tokenizer trained on the "
                       "fly), a roberta-base-shaped one for benchmarks, and the packaged MiniLM.")  # fmt: skip
    p.add_argument("--build", metavar="NAME", help="build backbone NAME (into the cache, or --out)")
    p.add_argument("--out", metavar="DIR", help="folder to build into instead of the cache")
    p.set_defaults(func=_cmd_backbones)
