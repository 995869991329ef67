"""Recipe ``speech-egg``: speech to EGG by adversarial approximate inference (Prathosh et al., 2019)
against zero-frequency filtering, on synthetic speech with exact glottal instants.

Training data (:func:`divmin.speech.synthesize_corpus`): ``train_utterances`` utterances of the
``train_voices`` (modal and breathy), f0 uniform in ``train_f0``, SNR uniform in ``train_snr_db``
with white, pink or brown noise, through any recording channel of :data:`divmin.speech.CHANNELS`
(none, a 100 Hz low-cut, the 300-3400 Hz telephone band). Test conditions: every
``test_voices`` x ``test_snr_db`` x ``test_channels`` combination, ``test_utterances`` fresh
utterances each (another corpus seed), with ``test_noise`` noise; creaky voice (f0 ~ 70 Hz,
Rd 0.5, 4 % jitter, 12 % shimmer) never appears in training.

Methods: ``model`` (:class:`divmin.speech.SpeechToEGGTrainer`, adversarial latent term of weight
``speech.adv_weight``, ramped up over ``adv_warmup_fraction`` of the speech-encoder steps, with the
registry divergence ``speech.divergence``: Jensen-Shannon by default, whose f >= 0 pulls each code's
estimated ratio to 1; with the paper's reverse KL, f = -log r rewards ever larger critic logits
and training collapsed in some of our seeds), ``no-adversary`` (the same network
and steps, ``adv_weight = 0``) and ``zff`` (:func:`divmin.speech.zff_gci` on the speech). The
networks' GCIs are the positive dEGG peaks of the predicted EGG
(:func:`divmin.eval.detect_egg_instants` with ``threshold``, ``smooth_ms`` and
``period_fraction`` of the config: peaks at least half the EGG's average pitch period apart, as
ZFF also works from an average period); all are scored
against the exact GCIs by :func:`divmin.eval.gci_metrics` (Naylor's IDR, MR, FAR, IDA in ms),
pooled over the utterances of a condition (rates weighted by cycles; IDA the root of the
hit-weighted mean of the utterances' IDA^2). ``speech_egg.png`` shows the claim: IDR per test
condition for each method, ZFF as the baseline bar (grey, hatched), and the mean over conditions;
``speech_egg_frame.png`` shows a speech frame, the true EGG and both networks' predicted EGGs
(first condition of the first test voice).

Full-size run (``divmin recipes`` shows it): ``divmin run speech-egg --out runs/speech-egg --full``, that is
``--set speech.engine.max_steps=3000 --set train_utterances=96 --set test_utterances=20 --set speech.hidden=32``.
The network and its training are the nested method config ``speech``
(:class:`divmin.speech.SpeechToEGGConfig`: ``speech.lr``, ``speech.critic_steps``, ``speech.frame_len``...).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from ..engine import Bool, EngineConfig, Instance, Int, Number, OneOf, Tuple, validate
from ..eval import detect_egg_instants, gci_metrics
from ..speech import CHANNELS, NOISE_COLORS, VOICE_QUALITIES, SpeechToEGGTrainer, SpeechToEGGConfig, synthesize_corpus, zff_gci
from ._plots import plt, save_figure
from ._engines import refuse_owned
from ._registry import RecipeResult, recipe
from ._runs import resumable, run_engine

__all__ = ["SpeechEGGConfig", "run_speech_egg"]

METHODS = ("model", "no-adversary", "zff")


def _default_speech() -> SpeechToEGGConfig:
    # ae_steps and adv_warmup are set per run from `ae_fraction` and `adv_warmup_fraction` (0 here: valid for
    # any speech.engine.max_steps); adv_weight is the `model` row's (the no-adversary row uses 0)
    engine = EngineConfig(max_steps=600, log_every=100, progress=True, tensorboard=False, lr_schedule="cosine")
    return SpeechToEGGConfig(frame_len=256, hop=64, hidden=16, batch_size=16, ae_steps=0, critic_steps=3,
                             adv_weight=0.1, adv_warmup=0, divergence="js", deriv_weight=10.0, lr=3e-3,
                             lr_critic=3e-3, engine=engine)


@dataclasses.dataclass
class SpeechEGGConfig:
    sample_rate: float = 8000.0  # Hz, of every synthetic utterance
    duration: float = 0.5  # seconds per utterance
    train_utterances: int = 24  # paired speech/EGG utterances for training
    train_voices: tuple[str, ...] = ("modal", "breathy")  # voice qualities seen in training
    train_f0: tuple[float, float] = (60.0, 220.0)  # f0 range (Hz) of training utterances
    train_snr_db: tuple[float, float] = (0.0, 20.0)  # SNR range (dB) of training utterances
    train_noises: tuple[str, ...] = ("white", "pink", "brown")  # noise colours in training
    train_channels: tuple[str, ...] = ("none", "highpass", "telephone")  # recording channels in training
    test_voices: tuple[str, ...] = ("creaky", "modal", "breathy")  # held-out voices (creaky: unseen quality)
    test_snr_db: tuple[float, ...] = (10.0, 5.0, 0.0)  # test SNRs (dB)
    test_channels: tuple[str, ...] = ("none", "telephone")  # test recording channels
    test_noise: str = "pink"  # noise colour of the test utterances
    test_utterances: int = 6  # utterances per test condition
    seed: int = 0  # data seeds (train corpus seed + 1, test seed + 2) and engine seed
    adv_warmup_fraction: float = 0.5  # share of the speech-encoder steps over which adv_weight ramps up
    ae_fraction: float = 0.4  # share of engine steps spent on the EGG autoencoder
    detect_threshold: float = 0.3  # dEGG peak threshold (share of the max) on predicted EGGs
    smooth_ms: float = 1.0  # Hann smoothing of the predicted dEGG before peak picking
    period_fraction: float = 0.5  # GCIs at least this share of the average pitch period apart
    num_threads: int | None = 1  # torch intra-op threads during the run; None = as is
    resume: bool = False  # resume every training run (model, no-adversary) from its latest checkpoint
    # both networks' training (the paper's knobs: speech.divergence, the registry divergence of the latent
    # matching, "reverse_kl" = the paper's KL; speech.adv_weight, speech.critic_steps, speech.lr...)
    speech: SpeechToEGGConfig = dataclasses.field(default_factory=_default_speech)

    CHECKS = dict(
        sample_rate=Number(ge=8000), duration=Number(gt=0), train_utterances=Int(ge=1),
        train_voices=Tuple(each=OneOf(VOICE_QUALITIES), min_len=1), train_f0=Tuple((Number(ge=20, le=1000),) * 2),
        train_snr_db=Tuple((Number(), Number())), train_noises=Tuple(each=OneOf(NOISE_COLORS), min_len=1),
        train_channels=Tuple(each=OneOf(CHANNELS), min_len=1),
        test_voices=Tuple(each=OneOf(VOICE_QUALITIES), min_len=1),
        test_snr_db=Tuple(each=Number(), min_len=1), test_channels=Tuple(each=OneOf(CHANNELS), min_len=1),
        test_noise=OneOf(NOISE_COLORS), test_utterances=Int(ge=1), seed=Int(ge=0),
        adv_warmup_fraction=Number(ge=0, le=1), ae_fraction=Number(gt=0, lt=1), detect_threshold=Number(gt=0, lt=1),
        smooth_ms=Number(ge=0), period_fraction=Number(gt=0, lt=1),
        num_threads=Int(ge=1, optional=True), resume=Bool(), speech=Instance(SpeechToEGGConfig),
    )

    def __post_init__(self) -> None:
        validate(self)
        refuse_owned(self, {"speech.ae_steps": "ae_fraction", "speech.adv_warmup": "adv_warmup_fraction",
                            "speech.engine.seed": "seed"})
        if self.speech.adv_weight == 0:
            raise ValueError("`speech.adv_weight` must be > 0: it is the `model` row's (no-adversary is the 0 row)")


@recipe("speech-egg", SpeechEGGConfig, "speech to EGG (adversarial prior) vs no adversary vs ZFF: GCI IDR/MR/FAR/IDA",
        full_size=("speech.engine.max_steps=3000", "train_utterances=96", "test_utterances=20", "speech.hidden=32"))
def run_speech_egg(config: SpeechEGGConfig, out_dir: Path) -> RecipeResult:
    return _run(config, out_dir)


def _train(c: SpeechEGGConfig, adv_weight: float, out: Path) -> SpeechToEGGTrainer:
    corpus = synthesize_corpus(c.train_utterances, voices=c.train_voices, f0=c.train_f0, snr_db=c.train_snr_db,
                               noises=c.train_noises, channels=c.train_channels, duration=c.duration,
                               sample_rate=c.sample_rate, seed=c.seed + 1)
    engine = run_engine(c.speech.engine, out, seed=c.seed)
    ae_steps = max(1, int(c.ae_fraction * engine.max_steps))
    cfg = dataclasses.replace(c.speech, ae_steps=ae_steps, adv_weight=adv_weight,
                              adv_warmup=int(c.adv_warmup_fraction * (engine.max_steps - ae_steps)), engine=engine)
    model = SpeechToEGGTrainer(np.stack([u.speech for u in corpus]), np.stack([u.egg for u in corpus]), config=cfg)
    model.fit(resume=resumable(engine, c.resume))
    return model


def _pooled(parts: list) -> dict[str, float]:
    """Naylor's rates pooled over utterances (weighted by cycles); IDA from the pooled per-utterance spreads."""
    n = sum(m.n_cycles for m in parts)
    row = {k: sum(getattr(m, k) * m.n_cycles for m in parts) / n for k in ("idr", "mr", "far")}
    hits = [(m.idr * m.n_cycles, m.ida_ms) for m in parts if m.idr > 0]
    row["ida_ms"] = float(np.sqrt(sum(h * s * s for h, s in hits) / sum(h for h, _ in hits))) if hits else float("nan")
    return row


