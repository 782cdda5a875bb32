"""Preference records and the file formats they travel in.

Pure functions only (no database): the reward-model trainer reads the same files through them.

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

Files ending in ``.gz`` are read through gzip. Every error names the file, the line and the field.
"""

from __future__ import annotations

import errno
import gzip
import io
import json
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rlhfkit.errors import RlhfkitError
from rlhfkit.io import write_lines_atomic

IMPORT_FORMATS = ("trl", "trl-unpaired", "hh-rlhf", "summarize")
HH_ASSISTANT_MARKER = "\n\nAssistant:"


class FormatError(RlhfkitError):
    """A line of an input file does not have the fields its format needs."""


@dataclass(frozen=True)
class PreferencePair:
    """One judgment that ``chosen`` is a better response to ``prompt`` than ``rejected``."""

    prompt: str
    chosen: str
    rejected: str
    margin: float | None = None
    """How much better, on TRL's margin scale; None when the source states no strength."""
    annotator: str | None = None
    """Who judged (a worker id, an annotator name), when the source says."""
    chosen_source: str | None = None
    """Which policy produced ``chosen`` (e.g. ``sft``), when known."""
    rejected_source: str | None = None
    """Which policy produced ``rejected``, when known."""
    line: int | None = field(default=None, compare=False)
    """Line of the file it was read from (for error messages); not part of the record's identity."""


@dataclass(frozen=True)
class UnpairedLabel:
    """One judgment that ``completion`` is a good (True) or bad (False) response to ``prompt``."""

    prompt: str
    completion: str
    label: bool
    annotator: str | None = None
    line: int | None = field(default=None, compare=False)


# ----------------------------------------------------------------------------------------------- reading


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


# ----------------------------------------------------------------------------------------------- writing


def pair_to_trl(pair: PreferencePair) -> dict[str, object]:
    """The TRL JSON object of a pair: exactly ``prompt``, ``chosen``, ``rejected`` and a float ``margin``.

    A pair without a stated strength gets margin 0.0, which makes TRL's loss the plain Bradley–Terry loss.
    """
    margin = 0.0 if pair.margin is None else float(pair.margin)
    return {"prompt": pair.prompt, "chosen": pair.chosen, "rejected": pair.rejected, "margin": margin}


def unpaired_to_trl(label: UnpairedLabel) -> dict[str, object]:
    """The TRL JSON object of an unpaired label: exactly ``prompt``, ``completion`` and a bool ``label``."""
    return {"prompt": label.prompt, "completion": label.completion, "label": bool(label.label)}


def write_jsonl_atomic(objects: Iterable[dict[str, object]], path: str | os.PathLike[str]) -> int:
    """Write one JSON object per line to ``path`` atomically; returns the number of lines.

    Streams through :func:`rlhfkit.io.write_lines_atomic`: a reader (or a crash) sees the old file or the
    complete new one, never half of it.
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise RlhfkitError(f"cannot write {path}: directory {directory} does not exist")
    try:
        return write_lines_atomic(path, (json.dumps(obj, ensure_ascii=False) + "\n" for obj in objects))
    except OSError as exc:
        raise RlhfkitError(_write_failure(path, exc)) from None


def _write_failure(path: Path, exc: OSError) -> str:
    """One paragraph: which file, why, that nothing changed (the write is atomic), and what to do."""
    full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
    cause = "no space left on device" if full else (exc.strerror or str(exc)).lower()
    kept = f" (the previous {path} is intact)" if path.is_file() else ""
    todo = (
        "free some space on that disk, or write the file to another disk"
        if full
        else "check that the path names a file (not a folder) in a folder you can write to"
    )
    return f"could not write {path}: {cause}. Nothing was changed{kept}. Please {todo}, then run the command again."
