"""Preference data for reward-model training: reading every supported format, cleaning, splitting.

JSON-lines files are parsed by :mod:`rlhfkit.feedback.formats` (TRL, TRL unpaired, hh-rlhf, OpenAI
summarize-from-feedback), the same readers the feedback store imports with. Column-oriented sources
(Parquet files, hub datasets) and the feedback store's export (``rlhfkit``: TRL fields plus optional
``annotator`` and ``tie``) are converted here, row by row, into the same record types.

Cleaning never hides anything: pairs whose chosen and rejected are identical, pairs with an empty
response, and ties (when dropped) are removed and *counted* in the :class:`DataReport`, which the trainer
prints and saves. A file that lacks a needed column is an error that names the column.
"""

from __future__ import annotations

import json
import math
import random
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhfkit.errors import RlhfkitError
from rlhfkit.feedback.formats import (
    FormatError,
    PreferencePair,
    UnpairedLabel,
    iter_json_lines,
    read_hh_rlhf,
    read_summarize_comparisons,
    read_trl_pairs,
    read_trl_unpaired,
    split_hh_transcript,
)

FORMAT_FIELDS: dict[str, tuple[str, ...]] = {
    "trl": ("prompt", "chosen", "rejected"),
    "trl-unpaired": ("prompt", "completion", "label"),
    "hh-rlhf": ("chosen", "rejected"),
    "summarize": ("info", "summaries", "choice"),
    "rlhfkit": ("prompt", "chosen", "rejected"),
}
FORMAT_HELP = "; ".join(f"{name} ({', '.join(fields)})" for name, fields in FORMAT_FIELDS.items())
JSON_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz")
TABLE_SUFFIXES = (".parquet",)


@dataclass(frozen=True)
class Comparison:
    """One judgment between two responses to a prompt (``chosen`` preferred, unless ``tie``)."""

    prompt: str
    chosen: str
    rejected: str
    margin: float = 0.0
    """Required reward gap (TRL's margin); 0 when the source states none."""
    tie: bool = False
    """The judge found both equally good; ``chosen`` / ``rejected`` are then just the two candidates."""
    annotator: str | None = None


@dataclass
class DataReport:
    """What was read and what was dropped, per reason (printed and saved with the reward model)."""

    sources: dict[str, str] = field(default_factory=dict)
    """Each source and the format it was read as."""
    read: int = 0
    kept: int = 0
    dropped_identical: int = 0
    """Pairs whose chosen and rejected texts are the same (no preference can be learnt from them)."""
    dropped_empty: int = 0
    """Pairs or labels with an empty (or whitespace-only) response."""
    ties_dropped: int = 0
    ties_half: int = 0
    """Ties kept as half a win for each side."""

    def warnings(self) -> list[str]:
        notes = []
        if self.dropped_identical:
            notes.append(f"{self.dropped_identical} pairs dropped because chosen and rejected are identical")
        if self.dropped_empty:
            notes.append(f"{self.dropped_empty} examples dropped because a response is empty")
        if self.ties_dropped:
            notes.append(f"{self.ties_dropped} ties dropped (set data.ties=half to count them as half a win)")
        return notes


@dataclass
class PreferenceData:
    """Cleaned preference data: comparisons (pairs) or unpaired good/bad labels, never both."""

    comparisons: list[Comparison]
    labels: list[UnpairedLabel]
    report: DataReport

    @property
    def kind(self) -> str:
        return "labels" if self.labels else "pairs"

    def __len__(self) -> int:
        return len(self.labels) if self.labels else len(self.comparisons)


# --------------------------------------------------------------------------------------------------
# Formats


def detect_format(keys: Iterable[str]) -> str | None:
    """The format whose fields ``keys`` has, or None."""
    k = set(keys)
    if {"info", "summaries", "choice"} <= k:
        return "summarize"
    if {"prompt", "completion", "label"} <= k:
        return "trl-unpaired"
    if {"prompt", "chosen", "rejected"} <= k:
        return "rlhfkit" if k & {"tie", "annotator"} else "trl"
    if {"chosen", "rejected"} <= k:
        return "hh-rlhf"
    return None


def _check_fields(keys: Iterable[str], fmt: str, where: str) -> None:
    present = set(keys)
    missing = [f for f in FORMAT_FIELDS[fmt] if f not in present]
    if missing:
        raise RlhfkitError(
            f"{where} lacks {'column' if len(missing) == 1 else 'columns'} {', '.join(repr(m) for m in missing)}, "
            f"needed by the {fmt} format ({', '.join(FORMAT_FIELDS[fmt])}). It has: {', '.join(sorted(present)) or 'nothing'}."
        )