def _run(c: SpeechEGGConfig, out_dir: Path) -> RecipeResult:
    nets = {"model": _train(c, c.speech.adv_weight, out_dir / "model"),
            "no-adversary": _train(c, 0.0, out_dir / "no-adversary")}
    rows, example = [], None
    for voice in c.test_voices:
        for channel in c.test_channels:
            for snr in c.test_snr_db:
                test = synthesize_corpus(c.test_utterances, voices=(voice,), snr_db=snr, noises=(c.test_noise,),
                                         channels=(channel,), duration=c.duration, sample_rate=c.sample_rate,
                                         seed=c.seed + 2)
                preds = {name: [net.predict(u.speech).numpy() for u in test] for name, net in nets.items()}
                est = {name: [detect_egg_instants(p, c.sample_rate, threshold=c.detect_threshold, smooth_ms=c.smooth_ms,
                                                  period_fraction=c.period_fraction).gci for p in ps]
                       for name, ps in preds.items()}
                est["zff"] = [zff_gci(u.speech, c.sample_rate) for u in test]
                cond = f"{voice}/{channel}/{snr:g}dB"
                for method in METHODS:
                    metrics = [gci_metrics(u.gci, e) for u, e in zip(test, est[method])]
                    rows.append({"method": method, "condition": cond, **_pooled(metrics)})
                if example is None and voice == c.test_voices[0]:
                    example = (cond, test[0], {k: v[0] for k, v in preds.items()})
    mean = {m: float(np.mean([r["idr"] for r in rows if r["method"] == m])) for m in METHODS}
    conds = sorted({r["condition"] for r in rows}, key=[r["condition"] for r in rows].index)
    idr = {(r["method"], r["condition"]): r["idr"] for r in rows}
    summary = {"mean_idr": mean, "model_beats_zff": mean["model"] > mean["zff"],
               "adversary_helps": mean["model"] > mean["no-adversary"],
               "model_beats_zff_in": [k for k in conds if idr["model", k] > idr["zff", k]],
               "adversary_helps_in": [k for k in conds if idr["model", k] > idr["no-adversary", k]]}
    plots = [_idr_plot(rows, conds, mean, out_dir / "speech_egg.png"),
             _plot(*example, c.sample_rate, c.speech.frame_len, out_dir / "speech_egg_frame.png")]
    return RecipeResult(["method", "condition", "idr", "mr", "far", "ida_ms"], rows, [str(p) for p in plots], summary)


