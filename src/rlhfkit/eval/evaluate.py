"""`rlhfkit eval`: compare policies on the same held-out prompts, with honest statistics.

The pipeline, each step a short function:

    sample every policy (paired: prompt i gets the same random stream under every policy)
    → KL of each policy to the reference policy, on the policy's own samples
    → measures: toxicity, rewards, ROUGE against the references, response length
    → per policy: mean / median / std with bootstrap intervals, the repeated-response share, distinct-1/2
    → per pair of policies: paired difference with its interval, Wilcoxon test, win rate
    → samples.csv, summary.csv, comparisons.csv, before/after tables, results.json, report.html

The course lab judged its detoxification on 11 samples; here every figure comes with its interval, and
the before/after table is sorted by the change so the best and the worst cases are both in view.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from rlhfkit.config import Config, parse_policy, save_config
from rlhfkit.engine.progress import StepProgress
from rlhfkit.errors import RlhfkitError
from rlhfkit.eval.measures import Measure, build_toxicity, score_all
from rlhfkit.eval.report import write_report
from rlhfkit.eval.samples import BeforeAfter, PolicySamples, before_after_tables
from rlhfkit.eval.stats import compare_paired, distinct_n, repeated_share, summarize
from rlhfkit.io import write_json_atomic, write_text_atomic

RESULTS_VERSION = 1


@dataclass
class EvalResult:
    output_dir: Path
    results: dict[str, Any]
    """What results.json holds."""
    report: Path


def prompt_seed(seed: int, index: int) -> int:
    """The sampling seed of prompt ``index``: the same under every policy, independent of batching."""
    digest = hashlib.sha256(f"rlhfkit-eval:{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % 2**63


def run_eval(cfg: Config, progress: bool = True, console: Console | None = None) -> EvalResult:
    """Evaluate ``cfg.eval.policies`` on held-out prompts and write the results into ``cfg.run.output_dir``."""
    from rlhfkit.data.loading import load_dialogues
    from rlhfkit.engine.runtime import quiet_libraries

    quiet_libraries()
    check_eval_extra()
    console = console or Console(stderr=True, quiet=not progress)
    ev = cfg.eval
    if not ev.policies:
        raise RlhfkitError("name the policies to compare: --policy sft=runs/sft/adapter --policy ppo=runs/ppo/adapter "
                           "(or eval.policies in the config); 'base' is the model without an adapter.")  # fmt: skip
    policies = [parse_policy(p) for p in ev.policies]
    for name, path in policies:
        _check_policy_path(name, path)
    check_adapters_fit(cfg, policies)
    reference = ev.reference or policies[0][0]
    out = Path(cfg.run.output_dir)
    if cfg.run.num_threads > 0:
        torch.set_num_threads(cfg.run.num_threads)
    started = time.perf_counter()

    data = load_dialogues(cfg.data)
    split = data.test if ev.split == "test" else data.train
    rows = split.select(range(min(ev.prompts, len(split))))
    prompts, references = list(rows["prompt"]), list(rows["summary"])
    if len(prompts) < ev.prompts:
        console.print(f"[yellow]the {ev.split} split has only {len(prompts)} prompts; evaluating on all of them "
                      f"(eval.prompts={ev.prompts}).[/yellow]")  # fmt: skip
    seeds = [prompt_seed(ev.seed, i) for i in range(len(prompts))]

    samples: list[PolicySamples] = []
    for name, path in policies:
        console.print(f"sampling {len(prompts)} responses from {name} ({path})")
        with StepProgress(f"sample {name}", len(prompts), enabled=progress, console=console) as bar:
            samples.append(sample_policy(cfg, name, path, prompts, seeds, on_batch=bar.advance))
    console.print(f"KL of each policy to {reference} on its own samples")
    add_kl(cfg, samples, dict(policies)[reference], reference)
    measures = add_measures(cfg, samples, prompts, references, console, progress=progress)

    results = summarize_results(cfg, samples, measures, prompts, reference)
    results["seconds"] = time.perf_counter() - started
    tables = before_after_tables(samples, measures, prompts, references)
    files = write_outputs(out, cfg, samples, measures, prompts, references, results, tables)
    report = write_report(out / "report.html", results, samples, measures, cfg, tables)
    files["report"] = report.name
    results["files"] = files
    write_json_atomic(out / "results.json", results)
    return EvalResult(out, results, report)


def check_eval_extra() -> None:
    """The statistics (SciPy), plots (matplotlib) and report (Jinja2) come with the ``eval`` extra: say so before
    any sampling, not in a traceback at the end of the run."""
    import importlib

    missing = []
    for module in ("scipy.stats", "matplotlib", "jinja2"):
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module.split(".")[0])
    if missing:
        raise RlhfkitError(f"rlhfkit eval needs the 'eval' extra ({', '.join(missing)} not installed): "
                           "pip install 'rlhfkit[eval]'")  # fmt: skip


def _check_policy_path(name: str, path: str) -> None:
    from rlhfkit.models.inference import BASE_POLICY

    if path != BASE_POLICY and not (Path(path) / "adapter_config.json").is_file():
        raise RlhfkitError(f"policy {name!r}: {path!r} is not an adapter folder (no adapter_config.json). Give the "
                           "adapter/ folder written by `rlhfkit sft` or `rlhfkit ppo`, or 'base'.")  # fmt: skip


@dataclass(frozen=True)
class _ConfigOnly:
    """Stands in for a loaded base model where only its config is read (the adapter checks read nothing else)."""

    config: Any
    """transformers PretrainedConfig of the base model."""


def check_adapters_fit(cfg: Config, policies: Sequence[tuple[str, str]]) -> None:
    """Refuse an adapter trained on another base model before any policy is sampled.

    Sampling a policy can take minutes; a mismatch found while loading the second policy would throw that
    work away. Only the base model's config.json is read here, not its weights.
    """
    from transformers import AutoConfig

    from rlhfkit.models.inference import BASE_POLICY, adapter_chain
    from rlhfkit.models.loading import resolve_source
    from rlhfkit.models.lora import check_adapter_matches

    adapters = [(name, path) for name, path in policies if path != BASE_POLICY]
    if not adapters:
        return
    source = resolve_source(cfg.model.name_or_path)
    try:
        base = _ConfigOnly(AutoConfig.from_pretrained(source, revision=cfg.model.revision,
                                                      trust_remote_code=cfg.model.trust_remote_code))  # fmt: skip
    except (OSError, ValueError):
        return  # not readable on its own: loading the model for sampling reports it with the full explanation
    for name, path in adapters:
        for link in adapter_chain(path):  # a PPO adapter also needs the SFT adapter it was trained on top of
            try:
                check_adapter_matches(base, link)
            except RlhfkitError as e:
                raise RlhfkitError(f"policy {name!r}: {e}") from None


# --------------------------------------------------------------------------------------------------
# Sampling and KL


def sample_policy(cfg: Config, name: str, path: str, prompts: list[str], seeds: Sequence[int],
                  on_batch: Callable[[int], None] | None = None) -> PolicySamples:  # fmt: skip
    """Responses of one policy, each prompt sampled from its own seed; the log-probs come from the sampling pass.
    ``on_batch(n)`` is called after each batch of n prompts (a progress bar)."""
    from rlhfkit.models.inference import load_policy
    from rlhfkit.models.loading import pick_device
    from rlhfkit.rollout.generation import generate

    loaded = load_policy(cfg.model, path)
    model = loaded.model.to(pick_device(cfg.run.device))
    out = generate(model, loaded.tokenizer, prompts, cfg.generation, loaded.is_encoder_decoder,
                   row_seeds=seeds if cfg.generation.do_sample else None, collect=True, on_batch=on_batch)  # fmt: skip
    return PolicySamples(name, path, out.texts, out.prompt_ids, out.prompt_mask, out.response_ids,
                         out.response_mask, out.logprobs * out.response_mask)  # fmt: skip


@torch.no_grad()
def reference_logprobs(model: Any, tokenizer: Any, is_encoder_decoder: bool, s: PolicySamples, temperature: float,
                       batch_size: int) -> torch.Tensor:  # fmt: skip
    """(N, T) log-probs of ``s``'s responses under ``model`` (teacher-forced, at the sampling temperature)."""
    from rlhfkit.core.logprobs import logprobs_from_logits
    from rlhfkit.models.forward import decoder_start_id, teacher_forced

    device = next(model.parameters()).device
    start_id = decoder_start_id(model.config, tokenizer.pad_token_id)
    parts = []
    for i in range(0, len(s.texts), batch_size):
        ids, mask, resp = (t[i : i + batch_size].to(device) for t in (s.prompt_ids, s.prompt_mask, s.response_ids))
        logits, _ = teacher_forced(model, is_encoder_decoder, start_id, ids, mask, resp)
        parts.append(logprobs_from_logits(logits, resp, temperature).float().cpu())
    return torch.cat(parts) * s.response_mask


