"""What each column of a recipe's table means, printed under the table by ``divmin run``.

One glossary for every recipe: a column that means the same everywhere ("divergence",
"KL(P||Q)") is written once; a recipe whose column means something of its own has a
``"recipe/column"`` entry, which wins. ``tests/recipes/test_resume_every_recipe.py``
checks that every column of every recipe's table is explained here.
"""

from __future__ import annotations

import math
from typing import Any

from ._registry import RecipeResult

__all__ = ["COLUMNS", "column_legend", "explain_column", "format_summary", "round_figures"]

# P is the target (data, teacher, energy-based target, optimum), Q / pi / S the trained model.
COLUMNS: dict[str, str] = {
    # shared
    "divergence": "the registry member the row was trained with (spec string; `divmin divergences`)",
    "behaviour": "the registry's reading of f: mode-seeking (f(0) = inf), mass-covering (f(r)/r -> inf), "
                 "both, or balanced (neither)",
    "seed": "the training seed of the row",
    "model": "what the row scores: a trained method, a baseline, or a reference (teacher, true law)",
    "method": "the training method of the row (a baseline or a divergence)",
    "std": "standard deviation of the row's main figure over seeds",
    "KL(P||Q)": "forward KL from the target to the model (mass-covering error)",
    "KL(Q||P)": "reverse KL from the model to the target (mode-seeking error)",
    "JS": "Jensen-Shannon divergence between target and model, in nats (at most log 2)",
    "entropy": "entropy of the model's samples, in nats",
    "nfe": "network function evaluations of the sampler",
    "gen_ppl": "generative perplexity of samples: exp of their mean negative log-likelihood per token",
    # fit
    "fit/start": "the start the member chose by its own divergence (0: centred at 0; k: on the k-th component)",
    "fit/modes covered": "target modes that receive at least a quarter of their mass (config `coverage`)",
    "mean": "the fitted Gaussian's mean",
    "fit/std": "the fitted Gaussian's standard deviation",
    # fdpo-bandit
    "beta": "the KL-regularisation strength beta of f-DPO",
    "reward": "expected true reward of the policy",
    "KL(pi||ref)": "KL from the trained policy to the reference policy",
    "ECE": "expected calibration error of the preferences the policy implies",
    "TV to opt": "total variation between the trained policy and the member's closed-form optimum",
    "loss gap": "population f-DPO loss of the trained policy minus that of the optimum (nats)",
    "pairs needed": "preference pairs an efficient estimator needs for an expected TV at the tolerance "
                    "(`divmin.align.optimum_sample_size`), rounded up to whole pairs: 1 = any data suffice; "
                    "compare the summary's pairs_seen, the pairs the run drew",
    "opt reward": "expected true reward at the closed-form optimum",
    "opt entropy": "entropy of the closed-form optimum",
    # fdpo-lm
    "fdpo-lm/reward": "mean true (training) reward of the policy's samples on held-out prompts",
    "reward gain": "the policy's reward minus the reference policy's",
    "reward/word": "length-controlled reward (#GOOD - #BAD) / #words, whatever the training reward",
    "distinct-2": "unique / total word bigrams per prompt (diversity)",
    "length": "mean answer length in words",
    "cut": "share of samples cut at the token cap (`max_new_tokens`)",
    "eval acc": "preference accuracy of the implicit reward on held-out pairs",
    # fdpg-toy / fdpg-lm
    "alignment": "E_Q[b]: share of the model's samples that satisfy the constraint",
    "entropy sd": "standard deviation of the entropy over base seeds",
    "acceptance": "acceptance rate 1 / max P/Q of rejection sampling P from Q",
    "modes": "target modes (local maxima satisfying the constraint) the model covers",
    "D_f / optimum": "the member's own D_f(P || Q) divided by that of the exact-gradient optimum",
    "own D_f (train)": "the member's own objective D_f(P || pi) on the training prompts",
    "KL(P||pi) (train)": "forward KL on the training prompts (pooled importance sampling)",
    "KL(pi||P) (train)": "reverse KL on the training prompts",
    "ESS(P/pi) (train)": "effective sample size (share) of the weights P/pi on the policy's samples, training prompts",
    "entropy (train)": "entropy -E_pi[log pi] on the training prompts, in nats",
    "KL(P||pi)": "forward KL on held-out prompts (pooled importance sampling)",
    "KL(pi||P)": "reverse KL on held-out prompts",
    "ESS(P/pi)": "effective sample size (share) of the weights P/pi on the policy's samples, held-out prompts",
    "KL(pi||base)": "KL from the policy to the base model",
    "self-BLEU": "mean BLEU of each sample against the others (lower: more diverse)",
    # kd-cls / kd-lm
    "accuracy": "test accuracy (mean over seeds)",
    "agreement": "share of test inputs on which the student's argmax equals the teacher's",
    "KL(T||S)": "KL(teacher || student) per example (kd-cls, T = 1) or per token (kd-lm), held out",
    # kd-sinkd
    "kd-sinkd/accuracy sd": "standard deviation of the test accuracy over seeds",
    "kd-sinkd/agreement sd": "standard deviation of the agreement over seeds",
    "kd-sinkd/KL(T||S) sd": "standard deviation of KL(teacher || student) over seeds",
    "KL(S||T)": "KL(student || teacher) per token, held out",
    "ppl": "held-out perplexity of the completion tokens (teacher forcing)",
    # kd-cache
    "kd-cache/k": "top-k ids per token in the teacher cache the student learnt from; live: the teacher model itself",
    "student_ppl": "held-out perplexity of the student on completion tokens (mean over seeds)",
    "ppl sd": "sample standard deviation of the student's held-out perplexity over seeds (0 for one seed)",
    "kl_to_teacher": "KL(live teacher || student) per completion token, held out",
    "bytes_per_token": "the cache's shard bytes on disk per token; live: 2 V, what full fp16 logits would take",
    # fdistill-gmm / fdistill-images
    "sigma_max": "the largest noise level of the diffusion teacher's schedule",
    "fdistill-gmm/modes covered": "modes whose sample share is at least `coverage` x their true weight",
    "TV weights": "total variation between the modes' sample shares and their true weights",
    "quality": "share of samples within 3 standard deviations of a mode",
    "precision": "k-NN precision: share of samples inside the teacher samples' manifold",
    "recall": "k-NN recall: share of teacher samples inside the samples' manifold",
    "SW": "sliced Wasserstein distance to teacher samples",
    "drift": "the larger span of quality and TV weights over the last quarter's evaluations (same latents each time)",
    "converged": "drift <= `converge_tol`: the run no longer moves (on mean rows: how many seeds did)",
    "lightest share": "sample share of the lightest mode (true weight in the summary)",
    "sampler": "what drew the samples: the teacher's multi-step sampler, the one-step teacher, or a student",
    "NFE": "network function evaluations of the sampler",
    "FD": "Frechet distance to held-out digits in a trained classifier's features (FID-like; lower is better)",
    "classes covered": "digit classes the classifier finds among the samples",
    "class TV": "total variation between the samples' class shares and the held-out data's",
    # depict
    "acc": "clustering accuracy after Hungarian matching of clusters to classes (mean over seeds)",
    "acc_std": "standard deviation of acc over seeds",
    "nmi": "normalised mutual information between clusters and classes",
    "nmi_std": "standard deviation of nmi over seeds",
    "ari": "adjusted Rand index between clusters and classes",
    "ari_std": "standard deviation of ari over seeds",
    "acc_per_seed": "clustering accuracy of each seed",
    # weat
    "clean_acc": "test accuracy on natural inputs",
    "pgd_acc": "test accuracy under the PGD attack",
    "pgd_acc_std": "standard deviation of pgd_acc over seeds",
    "autoattack_acc": "test accuracy under AutoAttack (optional torchattacks)",
    "energy_gap": "mean energy E(x') of PGD examples minus that of natural inputs",
    "kl": "TRADES' KL(p(x) || p(x')) at TRADES' adversary",
    "kl_marginal": "the KL's marginal energy term E(x) - E(x')",
    "kl_joint": "the KL's joint energy term",
    "sgld_acc": "share of SGLD samples a separate judge classifier labels as the class they were drawn for",
    "sgld_fd": "Frechet distance of SGLD samples to test images in the judge's features",
    "energy_natural": "mean energy E(x) of natural test inputs",
    "energy_adv": "mean energy E(x') of PGD examples",
    # speech-egg
    "condition": "test condition: voice, noise level (dB SNR) and recording channel",
    "idr": "identification rate: share of larynx cycles with exactly one detected instant",
    "mr": "miss rate: share of cycles with no detected instant",
    "far": "false-alarm rate: share of cycles with more than one detected instant",
    "ida_ms": "identification accuracy: spread of the timing error of identified instants, in ms",
    "idr_sd": "standard deviation of the IDR over the scarce-pair seeds (empty: a one-seed row)",
}