def _choose_format(keys: Iterable[str], fmt: str, where: str) -> str:
    keys = list(keys)
    if fmt == "auto":
        found = detect_format(keys)
        if found is None:
            closest = max(FORMAT_FIELDS, key=lambda f: len(set(FORMAT_FIELDS[f]) & set(keys)) / len(FORMAT_FIELDS[f]))
            missing = [f for f in FORMAT_FIELDS[closest] if f not in keys]
            near = (f" It is closest to the {closest} format, which also needs {', '.join(repr(m) for m in missing)}."
                    if len(missing) < len(FORMAT_FIELDS[closest]) else "")  # fmt: skip
            raise RlhfkitError(
                f"cannot tell the preference format of {where} from its fields ({', '.join(sorted(keys)) or 'none'})."
                f"{near} Known formats and their fields: {FORMAT_HELP}. Rename the columns or set data.format."
            )
        return found
    if fmt not in FORMAT_FIELDS:
        raise RlhfkitError(f"unknown preference format {fmt!r}; choose auto or one of {', '.join(FORMAT_FIELDS)}.")
    _check_fields(keys, fmt, where)
    return fmt


def _text(row: dict, name: str, where: str) -> str:
    if name not in row or row[name] is None:
        raise FormatError(f"{where}: missing field '{name}'")
    value = row[name]
    if not isinstance(value, str):
        raise FormatError(f"{where}: field '{name}' must be str, found {type(value).__name__}")
    return value


def _record_from_row(fmt: str, row: dict, where: str) -> PreferencePair | UnpairedLabel | Comparison:
    """One row of a table (Parquet, hub dataset, JSON array) or of the feedback export, as a record."""
    if fmt in ("trl", "rlhfkit"):
        margin = row.get("margin")
        if margin is not None and (
            isinstance(margin, bool) or not isinstance(margin, (int, float)) or not math.isfinite(margin)
        ):
            raise FormatError(f"{where}: field 'margin' must be a finite number, found {margin!r}")
        tie = row.get("tie") or False
        if not isinstance(tie, bool):
            raise FormatError(f"{where}: field 'tie' must be true or false, found {tie!r}")
        annotator = row.get("annotator")
        return Comparison(_text(row, "prompt", where), _text(row, "chosen", where), _text(row, "rejected", where),
                          float(margin or 0.0), tie, None if annotator is None else str(annotator))  # fmt: skip
    if fmt == "trl-unpaired":
        label = row.get("label")
        if not isinstance(label, bool):
            raise FormatError(f"{where}: field 'label' must be true or false, found {label!r}")
        return UnpairedLabel(_text(row, "prompt", where), _text(row, "completion", where), label)
    if fmt == "hh-rlhf":
        prompt, chosen = split_hh_transcript(_text(row, "chosen", where), where, "chosen")
        other, rejected = split_hh_transcript(_text(row, "rejected", where), where, "rejected")
        if other != prompt:
            raise FormatError(f"{where}: 'chosen' and 'rejected' differ before their last assistant turn")
        return PreferencePair(prompt, chosen, rejected)
    if fmt == "summarize":
        info = row.get("info") or {}
        prompt = info.get("post") if isinstance(info, dict) else None
        prompt = prompt if prompt is not None else (info.get("article") if isinstance(info, dict) else None)
        if not isinstance(prompt, str):
            raise FormatError(f"{where}: missing field 'info.post' (or 'info.article')")
        summaries = row.get("summaries")
        if not isinstance(summaries, list) or len(summaries) != 2:
            raise FormatError(f"{where}: field 'summaries' must hold 2 summaries")
        texts = [s.get("text") if isinstance(s, dict) else None for s in summaries]
        if not all(isinstance(t, str) for t in texts):
            raise FormatError(f"{where}: every 'summaries[i].text' must be a string")
        choice = row.get("choice")
        if choice not in (0, 1) or isinstance(choice, bool):
            raise FormatError(f"{where}: field 'choice' must be 0 or 1, found {choice!r}")
        worker = row.get("worker")
        return PreferencePair(prompt, texts[choice], texts[1 - choice], annotator=None if worker is None else str(worker))
    raise RlhfkitError(f"unknown preference format {fmt!r}")


_JSONL_READERS = {
    "trl": read_trl_pairs,
    "trl-unpaired": read_trl_unpaired,
    "hh-rlhf": read_hh_rlhf,
    "summarize": read_summarize_comparisons,
}


