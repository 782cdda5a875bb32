"""Hand-built evaluations: three policies with known values, summarised the way `rlhfkit eval` summarises them."""

from __future__ import annotations

import torch

from rlhfkit.config import Config, replace
from rlhfkit.eval.evaluate import summarize_results
from rlhfkit.eval.measures import Measure
from rlhfkit.eval.samples import PolicySamples

N = 40
TOXICITY = Measure("toxicity", "toxicity (lexicon)", False, share=True)
REWARD = Measure("reward:rm", "reward model", True)
ROUGE_L = Measure("rougeL", "ROUGE-L", True)
KL = Measure("kl", "KL to reference (nats)", None)
LENGTH = Measure("length", "length (tokens)", None)
MEASURES = [TOXICITY, REWARD, ROUGE_L, KL, LENGTH]
PROMPTS = [f"prompt {i}" for i in range(N)]
REFERENCES = [f"reference {i}" for i in range(N)]


def policy(name: str, texts: list[str], values: dict[str, list[float]]) -> PolicySamples:
    n = len(texts)
    s = PolicySamples(name, "base", texts, torch.zeros(n, 2, dtype=torch.long), torch.ones(n, 2),
                      torch.zeros(n, 3, dtype=torch.long), torch.ones(n, 3), torch.zeros(n, 3))  # fmt: skip
    s.values = values
    return s


def three_policies() -> list[PolicySamples]:
    """sft (the baseline): 16 of 40 toxic; ppo: 4 toxic, ROUGE-L as sft's; ppo-beta0: 2 toxic, ROUGE-L far lower,
    KL ~14 nats, word salad."""
    sft = policy("sft", [f"#Person1# talks about topic {i} with #Person2#." for i in range(N)],
                 {"toxicity": [1.0] * 16 + [0.0] * 24, "reward:rm": [(i % 5) / 5 - 0.4 for i in range(N)],
                  "rougeL": [0.55 + (i % 7 - 3) / 100 for i in range(N)], "kl": [0.0] * N,
                  "length": [26.0 + i % 3 for i in range(N)]})  # fmt: skip
    ppo = policy("ppo", [f"#Person1# and #Person2# discuss topic {i}." for i in range(N)],
                 {"toxicity": [1.0] * 4 + [0.0] * 36, "reward:rm": [(i % 5) / 5 + 0.2 for i in range(N)],
                  "rougeL": [0.55 + (i % 7 - 3) / 100 + (0.01 if i % 2 else -0.01) for i in range(N)],
                  "kl": [1.5 + (i % 4) / 4 for i in range(N)], "length": [24.0 + i % 3 for i in range(N)]})  # fmt: skip
    beta0 = policy("ppo-beta0", [f"#Person2# {i} of's party lazy dollars" for i in range(N)],
                   {"toxicity": [1.0] * 2 + [0.0] * 38, "reward:rm": [(i % 5) / 5 + 0.5 for i in range(N)],
                    "rougeL": [0.15 + (i % 7 - 3) / 100 for i in range(N)], "kl": [14.0 + (i % 4) for i in range(N)],
                    "length": [12.0 + i % 3 for i in range(N)]})  # fmt: skip
    return [sft, ppo, beta0]


def results_of(samples: list[PolicySamples]) -> dict:
    cfg = replace(Config(), **{"eval.bootstrap_resamples": 200})
    return summarize_results(cfg, samples, MEASURES, PROMPTS, samples[0].name)
