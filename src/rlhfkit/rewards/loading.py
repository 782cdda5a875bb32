"""Loading sequence classifiers (reward-model backbones, classifiers used as rewards) with clear errors.

The code path is ordinary ``AutoModelForSequenceClassification.from_pretrained(hub id or folder)``;
``backbone:NAME`` is first built into a folder (:mod:`rlhfkit.rewards.tiny_backbones`). Whether a model
type *has* a sequence-classification head is read from transformers' own auto mapping before any
weights are loaded, so a wrong model is refused with its type named, not with a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlhfkit.errors import RlhfkitError
from rlhfkit.rewards.tiny_backbones import is_backbone_name, resolve_backbone


def resolve_source(name_or_path: str, what: str) -> str:
    """``backbone:NAME`` → folder; a path-like source must be a model folder; a hub id passes through."""
    if not name_or_path:
        raise RlhfkitError(f"no {what} given: name a hub id, a folder written by save_pretrained, or backbone:NAME.")
    if is_backbone_name(name_or_path):
        return resolve_backbone(name_or_path)
    path = Path(name_or_path).expanduser()
    if name_or_path.startswith((".", "/", "~")) or path.exists() or name_or_path.count("/") > 1:
        if not path.is_dir():
            raise RlhfkitError(
                f"the {what} folder {name_or_path!r} does not exist; give a folder written by save_pretrained, "
                "a hub id, or backbone:NAME (`rlhfkit reward backbones` lists them)."
            )
        if not (path / "config.json").is_file():
            raise RlhfkitError(f"folder {name_or_path!r} has no config.json, so it is not a transformers model folder.")
        return str(path)
    return name_or_path


def from_pretrained(loader: Any, source: str, what: str, **kwargs: Any) -> Any:
    """``loader.from_pretrained(source)`` with OSError/ValueError turned into a one-paragraph RlhfkitError."""
    try:
        return loader.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as e:
        hint = (
            "The folder seems incomplete or corrupt; rebuild or re-download it."
            if Path(source).exists()
            else "This looks like a hub id: check its spelling and your network (with HF_HUB_OFFLINE=1 nothing is "
            "downloaded), or give a local folder."
        )
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RlhfkitError(f"could not load the {what} from {source!r}: {first_line.rstrip('.')}. {hint}") from None


def check_sequence_classifier(config: Any, source: str, what: str) -> None:
    """Refuse a model type that transformers cannot load as AutoModelForSequenceClassification."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES

    model_type = getattr(config, "model_type", None)
    if model_type not in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES:
        examples = ", ".join(t for t in ("bert", "roberta", "deberta-v2", "distilbert", "llama", "t5") if t in
                             MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES)  # fmt: skip
        raise RlhfkitError(
            f"{source!r} is a {model_type!r} model, which has no sequence-classification head in transformers, so "
            f"it cannot be the {what}. Use a model that AutoModelForSequenceClassification loads ({examples}, ...)."
        )


def has_trained_classifier_head(config: Any) -> bool:
    """True when the checkpoint was saved as a *ForSequenceClassification (its head holds trained weights)."""
    return any(a.endswith("ForSequenceClassification") for a in (getattr(config, "architectures", None) or []))


def load_classifier(
    source: str,
    what: str,
    *,
    num_labels: int | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
    pad_token: str | None = None,
) -> tuple[Any, Any]:
    """(model, tokenizer) of a sequence classifier; ``num_labels`` replaces the head when it differs.

    The tokenizer must be able to pad: a decoder-only model reads its score at the last non-pad token,
    so the pad token must exist and be known to the model's config.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    source = resolve_source(source, what)
    common = {"revision": revision, "trust_remote_code": trust_remote_code}
    config = from_pretrained(AutoConfig, source, f"{what} config", **common)
    check_sequence_classifier(config, source, what)
    tokenizer = from_pretrained(AutoTokenizer, source, f"{what} tokenizer", **common)
    if pad_token is not None:
        if pad_token not in tokenizer.get_vocab():
            raise RlhfkitError(f"pad token {pad_token!r} is not in the {what} tokenizer's vocabulary; pick an existing token.")
        tokenizer.pad_token = pad_token
    if tokenizer.pad_token_id is None:
        raise RlhfkitError(
            f"the {what} tokenizer of {source!r} has no pad token; set the pad_token option to an existing token "
            "(for a Llama-style tokenizer '<unk>' is a common choice; never the EOS token, whose position marks "
            "where the score is read)."
        )
    kwargs: dict[str, Any] = dict(common)
    if num_labels is not None and getattr(config, "num_labels", None) != num_labels:
        # a fresh head of the wanted size; the checkpoint's head (and its label names) no longer apply
        config.id2label = {i: f"LABEL_{i}" for i in range(num_labels)}
        config.label2id = {v: k for k, v in config.id2label.items()}
        kwargs.update(config=config, ignore_mismatched_sizes=True)
    model = from_pretrained(AutoModelForSequenceClassification, source, what, **kwargs)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer
