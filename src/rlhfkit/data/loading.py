"""Dialogue-summarization data: loading through `datasets`, the prompt template, filters and the split.

Every source ends up as a `datasets.Dataset` with the columns ``dialogue``, ``summary`` and ``prompt``
(the template applied), split into train and test with a fixed seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset, DatasetDict, load_dataset

from rlhfkit.config import DataConfig
from rlhfkit.data.synthetic import corpus_records
from rlhfkit.errors import RlhfkitError

LOCAL_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


def render_prompt(template: str, dialogue: str) -> str:
    """Put ``dialogue`` into ``template`` at ``{dialogue}``.

    Plain replacement rather than ``str.format``: dialogues and templates may contain braces.
    """
    if "{dialogue}" not in template:
        raise RlhfkitError("the prompt template has no {dialogue} placeholder; add one where the dialogue goes.")
    return template.replace("{dialogue}", dialogue)


@dataclass(frozen=True)
class SplitData:
    """The train and test parts of a dialogue-summary dataset, with the filter's bookkeeping."""

    train: Dataset
    test: Dataset
    total: int
    """Rows before filtering."""
    kept: int
    """Rows that passed the length filter."""


def load_raw(cfg: DataConfig) -> Dataset:
    """Load the rows of ``cfg.source`` (synthetic, a local file, or a hub dataset id) as one Dataset."""
    source = cfg.source
    if source == "synthetic":
        s = cfg.synthetic
        return Dataset.from_list(corpus_records(s.size, s.toxic_fraction, s.seed))
    path = Path(source).expanduser()
    suffix = path.suffix.lower()
    if suffix in LOCAL_FORMATS or path.exists() or source.startswith((".", "/", "~")):
        if not path.is_file():
            raise RlhfkitError(
                f"dataset file {source!r} does not exist. Give data.source as 'synthetic', a hub dataset id, "
                f"or the path of a {'/'.join(LOCAL_FORMATS)} file."
            )
        if suffix not in LOCAL_FORMATS:
            raise RlhfkitError(
                f"dataset file {source!r} has an unsupported extension {suffix!r}; use one of {', '.join(LOCAL_FORMATS)}."
            )
        try:
            return load_dataset(LOCAL_FORMATS[suffix], data_files=str(path), split="train")
        except Exception as e:  # the readers raise many different types for a malformed file
            raise RlhfkitError(f"could not read dataset file {source!r} as {LOCAL_FORMATS[suffix]}: {e}") from None
    try:
        loaded = load_dataset(source, split=cfg.split)
    except Exception as e:
        raise RlhfkitError(
            f"could not load dataset {source!r} (split {cfg.split!r}) from the hub: {type(e).__name__}: {e}. "
            "Check the id and split, your network (HF_HUB_OFFLINE=1 forbids downloads), or pass a local file."
        ) from None
    if isinstance(loaded, DatasetDict):  # pragma: no cover - split= always gives a Dataset
        raise RlhfkitError(f"dataset {source!r} has several splits; set data.split to one of {list(loaded)}.")
    return loaded


def prepare(raw: Dataset, cfg: DataConfig) -> SplitData:
    """Check columns, apply the length filter and the template, and split with ``cfg.split_seed``."""
    missing = [c for c in (cfg.dialogue_column, cfg.summary_column) if c not in raw.column_names]
    if missing:
        raise RlhfkitError(
            f"dataset {cfg.source!r} has no column(s) {missing}; its columns are {raw.column_names}. "
            "Set data.dialogue_column and data.summary_column to the right names."
        )
    total = len(raw)
    lo, hi, dcol = cfg.min_chars, cfg.max_chars, cfg.dialogue_column
    # the lab's filter: keep dialogues with min_chars < length <= max_chars
    kept = raw.filter(lambda row: isinstance(row[dcol], str) and lo < len(row[dcol]) <= hi)
    if len(kept) < 2:
        raise RlhfkitError(
            f"dataset {cfg.source!r} has {len(kept)} of {total} rows left after the length filter "
            f"({lo} < len(dialogue) <= {hi} characters); at least 2 are needed for a train/test split. "
            "Loosen data.min_chars / data.max_chars or check data.dialogue_column."
        )
    template, scol = cfg.template, cfg.summary_column

    def to_example(row: dict) -> dict:
        return {
            "dialogue": row[dcol],
            "summary": "" if row[scol] is None else str(row[scol]),
            "prompt": render_prompt(template, row[dcol]),
        }

    # other columns (id, topic, toxic, ...) ride along untouched
    kept = kept.map(to_example, remove_columns=[c for c in (dcol, scol) if c not in ("dialogue", "summary")])
    split = kept.train_test_split(test_size=cfg.test_size, seed=cfg.split_seed, shuffle=True)
    train, test = split["train"], split["test"]
    if cfg.max_train_examples is not None:
        train = train.select(range(min(cfg.max_train_examples, len(train))))
    return SplitData(train=train, test=test, total=total, kept=len(kept))


def load_dialogues(cfg: DataConfig) -> SplitData:
    """:func:`load_raw` then :func:`prepare`."""
    return prepare(load_raw(cfg), cfg)