def add_kl(cfg: Config, samples: list[PolicySamples], reference_path: str, reference_name: str) -> None:
    """values['kl'] = Σ_t log π(y_t) − log π_ref(y_t) over each response: the sequence KL (k1) estimate.

    Measured on each policy's own samples, so its mean estimates KL(π‖π_ref), the quantity PPO's penalty
    holds down. The reference policy's own value is 0 up to float rounding (a check of the pipeline).
    """
    from rlhfkit.models.inference import load_policy
    from rlhfkit.models.loading import pick_device

    loaded = load_policy(cfg.model, reference_path)
    model = loaded.model.to(pick_device(cfg.run.device))
    for s in samples:
        ref = reference_logprobs(model, loaded.tokenizer, loaded.is_encoder_decoder, s, cfg.generation.temperature,
                                 cfg.generation.batch_size)  # fmt: skip
        s.values["kl"] = (s.logprobs - ref).sum(dim=1).tolist()
    del model, loaded


# --------------------------------------------------------------------------------------------------
# Measures


def add_measures(cfg: Config, samples: list[PolicySamples], prompts: list[str], references: list[str],
                 console: Console, progress: bool = False) -> list[Measure]:  # fmt: skip
    """Fill ``values`` of every policy with every measure; return the measures in report order (``progress``:
    a bar per measure over the policies it scores)."""
    from rlhfkit.eval.rouge import ROUGE_TYPES, rouge_per_example
    from rlhfkit.rewards.factory import build_spec_reward

    measures: list[Measure] = []
    toxicity = build_toxicity(cfg.eval.toxicity)
    lexicon = cfg.eval.toxicity.kind == "lexicon"
    scorers: list[tuple[Measure, Any]] = [(Measure("toxicity", toxicity.name, False, share=lexicon), toxicity)]
    for spec in cfg.reward.rewards:
        reward = build_spec_reward(spec)
        scorers.append((Measure(f"reward:{reward.name}", reward.name, True), reward))
    for measure, scorer in scorers:
        console.print(f"scoring with {measure.label}")
        with StepProgress(f"score {measure.key}", len(samples), enabled=progress, console=console) as bar:
            for s in samples:
                s.values[measure.key] = score_all(scorer, prompts, s.texts)
                bar.advance()
        measures.append(measure)
    if any(r.strip() for r in references):
        for s in samples:
            s.values.update(rouge_per_example(s.texts, references))
        measures += [Measure(t, t.replace("rouge", "ROUGE-"), True) for t in ROUGE_TYPES]
    for s in samples:
        s.values["length"] = s.response_mask.sum(dim=1).tolist()
    measures += [Measure("kl", "KL to reference (nats)", None),
                 Measure("length", "length (tokens)", None)]  # fmt: skip
    return measures