_STYLE = {"model": dict(color="C0"), "no-adversary": dict(color="C1"),
          "zff": dict(color="0.6", hatch="//", edgecolor="0.3")}  # the baseline looks unlike the networks


def _idr_plot(rows: list[dict], conds: list[str], mean: dict[str, float], path: Path) -> Path:
    """IDR per condition for each method, ZFF as the baseline: a panel per test voice (x: channel/SNR);
    the mean over all conditions in the title."""
    idr = {m: [next(r["idr"] for r in rows if r["method"] == m and r["condition"] == k) for k in conds]
           for m in METHODS}
    voices = list(dict.fromkeys(k.split("/")[0] for k in conds))
    per_voice = max(sum(k.split("/")[0] == v for k in conds) for v in voices)
    fig, axes = plt.subplots(len(voices), 1, figsize=(max(6.4, 0.75 * per_voice + 2), 2.3 * len(voices) + 1.2),
                             sharey=True, squeeze=False)
    width = 0.8 / len(METHODS)
    for ax, voice in zip(axes[:, 0], voices):
        idx = [i for i, k in enumerate(conds) if k.split("/")[0] == voice]
        for j, m in enumerate(METHODS):
            xs = [i + (j - (len(METHODS) - 1) / 2) * width for i in range(len(idx))]
            bars = ax.bar(xs, [idr[m][i] for i in idx], width=width, label="ZFF (baseline)" if m == "zff" else m,
                          **_STYLE[m])
            ax.bar_label(bars, fmt="%.2f", fontsize=6, padding=1)
        ax.set_xticks(range(len(idx)), [conds[i].split("/", 1)[1] for i in idx], fontsize=8)
        ax.set(ylim=(0, 1.35), ylabel="IDR")  # headroom: the legend sits above bars at 1
        ax.set_title(f"{voice} voice", fontsize=9)
    axes[-1, 0].set_xlabel("test condition: recording channel / SNR")
    axes[0, 0].legend(fontsize=7, ncol=3, loc="upper center")
    means = ", ".join(f"{'ZFF' if m == 'zff' else m} {mean[m]:.3f}" for m in METHODS)
    fig.suptitle(f"GCI identification rate (IDR) per condition, networks against ZFF\nmean over conditions: {means}",
                 fontsize=10)
    return save_figure(fig, path, data={"conditions": conds, "idr": idr, "mean_idr": mean})


