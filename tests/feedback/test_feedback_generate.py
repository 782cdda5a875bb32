"""`rlhfkit feedback generate`: candidates from one policy (K samples) or from two policies, into the store."""

from __future__ import annotations

import json

import pytest
import torch

from rlhfkit.cli import main
from rlhfkit.config import GenerationConfig, LoraConfig, ModelConfig
from rlhfkit.errors import RlhfkitError
from rlhfkit.feedback.generate import sample_candidates
from rlhfkit.feedback.store import FeedbackStore
from rlhfkit.models.inference import adapter_chain, load_policy
from rlhfkit.models.loading import load_base_model
from rlhfkit.models.lora import attach_lora, save_adapter

GEN = GenerationConfig(max_new_tokens=10)
PROMPTS = ["Summarize: #Person1#: I lost my keys.\n\nSummary: ", "Summarize: #Person1#: Book a table.\n\nSummary: "]


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    loaded = attach_lora(load_base_model(ModelConfig(name_or_path="preset:tiny-t5")), LoraConfig())
    with torch.no_grad():
        for name, p in loaded.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    folder = tmp_path_factory.mktemp("sft-adapter")
    save_adapter(loaded.model, loaded.tokenizer, folder, loaded.source)
    return str(folder)


def test_one_policy_k_samples_and_two_policies_paired(adapter):
    model = ModelConfig(name_or_path="preset:tiny-t5")
    one = sample_candidates(model, GEN, [adapter], PROMPTS, k=3, seed=1)
    assert [len(c) for c in one.candidates] == [3, 3] and one.sources[0] == [adapter] * 3
    assert len(set(one.candidates[0])) > 1  # different seeds, different samples
    two = sample_candidates(model, GEN, ["base", adapter], PROMPTS, seed=1)
    assert two.sources == [["base", adapter]] * 2
    assert two.candidates[0][0] != two.candidates[0][1]  # the adapter changes what the model writes


def test_bad_requests_are_explained(adapter, tmp_path):
    model = ModelConfig(name_or_path="preset:tiny-t5")
    with pytest.raises(RlhfkitError, match="k >= 2"):
        sample_candidates(model, GEN, [adapter], PROMPTS, k=1)
    with pytest.raises(RlhfkitError, match="not an adapter folder"):
        sample_candidates(model, GEN, [str(tmp_path)], PROMPTS, k=2)


def test_a_ppo_adapter_is_loaded_on_top_of_its_sft_adapter(adapter, tmp_path):
    base = load_base_model(ModelConfig(name_or_path="preset:tiny-t5"))
    rl = attach_lora(base, LoraConfig(r=4))
    save_adapter(rl.model, rl.tokenizer, tmp_path / "ppo", rl.source, {"sft_adapter": adapter})
    assert adapter_chain(str(tmp_path / "ppo")) == [adapter, str(tmp_path / "ppo")]
    stacked = load_policy(ModelConfig(name_or_path="preset:tiny-t5"), str(tmp_path / "ppo"))
    sft_only = load_policy(ModelConfig(name_or_path="preset:tiny-t5"), adapter)
    enc = stacked.tokenizer(PROMPTS[:1], return_tensors="pt")
    dec = torch.tensor([[0, 5, 6]])
    # a fresh RL adapter (B = 0) on the merged SFT adapter is the SFT policy, up to the merge's rounding
    with torch.no_grad():
        assert torch.allclose(stacked.model(**enc, decoder_input_ids=dec).logits,
                              sft_only.model(**enc, decoder_input_ids=dec).logits, atol=1e-4)  # fmt: skip


def test_cli_generate_into_a_store(adapter, tmp_path, capsys):
    store = str(tmp_path / "fb.sqlite")
    assert main(["feedback", "init", "--store", store, "--overlap", "1"]) == 0
    args = ["feedback", "generate", "--store", store, "--policy", adapter, "-k", "2", "-n", "4",
            "--set", "data.synthetic.size=100", "--set", "generation.max_new_tokens=8"]  # fmt: skip
    assert main(args) == 0
    assert "added 4 item(s)" in capsys.readouterr().out
    with FeedbackStore.open(store) as fb:
        assert fb.project.question_type == "pairwise"
    assert main(["feedback", "simulate", "--store", store]) == 0
    out = tmp_path / "pairs.jsonl"
    assert main(["feedback", "export", "--store", store, "-o", str(out)]) == 0
    for line in out.read_text().splitlines():
        assert {"prompt", "chosen", "rejected", "margin"} <= set(json.loads(line))
    assert main(["feedback", "generate", "--store", store, "--policy", adapter, "-k", "1", "-n", "2"]) == 2


def test_sampling_shows_a_bar_with_an_eta_only_when_progress_is_on(adapter, capfd):
    model = ModelConfig(name_or_path="preset:tiny-t5")
    capfd.readouterr()
    quiet = sample_candidates(model, GEN, [adapter], PROMPTS, k=2, seed=1, progress=False)
    assert capfd.readouterr().err == ""
    shown = sample_candidates(model, GEN, [adapter], PROMPTS, k=2, seed=1, progress=True)
    err = capfd.readouterr().err
    # not a terminal here, so rich prints the finished bar once: every response counted, with its ETA column
    assert "sampling pairs" in err and "4/4" in err and "eta" in err
    assert shown.candidates == quiet.candidates  # the bar changes nothing that is sampled
