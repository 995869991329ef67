"""Recipe ``kd-cache``: the kd-lm setting distilled from teacher caches of k ids per token and from the live teacher.

The corpus, teacher and students are kd-lm's (:mod:`divmin.recipes.kd_lm`: a
topic-conditioned Markov chain, a tiny GPT-2 teacher trained on it, smaller GPT-2
students), with a larger vocabulary (``setting.words`` = 60, V = 70, by default; kd-lm has 40)
so that k = 8 and 32 truncate the teacher; k = 128 >= V then keeps every id (a check:
its students must match the live teacher's). Larger ``words`` make the small teacher
flatter (at setting.words = 120 it is near its unigram law) and the truncation costlier.
After the teacher is trained it is run once over the students' training
rows per k (:func:`divmin.distill.cache_teacher`, ``dtype`` log-probs, ids packed
to the vocabulary's width); every student of the grid divergence x teacher is then
trained by :class:`divmin.distill.DistillTrainer` (off-policy KD, pure soft loss)
with the same seed, data order and steps, the teacher being the
:class:`~divmin.distill.TeacherCache` (tail ``tail``) or the live model.

Rows: ``divergence``, ``k`` ("live" for the live teacher), held-out
``student_ppl`` (completion tokens), ``kl_to_teacher`` (KL(live teacher || student)
per token, held out) and ``bytes_per_token`` (the cache's shard bytes on disk per
token; for "live", 2 V: what full fp16 logits would take). Summary: the teacher's mean
mass on its top k over the cached tokens, and per divergence
the ratio of each cache student's perplexity to the live-teacher student's, and
the computed claims of the issue's goal (k = 32 within 2 %, at most 150 bytes per token).

Full-size run (``divmin recipes`` shows it): ``divmin run kd-cache --out runs/kd-cache --full``, that is
``--set "seeds=(0, 1, 2)" --set kd.engine.max_steps=600``.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import statistics
from pathlib import Path

from torch import nn

from ..distill import ENCODINGS, TAILS, DistillConfig, DistillTrainer, TeacherCache, cache_teacher
from ..engine import Bool, Instance, Int, IsDivergence, OneOf, Tuple, validate
from ._engines import check_recipe_kd, recipe_engine
from ._plots import figure_legend, plt, save_figure
from ._seeds import seed_sd
from ._registry import RecipeResult, recipe
from ._runs import resumable, run_engine
from .kd_lm import EOS, PAD, MarkovCorpus, MarkovSetting, heldout_metrics, student_lm, train_teacher_lm

__all__ = ["KDCacheConfig", "run_kd_cache"]


def _default_kd() -> DistillConfig:
    return DistillConfig(lr=3e-3, batch_size=32, engine=recipe_engine(300, max_grad_norm=1.0))


@dataclasses.dataclass
class KDCacheConfig:
    divergences: tuple[str, ...] = ("forward_kl", "reverse_kl", "js")  # D(teacher || student) of the soft loss
    ks: tuple[int, ...] = (8, 32, 128)  # ids per token of each cache
    dtype: str = "int8"  # log-prob encoding of the caches (divmin.distill.ENCODINGS)
    tail: str = "bucket"  # TeacherCache tail: "bucket", "renormalize" or "uniform"
    seeds: tuple[int, ...] = (0,)  # student seeds (init, data order): every teacher gets the same ones
    # kd-lm's corpus, teacher and students with a larger vocabulary (V = 2 + topics + words = 70)
    setting: MarkovSetting = dataclasses.field(default_factory=lambda: MarkovSetting(words=60))
    num_threads: int | None = 1  # torch intra-op threads during the run; None = as is
    resume: bool = False  # resume every training run (and cache) from where it stopped
    kd: DistillConfig = dataclasses.field(default_factory=_default_kd)  # students' KD (divergence: `divergences`)

    CHECKS = dict(  # one per field: divmin.engine.validate
        divergences=Tuple(each=IsDivergence(), min_len=1), ks=Tuple(each=Int(ge=1), min_len=1),
        dtype=OneOf(tuple(ENCODINGS)), tail=OneOf(TAILS), seeds=Tuple(each=Int(ge=0), min_len=1),
        setting=Instance(MarkovSetting), num_threads=Int(ge=1, optional=True), resume=Bool(),
        kd=Instance(DistillConfig),
    )

    def __post_init__(self) -> None:
        validate(self)
        check_recipe_kd(self.kd, by="divergences", task="causal_lm")


def _caches(c: KDCacheConfig, teacher: nn.Module, rows: list, out_dir: Path) -> dict[int, TeacherCache]:
    out = {}
    for k in c.ks:
        d = out_dir / "caches" / f"k{k}"
        if not c.resume and d.exists():
            shutil.rmtree(d)  # shards of an earlier run were written by another teacher: never reuse them
        cache_teacher(teacher, rows, d, top_k=k, dtype=c.dtype, batch_size=64, teacher_name="kd-cache teacher",
                      pad_id=PAD)
        out[k] = TeacherCache(d, tail=c.tail)
    return out


@recipe("kd-cache", KDCacheConfig, "kd-lm distilled from top-k teacher caches (k = 8, 32, 128) vs the live teacher",
        full_size=("seeds=(0, 1, 2)", "kd.engine.max_steps=600"))
def run_kd_cache(config: KDCacheConfig, out_dir: Path) -> RecipeResult:
    s = config.setting
    corpus = MarkovCorpus(s)
    # k >= V caches the whole distribution, at more bytes per token than fp16 logits: the live row is that case
    dropped = [k for k in config.ks if k >= corpus.vocab]
    if len(dropped) == len(config.ks):
        raise ValueError(f"`ks`: every k is >= the vocabulary V = {corpus.vocab}; a top-k cache needs k < V")
    c = dataclasses.replace(config, ks=tuple(k for k in config.ks if k < corpus.vocab))
    teach_rows, train_rows, test_rows = (corpus.sample(n) for n in
                                         (s.teacher_sequences, s.transfer_sequences, s.test_sequences))
    teacher = train_teacher_lm(s, corpus.vocab, teach_rows, c.kd, out_dir / "teacher", c.resume)
    caches = _caches(c, teacher, train_rows, out_dir)
    teachers: dict[str, object] = {**{str(k): caches[k] for k in c.ks}, "live": teacher}
    rows, ppl = [], {}
    for div in c.divergences:
        for key, t in teachers.items():
            runs = []
            for seed in c.seeds:
                student = student_lm(s, corpus.vocab, seed)
                run = f"{div}_{key if key == 'live' else 'k' + key}"
                engine = run_engine(c.kd.engine, out_dir / "students" / run / f"seed{seed}", seed=seed)
                cfg = dataclasses.replace(c.kd, divergence=div, engine=engine)
                trainer = DistillTrainer(student, t, train_rows, config=cfg, pad_id=PAD, eos_id=EOS)
                trainer.fit(resume=resumable(engine, c.resume))
                runs.append(heldout_metrics(trainer.model.cpu().eval(), teacher, test_rows))
            bpt = caches[int(key)].manifest["bytes_per_token_on_disk"] if key != "live" else 2.0 * corpus.vocab
            ppl[div, key] = statistics.fmean(r["ppl"] for r in runs)
            rows.append({"divergence": str(div), "k": key, "student_ppl": ppl[div, key],
                         "ppl sd": seed_sd([r["ppl"] for r in runs]),
                         "kl_to_teacher": statistics.fmean(r["kl_ts"] for r in runs), "bytes_per_token": bpt})
    summary = _summary(c, corpus.vocab, ppl, caches, heldout_metrics(teacher, teacher, test_rows)["ppl"])
    summary["true_ppl"] = math.exp(corpus.true_nll(test_rows))
    if dropped:
        summary["ks_not_run"] = (f"k = {', '.join(map(str, dropped))} >= V = {corpus.vocab}: a cache of the whole "
                                 f"vocabulary, larger than fp16 logits; the live teacher's row is that case")
    plot = _plot(rows, out_dir / "kd_cache.png")
    return RecipeResult(["divergence", "k", "student_ppl", "ppl sd", "kl_to_teacher", "bytes_per_token"], rows,
                        [str(plot)], summary)


def _summary(c: KDCacheConfig, vocab: int, ppl: dict, caches: dict[int, TeacherCache], teacher_ppl: float) -> dict:
    ratio = {f"{div}/k{k}": ppl[str(div), str(k)] / ppl[str(div), "live"] for div in map(str, c.divergences)
             for k in c.ks}
    mass = {k: caches[k].topk_mass() for k in c.ks}
    out = {"vocab_size": vocab, "teacher_ppl": teacher_ppl, "ppl_ratio_to_live": ratio, "teacher_topk_mass": mass,
           "bytes_per_token": {k: caches[k].manifest["bytes_per_token_on_disk"] for k in c.ks}}
    if 32 in c.ks:
        divs = list(map(str, c.divergences))
        # the claim is one-sided (a cache must not cost quality); a k = 32 student better than the live one passes
        out["k32_ppl_vs_live"] = {div: f"{100 * (ratio[f'{div}/k32'] - 1):+.1f}%" for div in divs}
        out["k32_at_most_2pct_worse_than_live"] = {div: ratio[f"{div}/k32"] <= 1.02 for div in divs}
        out["k32_at_most_150_bytes_per_token"] = caches[32].manifest["bytes_per_token_on_disk"] <= 150
    return out


def _plot(rows: list[dict], path: Path) -> Path:
    """Held-out student perplexity against the cache's bytes per token, one line per divergence."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    data = {}
    for i, div in enumerate(dict.fromkeys(r["divergence"] for r in rows)):
        cached = sorted((r["bytes_per_token"], r["student_ppl"], r["k"]) for r in rows
                        if r["divergence"] == div and r["k"] != "live")
        pts = [(b, p) for b, p, _ in cached]
        live = next(r for r in rows if r["divergence"] == div and r["k"] == "live")
        color = f"C{i}"
        ax.plot(*zip(*pts), "o-", color=color, label=f"{div}: student of a top-k cache")
        for b, p, k in cached:
            ax.annotate(f"k={k}", (b, p), textcoords="offset points", xytext=(4, 4), fontsize=7, color=color)
        ax.axhline(live["student_ppl"], color=color, ls="--", lw=1, label=f"{div}: student of the live teacher")
        data[div] = {"cache": pts, "live": live["student_ppl"]}
    ax.set_xscale("log")
    ax.set_xlabel("bytes per token on disk")
    ax.set_ylabel("held-out student perplexity")
    ax.set_title("kd-cache: student quality against the teacher cache's size")
    figure_legend(fig, [ax], on=ax, fontsize=7)
    return save_figure(fig, path, data=data)
