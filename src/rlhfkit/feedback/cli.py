"""``rlhfkit feedback ...``: create a project, add annotators, serve the app, simulate, stats, import/export.

The top-level ``rlhfkit`` CLI calls :func:`register` and then ``args.func(args)``; every user mistake is
raised as :class:`RlhfkitError`, which it prints as one paragraph with exit status 2.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from rlhfkit.data.preference_readers import IMPORT_FORMATS
from rlhfkit.errors import RlhfkitError
from rlhfkit.feedback.config import QUESTION_TYPES, FeedbackConfig

if TYPE_CHECKING:
    from rlhfkit.feedback.store import FeedbackStore

STORE_ENV = "RLHFKIT_FEEDBACK_STORE"
_DEFAULTS = FeedbackConfig()

_STORE_HELP = (
    "the feedback store: a file path (SQLite) or a database URL such as "
    f"postgresql://user:password@host/dbname (default: ${STORE_ENV})"
)

_DESCRIPTION = """\
Human feedback for RLHF: people compare (or judge) model outputs in a small web app, the answers are
stored durably (SQLite by default, PostgreSQL by URL), and the labels are exported as TRL JSONL for
reward-model training.

typical session:
  rlhfkit feedback init --store fb.sqlite --overlap 3
  rlhfkit feedback import --store fb.sqlite pairs.jsonl --unlabeled   (or: feedback generate)
  rlhfkit feedback add-annotator alice --store fb.sqlite
  rlhfkit feedback serve --store fb.sqlite
  rlhfkit feedback stats --store fb.sqlite
  rlhfkit feedback export --store fb.sqlite --output preferences.jsonl