def _plot(cond: str, utt, preds: dict[str, np.ndarray], fs: float, frame_len: int, path: Path) -> Path:
    start = max(0, len(utt.speech) // 2 - frame_len // 2)
    sl = slice(start, start + frame_len)
    t = np.arange(sl.start, sl.stop) / fs * 1e3
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.4, 4.6), sharex=True)
    top.plot(t, utt.speech[sl], color="0.3", lw=0.8)
    top.set(title=f"Speech frame ({cond})", ylabel="speech")
    bottom.plot(t, utt.egg[sl], color="k", lw=1.5, label="true EGG")
    for i, (name, p) in enumerate(preds.items()):
        bottom.plot(t, p[sl], color=f"C{i}", lw=1, label=f"predicted EGG ({name})")
    gci = utt.gci[(utt.gci * fs >= sl.start) & (utt.gci * fs < sl.stop)] * 1e3
    for g in gci:
        bottom.axvline(g, color="0.7", ls=":", lw=0.8)
    bottom.set(xlabel="time (ms)", ylabel="EGG (contact)", title="True and predicted EGG (dotted: true GCIs)")
    bottom.legend(fontsize=7)
    data = {"time_ms": t.tolist(), "speech": utt.speech[sl].tolist(), "egg": utt.egg[sl].tolist(),
            **{name: p[sl].tolist() for name, p in preds.items()}}
    return save_figure(fig, path, data=data)