# --------------------------------------------------------------------------------------------------
# Statistics


def summarize_results(cfg: Config, samples: list[PolicySamples], measures: list[Measure], prompts: list[str],
                      reference: str) -> dict[str, Any]:  # fmt: skip
    """results.json: per-policy summaries, pairwise comparisons and what produced them."""
    ev = cfg.eval
    kw = {"confidence": ev.confidence, "resamples": ev.bootstrap_resamples, "seed": ev.seed}
    per_policy: dict[str, Any] = {}
    for s in samples:
        per_policy[s.name] = {
            "path": s.path,
            "measures": {m.key: summarize(s.values[m.key], **kw).to_dict() for m in measures},
            "distinct_1": distinct_n(s.texts, 1),
            "distinct_2": distinct_n(s.texts, 2),
            "repeated_share": repeated_share(s.texts),
        }
    comparisons = []
    for i, a in enumerate(samples):
        for b in samples[i + 1 :]:
            entry: dict[str, Any] = {"a": a.name, "b": b.name, "measures": {}}
            for m in measures:
                c = compare_paired(a.values[m.key], b.values[m.key], **kw)
                record = c.to_dict()
                if m.higher_is_better is not None:
                    record["win_rate"] = c.win_rate(m.higher_is_better)
                entry["measures"][m.key] = record
            comparisons.append(entry)
    return {
        "version": RESULTS_VERSION,
        "prompts": len(prompts),
        "split": ev.split,
        "seed": ev.seed,
        "confidence": ev.confidence,
        "bootstrap_resamples": ev.bootstrap_resamples,
        "reference": reference,
        "model": cfg.model.name_or_path,
        "generation": {"temperature": cfg.generation.temperature, "top_k": cfg.generation.top_k,
                       "top_p": cfg.generation.top_p, "max_new_tokens": cfg.generation.max_new_tokens,
                       "do_sample": cfg.generation.do_sample},
        "measures": [dataclasses.asdict(m) for m in measures],  # key, label, higher_is_better, share
        "policy_order": [s.name for s in samples],
        "policies": per_policy,
        "comparisons": comparisons,
        "reward_models": _reward_model_reports(cfg),
    }


