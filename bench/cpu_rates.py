"""The CPU kernel figures that PPO speed rests on, measured on this machine (2 threads, as bench/ppo_step.py).

1. Matrix-product throughput of ``F.linear`` in fp32 and bf16, for the shapes of FLAN-T5-base: the 16-row
   products of a decoding step and the 512/2048-row products of teacher-forced passes. The fp32 peak bounds
   how fast an fp32 PPO step can be: ``bench/ppo_step.py --floor`` turns it into a floor per step.
2. One-query attention (a decoding step: 16 rows, 12 heads, 1 query, 128 or 32 keys with a bias) through
   SDPA's CPU kernel against the eager matmul-softmax-matmul, which is why the sampling loop decodes with
   eager attention on a CPU (rlhfkit.rollout.decoding.cpu_decode_attention).

    .venv/bin/python bench/cpu_rates.py
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

THREADS = 2


def mean_us(fn: Callable[[], object], repeats: int) -> float:
    for _ in range(3):
        fn()
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - started) / repeats * 1e6


def linear_gmacs(rows: int, k: int, n: int, dtype: torch.dtype) -> float:
    """G multiply-adds per second of F.linear: (rows, k) inputs, an (n, k) weight."""
    x, w = torch.randn(rows, k, dtype=dtype), torch.randn(n, k, dtype=dtype)
    repeats = max(3, int(2e9 / (rows * k * n)))
    return rows * k * n / 1e3 / mean_us(lambda: F.linear(x, w), repeats)


def linear_throughput() -> None:
    print("F.linear, GMAC/s (multiply-adds per second)      fp32      bf16")
    for rows in (16, 512, 2048):
        for k, n in ((768, 768), (768, 2048), (768, 32128)):
            fp32, bf16 = linear_gmacs(rows, k, n, torch.float32), linear_gmacs(rows, k, n, torch.bfloat16)
            print(f"  {rows:5d} rows x {k} -> {n:<6d}                    {fp32:8.0f}  {bf16:8.0f}")


def attention_us(keys: int, dtype: torch.dtype) -> tuple[float, float]:
    """Microseconds per one-query attention call (16 rows, 12 heads, head dim 64): SDPA, then eager."""
    q = torch.randn(16, 12, 1, 64, dtype=dtype)
    k, v = torch.randn(16, 12, keys, 64, dtype=dtype), torch.randn(16, 12, keys, 64, dtype=dtype)
    bias = torch.randn(16, 12, 1, keys, dtype=dtype)

    def sdpa() -> torch.Tensor:
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.MATH]):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=1.0)

    def eager() -> torch.Tensor:  # what transformers' eager T5 attention computes
        weights = (q @ k.transpose(-1, -2) + bias).float().softmax(-1).to(dtype)
        return weights @ v

    return mean_us(sdpa, 200), mean_us(eager, 200)


def one_query_attention() -> None:
    print("\none-query attention (16 rows, 12 heads, head dim 64), microseconds per call")
    print("                               SDPA (CPU kernel)     eager")
    for dtype in (torch.float32, torch.bfloat16):
        for keys in (128, 32):
            sdpa, eager = attention_us(keys, dtype)
            name = str(dtype).removeprefix("torch.")
            print(f"  {name:8s} {keys:3d} keys               {sdpa:10.0f}  {eager:8.0f}")


if __name__ == "__main__":
    torch.set_num_threads(THREADS)
    linear_throughput()
    one_query_attention()
