"""report.html: one self-contained file (plots embedded as PNG data URIs), rendered with Jinja2.

Sections: the verdict in words (the terminal's, from :mod:`rlhfkit.eval.verdict`), the figures per policy
with their intervals, the paired comparisons, distributions of each measure per policy, the PPO training curves of every policy that has a metrics.jsonl beside its adapter,
the reward model's held-out accuracy, and the before/after table (best and worst changes).
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlhfkit.io import write_bytes_atomic, write_text_atomic

if TYPE_CHECKING:
    from rlhfkit.config import Config
    from rlhfkit.eval.measures import Measure
    from rlhfkit.eval.samples import BeforeAfter, PolicySamples

# PPO statistics plotted as training curves: metrics.jsonl key → axis title
TRAINING_CURVES = {
    "score/mean": "mean score",
    "kl/k1": "KL to reference (k1, per response)",
    "kl/beta": "β (KL coefficient)",
    "policy/entropy": "entropy (per token)",
    "value/loss": "value loss",
}


# Every figure is FIGURE_WIDTH_PX wide, no wider than the report's column (1200px less its padding), so the
# page shows it at its own size: a font of P points is then P * DPI / 72 pixels on screen (9 pt = 13.75 px).
DPI = 110
FIGURE_WIDTH_PX = 1100
FONT_PT = {"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "xtick.labelsize": 9,
           "ytick.labelsize": 9, "legend.fontsize": 9, "figure.titlesize": 11}  # fmt: skip
DIRECTION = {True: "higher is better", False: "lower is better", None: "no better direction"}


def _png(fig: Any) -> bytes:
    """A matplotlib figure as PNG bytes, at its own size (FIGURE_WIDTH_PX wide), and the figure closed."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    plt.close(fig)
    return buffer.getvalue()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def _panels(n: int, row_height: float) -> tuple[Any, list[Any]]:
    """A figure FIGURE_WIDTH_PX wide with ``n`` panels in rows of at most 4 (spare panels hidden)."""
    plt = _pyplot()
    rows = -(-n // 4)
    cols = -(-n // rows)
    with plt.rc_context(FONT_PT):
        fig, axes = plt.subplots(rows, cols, figsize=(FIGURE_WIDTH_PX / DPI, row_height * rows), squeeze=False,
                                 layout="constrained")  # fmt: skip
    flat = [ax for row in axes for ax in row]
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _fonts(fig: Any) -> None:
    """FONT_PT on every text of ``fig`` (rc_context covers only what exists while it is active)."""
    for ax in fig.axes:
        ax.tick_params(labelsize=FONT_PT["xtick.labelsize"])
        ax.title.set_fontsize(FONT_PT["axes.titlesize"])
        ax.xaxis.label.set_fontsize(FONT_PT["axes.labelsize"])
        ax.yaxis.label.set_fontsize(FONT_PT["axes.labelsize"])


def _shared_legend(fig: Any, names: list[str], colors: list[str], kind: str) -> None:
    """One legend above all panels, naming each policy's colour once."""
    from matplotlib.patches import Patch

    handles = [Patch(color=c, alpha=0.6 if kind == "hist" else 1.0, label=n) for n, c in zip(names, colors)]
    fig.legend(handles=handles, loc="outside upper center", ncols=len(names), title="policy",
               fontsize=FONT_PT["legend.fontsize"], title_fontsize=FONT_PT["legend.fontsize"])  # fmt: skip


def means_figure(results: dict[str, Any], measures: list[Measure]) -> Any:
    """Mean of each measure per policy, with its bootstrap interval as an error bar; the y axis names the
    measure and its direction."""
    names = results["policy_order"]
    fig, axes = _panels(len(measures), 2.7)
    pct = round(results["confidence"] * 100)
    for ax, m in zip(axes, measures):
        stats = [results["policies"][n]["measures"][m.key] for n in names]
        means = [s["mean"] for s in stats]
        errors = [[s["mean"] - s["mean_ci"]["low"] for s in stats], [s["mean_ci"]["high"] - s["mean"] for s in stats]]
        ax.bar(range(len(names)), means, yerr=errors, capsize=4, color=[f"C{i}" for i in range(len(names))])
        ax.set_xticks(range(len(names)), names, rotation=20 if len(names) > 2 else 0)
        ax.set_ylabel(f"{m.label}\n({DIRECTION[m.higher_is_better]})")
    fig.suptitle(f"Mean per policy, with its {pct}% bootstrap interval", fontsize=FONT_PT["figure.titlesize"])
    _fonts(fig)
    return fig


def means_plot(results: dict[str, Any], measures: list[Measure]) -> bytes:
    return _png(means_figure(results, measures))


def histograms_figure(samples: list[PolicySamples], measures: list[Measure]) -> Any:
    """Distribution of each measure per policy, overlaid (before/after at a glance), one legend for all."""
    import numpy as np

    fig, axes = _panels(len(measures), 2.5)
    for ax, m in zip(axes, measures):
        everything = np.concatenate([np.asarray(s.values[m.key], dtype=float) for s in samples])
        lo, hi = float(everything.min()), float(everything.max())
        bins = np.linspace(lo, hi if hi > lo else lo + 1.0, 21)
        for i, s in enumerate(samples):
            ax.hist(s.values[m.key], bins=bins, alpha=0.6, color=f"C{i}")
        ax.set_xlabel(m.label)
        ax.set_ylabel("prompts")
    _shared_legend(fig, [s.name for s in samples], [f"C{i}" for i in range(len(samples))], "hist")
    _fonts(fig)
    return fig


def histograms_plot(samples: list[PolicySamples], measures: list[Measure]) -> bytes:
    return _png(histograms_figure(samples, measures))


def training_curves_figure(samples: list[PolicySamples]) -> tuple[Any, list[str]]:
    """PPO curves of every policy whose run folder (the adapter's parent) holds a PPO metrics.jsonl; each policy
    keeps its colour of the other plots."""
    from rlhfkit.engine.metrics import read_metrics

    runs = []
    for i, s in enumerate(samples):
        metrics = Path(s.path).parent / "metrics.jsonl"
        if s.path != "base" and metrics.is_file():
            records = [r for r in read_metrics(metrics) if "score/mean" in r]
            if records:
                runs.append((s.name, f"C{i}", records, str(metrics)))
    if not runs:
        return None, []
    fig, axes = _panels(len(TRAINING_CURVES), 2.5)
    for ax, (key, title) in zip(axes, TRAINING_CURVES.items()):
        for name, color, records, _ in runs:
            points = [(r["step"], r[key]) for r in records if r.get(key) is not None]
            if points:
                ax.plot(*zip(*points), color=color)
        ax.set_title(title)
        ax.set_xlabel("PPO step")
    _shared_legend(fig, [name for name, *_ in runs], [color for _, color, *_ in runs], "line")
    _fonts(fig)
    return fig, [path for *_, path in runs]


def training_curves(samples: list[PolicySamples]) -> tuple[bytes | None, list[str]]:
    fig, sources = training_curves_figure(samples)
    return (None, []) if fig is None else (_png(fig), sources)


def reward_model_section(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Held-out accuracy (with its interval and per margin bucket) and the loss curve of each reward model."""
    sections = []
    for rm in results.get("reward_models", []):
        heldout = rm.get("heldout") or {}
        loss_curve = Path(rm["folder"]) / "loss_curve.png"
        image = data_uri(loss_curve.read_bytes()) if loss_curve.is_file() else None
        sections.append({"path": rm["path"], "heldout": heldout, "loss_curve": image,
                         "agreement": rm.get("annotator_agreement")})  # fmt: skip
    return sections


def write_report(path: Path, results: dict[str, Any], samples: list[PolicySamples], measures: list[Measure],
                 cfg: Config, before_after: BeforeAfter) -> Path:  # fmt: skip
    """Render report.html next to the other outputs; the plots also go to plots/*.png for slides and docs.

    ``before_after`` holds the tables the CSV files were written from; the report shows the best and the
    worst ``eval.table_rows`` of each.
    """
    from jinja2 import Environment, PackageLoader, select_autoescape

    from rlhfkit.eval.verdict import verdict_lines

    env = Environment(loader=PackageLoader("rlhfkit.eval", "templates"), autoescape=select_autoescape(["html"]))
    env.filters["num"] = _num
    env.filters["pvalue"] = _pvalue
    curves, curve_sources = training_curves(samples)
    plots = {"means": means_plot(results, measures), "histograms": histograms_plot(samples, measures)}
    if curves is not None:
        plots["training_curves"] = curves
    for name, png in plots.items():
        write_bytes_atomic(path.parent / "plots" / f"{name}.png", png)
    tables = []
    n = cfg.eval.table_rows
    for table in before_after.tables:
        rows = table.rows
        # the best and the worst changes: half the shown rows from each end of the sorted table
        shown = rows if len(rows) <= n else (rows[: (n + 1) // 2] + rows[len(rows) - n // 2 :])
        tables.append({"a": table.a, "b": table.b, "rows": shown, "total": len(rows)})
    html = env.get_template("report.html.j2").render(
        verdict=verdict_lines(results),
        results=results,
        measures=measures,
        names=results["policy_order"],
        means_plot=data_uri(plots["means"]),
        histograms_plot=data_uri(plots["histograms"]),
        curves_plot=data_uri(curves) if curves is not None else None,
        curve_sources=curve_sources,
        reward_models=reward_model_section(results),
        tables=tables,
        table_measure=before_after.measure,
        tiebreak=before_after.tiebreak,
    )
    write_text_atomic(path, html)
    return path


def _num(value: Any, digits: int = 3) -> str:
    if value is None or value == "":
        return "–"
    if isinstance(value, float):
        text = f"{value:.{digits}g}" if abs(value) >= 10**5 else f"{value:.{digits}f}"
        return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.000"
    return str(value)


def _pvalue(value: float) -> str:
    return f"{value:.2g}" if value < 0.001 else f"{value:.3f}"