"""


def feedback_store() -> type[FeedbackStore]:
    """The store class, imported on first use: the rest of the CLI (sft, ppo, eval) works without the
    ``feedback`` extra installed, and a feedback command without it says what to install."""
    try:
        from rlhfkit.feedback.store import FeedbackStore
    except ModuleNotFoundError as e:
        raise RlhfkitError(f"the feedback commands need the 'feedback' extra ({e.name} is not installed): "
                           "pip install 'rlhfkit[feedback]'") from e  # fmt: skip
    return FeedbackStore


def add_store_argument(parser: argparse.ArgumentParser) -> None:
    """The ``--store`` option every feedback command takes (also for commands registered elsewhere)."""
    parser.add_argument("--store", default=os.environ.get(STORE_ENV), metavar="PATH_OR_URL", help=_STORE_HELP)


def store_target(args: argparse.Namespace) -> str:
    """The store the user named, or an error saying how to name one."""
    if not getattr(args, "store", None):
        raise RlhfkitError(f"no feedback store given: pass --store PATH_OR_URL or set {STORE_ENV}")
    return str(args.store)


def register(
    subparsers: argparse._SubParsersAction,
    *,
    extra_commands: Sequence[Callable[[argparse._SubParsersAction], None]] = (),
) -> None:
    """Add ``feedback`` and its subcommands; ``extra_commands`` add more (e.g. ``generate``) to the group."""
    feedback = subparsers.add_parser(
        "feedback",
        help="human feedback: labeling web app, preference store, import and export",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = feedback.add_subparsers(dest="feedback_command", metavar="COMMAND", required=True)

    p = commands.add_parser(
        "init",
        help="create a feedback project (store, question type, overlap)",
        description="Create a new feedback project in a SQLite file or a PostgreSQL database.",
    )
    add_store_argument(p)
    p.add_argument(
        "--question",
        default=_DEFAULTS.question_type,
        metavar="TYPE",
        help=f"what annotators answer: {' or '.join(QUESTION_TYPES)} (pairwise: which of two responses is "
        f"better; binary: is one response good). Default: {_DEFAULTS.question_type}",
    )
    p.add_argument(
        "--overlap",
        type=int,
        default=_DEFAULTS.overlap,
        help=f"different annotators per item before it is retired (default {_DEFAULTS.overlap})",
    )
    p.add_argument("--name", help="project name shown in the app (default: the file or database name)")
    p.set_defaults(func=_cmd_init)

    p = commands.add_parser(
        "add-annotator",
        help="create an annotator and print its one-time login token",
        description="Create an annotator and print the login token once (only its hash is stored). "
        "With --new-token, replace the token of an existing annotator (its old token and sessions stop working).",
    )
    p.add_argument("name", metavar="NAME", help="annotator name: letters, digits, _ . : @ + -")
    add_store_argument(p)
    p.add_argument("--admin", action="store_true", help="may see the admin page (statistics and export)")
    p.add_argument("--new-token", action="store_true", help="issue a new token for an existing annotator")
    p.set_defaults(func=_cmd_add_annotator)

    p = commands.add_parser(
        "serve",
        help="run the labeling web app",
        description="Run the labeling web app. It binds 127.0.0.1 unless told otherwise; to let others on "
        "your network in, bind 0.0.0.0 behind an HTTPS proxy and pass --secure-cookies.",
    )
    add_store_argument(p)
    p.add_argument("--host", default=_DEFAULTS.host, help=f"address to bind (default {_DEFAULTS.host})")
    p.add_argument(
        "--port", type=int, default=_DEFAULTS.port, help=f"port to listen on (default {_DEFAULTS.port})"
    )
    p.add_argument(
        "--secure-cookies", action="store_true", help="mark cookies Secure (when served over HTTPS)"
    )
    p.add_argument(
        "--session-hours",
        type=float,
        default=_DEFAULTS.session_hours,
        help=f"how long a login lasts, in hours (default {_DEFAULTS.session_hours:g})",
    )
    p.set_defaults(func=_cmd_serve)

    p = commands.add_parser(
        "simulate",
        help="label with scripted annotators (no people needed)",
        description="Scripted annotators label every open item through the same rules as the web app. "
        "They prefer the response with fewer toxicity-lexicon words and err with the given rate.",
    )
    add_store_argument(p)
    p.add_argument("--annotators", type=int, default=3, help="number of simulated annotators (default 3)")
    p.add_argument(
        "--error-rate",
        default="0.1",
        help="chance of a wrong answer: one number, or one per annotator separated by commas (default 0.1)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--tie-rule",
        default="tie",
        choices=("tie", "random"),
        help="equal lexicon counts: answer tie/both bad (tie), or prefer one at random (random)",
    )
    p.add_argument("--max-labels", type=int, help="stop after this many labels")
    p.set_defaults(func=_cmd_simulate)

    p = commands.add_parser(
        "stats",
        help="counts, progress, agreement and per-annotator figures",
        description="Counts, progress, inter-annotator agreement (percentage, Krippendorff's alpha, "
        "Fleiss' kappa) and per-annotator figures.",
    )
    add_store_argument(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_stats)

    p = commands.add_parser(
        "export",
        help="write labels as TRL JSONL (preference pairs or unpaired labels)",
        description="Write TRL JSONL. pairs: {prompt, chosen, rejected, margin} with margin 1/2/3 for "
        "slightly/clearly/much better; ties and both-bad answers are left out. unpaired: "
        "{prompt, completion, label}.",
    )
    add_store_argument(p)
    p.add_argument("--output", "-o", required=True, help="file to write (replaced atomically)")
    p.add_argument(
        "--kind", choices=("pairs", "unpaired"), help="default: pairs for pairwise projects, else unpaired"
    )
    p.add_argument(
        "--aggregate",
        choices=("label", "majority"),
        default="label",
        help="one line per annotator label (default), or per item from the majority answer",
    )
    p.add_argument("--complete-only", action="store_true", help="only items that have all their labels")
    p.set_defaults(func=_cmd_export)

    p = commands.add_parser(
        "import",
        help="import TRL JSONL, Anthropic hh-rlhf or OpenAI summarize-from-feedback comparisons",
        description="Import preference data. Each record becomes an item and, unless --unlabeled, a label by "
        "an imported annotator (the file's worker, or import:FORMAT). Importing a file twice adds nothing.",
    )
    p.add_argument("file", metavar="FILE", help="the file to import (.gz is read through gzip)")
    add_store_argument(p)
    p.add_argument(
        "--format",
        dest="fmt",
        metavar="FORMAT",
        help=f"one of {', '.join(IMPORT_FORMATS)} (default: trl for pairwise projects, trl-unpaired for binary)",
    )
    p.add_argument(
        "--unlabeled", action="store_true", help="add only the comparisons, to be labeled in the app"
    )
    p.set_defaults(func=_cmd_import)

    for extra in extra_commands:
        extra(commands)
    for command in commands.choices.values():  # every feedback command checks for its extra before it starts
        command.set_defaults(func=_with_feedback_extra(command.get_default("func")))


def _with_feedback_extra(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def checked(args: argparse.Namespace) -> int:
        feedback_store()
        return handler(args)

    return checked


# ------------------------------------------------------------------------------------------- handlers


def _cmd_init(args: argparse.Namespace) -> int:
    if args.question not in QUESTION_TYPES:
        raise RlhfkitError(
            f"unknown question type {args.question!r}; choose one of {', '.join(QUESTION_TYPES)}"
        )
    with feedback_store().create(
        store_target(args), question_type=args.question, overlap=args.overlap, name=args.name
    ) as store:
        p = store.project
        print(f"created feedback project {p.name!r} at {store.display_url}")
        print(
            f"  {p.question_type} questions, {p.overlap} annotator(s) per item, schema version {p.schema_version}"
        )
        print(f"next: rlhfkit feedback add-annotator NAME --store {args.store}")
    return 0


def _cmd_add_annotator(args: argparse.Namespace) -> int:
    store_class = feedback_store()
    from rlhfkit.feedback.annotators import add_annotator, issue_token

    with store_class.open(store_target(args)) as store:
        if args.new_token:
            token = issue_token(store, args.name, admin=True if args.admin else None)
            print(f"new login token for {args.name} (the old one no longer works); it is shown only once:")
        else:
            annotator, token = add_annotator(store, args.name, admin=args.admin)
            role = "admin" if annotator.is_admin else "annotator"
            print(f"created {role} {annotator.name}; the login token is shown only once, keep it now:")
        print(token)
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from rlhfkit.feedback.app import create_app

    config = FeedbackConfig(
        host=args.host, port=args.port, cookie_secure=args.secure_cookies, session_hours=args.session_hours
    )
    store = feedback_store().open(store_target(args), config=config)
    try:
        app = create_app(store, config=config)
        if not _is_loopback(args.host):
            print(
                f"warning: binding {args.host} exposes the app beyond this machine; serve it over HTTPS "
                "(a reverse proxy) and pass --secure-cookies",
                file=sys.stderr,
            )
        print(
            f"labeling app for {store.project.name!r} at http://{args.host}:{args.port}/login (Ctrl+C stops it)"
        )
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        store.close()
    return 0


def _parse_rates(text: str) -> float | list[float]:
    try:
        values = [float(v) for v in str(text).split(",")]
    except ValueError:
        raise RlhfkitError(
            f"--error-rate {text!r} is not a number or a comma-separated list of numbers"
        ) from None
    return values[0] if len(values) == 1 else values


def _cmd_simulate(args: argparse.Namespace) -> int:
    from rlhfkit.feedback.simulate import simulate

    with feedback_store().open(store_target(args)) as store:
        summary = simulate(
            store,
            n_annotators=args.annotators,
            error_rate=_parse_rates(args.error_rate),
            seed=args.seed,
            tie_rule=args.tie_rule,
            max_labels=args.max_labels,
        )
    per = ", ".join(f"{name} {count}" for name, count in summary.labels_per_annotator.items())
    print(f"simulated {summary.labels} labels ({per})")
    print(f"items: {summary.items_retired} of {summary.items_total} retired")
    if summary.accuracy is not None:
        print(
            f"agreement with the lexicon ground truth: {summary.accuracy:.1%} of {summary.decisive_labels} decisive labels"
        )
    return 0


def _cmd_stats(args: argparse.Namespace) -> int:
    from rlhfkit.feedback.stats import compute_stats

    with feedback_store().open(store_target(args)) as store:
        stats = compute_stats(store)
    if args.json:
        print(json.dumps(stats.to_dict(), indent=2, default=str))
    else:
        print(stats.render_text())
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from rlhfkit.feedback.export import export_pairs, export_unpaired

    with feedback_store().open(store_target(args)) as store:
        kind = args.kind or ("pairs" if store.project.question_type == "pairwise" else "unpaired")
        writer = export_pairs if kind == "pairs" else export_unpaired
        count = writer(store, args.output, aggregate=args.aggregate, complete_only=args.complete_only)
    what = "preference pairs" if kind == "pairs" else "unpaired labels"
    print(f"wrote {count} {what} to {args.output}")
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from rlhfkit.feedback.importing import import_file

    with feedback_store().open(store_target(args)) as store:
        fmt = args.fmt or ("trl" if store.project.question_type == "pairwise" else "trl-unpaired")
        result = import_file(store, args.file, fmt, labeled=not args.unlabeled)
    print(f"read {result.records} records from {args.file}: {result.items_added} new items")
    if result.identical_skipped:
        print(
            f"skipped {result.identical_skipped} pair(s) whose chosen and rejected are identical "
            "(nothing to compare)"
        )
    if not args.unlabeled:
        print(
            f"labels: {result.labels_added} added, {result.labels_existing} already present "
            f"(annotators: {', '.join(result.annotators) or 'none'})"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``rlhfkit feedback ...`` on its own (tests, or before the top-level CLI wires it in)."""
    parser = argparse.ArgumentParser(prog="rlhfkit")
    register(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except RlhfkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
