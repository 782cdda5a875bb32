"""Sequence log-probabilities of preference pairs, and the reference's, computed once and cached on disk.

:func:`sequence_logprobs` scores both responses of a :class:`~rlhfkit.algos.dpo.pairs.PairBatch` in one
teacher-forced pass (:func:`rlhfkit.models.forward.teacher_forced`) over the two sides stacked (2B rows: the
prompts twice, both responses right-padded to one width), log-probs from :mod:`rlhfkit.core.logprobs`, and sums
each response's tokens (EOS included, padding excluded).

:func:`reference_logprobs_cached` scores every pair under the frozen reference (the policy with its adapter
disabled, :meth:`rlhfkit.models.policy.Policy.reference_model`: never a second model in memory) once, and keeps
the result in a safetensors file:

* tensors ``chosen`` and ``rejected`` (float32, one value per pair, for pairs ``0 .. done-1``: a prefix);
* metadata ``fingerprint`` = SHA-256 of (``data`` = the token ids of every pair, ``model`` = the reference's
  weights, ``settings`` = temperature and the caller's ``extra``), each part also stored on its own so a
  mismatch can say what changed, and ``total``, the number of pairs.

The file is rewritten atomically (:func:`rlhfkit.io.write_bytes_atomic`) after every ``save_every`` batches and
at the end, so a killed run leaves the last complete prefix and the next call resumes after it. A file whose
fingerprint does not match is not an error: it is recomputed from the start (and overwritten), and the result
says why (:class:`ReferenceCache`), for the run to report. The cache is always safe to delete.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rlhfkit.algos.dpo.pairs import PairBatch, TokenisedPairs, collate_pairs
from rlhfkit.core.logprobs import logprobs_from_logits
from rlhfkit.io import write_bytes_atomic
from rlhfkit.models.forward import decoder_start_id, teacher_forced, unwrapped
from rlhfkit.models.policy import Policy

__all__ = ["ReferenceCache", "reference_fingerprint", "reference_logprobs_cached", "sequence_logprobs"]

CACHE_FORMAT = "rlhfkit-dpo-reference-v1"


def _right_pad(ids: torch.Tensor, mask: torch.Tensor, width: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    extra = width - ids.shape[1]
    if extra == 0:
        return ids, mask
    return (torch.cat([ids, ids.new_full((ids.shape[0], extra), pad_id)], 1),
            torch.cat([mask, mask.new_zeros(mask.shape[0], extra)], 1))  # fmt: skip


def sequence_logprobs(model: Any, batch: PairBatch, is_encoder_decoder: bool, start_id: int, pad_token_id: int,
                      temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(B,) summed log π(chosen | prompt) and (B,) summed log π(rejected | prompt), with gradients if enabled.

    One teacher-forced pass of ``model`` (the peft policy model, or the reference from
    ``Policy.reference_model()``) over 2B rows: the chosen rows, then the rejected rows, both responses right-
    padded to one width with ``pad_token_id``. Right padding after a response changes none of its log-probs
    (causal attention: a pad token is never attended to by an earlier position), and masked-out positions add
    nothing to the sums. Log-probs are in float32 at least (float64 for a float64 model); ``start_id`` is the
    encoder-decoder's first decoder input (:func:`rlhfkit.models.forward.decoder_start_id`).
    """
    width = max(batch.chosen_ids.shape[1], batch.rejected_ids.shape[1])
    chosen_ids, chosen_mask = _right_pad(batch.chosen_ids, batch.chosen_mask, width, pad_token_id)
    rejected_ids, rejected_mask = _right_pad(batch.rejected_ids, batch.rejected_mask, width, pad_token_id)
    response_ids = torch.cat([chosen_ids, rejected_ids])  # (2B, T)
    mask = torch.cat([chosen_mask, rejected_mask])  # (2B, T)
    prompt_ids = torch.cat([batch.prompt_ids, batch.prompt_ids])  # (2B, P)
    prompt_mask = torch.cat([batch.prompt_mask, batch.prompt_mask])
    logits, _ = teacher_forced(model, is_encoder_decoder, start_id, prompt_ids, prompt_mask, response_ids)
    logprobs = logprobs_from_logits(logits, response_ids, temperature)  # (2B, T)
    summed = (logprobs * mask.to(logprobs.dtype)).sum(1)  # (2B,)
    return summed[: len(batch)], summed[len(batch) :]


def policy_start_id(policy: Policy) -> int:
    """The policy's decoder start id (as :meth:`Policy._lm_forward` uses it)."""
    return decoder_start_id(unwrapped(policy.model).config, policy.tokenizer.pad_token_id)


# --------------------------------------------------------------------------------------------------
# The reference, cached


@dataclass(frozen=True)
class ReferenceCache:
    """The reference's summed log-probs of every pair, and how they were obtained."""

    chosen: torch.Tensor  # (N,) float32, pair i at row i (TokenisedPair.index)
    rejected: torch.Tensor  # (N,) float32
    status: str
    """"computed" (no file), "reused" (complete and matching), "resumed" (a matching prefix was kept) or
    "recomputed" (the file did not match: see ``reason``)."""
    reason: str
    """Why the file was not used as it was ("" when reused or freshly computed)."""
    computed: int
    """How many pairs were scored by this call."""


