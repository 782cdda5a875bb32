"""The `rlhfkit` command: one entry point with subcommands, a thin layer over the Python API.

Errors a user can cause are printed as one paragraph (no traceback) with exit status 2.
"""

from __future__ import annotations

import argparse
import difflib
import errno
import re
import sys
from collections.abc import Iterable, Sequence
from typing import NoReturn

from rlhfkit.errors import RlhfkitError

EXIT_USER_ERROR = 2

# argparse words this as "argument COMMAND: invalid choice: 'spt' (choose from ...)"; the value is what was typed
_INVALID_CHOICE = re.compile(r"invalid choice: '(?P<value>[^']*)'")


def _did_you_mean(typed: Sequence[str], known: Iterable[str]) -> str:
    """A sentence " Did you mean --config?" when a typed word has a close known one (difflib); "" if none has."""
    known = sorted(set(known))
    pairs = [(word, difflib.get_close_matches(word.split("=", 1)[0], known, n=1)) for word in typed]
    hints = [(word, close[0]) for word, close in pairs if close]
    if not hints:
        return ""
    if len(typed) == 1:
        return f" Did you mean {hints[0][1]}?"
    return " Did you mean " + ", ".join(f"{right} for {word}" for word, right in hints) + "?"


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors name the command they are about and suggest the closest spelling.

    argparse lets a subcommand's parser pass the words it does not know up to the top-level parser, which then
    prints the top-level usage; here every subcommand parser refuses them itself, so `rlhfkit sft --confg x`
    shows `sft`'s usage and suggests --config.
    """

    top_level = False
    """Set on the `rlhfkit` parser, whose parse_args reports the words it does not know."""

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[no-untyped-def]
        parsed, extras = super().parse_known_args(args, namespace)
        if extras and not self.top_level:
            self.error("unrecognized arguments: " + " ".join(extras))
        return parsed, extras

    def error(self, message: str) -> NoReturn:
        hint = ""
        if message.startswith("unrecognized arguments: "):
            words = [w for w in message.removeprefix("unrecognized arguments: ").split() if w.startswith("-")]
            hint = _did_you_mean(words, self._option_strings())
        elif match := _INVALID_CHOICE.search(message):
            hint = _did_you_mean([match["value"]], self._choices())
        self.print_usage(sys.stderr)
        see = f" See `{self.prog} --help`."
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message}.{hint}{see}\n")

    def _option_strings(self) -> list[str]:
        return [o for action in self._actions for o in action.option_strings if o.startswith("--")]

    def _choices(self) -> list[str]:
        return [str(c) for action in self._actions if action.choices for c in action.choices]


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", action="append", default=[], metavar="FILE",
                   help="YAML config file; repeat to layer several (later files win)")  # fmt: skip
    p.add_argument("--set", "-s", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override one setting, e.g. --set sft.learning_rate=1e-4 (repeatable)")  # fmt: skip


def _load(args: argparse.Namespace):
    from rlhfkit.config import load_config, replace

    cfg = load_config(args.config, args.overrides)
    if getattr(args, "output_dir", None):
        cfg = replace(cfg, **{"run.output_dir": args.output_dir})
    return cfg


def _cmd_sft(args: argparse.Namespace) -> int:
    from rlhfkit.algos.sft import run_sft
    from rlhfkit.engine.distributed import is_main_process

    cfg = _load(args)
    result = run_sft(cfg, progress=not args.no_progress)
    if not is_main_process():  # under accelerate launch one summary, from the main process
        return 0
    f = result.final
    print(f"trained {result.steps} steps in {result.train_seconds:.1f} s; eval loss {f['eval_loss']:.3f}, "
          f"ROUGE-1/2/L {f['rouge1']:.3f}/{f['rouge2']:.3f}/{f['rougeL']:.3f}, "
          f"sampled summaries toxic {f['toxic_fraction']:.1%}")  # fmt: skip
    print(f"adapter saved to {result.adapter_dir}")
    return 0


def _cmd_ppo(args: argparse.Namespace) -> int:
    from rlhfkit.algos.ppo.run import run_ppo
    from rlhfkit.config import replace
    from rlhfkit.engine.distributed import is_main_process

    cfg = _load(args)
    if args.sft_adapter:
        cfg = replace(cfg, **{"ppo.sft_adapter": args.sft_adapter})
    result = run_ppo(cfg, resume=args.resume, progress=not args.no_progress)
    if not is_main_process():  # under accelerate launch one summary, from the main process
        return 0
    ran = [h for h in result.history if not h.get("skipped")]
    if ran:
        first, last = ran[0], ran[-1]
        print(f"PPO steps {first['step']}..{last['step']}: mean score {first['score/mean']:.3f} -> "
              f"{last['score/mean']:.3f}, KL(k1) {last['kl/k1']:.3f}, beta {last['kl/beta']:.3f}; "
              f"{result.skipped_steps} step(s) skipped for non-finite scores")  # fmt: skip
    print(f"adapter saved to {result.adapter_dir}; statistics in {result.output_dir / 'metrics.jsonl'}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from rlhfkit.demo import run_demo

    run_demo(args.output_dir, seed=args.seed, overrides=args.overrides, progress=not args.no_progress,
             human=args.human, kl_comparison=args.kl_comparison)
    return 0


def _cmd_presets(args: argparse.Namespace) -> int:
    from rlhfkit.models.presets import (
        PRESETS,
        build_preset,
        ensure_preset,
        is_built,
        preset_folder,
        presets_home,
    )

    if args.build:
        folder = build_preset(args.build, args.out) if args.out else ensure_preset(args.build)
        print(f"preset {args.build} is in {folder}; load it with from_pretrained('{folder}')")
        return 0
    print(f"presets (cached in {presets_home()}; use model.name_or_path=preset:NAME; a preset not built yet is "
          "built on first use, or now with --build NAME):")  # fmt: skip
    for name, spec in PRESETS.items():
        built = is_built(name)
        print(f"  {name:22s} {'built' if built else 'not built':10s} {spec.description}")
        if built:
            print(f"  {'':22s} in {preset_folder(name)}")
    return 0


def _load_demo(args: argparse.Namespace):
    """The configuration `rlhfkit demo --set ...` runs with (default output folder and seed)."""
    from rlhfkit.demo import demo_config

    if args.config:
        # the demo starts from its packaged recipe and takes only --set; a file here would show a config no run uses
        raise RlhfkitError("--demo shows the configuration of `rlhfkit demo`, which reads no --config file (only "
                           "--set KEY=VALUE); drop --config, or drop --demo to see the configuration of a file.")  # fmt: skip
    return demo_config("runs/demo", seed=0, overrides=args.overrides)


def _cmd_config(args: argparse.Namespace) -> int:
    from rlhfkit.config import explain, to_yaml

    cfg = _load_demo(args) if args.demo else _load(args)
    if not args.explain:
        print(to_yaml(cfg), end="")
        return 0
    for key, value, doc in explain(cfg):
        print(f"{key} = {value!r}\n    {doc}")
    if not args.demo:  # the demo's own sections live in another schema; say where to find them
        print("\n(`rlhfkit demo` adds feedback.* and reward_model.* and starts from its own recipe: "
              "rlhfkit config --demo --explain lists them)")  # fmt: skip
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from rlhfkit.data.lexicon import LexiconJudge
    from rlhfkit.data.loading import load_dialogues
    from rlhfkit.engine.runtime import quiet_libraries

    quiet_libraries()
    cfg = _load(args)
    data = load_dialogues(cfg.data)
    judge = LexiconJudge()
    toxic = judge.toxic_fraction(list(data.train["summary"]))
    print(f"{cfg.data.source}: {data.total} rows, {data.kept} kept by the length filter "
          f"({cfg.data.min_chars} < chars <= {cfg.data.max_chars}); train {len(data.train)}, test {len(data.test)}; "
          f"{toxic:.1%} of training summaries contain lexicon words")  # fmt: skip
    for row in data.train.select(range(min(args.n, len(data.train)))):
        print("-" * 80)
        print(row["prompt"] + row["summary"])
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="rlhfkit",
        description="The complete RLHF loop: LoRA SFT, human feedback, reward models, PPO, evaluation.",
        epilog="Every command that trains takes --config FILE and --set KEY=VALUE; "
        "`rlhfkit config --explain` lists every setting with its meaning.",
    )
    parser.top_level = True
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("sft", help="supervised fine-tuning of a LoRA adapter on prompt -> summary pairs",
                       description="Train a LoRA adapter on dialogue -> summary pairs; evaluate loss, ROUGE and "
                       "the toxicity of sampled summaries; save adapter, tokenizer, resolved config and metrics.")  # fmt: skip
    _add_config_args(p)
    p.add_argument("--output-dir", "-o", help="where to write outputs (overrides run.output_dir)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_cmd_sft)

    p = sub.add_parser("ppo", help="PPO with a KL penalty against a frozen reference, towards a reward",
                       description="Tune the policy's LoRA adapter with PPO: sample responses (dropout off), score "
                       "them with reward.rewards, penalise KL to the reference (the SFT model when --sft-adapter is "
                       "given), and take clipped updates. Statistics go to metrics.jsonl and TensorBoard; "
                       "checkpoints every ppo.save_every steps; --resume continues a killed run exactly.")  # fmt: skip
    _add_config_args(p)
    p.add_argument("--output-dir", "-o", help="where to write outputs (overrides run.output_dir)")
    p.add_argument("--sft-adapter", metavar="DIR", help="start from this SFT adapter (becomes the reference)")
    p.add_argument("--resume", action="store_true", help="continue the run in the output folder from its last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar and sample tables")
    p.set_defaults(func=_cmd_ppo)

    p = sub.add_parser("demo", help="the whole RLHF loop, offline, on the built-in synthetic task",
                       description="Build tiny-t5 → SFT with LoRA → sample comparison pairs → annotators label them "
                       "(simulated, or you with --human) → train a reward model → PPO against it → evaluate SFT vs "
                       "PPO on held-out prompts (report.html). Finished stages are reused on a rerun.")  # fmt: skip
    p.add_argument("--output-dir", "-o", default="runs/demo", help="output folder (default: runs/demo)")
    p.add_argument("--seed", type=int, default=0, help="seed of the whole demo (default: 0)")
    p.add_argument("--set", "-s", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override a setting of the demo recipe, e.g. --set ppo.steps=60")  # fmt: skip
    p.add_argument("--human", action="store_true",
                   help="label the pairs yourself in the labeling app (opens on localhost) instead of simulated "
                   "annotators")  # fmt: skip
    p.add_argument("--kl-comparison", action="store_true",
                   help="also run PPO with beta = 0 and compare it, to see what the KL penalty does")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("presets", help="list or build the offline model presets",
                       description="Presets are small models built from a config with random weights and a "
                       "tokenizer trained on the fly, saved with save_pretrained, loaded with from_pretrained.")  # fmt: skip
    p.add_argument("--build", metavar="NAME", help="build preset NAME (into the cache, or --out)")
    p.add_argument("--out", metavar="DIR", help="folder to build into instead of the cache")
    p.set_defaults(func=_cmd_presets)

    p = sub.add_parser("config", help="print the resolved configuration",
                       description="Merge defaults, --config files and --set overrides, validate, and print.")
    _add_config_args(p)
    p.add_argument("--explain", action="store_true", help="print every key with its one-line documentation")
    p.add_argument("--demo", action="store_true",
                   help="the configuration `rlhfkit demo` runs with: its recipe and --set overrides, with the demo's "
                   "own feedback.* and reward_model.* keys")  # fmt: skip
    p.set_defaults(func=_cmd_config)

    p = sub.add_parser("data", help="show how a dataset is loaded, filtered, templated and split",
                       description="Load data.source, apply the length filter and the prompt template, and "
                       "print counts and a few prompts with their reference summaries.")  # fmt: skip
    _add_config_args(p)
    p.add_argument("-n", type=int, default=2, help="number of examples to print (default: 2)")
    p.set_defaults(func=_cmd_data)

    from rlhfkit.feedback.cli import register as register_feedback
    from rlhfkit.feedback.generate import add_generate_command

    register_feedback(sub, extra_commands=[add_generate_command])

    from rlhfkit.rewards.cli import register as register_rewards

    register_rewards(sub)

    from rlhfkit.eval.cli import register as register_eval

    register_eval(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except RlhfkitError as e:
        print(f"rlhfkit {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except BrokenPipeError:  # output piped into `head` and closed early
        return 0
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        # every file rlhfkit writes is written aside and renamed into place, so what was there is still whole
        where = f" while writing {e.filename!s}" if e.filename else ""
        print(f"rlhfkit {args.command}: error: no space left on device{where}. Files written before are intact "
              "(rlhfkit writes each file aside and renames it into place); free some disk space and run the "
              "command again (a PPO run continues from its last checkpoint with --resume).", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
