"""Shared test set-up: no hub access, presets cached once per session, quiet libraries."""

from __future__ import annotations

import os

# An accidental download must fail loudly rather than silently reach for the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# before torch is first imported (by a test module): OpenMP threads spin only briefly before they sleep, so the
# suite is not slowed several-fold when another process is busy on the same cores (src/rlhfkit/__init__.py)
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = "2000"

import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _preset_cache(tmp_path_factory: pytest.TempPathFactory):
    """Build presets into one temporary cache per test session (never the user's ~/.cache)."""
    home = tmp_path_factory.mktemp("rlhfkit-home")
    previous = os.environ.get("RLHFKIT_HOME")
    os.environ["RLHFKIT_HOME"] = str(home)
    from rlhfkit.engine.runtime import quiet_libraries

    quiet_libraries()
    yield home
    if previous is None:
        os.environ.pop("RLHFKIT_HOME", None)
    else:
        os.environ["RLHFKIT_HOME"] = previous


def _seed_everything() -> None:
    import random

    import numpy as np
    import torch

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="module", autouse=True)
def _fixed_seed_per_module():
    """Module-scoped fixtures (a policy with random LoRA weights) start from the same RNG state whatever ran
    before them: a test's outcome must not depend on the order tests run in (`-p random_order`, `-k`)."""
    _seed_everything()


@pytest.fixture(autouse=True)
def _fixed_seed_per_test():
    """Every test starts from the same global RNG state, wherever it runs in the suite."""
    _seed_everything()


@pytest.fixture(scope="session")
def tiny_t5_dir(_preset_cache) -> str:
    from rlhfkit.models.presets import ensure_preset

    return str(ensure_preset("tiny-t5"))


@pytest.fixture(scope="session")
def tiny_llama_dir(_preset_cache) -> str:
    from rlhfkit.models.presets import ensure_preset

    return str(ensure_preset("tiny-llama"))
