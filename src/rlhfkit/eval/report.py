"""report.html: one self-contained file (plots embedded as PNG data URIs), rendered with Jinja2.

Sections: the headline figures with their intervals, the paired comparisons, distributions of each
measure per policy, the PPO training curves of every policy that has a metrics.jsonl beside its adapter,
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


def _png(fig: Any) -> bytes:
    """A matplotlib figure as PNG bytes (and the figure closed)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def means_plot(results: dict[str, Any], measures: list[Measure]) -> bytes:
    """Mean of each measure per policy, with its bootstrap interval as an error bar."""
    plt = _pyplot()
    names = results["policy_order"]
    fig, axes = plt.subplots(1, len(measures), figsize=(3.0 * len(measures), 3.0), squeeze=False)
    for ax, m in zip(axes[0], measures):
        stats = [results["policies"][n]["measures"][m.key] for n in names]
        means = [s["mean"] for s in stats]
        errors = [[s["mean"] - s["mean_ci"]["low"] for s in stats], [s["mean_ci"]["high"] - s["mean"] for s in stats]]
        ax.bar(range(len(names)), means, yerr=errors, capsize=4, color=[f"C{i}" for i in range(len(names))])
        ax.set_xticks(range(len(names)), names, rotation=20)
        arrow = {True: " ↑", False: " ↓", None: ""}[m.higher_is_better]
        ax.set_title(m.label + arrow, fontsize=9)
    fig.tight_layout()
    return _png(fig)


def histograms_plot(samples: list[PolicySamples], measures: list[Measure]) -> bytes:
    """Distribution of each measure per policy, overlaid (before/after at a glance)."""
    import numpy as np

    plt = _pyplot()
    fig, axes = plt.subplots(1, len(measures), figsize=(3.0 * len(measures), 2.8), squeeze=False)
    for ax, m in zip(axes[0], measures):
        everything = np.concatenate([np.asarray(s.values[m.key], dtype=float) for s in samples])
        lo, hi = float(everything.min()), float(everything.max())
        bins = np.linspace(lo, hi if hi > lo else lo + 1.0, 21)
        for i, s in enumerate(samples):
            ax.hist(s.values[m.key], bins=bins, alpha=0.5, label=s.name, color=f"C{i}")
        ax.set_title(m.label, fontsize=9)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def training_curves(samples: list[PolicySamples]) -> tuple[bytes | None, list[str]]:
    """PPO curves of every policy whose run folder (the adapter's parent) holds a PPO metrics.jsonl."""
    from rlhfkit.engine.metrics import read_metrics

    runs = []
    for s in samples:
        metrics = Path(s.path).parent / "metrics.jsonl"
        if s.path != "base" and metrics.is_file():
            records = [r for r in read_metrics(metrics) if "score/mean" in r]
            if records:
                runs.append((s.name, records, str(metrics)))
    if not runs:
        return None, []
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(TRAINING_CURVES), figsize=(3.0 * len(TRAINING_CURVES), 2.8), squeeze=False)
    for ax, (key, title) in zip(axes[0], TRAINING_CURVES.items()):
        for i, (name, records, _) in enumerate(runs):
            points = [(r["step"], r[key]) for r in records if r.get(key) is not None]
            if points:
                ax.plot(*zip(*points), label=name, color=f"C{i + 1}")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("PPO step", fontsize=8)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return _png(fig), [path for _, _, path in runs]


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
