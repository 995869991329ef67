"""An autoregressive judge for generative perplexity: a causal LM that scores whole token blocks.

Masked diffusion LM papers (MDLM, DiDi-Instruct) report the generative perplexity of
their samples under a separate autoregressive model (GPT-2 Large). :class:`ARJudge`
wraps any causal LM (a Hugging Face model returning ``.logits``) so that it scores
every token of a block x = (x_1, ..., x_L), the first one included, by reading a
begin-of-sequence id b before it:

    log p_judge(x) = sum_{l=1}^{L} log p(x_l | b, x_1, ..., x_{l-1}),

each conditional a softmax over the V scored ids only (an extra BOS id gets no mass, so
the judge is a normalised law on [0, V)^L), so ``judge.log_prob(samples)`` is an (N,)
sequence log-probability and
:func:`divmin.eval.generative_perplexity` (``exp(-sum_n log p(x_n) / (N L))``) takes the
judge exactly as it takes the exact likelihood of :class:`divmin.data.MarkovLanguage`.

:func:`tiny_judge` builds a small GPT-2 judge over V data ids (b is an extra id V, as
the MDLM's mask is); :class:`JudgeTrainer` trains it on the engine by maximum likelihood
on the same blocks the diffusion model learns from (:func:`divmin.data.text_blocks`).

Reference: Zheng et al., "Ultra-Fast Language Generation via Discrete Diffusion Divergence
Instruct" (2025) (GPT-2 Large as judge); Sahoo et al., MDLM (2024).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import torch
from torch import Tensor, nn

from ..data import check_token_ids, check_token_source
from ..engine import EngineConfig, Instance, Int, MethodTrainer, Number, StepContext, Tuple, validate
from ._logps import sequence_logps
from ._tiny import tiny_gpt2

__all__ = ["ARJudge", "JudgeConfig", "JudgeTrainer", "draw_token_batch", "tiny_judge"]

Sequences = Callable[[int, torch.Generator], Tensor]  # (n, CPU generator) -> (n, L) token ids


class ARJudge(nn.Module):
    """A causal LM ``model`` that scores blocks of ids in [0, ``vocab_size``) after the id ``bos_id``.

    Args:
        model: a causal LM, ``model(input_ids=(B, T)).logits -> (B, T, V')`` with V' > every id
            scored and > ``bos_id`` (a Hugging Face ``*ForCausalLM``, e.g. :func:`divmin.lm.tiny_gpt2`
            or GPT-2 Large with its tokenizer's ``bos_token_id``).
        bos_id: the id read before the first token.
        vocab_size: the ids that may be scored (default: the model's output size V').
        length: the longest block scored (default: the model's ``n_positions`` when it has one).
        batch_size: rows per forward in :meth:`log_prob`.

    ``forward(seqs (B, L)) -> (B,)`` differentiable sequence log-probs (training);
    ``log_prob(seqs) -> (B,)`` the same in float64 without gradient, in eval mode and batches,
    on ``seqs``' device (the judge protocol of :func:`divmin.eval.generative_perplexity`).

    >>> from divmin.eval import generative_perplexity
    >>> judge = tiny_judge(5, 4, n_layer=1, n_embd=8)
    >>> x = torch.tensor([[0, 1, 2, 3], [4, 4, 4, 4]])
    >>> judge.log_prob(x).shape, judge.log_prob(x).dtype
    (torch.Size([2]), torch.float64)
    >>> 1.0 < generative_perplexity(x, judge) < 25.0  # an untrained judge is near-uniform over 5 ids
    True
    """

    def __init__(self, model: nn.Module, *, bos_id: int, vocab_size: int | None = None, length: int | None = None,
                 batch_size: int = 256) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"`model` must be an nn.Module (a causal LM), got {type(model).__name__}")
        config = getattr(model, "config", None)
        out = getattr(config, "vocab_size", None)  # the model's output ids, when it says
        if out is None and hasattr(model, "get_output_embeddings"):
            out = getattr(model.get_output_embeddings(), "out_features", None)
        vocab_size = out if vocab_size is None else vocab_size
        # the input is b, x_1..x_{L-1}: L positions
        length = (getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
                  if length is None else length)
        for name, value, optional in (("vocab_size", vocab_size, False), ("length", length, True),
                                      ("batch_size", batch_size, False), ("bos_id", bos_id, False)):
            if value is None and optional:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "bos_id" else 1):
                raise ValueError(f"`{name}` must be an int >= {0 if name == 'bos_id' else 1}, got {value!r}")
        if out is not None and (vocab_size > out or bos_id >= out):
            raise ValueError(f"`vocab_size` ({vocab_size}) and `bos_id` ({bos_id}) must fit the model's "
                             f"{out} output ids")
        self.model, self.bos_id, self.vocab_size, self.length = model, bos_id, vocab_size, length
        self.batch_size = batch_size

    def forward(self, seqs: Tensor) -> Tensor:
        """(B, L) ids -> (B,) log p_judge(seqs) in float32 (differentiable)."""
        seqs = check_token_ids(seqs, "seqs", vocab_size=self.vocab_size, length=self.length, exact_length=False)
        if seqs.shape[1] == 0:
            raise ValueError("`seqs` must hold at least one token per row, got shape (N, 0)")
        if seqs.shape[0] == 0:  # no sequence: no log-probability (the model is not called on an empty batch)
            return torch.zeros(0, device=seqs.device)
        bos = torch.full_like(seqs[:, :1], self.bos_id)
        inputs = torch.cat([bos, seqs[:, :-1]], dim=1)
        logits = self.model(input_ids=inputs, attention_mask=torch.ones_like(inputs)).logits  # [:, l] predicts x_l
        # the judge's law is over [0, vocab_size)^L: ids the blocks never hold (the tiny judge's BOS) get no mass
        logits = logits[..., :self.vocab_size]
        return sequence_logps(logits, seqs)

    @torch.no_grad()
    def log_prob(self, seqs: Tensor) -> Tensor:
        """(N, L) ids -> (N,) float64 log p_judge(seqs) on ``seqs``' device (eval mode, ``batch_size`` rows at once)."""
        seqs = check_token_ids(seqs, "seqs", vocab_size=self.vocab_size, length=self.length, exact_length=False)
        param = next(self.parameters(), None)
        device = param.device if param is not None else seqs.device
        was_training = self.training
        self.eval()
        try:
            parts = [self(chunk.to(device)).double().to(seqs.device) for chunk in seqs.split(self.batch_size)]
        finally:
            self.train(was_training)
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64, device=seqs.device)

    def nll_per_token(self, seqs: Tensor) -> float:
        """Mean negative log-likelihood per token of ``seqs`` (N, L) (nats); its exp is the perplexity."""
        return -float(self.log_prob(seqs).sum()) / max(seqs.numel(), 1)


def tiny_judge(vocab_size: int, length: int, *, seed: int = 0, n_layer: int = 2, n_embd: int = 64,
               n_head: int = 2) -> ARJudge:
    """An :class:`ARJudge` around a fresh :func:`tiny_gpt2` over V = ``vocab_size`` data ids + a BOS id V,
    for blocks of up to ``length`` ids."""
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
        raise ValueError(f"`vocab_size` must be an int >= 1, got {vocab_size!r}")
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"`length` must be an int >= 1, got {length!r}")
    model = tiny_gpt2(vocab_size + 1, seed=seed, n_layer=n_layer, n_embd=n_embd, n_head=n_head,
                      n_positions=length, eos_id=vocab_size, pad_id=vocab_size)
    return ARJudge(model, bos_id=vocab_size, vocab_size=vocab_size, length=length)


def _default_engine() -> EngineConfig:
    return EngineConfig(max_steps=1000, log_every=100, max_grad_norm=1.0, progress=False, tensorboard=False)


def draw_token_batch(data: Tensor | Sequences, n: int, generator: torch.Generator, *, vocab_size: int,
                     length: int) -> Tensor:
    """n sequences (n, <= length) of a token source (:func:`divmin.data.check_token_source`): rows
    drawn uniformly with replacement from an (N, L') tensor, or ``data(n, generator)`` checked against
    ``vocab_size`` and ``length``; ``generator`` is a CPU generator. The result stays where ``data`` is.

    >>> draw_token_batch(torch.tensor([[1, 2], [3, 0]]), 3, torch.Generator().manual_seed(0),
    ...                  vocab_size=4, length=2).shape
    torch.Size([3, 2])
    """
    if isinstance(data, Tensor):
        return data[torch.randint(data.shape[0], (n,), generator=generator)]
    # the error names the argument: the sampler's output is `data`'s
    return check_token_ids(data(n, generator), "data", vocab_size=vocab_size, length=length, exact_length=False)


@dataclasses.dataclass
class JudgeConfig:
    """Settings of :class:`JudgeTrainer`; every field is checked on construction."""

    batch_size: int = 64  # blocks per step
    lr: float = 3e-3  # AdamW learning rate of the judge
    weight_decay: float = 0.0  # AdamW weight decay
    adam_betas: tuple[float, float] = (0.9, 0.98)  # AdamW betas
    engine: EngineConfig = dataclasses.field(default_factory=_default_engine)  # max_steps = judge updates

    CHECKS = dict(  # one per field: divmin.engine.validate
        batch_size=Int(ge=1), lr=Number(gt=0), weight_decay=Number(ge=0),
        adam_betas=Tuple((Number(ge=0, lt=1), Number(ge=0, lt=1))), engine=Instance(EngineConfig),
    )

    def __post_init__(self) -> None:
        validate(self)


class JudgeTrainer(MethodTrainer):
    """Train ``judge`` (an :class:`ARJudge`) by maximum likelihood on ``data``: per step, minimise the mean
    per-token negative log-likelihood -log p_judge(x) / L of a batch of blocks x (B, L).

    Args:
        judge: the judge; replaced by the trained one after ``fit()``.
        data: (N, L) token ids drawn from uniformly (e.g. ``text_blocks(...).train``), or a callable
            (n, CPU torch.Generator) -> (n, L) (e.g. ``MarkovLanguage.sample``).
        config: :class:`JudgeConfig` (keyword; None: defaults).
        valid: optional (M, L) held-out blocks; the evaluation (at the last step unless
            ``engine.eval_every``) logs their ``nll_per_token`` and ``ppl`` under the judge.

    >>> judge = tiny_judge(4, 6, n_layer=1, n_embd=8)
    >>> cfg = JudgeConfig(batch_size=4, engine=EngineConfig(max_steps=2, progress=False, tensorboard=False))
    >>> result = JudgeTrainer(judge, torch.randint(4, (10, 6)), config=cfg).fit()  # doctest: +ELLIPSIS
    step 2/2 | ...
    >>> result.optimizer_steps
    {'judge': 2}
    """

    trained_models = {"judge": "judge"}

    def __init__(self, judge: ARJudge, data: Tensor | Sequences, *, config: JudgeConfig | None = None,
                 valid: Tensor | None = None) -> None:
        self.use_config(config, JudgeConfig)
        if not isinstance(judge, ARJudge):
            raise TypeError(f"`judge` must be an ARJudge (e.g. tiny_judge(...)), got {type(judge).__name__}")
        check_token_source(data, "data", vocab_size=judge.vocab_size, length=judge.length)
        if valid is not None:
            check_token_ids(valid, "valid", vocab_size=judge.vocab_size, length=judge.length, exact_length=False)
            if valid.shape[0] == 0:
                raise ValueError("`valid` has no blocks (pass valid=None to skip the evaluation)")
        self.judge, self.data, self.valid = judge, data, valid

    def evaluates(self) -> bool:
        return self.valid is not None

    def make_task(self) -> _JudgeTask:
        return _JudgeTask(config=self.config, judge=self.judge, data=self.data, valid=self.valid)


class _JudgeTask:
    """The engine task behind :class:`JudgeTrainer`."""

    def __init__(self, *, config: JudgeConfig, judge: ARJudge, data: Tensor | Sequences,
                 valid: Tensor | None) -> None:
        self.c, self.judge, self.data, self.valid = config, judge, data, valid

    def models(self) -> dict[str, nn.Module]:
        return {"judge": self.judge}

    def optimizers(self, models: dict[str, nn.Module]) -> dict[str, torch.optim.Optimizer]:
        c = self.c
        return {"judge": torch.optim.AdamW(models["judge"].parameters(), lr=c.lr, betas=c.adam_betas,
                                           weight_decay=c.weight_decay)}

    def train_step(self, batch: object, ctx: StepContext) -> Tensor:
        x = draw_token_batch(self.data, self.c.batch_size, ctx.cpu_generator, vocab_size=self.judge.vocab_size,
                             length=self.judge.length).to(ctx.device)
        return -ctx.models["judge"](x).mean() / x.shape[1]  # through the DDP wrapper

    @torch.no_grad()
    def evaluate(self, ctx: StepContext) -> dict[str, Tensor]:
        nll = ctx.unwrap("judge").nll_per_token(self.valid.to(ctx.device))
        return {"nll_per_token": torch.tensor(nll), "ppl": torch.tensor(math.exp(nll))}