# --------------------------------------------------------------------------------------------------
# Sources


def _is_path_like(source: str) -> bool:
    """A file path (existing, or clearly meant as one) rather than a hub dataset id like Anthropic/hh-rlhf."""
    name = source.lower()
    file_suffixes = JSON_SUFFIXES + TABLE_SUFFIXES + (".csv", ".tsv", ".txt", ".arrow", ".xlsx", ".gz")
    return (Path(source).expanduser().exists() or source.startswith((".", "/", "~")) or name.endswith(file_suffixes)
            or source.count("/") > 1)  # fmt: skip


def read_source(source: str, fmt: str = "auto", hub_split: str = "train") -> tuple[str, Iterator[Any]]:
    """(format, records) of one file or hub dataset; records are PreferencePair, UnpairedLabel or Comparison."""
    if _is_path_like(source):
        path = Path(source).expanduser()
        name = path.name.lower()
        if not path.is_file():
            raise RlhfkitError(f"preference file {source!r} does not exist; check data.train_files / data.eval_files.")
        if name.endswith(JSON_SUFFIXES):
            return _read_json(path, fmt)
        if name.endswith(TABLE_SUFFIXES):
            import pyarrow.parquet as pq

            try:
                table = pq.read_table(path)
            except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a damaged file
                raise RlhfkitError(f"cannot read {source!r} as Parquet: {str(e).splitlines()[0]}") from None
            return _read_rows(table.to_pylist(), fmt, source, table.column_names)
        raise RlhfkitError(
            f"unknown file format of {source!r}: preference files must end in {', '.join(JSON_SUFFIXES + TABLE_SUFFIXES)}, "
            "or name a hub dataset id (e.g. Anthropic/hh-rlhf)."
        )
    return _read_hub(source, fmt, hub_split)


def _read_json(path: Path, fmt: str) -> tuple[str, Iterator[Any]]:
    name = path.name.lower()
    if name.endswith((".json", ".json.gz")) and _looks_like_array(path):
        rows = json.loads(_read_text(path))
        if not rows:
            return (fmt if fmt != "auto" else "trl"), iter(())
        if not all(isinstance(r, dict) for r in rows):
            raise RlhfkitError(f"{path}: a JSON array of preference records must hold objects only.")
        return _read_rows(rows, fmt, str(path))
    first = next(iter_json_lines(path), None)
    if first is None:
        return (fmt if fmt != "auto" else "trl"), iter(())
    fmt = _choose_format(first[1].keys(), fmt, f"{path} (line {first[0]})")
    if fmt in _JSONL_READERS:
        return fmt, _JSONL_READERS[fmt](path)
    return fmt, (_record_from_row(fmt, obj, f"{path}:{n}") for n, obj in iter_json_lines(path))


def _read_text(path: Path) -> str:
    import gzip

    if path.name.endswith(".gz"):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return f.read()
    return path.read_text(encoding="utf-8")


def _looks_like_array(path: Path) -> bool:
    return _read_text(path).lstrip()[:1] == "["


def _read_rows(rows: Any, fmt: str, where: str, columns: Sequence[str] | None = None) -> tuple[str, Iterator[Any]]:
    """(format, records) of table rows (dicts); the format is told by ``columns`` (default: all keys)."""
    if columns is None:
        columns = list(rows.column_names) if hasattr(rows, "column_names") else sorted({k for r in rows for k in r})
    fmt = _choose_format(columns, fmt, where)
    return fmt, (_record_from_row(fmt, dict(row), f"{where} row {i}") for i, row in enumerate(rows))


def _read_hub(source: str, fmt: str, split: str) -> tuple[str, Iterator[Any]]:
    from datasets import load_dataset

    try:
        table = load_dataset(source, split=split)
    except Exception as e:  # noqa: BLE001 - datasets raises many types (connection, not found, split)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RlhfkitError(
            f"could not load the hub dataset {source!r} (split {split!r}): {first}. With HF_HUB_OFFLINE=1 nothing is "
            "downloaded; give a local .jsonl or .parquet file instead."
        ) from None
    return _read_rows(table, fmt, source)


# --------------------------------------------------------------------------------------------------
# Loading and cleaning