def _tensor_bytes(t: torch.Tensor) -> bytes:
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def reference_fingerprint(policy: Policy, pairs: TokenisedPairs, temperature: float,
                          extra: Mapping[str, Any] | None = None) -> dict[str, str]:  # fmt: skip
    """SHA-256 hex digests of the data, the reference's weights, the settings, and all three together.

    ``model`` hashes every frozen tensor (name, dtype, shape, bytes) of the reference: the base weights with the
    adapter disabled (an SFT adapter merged into them included), or the ``reference: copy`` model; the trainable
    adapter is not part of the reference. ``extra`` (JSON-serialisable) is for settings the caller knows change
    the values, such as the precision.
    """
    data = hashlib.sha256()
    for p in pairs.pairs:
        data.update(json.dumps([p.index, p.prompt_ids, p.chosen_ids, p.rejected_ids]).encode())
    model = hashlib.sha256()
    with policy.reference_model() as ref:
        named = [*ref.named_parameters(), *ref.named_buffers()]
    for name, t in sorted(named, key=lambda item: item[0]):
        if t.requires_grad:
            continue
        model.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        model.update(_tensor_bytes(t))
    settings = hashlib.sha256(json.dumps({"temperature": float(temperature), "is_encoder_decoder": policy.is_encoder_decoder,
                                          "extra": dict(extra or {})}, sort_keys=True).encode())  # fmt: skip
    parts = {"data": data.hexdigest(), "model": model.hexdigest(), "settings": settings.hexdigest()}
    parts["fingerprint"] = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
    return parts


def _read_cache(path: Path) -> tuple[dict[str, str], torch.Tensor, torch.Tensor] | str:
    """(metadata, chosen, rejected) of the file, or a sentence saying why it cannot be used."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            chosen, rejected = f.get_tensor("chosen"), f.get_tensor("rejected")
    except Exception as e:  # noqa: BLE001 (a foreign or damaged file: it is only a cache)
        return f"the file could not be read as a reference cache ({type(e).__name__})"
    if meta.get("format") != CACHE_FORMAT or chosen.shape != rejected.shape or chosen.dim() != 1:
        return "the file is not an rlhfkit DPO reference cache of this version"
    return meta, chosen, rejected


def _mismatch(meta: dict[str, str], want: dict[str, str]) -> str:
    changed = [k for k in ("data", "model", "settings") if meta.get(k) != want[k]]
    what = {"data": "pairs (token ids)", "model": "reference weights", "settings": "settings (temperature, extra)"}
    return "it was computed for different " + " and ".join(what[k] for k in changed) if changed else "its fingerprint differs"


def _write_cache(path: Path, want: dict[str, str], total: int, chosen: torch.Tensor, rejected: torch.Tensor) -> None:
    from safetensors.torch import save

    meta = {**want, "format": CACHE_FORMAT, "total": str(total)}
    write_bytes_atomic(path, save({"chosen": chosen.contiguous(), "rejected": rejected.contiguous()}, metadata=meta))


@torch.no_grad()
def reference_logprobs_cached(policy: Policy, pairs: TokenisedPairs, path: str | Path, batch_size: int,
                              temperature: float = 1.0, device: torch.device | str | None = None,
                              save_every: int = 16, extra: Mapping[str, Any] | None = None) -> ReferenceCache:  # fmt: skip
    """The reference's (N,) summed log-probs of every pair's chosen and rejected response, from ``path`` when it
    holds them for exactly these pairs, model and settings, else computed ``batch_size`` pairs at a time in
    order and saved there (module docstring). Dropout is off (the reference model is in eval mode)."""
    if batch_size < 1 or save_every < 1:
        raise ValueError(f"batch_size and save_every must be >= 1, got {batch_size} and {save_every}")
    path = Path(path)
    total = len(pairs)
    want = reference_fingerprint(policy, pairs, temperature, extra)
    chosen, rejected = torch.zeros(total), torch.zeros(total)
    done, status, reason = 0, "computed", ""
    if path.exists():
        found = _read_cache(path)
        if isinstance(found, str):
            status, reason = "recomputed", found
        elif found[0].get("fingerprint") != want["fingerprint"] or found[0].get("total") != str(total):
            status, reason = "recomputed", _mismatch(found[0], want)
        else:
            done = found[1].shape[0]
            chosen[:done], rejected[:done] = found[1].float(), found[2].float()
            status = "reused" if done == total else "resumed"
    if status == "reused":
        return ReferenceCache(chosen, rejected, status, "", 0)
    device = torch.device(device) if device is not None else next(policy.model.parameters()).device
    start_id, pad_id = policy_start_id(policy), policy.tokenizer.pad_token_id
    start, batches = done, 0
    with policy.reference_model() as ref:
        for i in range(done, total, batch_size):
            batch = collate_pairs(pairs.pairs[i : i + batch_size], pad_id, policy.is_encoder_decoder).to(device)
            c, r = sequence_logprobs(ref, batch, policy.is_encoder_decoder, start_id, pad_id, temperature)
            end = i + len(batch)
            chosen[i:end], rejected[i:end] = c.float().cpu(), r.float().cpu()
            done, batches = end, batches + 1
            if batches % save_every == 0 and done < total:
                _write_cache(path, want, total, chosen[:done], rejected[:done])
    _write_cache(path, want, total, chosen, rejected)
    return ReferenceCache(chosen, rejected, status, reason, total - start)