def _reward_model_reports(cfg: Config) -> list[dict[str, Any]]:
    """Held-out accuracy of each trained reward model in the reward config (from its report.json)."""
    import json

    found = []
    for spec in cfg.reward.rewards:
        if spec.kind != "reward_model":
            continue
        for candidate in (Path(spec.path) / "report.json", Path(spec.path).parent / "report.json"):
            if candidate.is_file():
                report = json.loads(candidate.read_text())
                found.append({"path": spec.path, "heldout": report.get("heldout"), "folder": str(candidate.parent),
                              "annotator_agreement": report.get("annotator_agreement")})  # fmt: skip
                break
    return found


# --------------------------------------------------------------------------------------------------
# Files


def _csv_text(header: list[str], rows: list[list[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _safe(name: str) -> str:
    """A policy name as a file-name part."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "policy"


def write_outputs(out: Path, cfg: Config, samples: list[PolicySamples], measures: list[Measure], prompts: list[str],
                  references: list[str], results: dict[str, Any], tables: BeforeAfter) -> dict[str, str]:  # fmt: skip
    """samples.csv, summary.csv, comparisons.csv and one before/after table per policy after the first."""
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out)
    keys = [m.key for m in measures]
    sample_rows = [[i, s.name, prompts[i], references[i], s.texts[i], *(s.values[k][i] for k in keys)]
                   for s in samples for i in range(len(prompts))]  # fmt: skip
    write_text_atomic(out / "samples.csv", _csv_text(["prompt_index", "policy", "prompt", "reference", "response", *keys],
                                                     sample_rows))  # fmt: skip
    summary_rows = []
    for name, entry in results["policies"].items():
        for key, s in entry["measures"].items():
            summary_rows.append([name, key, s["n"], s["mean"], s["mean_ci"]["low"], s["mean_ci"]["high"], s["median"],
                                 s["median_ci"]["low"], s["median_ci"]["high"], s["std"]])  # fmt: skip
        summary_rows.append([name, "distinct_1", len(prompts), entry["distinct_1"], "", "", "", "", "", ""])
        summary_rows.append([name, "distinct_2", len(prompts), entry["distinct_2"], "", "", "", "", "", ""])
        summary_rows.append([name, "repeated_share", len(prompts), entry["repeated_share"], "", "", "", "", "", ""])
    write_text_atomic(out / "summary.csv", _csv_text(["policy", "measure", "n", "mean", "mean_ci_low", "mean_ci_high",
                                                      "median", "median_ci_low", "median_ci_high", "std"], summary_rows))  # fmt: skip
    comparison_rows = [[c["a"], c["b"], key, r["n"], r["mean_difference"], r["ci"]["low"], r["ci"]["high"],
                        r["p_value"], r.get("win_rate", ""), r["b_higher"], r["equal"], r["b_lower"]]
                       for c in results["comparisons"] for key, r in c["measures"].items()]  # fmt: skip
    write_text_atomic(out / "comparisons.csv", _csv_text(["a", "b", "measure", "n", "mean_difference_b_minus_a",
                                                          "ci_low", "ci_high", "wilcoxon_p", "win_rate_b", "b_higher",
                                                          "equal", "b_lower"], comparison_rows))  # fmt: skip
    files = {"samples": "samples.csv", "summary": "summary.csv", "comparisons": "comparisons.csv", "tables": []}
    for table in tables.tables:
        name = f"before_after_{_safe(table.a)}_vs_{_safe(table.b)}.csv"
        header = list(table.rows[0])
        write_text_atomic(out / name, _csv_text(header, [[r[h] for h in header] for r in table.rows]))
        files["tables"].append(name)
    results["table_measure"] = tables.measure.key
    return files