# summary entries a reader cannot decode from their name alone, printed with the column legend
SUMMARY_KEYS: dict[str, str] = {
    "didi-synthetic/target": "the teacher's own samples at teacher_nfe steps, the pool the student is matched to "
                             "(the distillation target): their gen_ppl and entropy, the student's reference point",
    "didi-synthetic/true_ppl": "exp of the Markov language's entropy rate: the best gen_ppl any sampler can reach",
    "fdpo-bandit/pairs_seen": "preference pairs the run drew (batch_pairs x steps, pairs of distinct responses)",
    "kd-cache/k32_ppl_vs_live": "the k = 32 student's held-out perplexity relative to the live-teacher student's "
                                "(negative: the cached student is better)",
}


def explain_column(recipe: str, column: str) -> str | None:
    """What ``column`` of ``recipe``'s table means (None if the glossary lacks it)."""
    return COLUMNS.get(f"{recipe}/{column}", COLUMNS.get(column))


def column_legend(recipe: str, result: RecipeResult) -> str:
    """One line per column of ``result``'s table: ``column: meaning``."""
    lines = []
    for column in result.columns:
        meaning = explain_column(recipe, column)
        if meaning is not None:
            lines.append(f"  {column}: {meaning}")
    text = "columns:\n" + "\n".join(lines) if lines else ""
    keys = [f"  {key}: {SUMMARY_KEYS[f'{recipe}/{key}']}" for key in result.summary if f"{recipe}/{key}" in SUMMARY_KEYS]
    if keys:
        text += ("\n" if text else "") + "summary entries:\n" + "\n".join(keys)
    return text