def load_preferences(sources: Sequence[str], fmt: str = "auto", hub_split: str = "train",
                     ties: str = "drop") -> PreferenceData:  # fmt: skip
    """Read and clean every source; raise when nothing usable is left or pairs and labels are mixed."""
    report = DataReport()
    comparisons: list[Comparison] = []
    labels: list[UnpairedLabel] = []
    for source in sources:
        used, records = read_source(source, fmt, hub_split)
        report.sources[source] = used
        for record in records:
            report.read += 1
            if isinstance(record, UnpairedLabel):
                if not record.completion.strip():
                    report.dropped_empty += 1
                    continue
                labels.append(record)
                continue
            c = _as_comparison(record)
            if not c.chosen.strip() or not c.rejected.strip():
                report.dropped_empty += 1
            elif c.chosen == c.rejected:
                report.dropped_identical += 1
            elif c.tie and ties == "drop":
                report.ties_dropped += 1
            else:
                report.ties_half += c.tie
                comparisons.append(c)
    if comparisons and labels:
        raise RlhfkitError(
            "the data mixes preference pairs and unpaired good/bad labels; train on one kind at a time "
            "(pairs train a Bradley–Terry reward model, unpaired labels a binary classifier)."
        )
    report.kept = len(comparisons) + len(labels)
    if report.kept == 0:
        raise RlhfkitError(
            f"no usable preference examples in {', '.join(sources)}: read {report.read}, "
            + ("; ".join(report.warnings()) or "the files are empty")
            + "."
        )
    return PreferenceData(comparisons, labels, report)


def _as_comparison(record: PreferencePair | Comparison) -> Comparison:
    if isinstance(record, Comparison):
        return record
    return Comparison(record.prompt, record.chosen, record.rejected, float(record.margin or 0.0),
                      annotator=record.annotator)  # fmt: skip


def split_by_prompt(items: Sequence[Any], test_size: float, seed: int) -> tuple[list[Any], list[Any]]:
    """Hold out ``test_size`` of the distinct prompts; every item of a prompt lands on the same side.

    Splitting by prompt, not by pair, keeps the held-out accuracy honest: a model must not have seen
    another judgment about the same prompt (often with the very same responses) during training.
    """
    groups: dict[str, list[Any]] = defaultdict(list)
    for item in items:
        groups[item.prompt].append(item)
    prompts = sorted(groups)
    if len(prompts) < 2:
        raise RlhfkitError(
            "all preference examples share one prompt, so none can be held out by prompt; give held-out data "
            "in data.eval_files."
        )
    random.Random(seed).shuffle(prompts)
    n_test = min(len(prompts) - 1, max(1, round(test_size * len(prompts))))
    test = [x for p in prompts[:n_test] for x in groups[p]]
    train = [x for p in prompts[n_test:] for x in groups[p]]
    return train, test


def cap_by_prompt(items: list[Any], limit: int | None) -> list[Any]:
    """The first whole prompt groups of ``items`` holding at least ``limit`` items (all when None)."""
    if limit is None or len(items) <= limit:
        return items
    out: list[Any] = []
    seen: set[str] = set()
    for item in items:
        if item.prompt not in seen and len(out) >= limit:
            break
        seen.add(item.prompt)
        out.append(item)
    return out


# --------------------------------------------------------------------------------------------------
# Agreement between annotators


def annotator_agreement(comparisons: Sequence[Comparison]) -> dict[str, Any] | None:
    """How often two annotators of the same comparison agree; None without two annotators on any.

    A unit is one comparison (prompt and the unordered pair of responses); each annotator's category is
    the response they preferred, or "tie". Human agreement on summarisation and instruction data is
    about 73–77 % (Stiennon et al. 2020; Ouyang et al. 2022), which bounds a reward model's accuracy
    measured against single labels.
    """
    from rlhfkit.feedback.agreement import agreement_with_majority, percent_agreement

    units: dict[tuple[str, frozenset[str]], dict[str, str]] = defaultdict(dict)
    for c in comparisons:
        if c.annotator is None:
            continue
        units[(c.prompt, frozenset((c.chosen, c.rejected)))][c.annotator] = "tie" if c.tie else c.chosen
    shared = {k: v for k, v in units.items() if len(v) >= 2}
    if not shared:
        return None
    pct = percent_agreement([list(v.values()) for v in shared.values()])
    majority = agreement_with_majority(shared)
    agreed = sum(m.agreed for m in majority.values())
    compared = sum(m.compared for m in majority.values())
    return {
        "units": len(shared),
        "annotators": len({a for v in shared.values() for a in v}),
        "pairwise_agreement": pct,
        "agreement_with_majority_of_others": agreed / compared if compared else None,
    }
