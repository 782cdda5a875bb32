"""Preference data from files and hub datasets, cleaned and counted: what a trainer loads.

A source is a JSON-lines file (``.jsonl``, ``.json``, gzipped or not), a JSON array, a Parquet file or a hub
dataset id; its format is given or told from its fields (:mod:`rlhfkit.data.preference_readers` lists the
formats). Every source ends up as :mod:`rlhfkit.data.preferences` records.

Cleaning never hides anything: pairs whose chosen and rejected are identical, pairs with an empty
response, and ties (when dropped) are removed and *counted* in the :class:`DataReport`, which the trainer
prints and saves. A file that lacks a needed column is an error that names the column.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhfkit.data.preference_readers import JSONL_READERS, choose_format, iter_json_lines, record_from_row
from rlhfkit.data.preferences import Comparison, PreferencePair, UnpairedLabel
from rlhfkit.errors import RlhfkitError

JSON_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz")
TABLE_SUFFIXES = (".parquet",)


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


# ---------------------------------------------------------------------------------------------- sources


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
    fmt = choose_format(first[1].keys(), fmt, f"{path} (line {first[0]})")
    if fmt in JSONL_READERS:
        return fmt, JSONL_READERS[fmt](path)
    return fmt, (record_from_row(fmt, obj, f"{path}:{n}") for n, obj in iter_json_lines(path))


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
    fmt = choose_format(columns, fmt, where)
    return fmt, (record_from_row(fmt, dict(row), f"{where} row {i}") for i, row in enumerate(rows))


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


# --------------------------------------------------------------------------------- loading and cleaning


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