def round_figures(value: Any, digits: int = 4) -> Any:
    """``value`` with every float rounded to ``digits`` significant digits, through dicts, lists and tuples.

    A recipe's figures come from a few seeds and a few thousand samples: more digits are noise.
    Integers (counts), booleans and strings are kept as they are.

    >>> round_figures({"ppl": 18.364112345, "seeds": [0.123456789, 2], "ok": True})
    {'ppl': 18.36, 'seeds': [0.1235, 2], 'ok': True}
    """
    if isinstance(value, float):
        return float(f"{value:.{digits}g}") if math.isfinite(value) else value
    if isinstance(value, dict):
        return {k: round_figures(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(round_figures(v, digits) for v in value)
    return value


def format_summary(summary: dict[str, Any]) -> str:
    """A recipe's summary as ``divmin run`` prints it: one ``key: value`` line per entry, figures to 4
    significant digits; a dict of dicts (per seed, per setting) one indented line per inner key."""
    lines = []
    for key, value in round_figures(summary).items():
        if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            lines.append(f"{key}:")
            lines += [f"  {k}: {_inline(v)}" for k, v in value.items()]
        else:
            lines.append(f"{key}: {_inline(value)}")
    return "\n".join(lines)


def _inline(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_inline(v)}" for k, v in value.items()) or "{}"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):  # a list of dicts (one per seed): each in braces
        return "[" + ", ".join("{" + _inline(v) + "}" if isinstance(v, dict) else _inline(v) for v in value) + "]"
    return str(value)
