"""Recipe ``didi-synthetic``: DiDi-Instruct on a Markov language with an exact likelihood.

A random order-1 Markov chain (V = 32 tokens, L = 16) is the data; its exact log-likelihood
scores every generated sequence (:class:`~divmin.data.MarkovLanguage`). A small MDLM teacher is
trained on it (:class:`~divmin.diffusion.MDLMTrainer`), then a student is distilled from it with
:class:`~divmin.diffusion.DiDiTrainer` (teacher sampled with ``didi.teacher_nfe`` steps as the
target). For NFEs in ``nfes`` the table gives the exact generative perplexity (exp of the mean
negative log-likelihood per token under the chain) and the unigram entropy (nats) of
``score_samples`` samples, one row per (model, nfe):

* ``teacher``: the MDLM with the plain ancestral sampler;
* ``student``: the EMA student with the reward-guided sampler (the full method);
* ``student-no-guided-sampler``: the same student with the plain sampler;
* ``student-no-grouped-norm``, ``student-no-intermediate``: students trained without grouped
  reward normalisation (a moving-average baseline instead) or without intermediate-state
  matching (one-step paths), sampled with the guided sampler.

The summary says, computed from the table, whether the student beats the teacher at 4 and 8
NFEs (the paper's claim, Zheng et al. 2025) and how much unigram entropy it loses there
(the paper: about 1%), and whether the student still beats the teacher without the guided sampler
(whose discriminator calls the NFE count leaves out); ``true_ppl`` is exp(entropy rate) of the chain,
the best possible, ``target`` the scores of the teacher samples the student is matched to.

CPU default: ~2.5 minutes of CPU time (one thread). Full-size run (a GPU setting, not measured yet;
``divmin recipes`` shows it): ``divmin run didi-synthetic --out runs/didi-synthetic --full``, that is
``--set width=256 --set depth=4 --set length=32 --set teacher.engine.max_steps=20000
--set didi.engine.max_steps=3000 --set didi.teacher_pool=16384 --set didi.lr_student=5e-5
--set didi.lr_discriminator=1e-4 --set score_samples=5000``.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch

from ..data import MarkovLanguage
from ..diffusion import (DiDiConfig, DiDiTrainer, MaskedDiffusionLM, MDLMConfig, MDLMTrainer, MDLMTransformer,
                         mdlm_sample)
from ..engine import Bool, EngineConfig, Instance, Int, Number, Tuple, validate
from ..eval import generative_perplexity, unigram_entropy
from ._plots import plt, save_figure
from ._engines import refuse_owned
from ._registry import RecipeResult, recipe
from ._runs import resumable, run_engine

ABLATIONS = {  # model row -> DiDiConfig fields changed
    "student-no-grouped-norm": {"grouped_normalization": False},
    "student-no-intermediate": {"intermediate_matching": False},
}


def _default_teacher() -> MDLMConfig:
    return MDLMConfig(batch_size=64, lr=3e-3, engine=EngineConfig(max_steps=600, warmup_steps=20, log_every=200,
                                                                  progress=True, tensorboard=False))


def _default_didi() -> DiDiConfig:
    # tuned for the tiny CPU models: a faster discriminator (all blocks, lr 1e-3, 100 warm-up and 2 updates per
    # student update, noise t <= 0.3 where noised sequences still differ) gives a reward worth following
    return DiDiConfig(batch_size=64, group_size=4, lr_student=2e-4, lr_discriminator=1e-3, disc_trainable_blocks=2,
                      disc_steps=2, disc_warmup=100, t_max=0.3, teacher_nfe=64, teacher_pool=1024, ema_decay=0.95,
                      guidance_scale=1.0, best_of=4, engine=EngineConfig(max_steps=150, log_every=50, max_grad_norm=1.0,
                                                     progress=True, tensorboard=False))


@dataclasses.dataclass
class DiDiSyntheticConfig:
    vocab_size: int = 32  # V of the Markov language
    length: int = 16  # L, the sequence length
    order: int = 1  # the chain's order (1 or 2)
    sharpness: float = 2.0  # scale of the chain's logits (larger: lower entropy)
    language_seed: int = 0  # seed of the chain's tables
    width: int = 64  # teacher (and student, discriminator trunk) transformer width
    depth: int = 2  # its layers
    heads: int = 4  # its attention heads
    nfes: tuple[int, ...] = (1, 2, 4, 8, 16)  # sampling steps evaluated
    score_samples: int = 1000  # samples per (model, nfe) scored for the table (didi.eval_samples: training's)
    ablations: bool = True  # also train and score the ablated students
    seed: int = 0  # torch seed of the models and the runs
    resume: bool = False  # resume every training run (teacher, students) from its latest checkpoint
    teacher: MDLMConfig = dataclasses.field(default_factory=_default_teacher)  # teacher training
    didi: DiDiConfig = dataclasses.field(default_factory=_default_didi)  # distillation (ablations override fields)

    CHECKS = dict(  # one per field: divmin.engine.validate
        vocab_size=Int(ge=2), length=Int(ge=2), order=Int(ge=1, le=2), sharpness=Number(ge=0),
        language_seed=Int(ge=0), width=Int(ge=2), depth=Int(ge=1), heads=Int(ge=1),
        nfes=Tuple(each=Int(ge=1), min_len=1), score_samples=Int(ge=1), ablations=Bool(), seed=Int(ge=0),
        resume=Bool(), teacher=Instance(MDLMConfig), didi=Instance(DiDiConfig),
    )

    def __post_init__(self) -> None:
        validate(self)
        refuse_owned(self, {"teacher.engine.seed": "seed", "didi.engine.seed": "seed"})


def _score(x: torch.Tensor, lang: MarkovLanguage) -> dict[str, float]:
    return {"gen_ppl": generative_perplexity(x, lang), "entropy": unigram_entropy(x, lang.vocab_size)}


def _distill(c: DiDiSyntheticConfig, teacher: MaskedDiffusionLM, lang: MarkovLanguage, target: torch.Tensor,
             name: str, out_dir: Path, **changes) -> DiDiTrainer:
    torch.manual_seed(c.seed)
    engine = run_engine(c.didi.engine, out_dir / name, seed=c.seed)
    trainer = DiDiTrainer(teacher=teacher, config=dataclasses.replace(c.didi, engine=engine, **changes), judge=lang, target=target)
    trainer.fit(resume=resumable(engine, c.resume))
    return trainer


@recipe("didi-synthetic", DiDiSyntheticConfig,
        "DiDi-Instruct on a Markov language: exact generative perplexity and entropy of teacher vs student per NFE",
        full_size=("width=256", "depth=4", "length=32", "teacher.engine.max_steps=20000", "didi.engine.max_steps=3000",
                   "didi.teacher_pool=16384", "didi.lr_student=5e-5", "didi.lr_discriminator=1e-4",
                   "score_samples=5000"))
def run_didi_synthetic(config: DiDiSyntheticConfig, out_dir: Path) -> RecipeResult:
    c = config
    lang = MarkovLanguage(c.vocab_size, c.length, order=c.order, sharpness=c.sharpness, seed=c.language_seed)
    torch.manual_seed(c.seed)
    teacher = MaskedDiffusionLM(MDLMTransformer(c.vocab_size, c.length, width=c.width, depth=c.depth, heads=c.heads),
                                c.vocab_size, c.length)
    engine = run_engine(c.teacher.engine, out_dir / "teacher", seed=c.seed)
    trainer = MDLMTrainer(teacher, lang.sample, config=dataclasses.replace(c.teacher, engine=engine))
    trainer.fit(resume=resumable(engine, c.resume))
    teacher = trainer.model.eval().requires_grad_(False)
    target = mdlm_sample(teacher, c.didi.teacher_pool, c.length, mask_id=teacher.mask_id, nfe=c.didi.teacher_nfe,
                         generator=torch.Generator().manual_seed(c.seed + 1)).tokens
    runs = {"student": _distill(c, teacher, lang, target, "student", out_dir)}
    if c.ablations:
        for name, changes in ABLATIONS.items():
            runs[name] = _distill(c, teacher, lang, target, name, out_dir, **changes)
    rows = []
    for nfe in c.nfes:
        gen = torch.Generator().manual_seed(10_000 + nfe)
        rows.append({"model": "teacher", "nfe": nfe, **_score(teacher.sample(c.score_samples, nfe=nfe, generator=gen),
                                                             lang)})
        for name, trainer in runs.items():
            x = trainer.sample(c.score_samples, nfe=nfe, guided=True, generator=gen)
            rows.append({"model": name, "nfe": nfe, **_score(x, lang)})
            if name == "student" and c.ablations:
                x = trainer.sample(c.score_samples, nfe=nfe, guided=False, generator=gen)
                rows.append({"model": "student-no-guided-sampler", "nfe": nfe, **_score(x, lang)})
    plot = _plot(rows, lang, generative_perplexity(target, lang), out_dir / "didi_synthetic.png")
    return RecipeResult(["model", "nfe", "gen_ppl", "entropy"], rows, [str(plot)], _summary(rows, lang, target))


def _summary(rows: list[dict], lang: MarkovLanguage, target: torch.Tensor) -> dict:
    """The paper's claims at 4 and 8 NFEs, computed from the rows (None where an NFE was not run)."""
    get = {(r["model"], r["nfe"]): r for r in rows}
    out: dict = {"true_ppl": math.exp(lang.entropy_rate), "target": _score(target, lang)}
    for nfe in (4, 8):
        if ("teacher", nfe) not in get or ("student", nfe) not in get:
            continue
        t, s = get[("teacher", nfe)], get[("student", nfe)]
        out[f"student_beats_teacher_at_{nfe}"] = s["gen_ppl"] < t["gen_ppl"]
        out[f"entropy_loss_pct_at_{nfe}"] = 100 * (t["entropy"] - s["entropy"]) / t["entropy"]
        plain = get.get(("student-no-guided-sampler", nfe))  # the same NFEs without the discriminator's extra calls
        if plain is not None:
            out[f"unguided_student_beats_teacher_at_{nfe}"] = plain["gen_ppl"] < t["gen_ppl"]
    return out


def _plot(rows: list[dict], lang: MarkovLanguage, target_ppl: float, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    models = list(dict.fromkeys(r["model"] for r in rows))
    data = {}
    for i, m in enumerate(models):
        pts = [(r["nfe"], r["gen_ppl"]) for r in rows if r["model"] == m]
        data[m] = pts
        ax.plot(*zip(*pts), marker="o", color=f"C{i}", linestyle="-" if m in ("teacher", "student") else "--", label=m)
    ax.axhline(math.exp(lang.entropy_rate), color="0.5", linestyle=":", label="true (exp entropy rate)")
    ax.axhline(target_ppl, color="0.2", linestyle="-.", label="target: teacher samples (teacher_nfe steps)")
    ax.set(xscale="log", yscale="log", xlabel="NFEs (sampling steps)", ylabel="generative perplexity (exact)",
           title="didi-synthetic: perplexity vs NFEs")
    ax.set_xticks(sorted({r["nfe"] for r in rows}), labels=[str(n) for n in sorted({r["nfe"] for r in rows})])
    ax.legend(fontsize=7)
    return save_figure(fig, path, data=data)
