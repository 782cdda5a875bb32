"""Shared test set-up: no hub access, presets cached once per session, quiet libraries."""

from __future__ import annotations

import os

# An accidental download must fail loudly rather than silently reach for the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _preset_cache(tmp_path_factory: pytest.TempPathFactory):
    """Build presets into one temporary cache per test session (never the user's ~/.cache)."""
    home = tmp_path_factory.mktemp("rlhfkit-home")
    previous = os.environ.get("RLHFKIT_HOME")
    os.environ["RLHFKIT_HOME"] = str(home)
    from rlhfkit.train.runtime import quiet_libraries

    quiet_libraries()
    yield home
    if previous is None:
        os.environ.pop("RLHFKIT_HOME", None)
    else:
        os.environ["RLHFKIT_HOME"] = previous


@pytest.fixture(scope="session")
def tiny_t5_dir(_preset_cache) -> str:
    from rlhfkit.models.presets import ensure_preset

    return str(ensure_preset("tiny-t5"))


@pytest.fixture(scope="session")
def tiny_llama_dir(_preset_cache) -> str:
    from rlhfkit.models.presets import ensure_preset

    return str(ensure_preset("tiny-llama"))
