"""The verdict (terminal and report alike), the terminal at 80 columns, readable plots, the report's top."""

from __future__ import annotations

import struct

from handbuilt import MEASURES, PROMPTS, REFERENCES, results_of, three_policies
from rich.console import Console

from rlhfkit.config import Config, replace
from rlhfkit.eval.cli import print_headline
from rlhfkit.eval.report import (
    DPI,
    FIGURE_WIDTH_PX,
    histograms_figure,
    means_figure,
    means_plot,
    write_report,
)
from rlhfkit.eval.samples import before_after_tables
from rlhfkit.eval.verdict import judgement, verdict_lines


def test_judgement_needs_the_whole_interval_on_one_side_of_zero():
    assert judgement(False, -0.4, -0.1) == "better" and judgement(True, -0.4, -0.1) == "worse"
    assert judgement(True, 0.1, 0.4) == "better" and judgement(False, 0.1, 0.4) == "worse"
    assert judgement(True, -0.1, 0.4) == "no clear change" and judgement(None, 1.0, 2.0) is None


def test_the_verdict_covers_every_policy_against_the_first():
    results = results_of(three_policies())
    lines = verdict_lines(results)
    assert len(lines) == 2 and lines[0].startswith("ppo against sft: ") and lines[1].startswith("ppo-beta0 against sft: ")
    # the lexicon's toxicity is a share: percent and points; 16/40 toxic → 4/40 and 2/40
    assert "toxicity (lexicon) 40.0% → 10.0% (-30.0 points" in lines[0]
    assert "toxicity (lexicon) 40.0% → 5.0% (-35.0 points" in lines[1]
    # ppo's ROUGE-L moves by ±0.01 around sft's: no clear change; β = 0's drops by 0.4: worse
    assert "ROUGE-L 0.549 → 0.549" in lines[0] and "): no clear change." in lines[0]
    assert "ROUGE-L 0.549 → 0.149 (-0.400" in lines[1] and "): worse." in lines[1]
    assert "KL to sft 15.50 nats per response" in lines[1] and "repeated responses 0.0% → 0.0%" in lines[1]


def test_the_terminal_reads_at_80_columns_with_three_policies():
    console = Console(width=80, record=True, force_terminal=False)
    results = results_of(three_policies())
    print_headline(results, console)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    # every figure whole on its line: no number or interval broken over two lines
    for fragment in ("[0.249, 0.550]", "[-0.425, -0.150]", "[-0.400, -0.400]", "[15.1, 15.8]"):
        assert fragment in text, fragment
    assert "ppo − sft, paired on the same prompts" in text and "ppo-beta0 − sft, paired on the same prompts" in text
    # the verdict is the report's, word for word (rich only wraps it)
    flat = " ".join(text.split())
    assert all(" ".join(line.split()) in flat for line in verdict_lines(results))


def _font_px(fig) -> list[float]:
    """Pixel size of every visible text of ``fig`` shown at its own size (DPI pixels per inch)."""
    texts = [t for t in fig.findobj(lambda a: hasattr(a, "get_fontsize") and hasattr(a, "get_text"))
             if t.get_visible() and t.get_text().strip()]  # fmt: skip
    fig.canvas.draw()  # ticks exist once drawn
    texts += [t for ax in fig.axes for t in ax.get_xticklabels() + ax.get_yticklabels() if t.get_text().strip()]
    return [t.get_fontsize() * DPI / 72 for t in texts]


def test_plots_are_readable_at_their_embedded_size_and_labelled():
    import matplotlib.pyplot as plt

    samples = three_policies()
    results = results_of(samples)
    png = means_plot(results, MEASURES)
    width = struct.unpack(">I", png[16:20])[0]  # the PNG header's width
    assert width == FIGURE_WIDTH_PX <= 1168  # the report's column (1200px less 2rem): shown at its own size

    means = means_figure(results, MEASURES)
    assert min(_font_px(means)) >= 10
    labels = [ax.get_ylabel() for ax in means.axes if ax.get_visible()]
    assert labels[0] == "toxicity (lexicon)\n(lower is better)" and labels[2] == "ROUGE-L\n(higher is better)"
    assert labels[3] == "KL to reference (nats)\n(no better direction)"
    plt.close(means)

    hist = histograms_figure(samples, MEASURES)
    assert min(_font_px(hist)) >= 10
    assert len(hist.legends) == 1 and [t.get_text() for t in hist.legends[0].get_texts()] == ["sft", "ppo", "ppo-beta0"]
    assert all(not ax.get_legend() for ax in hist.axes)  # one shared legend, above the panels
    plt.close(hist)


def test_the_report_opens_with_the_verdict_and_sorts_by_the_primary_measure(tmp_path):
    samples = three_policies()
    results = results_of(samples)
    cfg = replace(Config(), **{"eval.table_rows": 4})
    tables = before_after_tables(samples, MEASURES, PROMPTS, REFERENCES)
    html = write_report(tmp_path / "report.html", results, samples, MEASURES, cfg, tables).read_text()
    top = html.split("<h2>")[0]
    for line in verdict_lines(results):
        assert line.replace("'", "&#39;") in top
    assert "Sorted by the change in toxicity (lexicon), the primary measure" in html
    assert "ordered by the change\n    in reward model" in html
    assert "\ufffd" not in html and "repeated responses (collapse check)" in html
