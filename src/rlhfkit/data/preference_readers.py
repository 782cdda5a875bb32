"""Reading preference data in every supported format into :mod:`rlhfkit.data.preferences` records.

Pure functions only (no database, no extras): the feedback store imports with them and the reward-model
trainer reads its files through them.

Formats
-------
``trl``
    TRL's explicit-prompt preference JSONL, one object per line::

        {"prompt": "...", "chosen": "...", "rejected": "...", "margin": 2.0}

    ``margin`` is optional on input. TRL's reward trainer subtracts it inside the Bradley–Terry loss
    (``-log σ(r_chosen - r_rejected - margin)``), so a larger margin asks for a larger reward gap.
``trl-unpaired``
    TRL's unpaired (KTO-style) JSONL: ``{"prompt": "...", "completion": "...", "label": true}``.
``hh-rlhf``
    Anthropic's helpful/harmless data: ``{"chosen": transcript, "rejected": transcript}``. Both
    transcripts end with an assistant turn; each is split after its last ``"\\n\\nAssistant:"``, the part
    up to and including that marker is the prompt (it must be the same in both) and the rest (its
    leading space kept, so prompt + response is the original transcript) is the response.
``summarize``
    OpenAI's summarize-from-feedback comparisons: ``info.post`` (Reddit TL;DR) or ``info.article``
    (CNN/DM) is the prompt, ``summaries[i].text`` the candidates, ``choice`` the index of the
    preferred one and ``worker`` the labeler.
``rlhfkit``
    The feedback store's export: the ``trl`` fields plus an optional ``annotator`` and ``tie``.

JSON-lines files are read line by line (:func:`read_pairs`, :func:`read_trl_unpaired`, ...); rows of a
table (Parquet, a hub dataset, a JSON array) one at a time by :func:`record_from_row`, the format told by
the columns (:func:`detect_format`). Files ending in ``.gz`` are read through gzip. Every error names the
file, the line (or row) and the field.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from rlhfkit.data.preferences import Comparison, FormatError, PreferencePair, UnpairedLabel
from rlhfkit.errors import RlhfkitError

IMPORT_FORMATS = ("trl", "trl-unpaired", "hh-rlhf", "summarize")
HH_ASSISTANT_MARKER = "\n\nAssistant:"
FORMAT_FIELDS: dict[str, tuple[str, ...]] = {
    "trl": ("prompt", "chosen", "rejected"),
    "trl-unpaired": ("prompt", "completion", "label"),
    "hh-rlhf": ("chosen", "rejected"),
    "summarize": ("info", "summaries", "choice"),
    "rlhfkit": ("prompt", "chosen", "rejected"),
}
FORMAT_HELP = "; ".join(f"{name} ({', '.join(fields)})" for name, fields in FORMAT_FIELDS.items())


# ------------------------------------------------------------------------------------------- JSON lines


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def iter_json_lines(path: str | os.PathLike[str]) -> Iterator[tuple[int, dict]]:
    """``(line_number, object)`` for each non-blank line of a JSONL file (1-based line numbers)."""
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"{path}: no such file; check the path of the file to import")
    with _open_text(path) as handle:
        line_no = 0
        try:
            for line_no, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise FormatError(
                        f"{path}:{line_no}: not valid JSON ({exc.msg} at column {exc.colno})"
                    ) from None
                if not isinstance(obj, dict):
                    raise FormatError(f"{path}:{line_no}: expected a JSON object, found {type(obj).__name__}")
                yield line_no, obj
        except UnicodeDecodeError:
            raise FormatError(f"{path}:{line_no + 1}: not UTF-8 text") from None
        except (OSError, EOFError) as exc:  # a truncated .gz file
            raise FormatError(f"{path}:{line_no + 1}: cannot read the file ({exc})") from None


def _field(obj: dict, name: str, where: str, kind: type | tuple[type, ...] = str) -> object:
    """``obj[name]``, which must exist and be of ``kind``; ``name`` may be dotted (``info.post``)."""
    value: object = obj
    walked = []
    for part in name.split("."):
        walked.append(part)
        if not isinstance(value, dict) or part not in value:
            raise FormatError(f"{where}: missing field '{'.'.join(walked)}'")
        value = value[part]
    # bool is an int in Python; a JSON true is never a valid number here.
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
        expected = " or ".join(t.__name__ for t in _as_tuple(kind))
        raise FormatError(f"{where}: field '{name}' must be {expected}, found {type(value).__name__}")
    return value


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def read_trl_pairs(path: str | os.PathLike[str]) -> Iterator[PreferencePair]:
    """Preference pairs from TRL explicit-prompt JSONL (``prompt``, ``chosen``, ``rejected``, ``margin``?)."""
    for line_no, obj in iter_json_lines(path):
        where = f"{path}:{line_no}"
        margin = None
        if obj.get("margin") is not None:
            margin = float(_field(obj, "margin", where, (int, float)))  # type: ignore[arg-type]
            if not math.isfinite(margin):
                raise FormatError(f"{where}: field 'margin' must be a finite number, found {margin}")
        yield PreferencePair(
            prompt=_text(obj, "prompt", where),
            chosen=_text(obj, "chosen", where),
            rejected=_text(obj, "rejected", where),
            margin=margin,
            line=line_no,
        )


def read_trl_unpaired(path: str | os.PathLike[str]) -> Iterator[UnpairedLabel]:
    """Unpaired labels from TRL JSONL (``prompt``, ``completion``, ``label`` true/false)."""
    for line_no, obj in iter_json_lines(path):
        where = f"{path}:{line_no}"
        yield UnpairedLabel(
            prompt=_text(obj, "prompt", where),
            completion=_text(obj, "completion", where),
            label=bool(_field(obj, "label", where, bool)),
            line=line_no,
        )


def split_hh_transcript(transcript: str, where: str, field: str) -> tuple[str, str]:
    """``(prompt, response)`` of an hh-rlhf transcript, split after its last ``"\\n\\nAssistant:"``."""
    cut = transcript.rfind(HH_ASSISTANT_MARKER)
    if cut < 0:
        raise FormatError(
            f"{where}: field '{field}' has no '\\n\\nAssistant:' turn to split the response from"
        )
    cut += len(HH_ASSISTANT_MARKER)
    return transcript[:cut], transcript[cut:]


def read_hh_rlhf(path: str | os.PathLike[str]) -> Iterator[PreferencePair]:
    """Preference pairs from Anthropic hh-rlhf JSONL (whole ``chosen`` / ``rejected`` transcripts)."""
    for line_no, obj in iter_json_lines(path):
        where = f"{path}:{line_no}"
        prompt, chosen = split_hh_transcript(_text(obj, "chosen", where), where, "chosen")
        rejected_prompt, rejected = split_hh_transcript(_text(obj, "rejected", where), where, "rejected")
        if rejected_prompt != prompt:
            raise FormatError(
                f"{where}: fields 'chosen' and 'rejected' differ before their last assistant turn, "
                "so they are not two responses to one prompt"
            )
        yield PreferencePair(prompt=prompt, chosen=chosen, rejected=rejected, line=line_no)


def read_summarize_comparisons(path: str | os.PathLike[str]) -> Iterator[PreferencePair]:
    """Preference pairs from OpenAI summarize-from-feedback comparison files (JSON lines)."""
    for line_no, obj in iter_json_lines(path):
        where = f"{path}:{line_no}"
        info = _field(obj, "info", where, dict)
        assert isinstance(info, dict)
        if info.get("post") is not None:
            prompt = _text(obj, "info.post", where)
        elif info.get("article") is not None:
            prompt = _text(obj, "info.article", where)
        else:
            raise FormatError(f"{where}: missing field 'info.post' (or 'info.article' for news articles)")
        summaries = _field(obj, "summaries", where, list)
        assert isinstance(summaries, list)
        if len(summaries) != 2:
            raise FormatError(f"{where}: field 'summaries' must hold 2 summaries, found {len(summaries)}")
        texts: list[str] = []
        policies: list[str | None] = []
        for i, summary in enumerate(summaries):
            if not isinstance(summary, dict):
                raise FormatError(f"{where}: field 'summaries.{i}' must be an object")
            text = summary.get("text")
            if not isinstance(text, str):
                problem = "missing field" if text is None else "wrong type (not str) in field"
                raise FormatError(f"{where}: {problem} 'summaries.{i}.text'")
            texts.append(text)
            policy = summary.get("policy")
            policies.append(policy if isinstance(policy, str) else None)
        choice = _field(obj, "choice", where, int)
        if choice not in (0, 1):
            raise FormatError(f"{where}: field 'choice' must be 0 or 1, found {choice}")
        assert isinstance(choice, int)
        worker = obj.get("worker")
        yield PreferencePair(
            prompt=prompt,
            chosen=texts[choice],
            rejected=texts[1 - choice],
            annotator=str(worker) if worker is not None else None,
            chosen_source=policies[choice],
            rejected_source=policies[1 - choice],
            line=line_no,
        )


def _text(obj: dict, name: str, where: str) -> str:
    """The string field ``name`` (dotted for nested objects) of ``obj``."""
    value = _field(obj, name, where, str)
    assert isinstance(value, str)
    return value


def read_pairs(path: str | os.PathLike[str], fmt: str) -> Iterator[PreferencePair]:
    """Preference pairs from ``path`` in format ``trl``, ``hh-rlhf`` or ``summarize``."""
    readers = {"trl": read_trl_pairs, "hh-rlhf": read_hh_rlhf, "summarize": read_summarize_comparisons}
    if fmt not in readers:
        raise FormatError(f"unknown preference format {fmt!r}; choose one of {', '.join(readers)}")
    return readers[fmt](path)


JSONL_READERS = {
    "trl": read_trl_pairs,
    "trl-unpaired": read_trl_unpaired,
    "hh-rlhf": read_hh_rlhf,
    "summarize": read_summarize_comparisons,
}
"""The line-by-line reader of each format that has one (``rlhfkit`` rows are read by :func:`record_from_row`)."""


# ------------------------------------------------------------------------------------------- table rows


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


def choose_format(keys: Iterable[str], fmt: str, where: str) -> str:
    """``fmt`` checked against the fields ``keys`` of ``where``, or the format they tell when ``fmt`` is auto."""
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


def _row_text(row: dict, name: str, where: str) -> str:
    if name not in row or row[name] is None:
        raise FormatError(f"{where}: missing field '{name}'")
    value = row[name]
    if not isinstance(value, str):
        raise FormatError(f"{where}: field '{name}' must be str, found {type(value).__name__}")
    return value


def record_from_row(fmt: str, row: dict, where: str) -> PreferencePair | UnpairedLabel | Comparison:
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
        return Comparison(_row_text(row, "prompt", where), _row_text(row, "chosen", where),
                          _row_text(row, "rejected", where), float(margin or 0.0), tie,
                          None if annotator is None else str(annotator))  # fmt: skip
    if fmt == "trl-unpaired":
        label = row.get("label")
        if not isinstance(label, bool):
            raise FormatError(f"{where}: field 'label' must be true or false, found {label!r}")
        return UnpairedLabel(_row_text(row, "prompt", where), _row_text(row, "completion", where), label)
    if fmt == "hh-rlhf":
        prompt, chosen = split_hh_transcript(_row_text(row, "chosen", where), where, "chosen")
        other, rejected = split_hh_transcript(_row_text(row, "rejected", where), where, "rejected")
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
