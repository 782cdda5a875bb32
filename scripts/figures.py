"""Regenerate every learning-results table and figure in README.md and docs/*.md: `make figures`.

    python scripts/figures.py            # run everything into runs/figures/, then rewrite the marked blocks
    python scripts/figures.py run        # only the runs (--only NAME ... for some of them)
    python scripts/figures.py render     # only rewrite the blocks from what runs/figures/ holds
    python scripts/figures.py check      # every marker has a renderer and is balanced; nothing is written

The runs are the commands the documents quote (the demo with seeds 0-2, seed 0 again with --kl-comparison,
the SFT configs, the MiniLM reward models of docs/rewards.md), each into its own folder under runs/figures/,
its output in runs/figures/<name>.log and its wall time in runs/figures/runs.json together with the commit and
the machine. Rendering reads their outputs (results.json, .stages/*.json, metrics.jsonl, report.json, the logs)
and rewrites only what lies between markers:

    <!-- figures:NAME -->
    ...generated...
    <!-- /figures:NAME -->

Text outside the markers is never changed; a missing, repeated, nested or unbalanced marker is an error, and
so is a marker without a renderer (or a renderer without a marker). The Python layer (parsing, rendering,
replacing) is pure and tested in tests/test_figures.py without any training.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from figures_markers import check_markers, documents, replace_blocks
from figures_render import NEEDS, RENDERERS
from figures_runs import OUT, ROOT, FiguresError, load_results, run_all


def render_all(out: Path = OUT, root: Path = ROOT, partial: bool = False) -> tuple[list[Path], dict[str, str]]:
    """Rewrite every document's marked blocks from runs/figures/. Returns the documents that changed and the
    blocks left as they were (name → why), which is only allowed with ``partial``."""
    texts = {str(p.relative_to(root)): p.read_text() for p in documents(root)}
    check_markers(texts)  # before reading any result: a marker problem is reported first
    results, missing = load_results(out)
    stale = {name: missing[NEEDS[name]] for name in RENDERERS if NEEDS[name] in missing}
    if stale and not partial:
        raise FiguresError("cannot render " + "; ".join(f"figures:{n} ({why})" for n, why in stale.items())
                           + ". Nothing was written (--partial renders the others and leaves these as they are)")
    rendered = {name: None if name in stale else fn(results) for name, fn in RENDERERS.items()}
    changed = []
    for name, text in texts.items():
        new = replace_blocks(text, rendered, name)
        if new != text:
            (root / name).write_text(new)
            changed.append(root / name)
    curves = out / "demo0" / "eval" / "plots" / "training_curves.png"
    if "kl-curves" not in stale:  # the figure the kl-curves block shows, from the report of the --kl-comparison run
        shutil.copyfile(curves, root / "docs" / "images" / "kl-penalty.png")
    return changed, stale

# --------------------------------------------------------------------------------------------------
# The command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", nargs="?", default="all", choices=("all", "run", "render", "check"))
    parser.add_argument("--only", nargs="+", metavar="RUN", help="with run: only these runs")
    parser.add_argument("--threads", type=int, help="with run: torch threads per run (OMP_NUM_THREADS); on a "
                        "machine other jobs load, 1 is much faster than a thread per core")
    parser.add_argument("--commit", default="HEAD", help="with run: the commit whose src/ and configs/ run "
                        "(default HEAD), e.g. to add runs beside others of an earlier commit")
    parser.add_argument("--partial", action="store_true",
                        help="with render: render the blocks whose runs exist, leave the others as they are (listed)")
    args = parser.parse_args(argv)
    try:
        if args.action == "check":
            texts = {str(p.relative_to(ROOT)): p.read_text() for p in documents()}
            where = check_markers(texts)
            print(f"{len(where)} marked blocks, each with a renderer: " + ", ".join(sorted(where)))
            return 0
        if args.action in ("all", "run"):
            run_all(args.only, threads=args.threads, commit=args.commit)
        if args.action in ("all", "render"):
            changed, stale = render_all(partial=args.partial)
            print("rewrote " + (", ".join(str(p.relative_to(ROOT)) for p in changed) or "nothing (already current)"))
            for name, why in stale.items():
                print(f"NOT rendered, left as it was: figures:{name} ({why})", file=sys.stderr)
    except FiguresError as error:
        print(f"figures: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
