"""A sequence classifier used as a reward, with the class chosen by its label name.

The course lab read its reward from ``pipeline(..., top_k=None)`` by position, ``output[0]``. That
list is sorted by score, so "position 0" was whichever class scored highest on each text, not "nothate".
Here the class is looked up by name in the model's own ``id2label`` and its column of the logits is read
directly; a name the model does not have is an error that lists the names it does have.

The classifier is scored with its own tokenizer (the policy's is irrelevant), in batches, with dropout
off and without gradients. Texts longer than the classifier's limit are truncated, counted, and reported
through :meth:`ClassifierReward.stats` and a warning.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from rlhfkit.errors import RlhfkitError
from rlhfkit.rewards.base import check_inputs
from rlhfkit.rewards.encoding import INPUT_MODES, classifier_logits, classifier_max_length, encode_texts
from rlhfkit.rewards.loading import has_trained_classifier_head, load_classifier

OUTPUTS = ("logit", "prob", "logprob")


def resolve_label(id2label: dict[int, str], label: str | None, source: str) -> int:
    """The column of class ``label`` (by name; case-insensitive when that is unambiguous).

    ``label`` None is allowed only for a one-output model (a reward model), whose single column is used.
    """
    names = {int(i): str(n) for i, n in id2label.items()}
    listed = ", ".join(f"{n!r} (id {i})" for i, n in sorted(names.items()))
    if label is None:
        if len(names) == 1:
            return next(iter(names))
        raise RlhfkitError(
            f"the classifier {source!r} has {len(names)} classes: {listed}. Choose the class to reward by its "
            "name with the label option (e.g. label: nothate); rlhfkit never picks a class by position."
        )
    exact = [i for i, n in names.items() if n == label]
    if len(exact) == 1:
        return exact[0]
    folded = [i for i, n in names.items() if n.lower() == label.lower()]
    if len(folded) == 1:
        return folded[0]
    raise RlhfkitError(f"the classifier {source!r} has no class named {label!r}. Its classes are: {listed}.")


class ClassifierReward:
    """Score = logit, probability or log-probability of class ``label`` of a sequence classifier.

    Args:
        source: hub id (facebook/roberta-hate-speech-dynabench-r4-target), folder, or backbone:NAME.
        label: class name to reward (``nothate``); None only for a one-output model.
        output: ``logit`` (unbounded, the lab's choice), ``prob`` or ``logprob``.
        input: ``response`` (the text alone) or ``prompt+response`` (a text pair; the lab scored query +
            response).
        batch_size: texts per forward pass.
        max_length: most tokens per text; None = the classifier's own limit.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda[:N]``.
        require_trained_head: refuse a checkpoint saved without a classification head (a bare encoder
            would give random scores).
        pad_token: existing token to pad with when the classifier's tokenizer has none (Llama-based).
    """

    def __init__(
        self,
        source: str,
        label: str | None = None,
        output: str = "logit",
        input: str = "response",
        batch_size: int = 32,
        max_length: int | None = None,
        device: str = "auto",
        revision: str | None = None,
        trust_remote_code: bool = False,
        name: str | None = None,
        require_trained_head: bool = True,
        pad_token: str | None = None,
    ) -> None:
        if output not in OUTPUTS:
            raise RlhfkitError(f"classifier reward output must be one of {', '.join(OUTPUTS)}, got {output!r}.")
        if input not in INPUT_MODES:
            raise RlhfkitError(f"classifier reward input must be one of {', '.join(INPUT_MODES)}, got {input!r}.")
        if batch_size <= 0:
            raise RlhfkitError(f"classifier reward batch_size must be positive, got {batch_size}.")
        from rlhfkit.models.loading import pick_device

        self.source, self.output, self.input, self.batch_size = source, output, input, batch_size
        self.device = pick_device(device)
        model, tokenizer = load_classifier(source, "reward classifier", revision=revision,
                                           trust_remote_code=trust_remote_code, pad_token=pad_token)  # fmt: skip
        if require_trained_head and not has_trained_classifier_head(model.config):
            raise RlhfkitError(
                f"{source!r} was saved as {model.config.architectures or 'a bare model'}, without a trained "
                "classification head, so its scores would be random. Use a classifier checkpoint, or train a "
                "reward model on it with `rlhfkit reward train`."
            )
        self.model = model.to(self.device).eval()  # dropout off for every call
        self.model.requires_grad_(False)
        self.tokenizer = tokenizer
        self.id2label = {int(i): str(n) for i, n in model.config.id2label.items()}
        self.label = label
        self.column = resolve_label(self.id2label, label, source)
        self.multi_label = getattr(model.config, "problem_type", None) == "multi_label_classification"
        limit = classifier_max_length(tokenizer, model.config)
        if max_length is not None and max_length > limit:
            raise RlhfkitError(f"max_length {max_length} exceeds what the classifier {source!r} accepts ({limit}).")
        self.max_length = max_length or limit
        self.use_token_types = getattr(model.config, "type_vocab_size", 0) >= 2
        shown = label if label is not None else "score"
        self.name = name or f"{source.rstrip('/').rsplit('/', 1)[-1]}:{shown}:{output}"
        self.scored = 0
        self.truncated = 0
        self._warned = False

    @property
    def labels(self) -> list[str]:
        """The model's class names in id order."""
        return [self.id2label[i] for i in sorted(self.id2label)]

    def logits(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        """(N, num_labels) raw logits of every response (counted in :meth:`stats`)."""
        check_inputs(prompts, responses, self.name)
        encoded = encode_texts(self.tokenizer, prompts, responses, self.input, self.max_length, self.use_token_types)
        n_truncated = sum(encoded.truncated)
        self.scored += len(responses)
        self.truncated += n_truncated
        if n_truncated and not self._warned:
            self._warned = True
            warnings.warn(
                f"reward {self.name}: {n_truncated} of {len(responses)} texts were longer than {self.max_length} "
                "tokens and were truncated (the response is kept, the prompt cut first); the count so far is in "
                "stats()['truncated'].",
                RuntimeWarning,
                stacklevel=3,
            )
        return classifier_logits(self.model, encoded, self.tokenizer.pad_token_id, self.batch_size, self.device)

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        if not responses:
            check_inputs(prompts, responses, self.name)
            return []
        logits = self.logits(prompts, responses)
        return self.transform(logits).tolist()

    def transform(self, logits: torch.Tensor) -> torch.Tensor:
        """(N,) score of the chosen class from (N, num_labels) logits, as ``output`` asks."""
        column = logits[:, self.column]
        if self.output == "logit":
            return column
        if logits.shape[-1] == 1 or self.multi_label:  # independent sigmoid per class
            return torch.sigmoid(column) if self.output == "prob" else torch.nn.functional.logsigmoid(column)
        if self.output == "prob":
            return torch.softmax(logits, dim=-1)[:, self.column]
        return torch.log_softmax(logits, dim=-1)[:, self.column]

    def stats(self) -> dict[str, Any]:
        return {"scored": float(self.scored), "truncated": float(self.truncated)}
