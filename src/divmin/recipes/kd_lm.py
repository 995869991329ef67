"""Recipe ``kd-lm``: distil a tiny GPT-2 teacher into a smaller GPT-2 with several divergences.

The corpus is synthetic with an exactly known law: a sequence is a topic token,
then words from a topic-conditioned first-order Markov chain over ``setting.words``
words (rows drawn from a Dirichlet(``setting.concentration``), so each context has a
few likely successors), each step ending with probability ``setting.p_end`` (then
``[EOS]``). The prompt is the topic and the first word; the completion is the
rest. The true next-token law gives the exact floor of held-out perplexity.

The teacher (``setting.teacher_layers`` x ``setting.teacher_embd``) is trained in the recipe
with cross-entropy on ``setting.teacher_sequences`` sequences; each student
(``setting.student_layers`` x ``setting.student_embd``) gets ``setting.transfer_sequences`` sequences and
is trained with :class:`divmin.distill.DistillTrainer` by a method spec:
``"ce"`` (labels only), a registry name (off-policy KD with that divergence,
pure soft loss), ``"<name>:on-policy"`` (GKD: with probability ``kd.lmbda`` a
micro-batch's completions are the student's own samples) or ``"sinkd"`` (SinKD:
forward-KL KD plus ``kd.sinkd_weight`` x the research code's Sinkhorn loss between
the student's and the teacher's next-token distributions over a batch's
completion tokens).

Reported on held-out sequences (teacher forcing on completion tokens): student
perplexity, KL(teacher || student) and KL(student || teacher) per token; the
teacher's and the true law's perplexities as reference rows.

Full-size run (``divmin recipes`` shows it): ``divmin run kd-lm --out runs/kd-lm --full``, that is
``--set setting.teacher_sequences=4000 --set setting.teacher_steps=600 --set kd.engine.max_steps=300
--set "seeds=(0, 1)"``.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ..distill import DistillConfig, DistillTrainer, token_kd_loss
from ..divergences import divergence
from ..engine import Bool, CrossEntropyTask, Instance, Int, IsDivergence, Number, Trainer, Tuple, is_default, validate
from ..lm import LMCollator, tiny_gpt2
from ._engines import check_recipe_kd, recipe_engine
from ._plots import students_plot
from ._seeds import seed_sd
from ._registry import RecipeResult, recipe
from ._runs import resumable, run_engine

__all__ = ["EOS", "PAD", "KDLMConfig", "MarkovCorpus", "MarkovSetting", "heldout_metrics", "run_kd_lm",
           "student_lm", "train_teacher_lm"]

PAD, EOS = 0, 1
_ON = ":on-policy"
_SPECIAL = ("ce", "sinkd")  # methods that are not a registry name


@dataclasses.dataclass
class MarkovSetting:
    """The synthetic corpus, its GPT-2 teacher and its GPT-2 students (kd-lm and kd-cache)."""

    data_seed: int = 0  # seed of the Markov chain, the sequences and the teacher
    topics: int = 8  # topic tokens (each has its own transition matrix)
    words: int = 40  # word tokens (V = 2 + topics + words)
    concentration: float = 0.1  # Dirichlet concentration of each transition row (small = peaky)
    p_end: float = 0.08  # probability that a sequence ends after each word
    max_words: int = 24  # words per sequence at most (prompt word included)
    teacher_sequences: int = 4000  # training sequences of the teacher
    transfer_sequences: int = 400  # training sequences of each student
    test_sequences: int = 500  # held-out sequences for every metric
    teacher_layers: int = 2  # teacher GPT-2 depth
    teacher_embd: int = 64  # teacher GPT-2 width
    student_layers: int = 1  # student GPT-2 depth
    student_embd: int = 32  # student GPT-2 width
    teacher_steps: int = 600  # teacher training steps (batch 32, AdamW at the students' `kd.lr`)

    CHECKS = dict(  # one per field: divmin.engine.validate
        data_seed=Int(ge=0), topics=Int(ge=1), words=Int(ge=1), concentration=Number(gt=0), p_end=Number(gt=0, lt=1),
        max_words=Int(ge=2), teacher_sequences=Int(ge=1), transfer_sequences=Int(ge=1), test_sequences=Int(ge=1),
        teacher_layers=Int(ge=1), teacher_embd=Int(ge=1), student_layers=Int(ge=1), student_embd=Int(ge=1),
        teacher_steps=Int(ge=1),
    )

    def __post_init__(self) -> None:
        validate(self)


def _default_kd() -> DistillConfig:
    return DistillConfig(lr=3e-3, batch_size=32, lmbda=0.5, sinkd_weight=0.0008,
                         engine=recipe_engine(300, max_grad_norm=1.0))


@dataclasses.dataclass
class KDLMConfig:
    methods: tuple[str, ...] = ("ce", "forward_kl", "reverse_kl", "js", "total_variation", "skew_forward_kl",
                                "forward_kl:on-policy", "reverse_kl:on-policy", "sinkd")  # see the module docstring
    seeds: tuple[int, ...] = (0, 1)  # student seeds (init, data order, samples)
    setting: MarkovSetting = dataclasses.field(default_factory=MarkovSetting)  # corpus, teacher, student sizes
    num_threads: int | None = 1  # torch intra-op threads during the run (tiny models: 1 is fastest); None = as is
    resume: bool = False  # resume every training run from its latest checkpoint
    # the students' KD settings (lr, batch_size, engine...); per method the recipe sets `divergence`, "ce" sets
    # alpha = 0, only the ":on-policy" methods keep `lmbda` and only "sinkd" keeps `sinkd_weight` (research code:
    # 0.001 x beta 0.8); max_new_tokens is `setting.max_words`
    kd: DistillConfig = dataclasses.field(default_factory=_default_kd)

    CHECKS = dict(  # one per field: divmin.engine.validate
        methods=Tuple(each=IsDivergence(parse=lambda m: None if m in _SPECIAL else divergence(m.removesuffix(_ON))),
                      min_len=1),
        seeds=Tuple(each=Int(ge=0), min_len=1), setting=Instance(MarkovSetting),
        num_threads=Int(ge=1, optional=True), resume=Bool(), kd=Instance(DistillConfig),
    )

    def __post_init__(self) -> None:
        validate(self)
        check_recipe_kd(self.kd, by="methods", task="causal_lm")
        if not is_default(self.kd, "max_new_tokens"):
            raise ValueError("`kd.max_new_tokens` is `setting.max_words` (the corpus's longest sequence); leave it")


class MarkovCorpus:
    """Topic-conditioned Markov chain over words; token ids: PAD, EOS, topics, then words."""

    def __init__(self, c: MarkovSetting) -> None:
        self.c = c
        self.gen = torch.Generator().manual_seed(c.data_seed)
        conc = torch.full((c.words,), c.concentration)
        dirichlet = torch.distributions.Dirichlet(conc)
        torch.manual_seed(c.data_seed)
        self.trans = dirichlet.sample((c.topics, c.words + 1))  # row `words` = the first word's law
        self.vocab = 2 + c.topics + c.words

    def _word(self, i: int) -> int:
        return 2 + self.c.topics + i

    def sample(self, n: int) -> list[dict[str, list[int]]]:
        c, rows = self.c, []
        for _ in range(n):
            topic = int(torch.randint(0, c.topics, (), generator=self.gen))
            prev, words = c.words, []
            for k in range(c.max_words):
                if k > 1 and float(torch.rand((), generator=self.gen)) < c.p_end:
                    break
                prev = int(torch.multinomial(self.trans[topic, prev], 1, generator=self.gen))
                words.append(self._word(prev))
            rows.append({"prompt_ids": [2 + topic, words[0]], "completion_ids": words[1:] + [EOS]})
        return rows

    def next_law(self, topic: int, prev_word: int, k: int) -> Tensor:
        """(vocab,) exact law of token k of the sequence of words (k >= 1) after word ``prev_word``."""
        c = self.c
        law = torch.zeros(self.vocab, dtype=torch.float64)
        if k >= c.max_words:
            law[EOS] = 1.0
            return law
        stop = c.p_end if k > 1 else 0.0
        law[EOS] = stop
        law[2 + c.topics:] = (1 - stop) * self.trans[topic, prev_word].double()
        return law

    def true_nll(self, rows: list[dict[str, list[int]]]) -> float:
        """Mean exact negative log-likelihood per completion token (EOS included)."""
        total, count = 0.0, 0
        for r in rows:
            topic, seq = r["prompt_ids"][0] - 2, r["prompt_ids"][1:] + r["completion_ids"]
            for k in range(1, len(seq)):
                law = self.next_law(topic, seq[k - 1] - 2 - self.c.topics, k)
                total, count = total - math.log(float(law[seq[k]])), count + 1
        return total / count


def train_teacher_lm(s: MarkovSetting, vocab: int, rows: list, kd: DistillConfig, out: Path,
                     resume: bool) -> nn.Module:
    """The GPT-2 teacher, trained by next-token cross-entropy on completion tokens (``kd.lr``, batch 32)."""
    teacher = tiny_gpt2(vocab, seed=s.data_seed, n_layer=s.teacher_layers, n_embd=s.teacher_embd,
                        n_positions=s.max_words + 4, eos_id=EOS, pad_id=PAD)
    engine = run_engine(kd.engine, out, max_steps=s.teacher_steps, seed=s.data_seed)
    trainer = Trainer(CrossEntropyTask(teacher, rows, lr=kd.lr, batch_size=32, collate=LMCollator(PAD)), engine)
    trainer.fit(resume=resumable(engine, resume))
    return trainer.models["model"].cpu().eval()


def student_lm(s: MarkovSetting, vocab: int, seed: int) -> nn.Module:
    """A fresh GPT-2 student (initialised from ``1000 + seed``)."""
    return tiny_gpt2(vocab, seed=1000 + seed, n_layer=s.student_layers, n_embd=s.student_embd,
                     n_positions=s.max_words + 4, eos_id=EOS, pad_id=PAD)


def _inputs(b: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: b[k] for k in ("input_ids", "attention_mask", "position_ids")}


@torch.no_grad()
def heldout_metrics(student: nn.Module, teacher: nn.Module, rows: list) -> dict[str, float]:
    """Teacher-forced on the rows' completion tokens: student perplexity ``ppl``, and per token
    ``kl_ts`` = KL(teacher || student) and ``kl_st`` = KL(student || teacher)."""
    sums, n = torch.zeros(3, dtype=torch.float64), 0
    for b in DataLoader(rows, batch_size=128, collate_fn=LMCollator(PAD)):
        keep = b["labels"] != -100
        s = student(**_inputs(b)).logits[keep].float()
        t = teacher(**_inputs(b)).logits[keep].float()
        k = int(keep.sum())
        sums += torch.tensor([float(F.cross_entropy(s, b["labels"][keep], reduction="sum")),
                              float(token_kd_loss(s, t, divergence="forward_kl")) * k,
                              float(token_kd_loss(s, t, divergence="reverse_kl")) * k], dtype=torch.float64)
        n += k
    ce, kl_ts, kl_st = (sums / n).tolist()
    return {"ppl": math.exp(ce), "kl_ts": kl_ts, "kl_st": kl_st}


def _student_config(c: KDLMConfig, method: str, seed: int, out: Path) -> DistillConfig:
    engine = run_engine(c.kd.engine, out, seed=seed)
    kd = dataclasses.replace(c.kd, engine=engine, max_new_tokens=c.setting.max_words)
    if method == "ce":
        return dataclasses.replace(kd, alpha=0.0, lmbda=0.0, sinkd_weight=0.0)
    if method == "sinkd":
        return dataclasses.replace(kd, divergence="forward_kl", lmbda=0.0)
    on = method.endswith(_ON)
    return dataclasses.replace(kd, divergence=method.removesuffix(_ON), lmbda=kd.lmbda if on else 0.0,
                               sinkd_weight=0.0)


# `divmin run kd-lm --full`: the sizes of the published table
FULL_SIZE = (
    "setting.teacher_sequences=4000",
    "setting.teacher_steps=600",
    "kd.engine.max_steps=300",
    "seeds=(0, 1)",
)


@recipe("kd-lm", KDLMConfig, "distil a tiny GPT-2 into a smaller one with several divergences, on/off-policy",
        full_size=FULL_SIZE)
def run_kd_lm(config: KDLMConfig, out_dir: Path) -> RecipeResult:
    c, s = config, config.setting
    corpus = MarkovCorpus(s)
    teach_rows, train_rows, test_rows = (corpus.sample(n) for n in
                                         (s.teacher_sequences, s.transfer_sequences, s.test_sequences))
    teacher = train_teacher_lm(s, corpus.vocab, teach_rows, c.kd, out_dir / "teacher", c.resume)
    true_ppl = math.exp(corpus.true_nll(test_rows))
    t_eval = heldout_metrics(teacher, teacher, test_rows)
    rows = [{"model": "true law", "ppl": true_ppl},
            {"model": f"teacher ({s.teacher_layers}x{s.teacher_embd}, {s.teacher_sequences} seqs)",
             "ppl": t_eval["ppl"], "KL(T||S)": 0.0, "KL(S||T)": 0.0}]
    per_method, spread = {}, {}
    for method in c.methods:
        runs = []
        for seed in c.seeds:
            student = student_lm(s, corpus.vocab, seed)
            cfg = _student_config(c, method, seed, out_dir / "students" / method.replace(":", "_") / f"seed{seed}")
            trainer = DistillTrainer(student, teacher, train_rows, config=cfg, pad_id=PAD, eos_id=EOS)
            trainer.fit(resume=resumable(cfg.engine, c.resume))
            runs.append(heldout_metrics(trainer.model.cpu().eval(), teacher, test_rows))
        ppl = [r["ppl"] for r in runs]
        per_method[method] = statistics.fmean(ppl)
        spread[method] = seed_sd(ppl)
        rows.append({"model": f"student: {method}", "ppl": statistics.fmean(ppl),
                     "std": seed_sd(ppl),
                     "KL(T||S)": statistics.fmean(r["kl_ts"] for r in runs),
                     "KL(S||T)": statistics.fmean(r["kl_st"] for r in runs)})
    summary = {"true_ppl": true_ppl, "teacher_ppl": t_eval["ppl"], "student_ppl": per_method}
    if "ce" in per_method and len(per_method) > 1:
        kd = {m: p for m, p in per_method.items() if m != "ce"}
        summary["best_method"] = min(kd, key=kd.get)
        summary["kd_beats_ce"] = {m: p < per_method["ce"] for m, p in kd.items()}
    plot = _plot(per_method, spread, {"true law": true_ppl, "teacher": t_eval["ppl"]}, out_dir / "kd_lm.png")
    cols = ["model", "ppl", "std", "KL(T||S)", "KL(S||T)"]
    return RecipeResult(cols, rows, [str(plot)], summary)


def _plot(ppl: dict[str, float], std: dict[str, float], refs: dict[str, float], path: Path) -> Path:
    """Held-out student perplexity per method (+- std over seeds) against the true law and the teacher."""
    return students_plot(ppl, std, refs, path, ce_label="student trained on data (ce)",
                         ylabel="held-out perplexity (completion tokens)",
                         title="kd-lm: students distilled with each divergence, on/off-policy",
                         ylim=(0.9 * min([*ppl.values(), *refs.values()]), None))
