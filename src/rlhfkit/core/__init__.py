"""The tensor core every algorithm shares: log-probs and entropy from logits, masked statistics, KL estimators
and the KL-coefficient controllers.

It imports torch only (never transformers or peft; ``tests/test_layers.py`` enforces it), so it is tested
without any model. Shapes: B = batch (responses), T = response tokens, V = vocabulary; ``mask`` is (B, T) with
1.0 / True on valid response tokens (everything after EOS is padding).
"""

from rlhfkit.core.kl import (
    KL_KINDS,
    MAX_LOG_RATIO,
    KLKind,
    approx_kl,
    approx_kl_k3,
    kl_estimate,
    kl_k1,
    kl_k2,
    kl_k3,
    sequence_kl,
)
from rlhfkit.core.kl_control import AdaptiveKLController, FixedKLController, KLController
from rlhfkit.core.logprobs import entropy_from_logits, logprobs_from_logits
from rlhfkit.core.masked import explained_variance, masked_mean, masked_sum, masked_var, masked_whiten

__all__ = [
    "KL_KINDS",
    "MAX_LOG_RATIO",
    "AdaptiveKLController",
    "FixedKLController",
    "KLController",
    "KLKind",
    "approx_kl",
    "approx_kl_k3",
    "entropy_from_logits",
    "explained_variance",
    "kl_estimate",
    "kl_k1",
    "kl_k2",
    "kl_k3",
    "logprobs_from_logits",
    "masked_mean",
    "masked_sum",
    "masked_var",
    "masked_whiten",
    "sequence_kl",
]
