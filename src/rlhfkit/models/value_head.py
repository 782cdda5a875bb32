"""PPO's value head: one linear layer from the policy's last hidden state to V(s_t).

Only PPO needs a critic; DPO, GRPO and RLOO train the :class:`~rlhfkit.models.policy.Policy` alone. The head
reads the output layer's input at the position that predicts each response token (see
:func:`rlhfkit.models.forward.teacher_forced`), so ``values[:, t]`` is V(s_t) for response token t.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from rlhfkit.errors import RlhfkitError
from rlhfkit.models.policy import Policy


def hidden_size(config: Any) -> int:
    for name in ("d_model", "hidden_size", "n_embd"):
        if getattr(config, name, None):
            return int(getattr(config, name))
    raise RlhfkitError(f"cannot find the hidden size of model type {config.model_type!r} for the value head.")


def attach_value_head(policy: Policy) -> Policy:
    """Give ``policy`` a trainable value head (in place) that starts by predicting 0 everywhere; returns it.

    An untrained head with random weights would add noise to the first advantages (lm-human-preferences also
    starts its value head at zero). Its parameters are registered after the model's, so they come last in
    the optimiser and in checkpoints.
    """
    if policy.value_head is not None:
        raise RlhfkitError("this policy already has a value head.")
    head = nn.Linear(hidden_size(policy.model.get_base_model().config), 1)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    policy.value_head = head
    return policy
