"""The policy: base model + trainable LoRA adapter, and its frozen reference; PPO attaches a value head.

Every algorithm trains a :class:`Policy` and scores responses against its reference (PPO's KL penalty, DPO's
log-ratios, GRPO's k3 term). PPO alone adds a scalar value head (:func:`rlhfkit.models.value_head.attach_value_head`),
which reads the last hidden state of the decoder (T5) or of the last layer (decoder-only) at the position
that predicts each response token, so ``values[:, t]`` is V(s_t) for response token t.

The reference is, by default, the same weights with the RL adapter disabled — no second copy in memory.
When PPO starts from an SFT adapter, that adapter is merged into the base weights first and a fresh RL
adapter goes on top, so "adapter disabled" *is* the SFT model, never the raw base. ``reference: copy``
keeps a frozen deep copy instead (the course lab's way), for comparison.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import nn

from rlhfkit.config import LoraConfig, ModelConfig
from rlhfkit.core.logprobs import entropy_from_logits, logprobs_from_logits
from rlhfkit.errors import RlhfkitError
from rlhfkit.models.checkpoint_pages import CheckpointPages
from rlhfkit.models.forward import decoder_start_id, evaluation_mode, teacher_forced
from rlhfkit.models.loading import LoadedModel, load_base_model
from rlhfkit.models.lora import attach_lora, load_adapter_as_trainable


@dataclass
class TokenScores:
    """What one teacher-forced pass of the policy gives for a batch of responses."""

    logprobs: torch.Tensor
    """(B, T) log π(token_t | prompt, tokens_<t) with logits divided by the temperature."""
    values: torch.Tensor | None
    """(B, T) V(s_t) from the value head, or None for a policy without one (and for the reference)."""
    entropy: torch.Tensor | None
    """(B, T) entropy of the tempered next-token distribution, or None when not asked for."""


class Policy(nn.Module):
    """A peft-wrapped language model and access to its reference policy; ``value_head`` is PPO's, else None."""

    def __init__(self, loaded: LoadedModel, reference: str = "adapter") -> None:
        super().__init__()
        if reference not in ("adapter", "copy"):
            raise RlhfkitError(f"ppo.reference must be 'adapter' or 'copy', got {reference!r}")
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.is_encoder_decoder = loaded.is_encoder_decoder
        self.source = loaded.source
        self.value_head: nn.Linear | None = None
        self.reference_mode = reference
        self._reference_copy: nn.Module | None = None
        if reference == "copy":
            # a copy of the whole peft model, folded into plain weights: at the start it equals the policy
            frozen = copy.deepcopy(self.model).merge_and_unload()
            frozen.requires_grad_(False)
            frozen.eval()
            # stored outside the module tree so it is neither saved, nor optimised, nor moved by accident
            self.__dict__["_reference_copy"] = frozen

    def store_frozen_weights_in(self, dtype: torch.dtype, embeddings: bool = False) -> int:
        """Keep the weights of every frozen linear layer (policy and reference copy) in ``dtype``, and with
        ``embeddings`` every frozen embedding table too; returns how many modules changed.

        Under autocast every linear layer casts its fp32 weight to bf16 on each call; for a frozen weight that
        cast is repeated work (at a decode step with 16 rows it costs about as much as the product) and the
        fp32 copy is memory that never changes. Stored in bf16, autocast finds it already cast, so every
        product is bit for bit what it was. Trainable tensors (LoRA, value head, fully trained modules) keep
        their fp32 master weights, and norms stay fp32. Every pass must then run under autocast, as
        rlhfkit's PPO step does.

        An embedding lookup is not autocast: its table is fp32 and so is the residual stream it starts. With
        ``embeddings`` the frozen input embedding table is stored in ``dtype`` as well (on FLAN-T5-small: 63
        of the model's 184 MiB), and a forward hook returns each lookup in fp32, so the stream stays fp32 and
        only the table's values are rounded (bf16: by at most 2^-9 of each value, the rounding autocast already
        applies to every matrix product's input, and what FSDP's and DeepSpeed's bf16 parameters do). Other
        embeddings (T5's small relative-position tables) stay fp32. A linear layer that shares its weight with
        an embedding (tied output layer) goes with the embedding: stored in ``dtype`` with it, or fp32.

        The frozen tensors that stay fp32 are copied out of the checkpoint's memory map as well: while any
        tensor still points into it, the map keeps the fp32 pages of every weight it has read resident (on
        the FLAN-T5-small shape, peak RSS of a PPO step fell from ~1190 to ~970 MiB). Each weight's pages are
        given back as soon as it is copied (:mod:`rlhfkit.models.checkpoint_pages`), so the whole fp32 file
        is never resident next to the copies (FLAN-T5-small shape: set-up peak 969 → 739 MiB; on the base
        shape, where that transient was the run's peak, bf16 peak RSS fell from 1971 to 1536 MiB).
        """
        count = 0
        for root in (self.model, self._reference_copy):
            if root is None:
                continue
            tensors = [*root.parameters(), *root.buffers()]
            pages = CheckpointPages(tensors)

            def replace(tensor: torch.Tensor, new: torch.Tensor) -> None:
                old, tensor.data = tensor.data, new
                pages.release(old)

            tied = {id(m.weight) for m in root.modules() if isinstance(m, nn.Embedding)}
            for module in root.modules():
                if not isinstance(module, nn.Linear) or module.weight.requires_grad or id(module.weight) in tied:
                    continue
                replace(module.weight, module.weight.data.to(dtype))
                if module.bias is not None and not module.bias.requires_grad:
                    replace(module.bias, module.bias.data.to(dtype))
                count += 1
            table = root.get_input_embeddings() if embeddings else None
            if isinstance(table, nn.Embedding) and not table.weight.requires_grad:
                replace(table.weight, table.weight.data.to(dtype))
                table.register_forward_hook(_lookup_in_float32)
                count += 1
            # copied out of the checkpoint's memory map, so that the map (and its fp32 pages) is released
            for tensor in tensors:
                if not tensor.requires_grad and tensor.dtype == torch.float32:
                    replace(tensor, tensor.data.clone())
        return count

    # ----------------------------------------------------------------------------------------------
    # Teacher-forced passes over (prompt, response) pairs

    def _lm_forward(self, model: Any, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, response_ids: torch.Tensor,
                    encoder_hidden: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """(B, T, V) logits that predict each response token, and the (B, T, H) hidden states behind them."""
        start_id = decoder_start_id(self.model.get_base_model().config, self.tokenizer.pad_token_id)
        return teacher_forced(model, self.is_encoder_decoder, start_id, prompt_ids, prompt_mask, response_ids,
                              encoder_hidden)  # fmt: skip

    def score(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, response_ids: torch.Tensor,
              temperature: float, with_entropy: bool = False, entropy_grad: bool = False,
              encoder_hidden: torch.Tensor | None = None) -> TokenScores:  # fmt: skip
        """Log-probs, values (with a value head) and entropy of ``response_ids`` under the policy, with gradients.

        The entropy is a statistic without a gradient (no autograd graph over the (B, T, V) softmax)
        unless ``entropy_grad``, for a loss with an entropy bonus. ``encoder_hidden`` (encoder-decoders
        only) is this policy's encoder output for ``prompt_ids``, already computed: the pass then runs the
        decoder alone.
        """
        logits, hidden = self._lm_forward(self.model, prompt_ids, prompt_mask, response_ids, encoder_hidden)
        logprobs = logprobs_from_logits(logits, response_ids, temperature)
        values = self.values_from_hidden(hidden) if self.value_head is not None else None
        entropy = None
        if with_entropy:
            with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
                entropy = entropy_from_logits(logits, temperature)
        return TokenScores(logprobs, values, entropy)

    def forward(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, response_ids: torch.Tensor,
                temperature: float, with_entropy: bool = False, entropy_grad: bool = False) -> TokenScores:  # fmt: skip
        """The training pass, :meth:`score`; called through a DDP / DeepSpeed / FSDP wrapper, the wrapper sees it
        and all-reduces (or shards) the gradients, which a direct call to ``score`` would bypass."""
        return self.score(prompt_ids, prompt_mask, response_ids, temperature, with_entropy, entropy_grad)

    def values_from_hidden(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, T, H) hidden states → (B, T) values, computed in the value head's dtype (fp32, or fp64 for a model
        cast to float64) for a stable regression target."""
        if self.value_head is None:
            raise RlhfkitError("this policy has no value head; attach one with attach_value_head (PPO does).")
        return self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1)

    @torch.no_grad()
    def reference_logprobs(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, response_ids: torch.Tensor,
                           temperature: float) -> torch.Tensor:  # fmt: skip
        """(B, T) log-probs of ``response_ids`` under the frozen reference, with dropout off."""
        with self.reference_model() as ref:
            logits, _ = self._lm_forward(ref, prompt_ids, prompt_mask, response_ids)
        return logprobs_from_logits(logits, response_ids, temperature)

    @contextmanager
    def reference_model(self) -> Iterator[Any]:
        """The reference as a callable model, in eval mode, for the duration of the block."""
        if self._reference_copy is not None:
            yield self._reference_copy
            return
        with evaluation_mode(self.model), self.model.disable_adapter():
            yield self.model

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Every trainable tensor (adapter, fully trained modules, a value head), keyed by name."""
        return {name: p.detach().cpu().clone() for name, p in self.named_parameters() if p.requires_grad}

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore :meth:`trainable_state` exactly; refuse anything that does not match."""
        own = {name: p for name, p in self.named_parameters() if p.requires_grad}
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or unexpected:
            raise RlhfkitError(
                f"the checkpoint's trainable tensors do not match this policy (missing {missing[:3]}, unexpected "
                f"{unexpected[:3]}); it was written for another model or LoRA configuration."
            )
        with torch.no_grad():
            for name, p in own.items():
                if p.shape != state[name].shape:
                    raise RlhfkitError(f"checkpoint tensor {name} has shape {tuple(state[name].shape)}, "
                                       f"the policy expects {tuple(p.shape)}; the run's configuration differs.")  # fmt: skip
                p.copy_(state[name].to(p.device, p.dtype))


def _lookup_in_float32(_module: nn.Module, _args: Any, output: torch.Tensor) -> torch.Tensor:
    """Forward hook of an embedding stored in bf16: its rows in fp32, the dtype of the residual stream."""
    return output.float()


def build_policy(model_cfg: ModelConfig, lora_cfg: LoraConfig, reference: str = "adapter",
                 sft_adapter: str | None = None) -> Policy:  # fmt: skip
    """Load the base model, fold in the SFT adapter (if any) and add a fresh RL adapter.

    Starting from an SFT adapter, the reference must be the SFT model: the adapter is merged into the base
    weights (``merge_and_unload``), so disabling the fresh RL adapter gives back exactly the SFT policy.
    """
    loaded = load_base_model(model_cfg)
    if sft_adapter:
        merged = load_adapter_as_trainable(loaded.model, sft_adapter).merge_and_unload()
        loaded = LoadedModel(merged, loaded.tokenizer, loaded.is_encoder_decoder, loaded.source)
    if lora_cfg.adapter_path:
        raise RlhfkitError(
            "for PPO, give the SFT adapter as ppo.sft_adapter (or --sft-adapter), not lora.adapter_path: the SFT "
            "adapter becomes the reference and a fresh RL adapter is trained on top of it."
        )
    return Policy(attach_lora(loaded, lora_cfg), reference=reference)
