"""Recipe ``mdlm-text``: a masked diffusion LM on your own text, judged by an autoregressive LM trained on it.

Text: ``text_file`` (a UTF-8 file, one document per line by default, ``split``) or,
by default, a built-in synthetic text that needs nothing offline: ``sentences`` lines of
``sentence_length`` made-up words drawn from an order-``order`` random Markov chain over
``words`` words (:class:`divmin.data.MarkovLanguage`, seed ``data_seed``). Tokenizer:
``tokenizer`` (a Hugging Face Hub name or a local directory, loaded with
``AutoTokenizer.from_pretrained``) or, by default, a word tokenizer fitted to the text
(:func:`divmin.data.word_vocab` + :func:`divmin.lm.word_tokenizer`, at most ``max_words`` words).
:func:`divmin.data.text_blocks` packs the text into blocks of ``block_length`` ids (documents
ended by the ``separator`` token, EOS by default) and holds out ``valid_fraction`` of the documents.

Models, both trained on the engine on the same training blocks: the MDLM teacher
(:class:`divmin.diffusion.MDLMTransformer`, ``width`` x ``depth``, :class:`~divmin.diffusion.MDLMTrainer`
with the nested ``mdlm`` settings, ``mdlm.engine.max_steps`` steps) and the judge (:func:`divmin.lm.tiny_judge`,
``judge_layers`` x ``judge_embd``, :class:`~divmin.lm.JudgeTrainer` with the nested ``judge`` settings,
``judge.engine.max_steps`` steps), as MDLM papers judge with GPT-2 Large.

Reported, one row per number of sampling steps in ``nfes``: the generative perplexity of
``samples`` MDLM samples under the judge (``gen_ppl``, :func:`divmin.eval.generative_perplexity`)
and their unigram entropy (``entropy``, over all tokens, or per sample with
``entropy_per_sequence``); a reference row "held-out text" scores the validation blocks
the same way. ``summary``: the judge's and the MDLM's (NELBO bound) validation perplexities;
for the built-in text with ``block_length`` a multiple of ``sentence_length + 1``, the exact
perplexity of the validation blocks under the true chain (EOS costs nothing: it is certain),
which the judge's should approach. ``mdlm_text.png`` plots gen_ppl and entropy against NFE;
``samples.txt`` holds a few decoded samples per NFE; ``mdlm/model`` and ``judge/model``
(``.json`` + ``.safetensors``, read with :func:`divmin.engine.load_tree`) the trained state dicts.

Full-size run (``divmin recipes`` shows it): ``divmin run mdlm-text --out runs/mdlm-text --full``, that is
``--set mdlm.engine.max_steps=3000 --set judge.engine.max_steps=1500 --set samples=1024
--set mdlm.eval_samples=1024``.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch
from torch import Tensor

from ..data import SEPARATORS, TEXT_SPLITS, MarkovLanguage, TextBlocks, text_blocks, word_vocab
from ..diffusion import MaskedDiffusionLM, MDLMConfig, MDLMTrainer, MDLMTransformer
from ..engine import Bool, EngineConfig, Instance, Int, Number, OneOf, Tuple, atomic_write, save_tree, validate
from ..eval import generative_perplexity, unigram_entropy
from ..lm import ARJudge, JudgeConfig, JudgeTrainer, tiny_judge, word_tokenizer
from ._plots import plt, save_figure
from ._engines import refuse_owned
from ._registry import RecipeResult, is_main_process, recipe
from ._runs import resumable, run_engine

__all__ = ["MDLMTextConfig", "run_mdlm_text", "synthetic_text"]

_WORDS = [c + v for v in "aeiou" for c in "bdgklmnprstvz"]  # 65 made-up words of the built-in text


def _default_mdlm() -> MDLMConfig:
    # its in-training evaluation (at the last step, metrics.jsonl) samples like the table's largest NFE row
    engine = EngineConfig(max_steps=800, log_every=200, progress=True, tensorboard=False, max_grad_norm=1.0)
    return MDLMConfig(batch_size=64, lr=1e-3, eval_samples=256, eval_nfe=16, engine=engine)


def _default_judge() -> JudgeConfig:
    engine = EngineConfig(max_steps=400, log_every=200, progress=True, tensorboard=False, max_grad_norm=1.0)
    return JudgeConfig(batch_size=64, lr=3e-3, engine=engine)


@dataclasses.dataclass
class MDLMTextConfig:
    text_file: str | Path | None = None  # a UTF-8 text file; None: the built-in synthetic text (offline)
    tokenizer: str | Path | None = None  # Hub name / local dir (AutoTokenizer); None: word tokenizer fitted to the text
    max_words: int | None = 5000  # vocabulary cap of the fitted word tokenizer (the rest is [UNK])
    split: str = "lines"  # documents of the text: a divmin.data.TEXT_SPLITS name
    separator: str = "eos_token"  # special token ending each document (e.g. "sep_token" for BERT), or "none"
    block_length: int = 18  # ids per block (the models' sequence length)
    valid_fraction: float = 0.1  # documents held out for the validation blocks
    words: int = 16  # built-in text: vocabulary of the Markov chain (<= 65)
    sentence_length: int = 8  # built-in text: words per line
    sentences: int = 4000  # built-in text: lines
    order: int = 1  # built-in text: Markov order (1 or 2)
    sharpness: float = 2.0  # built-in text: scale of the chain's logits (larger = more predictable)
    data_seed: int = 0  # built-in text: the chain and its lines; also the document shuffle
    seed: int = 0  # both models' init and training runs (their engine seed), and the sampling of the table
    width: int = 64  # MDLM transformer width
    depth: int = 2  # MDLM transformer layers
    heads: int = 4  # MDLM attention heads
    judge_layers: int = 1  # judge GPT-2 layers
    judge_embd: int = 64  # judge GPT-2 width
    nfes: tuple[int, ...] = (1, 2, 4, 8, 16)  # sampling steps of the MDLM rows
    samples: int = 256  # MDLM samples per NFE
    entropy_per_sequence: bool = False  # entropy per sample (long real-text blocks) instead of over all tokens
    num_threads: int | None = 1  # torch intra-op threads (tiny models: 1 is fastest); None = as is
    resume: bool = False  # resume every training run (judge, MDLM) from its latest checkpoint
    mdlm: MDLMConfig = dataclasses.field(default_factory=_default_mdlm)  # MDLM training (mdlm.engine.max_steps...)
    judge: JudgeConfig = dataclasses.field(default_factory=_default_judge)  # judge training (judge.engine.max_steps...)

    CHECKS = dict(  # one per field: divmin.engine.validate
        text_file=Instance((str, Path), optional=True), tokenizer=Instance((str, Path), optional=True),
        max_words=Int(ge=1, optional=True), split=OneOf(TEXT_SPLITS), separator=OneOf((*SEPARATORS, "none")),
        block_length=Int(ge=2),
        valid_fraction=Number(gt=0, lt=1), words=Int(ge=2, le=len(_WORDS)), sentence_length=Int(ge=3),
        sentences=Int(ge=2), order=Int(ge=1, le=2), sharpness=Number(ge=0), data_seed=Int(ge=0), seed=Int(ge=0),
        width=Int(ge=2), depth=Int(ge=1), heads=Int(ge=1), judge_layers=Int(ge=1), judge_embd=Int(ge=2),
        nfes=Tuple(each=Int(ge=1), min_len=1), samples=Int(ge=1), entropy_per_sequence=Bool(),
        num_threads=Int(ge=1, optional=True), resume=Bool(), mdlm=Instance(MDLMConfig), judge=Instance(JudgeConfig),
    )

    def __post_init__(self) -> None:
        validate(self)
        refuse_owned(self, {"mdlm.engine.seed": "seed", "judge.engine.seed": "seed"})
        if self.width % self.heads or self.width % 2:
            raise ValueError(f"`width` ({self.width}) must be even and divisible by `heads` ({self.heads})")
        if self.judge_embd % 2:
            raise ValueError(f"`judge_embd` must be even (2 attention heads), got {self.judge_embd}")


def synthetic_text(c: MDLMTextConfig) -> tuple[list[str], MarkovLanguage]:
    """The built-in text: ``c.sentences`` lines of made-up words from the chain, and the chain."""
    lang = MarkovLanguage(c.words, c.sentence_length, order=c.order, sharpness=c.sharpness, seed=c.data_seed)
    ids = lang.sample(c.sentences, torch.Generator().manual_seed(c.data_seed))
    return [" ".join(_WORDS[i] for i in row) for row in ids.tolist()], lang


def _tokenizer(c: MDLMTextConfig, source: str | Path | list[str]):
    if c.tokenizer is None:
        return word_tokenizer(word_vocab(source, max_words=c.max_words, split=c.split))
    from transformers import AutoTokenizer  # a user's tokenizer (may download; never in the tests)

    return AutoTokenizer.from_pretrained(c.tokenizer)


def _exact_ppl(blocks: TextBlocks, lang: MarkovLanguage, c: MDLMTextConfig) -> float | None:
    """exp of the exact NLL per token of the validation blocks under the chain, when blocks are whole lines."""
    line = c.sentence_length + 1
    if c.block_length % line or blocks.separator_id is None:
        return None
    rows = blocks.valid.reshape(-1, line)
    lut = torch.full((blocks.vocab_size,), -1, dtype=torch.long)
    for i in range(c.words):
        lut[blocks.tokenizer.convert_tokens_to_ids(_WORDS[i])] = i
    words = lut[rows[:, :-1]]
    if bool((rows[:, -1] != blocks.separator_id).any() | (words < 0).any()):
        return None  # a line cut differently (cannot happen for the built-in text; kept as a guard)
    return math.exp(-float(lang.log_prob(words).sum()) / blocks.valid.numel())


def _train(c: MDLMTextConfig, blocks: TextBlocks, out_dir: Path) -> tuple[MaskedDiffusionLM, ARJudge]:
    v, length = blocks.vocab_size, c.block_length
    judge_cfg = dataclasses.replace(c.judge, engine=run_engine(c.judge.engine, out_dir / "judge", seed=c.seed))
    trainer = JudgeTrainer(tiny_judge(v, length, seed=c.seed, n_layer=c.judge_layers, n_embd=c.judge_embd),
                           blocks.train, config=judge_cfg, valid=blocks.valid)
    trainer.fit(resume=resumable(judge_cfg.engine, c.resume))
    judge = trainer.judge.eval().requires_grad_(False)
    net = MDLMTransformer(v, length, width=c.width, depth=c.depth, heads=c.heads)
    mdlm_cfg = dataclasses.replace(c.mdlm, engine=run_engine(c.mdlm.engine, out_dir / "mdlm", seed=c.seed))
    mdlm = MDLMTrainer(MaskedDiffusionLM(net, v, length), blocks.train, config=mdlm_cfg, judge=judge)
    mdlm.fit(resume=resumable(mdlm_cfg.engine, c.resume))  # its evaluation logs eval/gen_ppl under the judge at the last step (metrics.jsonl)
    return mdlm.model.eval(), judge


def _quality(samples: Tensor, judge: ARJudge, c: MDLMTextConfig, vocab_size: int) -> dict[str, float]:
    return {"gen_ppl": generative_perplexity(samples, judge),
            "entropy": unigram_entropy(samples, vocab_size, per_sequence=c.entropy_per_sequence)}


@recipe("mdlm-text", MDLMTextConfig, "MDLM + an autoregressive judge on a text file: generative perplexity vs NFE",
        full_size=("mdlm.engine.max_steps=3000", "judge.engine.max_steps=1500", "samples=1024",
                   "mdlm.eval_samples=1024"))
def run_mdlm_text(config: MDLMTextConfig, out_dir: Path) -> RecipeResult:
    c, lang = config, None
    if c.text_file is None:
        source, lang = synthetic_text(c)
    else:
        source = c.text_file
    blocks = text_blocks(source, _tokenizer(c, source), block_length=c.block_length, valid_fraction=c.valid_fraction,
                         separator=None if c.separator == "none" else c.separator, split=c.split, seed=c.data_seed)
    mdlm, judge = _train(c, blocks, out_dir)
    if is_main_process():  # the trained weights (a DiDi-Instruct teacher, a reusable judge), no pickle
        for name, model in (("mdlm", mdlm), ("judge", judge)):
            save_tree({k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, out_dir / name / "model")
    v = blocks.vocab_size
    rows = [{"model": "held-out text", "nfe": None, **_quality(blocks.valid, judge, c, v)}]
    texts = []
    for nfe in c.nfes:
        x = mdlm.sample(c.samples, nfe=nfe, generator=torch.Generator().manual_seed(c.seed + nfe)).cpu()
        rows.append({"model": "mdlm", "nfe": nfe, **_quality(x, judge, c, v)})
        texts += [f"# nfe={nfe}", *blocks.decode(x[:4]), ""]
    atomic_write(out_dir / "samples.txt", "\n".join(texts))
    with torch.no_grad():
        nelbo = float(mdlm.loss(blocks.valid.to(next(mdlm.parameters()).device),
                                generator=torch.Generator().manual_seed(c.seed)).mean()) / c.block_length
    ppl = {r["nfe"]: r["gen_ppl"] for r in rows[1:]}
    summary = {"vocab_size": v, "train_blocks": blocks.train.shape[0], "valid_blocks": blocks.valid.shape[0],
               "judge_valid_ppl": rows[0]["gen_ppl"], "mdlm_valid_ppl_bound": math.exp(nelbo),
               "gen_ppl_falls_with_nfe": ppl[max(ppl)] < ppl[min(ppl)]}
    exact = _exact_ppl(blocks, lang, c) if lang is not None else None
    if exact is not None:
        summary["exact_valid_ppl"] = exact
        summary["judge_within_10pct_of_exact"] = abs(math.log(rows[0]["gen_ppl"] / exact)) < math.log(1.1)
    plot = _plot(rows, out_dir / "mdlm_text.png")
    return RecipeResult(["model", "nfe", "gen_ppl", "entropy"], rows, [str(plot)], summary)


def _plot(rows: list[dict], path: Path) -> Path:
    """gen_ppl and entropy of the MDLM samples against NFE, the held-out text as a dashed reference."""
    ref, runs = rows[0], rows[1:]
    nfe = [r["nfe"] for r in runs]
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.8))
    for ax, key, label in ((axes[0], "gen_ppl", "generative perplexity (judge)"),
                           (axes[1], "entropy", "unigram entropy (nats)")):
        ax.plot(nfe, [r[key] for r in runs], "o-", color="C0", label="MDLM samples")
        ax.axhline(ref[key], color="C1", ls="--", label="held-out text")
        ax.set_xscale("log", base=2)
        ax.set_xticks(nfe, [str(n) for n in nfe])
        ax.set_xlabel("sampling steps (NFE)")
        ax.set_ylabel(label)
    axes[0].legend(fontsize=8)
    fig.suptitle("mdlm-text: MDLM samples judged by an AR model trained on the same text", fontsize=10)
    data = {"nfe": nfe, "gen_ppl": [r["gen_ppl"] for r in runs], "entropy": [r["entropy"] for r in runs],
            "reference": {"gen_ppl": ref["gen_ppl"], "entropy": ref["entropy"]}}
    return save_figure(fig, path, data=data)
