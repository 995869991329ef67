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
condition for each method, ZFF as the baseline bar (grey, hatched), the scarce-pair methods (if
run) with error bars of one sd over seeds, and the means over conditions;
``speech_egg_frame.png`` shows a speech frame, the true EGG and both networks' predicted EGGs
(first condition of the first test voice).

Scarce pairs (the setting where the paper's prior should carry the model): for each seed of
``scarce_seeds`` (empty: not run), only the first ``paired_fraction`` of that seed's
``train_utterances`` keep their EGG; the speech of the rest is unpaired and reaches the adversary
only (``SpeechToEGGTrainer(unpaired_speech=...)``: the encoder's codes of all speech are matched to
the EGG prior). ``model-scarce`` and ``no-adversary-scarce`` are trained so on each seed (corpus seed
+ 1, engine seed) and scored on the same test set; their rows are the means over seeds, with
``idr_sd`` the standard deviation of the IDR over seeds, and the figure draws them with that spread.
CPU seconds of each training go to ``timing.json`` (results.json stays comparable across machines).

Full-size run (``divmin recipes`` shows it): ``divmin run speech-egg --out runs/speech-egg --full``, that is
``--set speech.engine.max_steps=3000 --set train_utterances=96 --set test_utterances=20 --set speech.hidden=32``.
The network and its training are the nested method config ``speech``
(:class:`divmin.speech.SpeechToEGGConfig`: ``speech.lr``, ``speech.critic_steps``, ``speech.frame_len``...).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from ..engine import Bool, EngineConfig, Instance, Int, Number, OneOf, Tuple, atomic_write, validate
from ..eval import detect_egg_instants, gci_metrics
from ..speech import CHANNELS, NOISE_COLORS, VOICE_QUALITIES, SpeechToEGGTrainer, SpeechToEGGConfig, synthesize_corpus, zff_gci
from ._plots import plt, save_figure
from ._engines import refuse_owned
from ._registry import RecipeResult, recipe
from ._runs import resumable, run_engine

__all__ = ["SpeechEGGConfig", "run_speech_egg"]

METHODS = ("model", "no-adversary", "zff")
SCARCE = ("model-scarce", "no-adversary-scarce")  # trained on paired_fraction of the pairs + unpaired speech


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
    paired_fraction: float = 0.125  # scarce setting: share of train_utterances that keep their EGG (at least 1)
    scarce_seeds: tuple[int, ...] = ()  # seeds of the scarce-pair comparison, e.g. (0, 1, 2); () = not run
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
        paired_fraction=Number(gt=0, lt=1), scarce_seeds=Tuple(each=Int(ge=0)),
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


def _paired_count(c: SpeechEGGConfig) -> int:
    return max(1, int(round(c.paired_fraction * c.train_utterances)))


def _train(c: SpeechEGGConfig, adv_weight: float, out: Path, *, seed: int | None = None,
           scarce: bool = False) -> tuple[SpeechToEGGTrainer, float]:
    """A trained network and its CPU seconds: on all pairs of corpus ``seed`` (default ``c.seed``), or
    (``scarce``) on the first ``paired_fraction`` of them with the rest's speech unpaired."""
    cpu, seed = time.process_time(), c.seed if seed is None else seed
    corpus = synthesize_corpus(c.train_utterances, voices=c.train_voices, f0=c.train_f0, snr_db=c.train_snr_db,
                               noises=c.train_noises, channels=c.train_channels, duration=c.duration,
                               sample_rate=c.sample_rate, seed=seed + 1)
    pairs, rest = (corpus[:_paired_count(c)], corpus[_paired_count(c):]) if scarce else (corpus, [])
    engine = run_engine(c.speech.engine, out, seed=seed)
    ae_steps = max(1, int(c.ae_fraction * engine.max_steps))
    cfg = dataclasses.replace(c.speech, ae_steps=ae_steps, adv_weight=adv_weight,
                              adv_warmup=int(c.adv_warmup_fraction * (engine.max_steps - ae_steps)), engine=engine)
    model = SpeechToEGGTrainer(np.stack([u.speech for u in pairs]), np.stack([u.egg for u in pairs]), config=cfg,
                               unpaired_speech=np.stack([u.speech for u in rest]) if rest else None)
    model.fit(resume=resumable(engine, c.resume))
    return model, time.process_time() - cpu


def _pooled(parts: list) -> dict[str, float]:
    """Naylor's rates pooled over utterances (weighted by cycles); IDA from the pooled per-utterance spreads."""
    n = sum(m.n_cycles for m in parts)
    row = {k: sum(getattr(m, k) * m.n_cycles for m in parts) / n for k in ("idr", "mr", "far")}
    hits = [(m.idr * m.n_cycles, m.ida_ms) for m in parts if m.idr > 0]
    row["ida_ms"] = float(np.sqrt(sum(h * s * s for h, s in hits) / sum(h for h, _ in hits))) if hits else float("nan")
    return row


def _test_sets(c: SpeechEGGConfig) -> list[tuple[str, list]]:
    """(condition, utterances) for every test voice x channel x SNR, in the table's order."""
    return [(f"{voice}/{channel}/{snr:g}dB",
             synthesize_corpus(c.test_utterances, voices=(voice,), snr_db=snr, noises=(c.test_noise,),
                               channels=(channel,), duration=c.duration, sample_rate=c.sample_rate, seed=c.seed + 2))
            for voice in c.test_voices for channel in c.test_channels for snr in c.test_snr_db]


def _score(c: SpeechEGGConfig, nets: dict, tests: list, zff: bool = True) -> tuple[dict, tuple | None]:
    """{(method, condition): pooled metrics} of the networks (and ZFF), and the first test voice's example."""
    scores, example = {}, None
    for cond, test in tests:
        preds = {name: [net.predict(u.speech).numpy() for u in test] for name, net in nets.items()}
        est = {name: [detect_egg_instants(p, c.sample_rate, threshold=c.detect_threshold, smooth_ms=c.smooth_ms,
                                          period_fraction=c.period_fraction).gci for p in ps]
               for name, ps in preds.items()}
        if zff:
            est["zff"] = [zff_gci(u.speech, c.sample_rate) for u in test]
        for method, gcis in est.items():
            scores[method, cond] = _pooled([gci_metrics(u.gci, e) for u, e in zip(test, gcis)])
        if example is None and cond.split("/")[0] == c.test_voices[0]:
            example = (cond, test[0], {k: v[0] for k, v in preds.items()})
    return scores, example


def _finite_mean(values: list[float]) -> float:
    """Mean of the finite values (an IDA is NaN where nothing was identified); NaN if there are none."""
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _scarce(c: SpeechEGGConfig, tests: list, out_dir: Path, cpu_s: dict) -> tuple[list[dict], dict]:
    """Rows (mean over seeds, ``idr_sd``) and summary of the scarce-pair comparison."""
    per_seed: list[dict] = []
    for seed in c.scarce_seeds:
        nets = {}
        for name, weight in zip(SCARCE, (c.speech.adv_weight, 0.0)):
            nets[name], cpu = _train(c, weight, out_dir / f"{name}-seed{seed}", seed=seed, scarce=True)
            cpu_s.setdefault(name, []).append(cpu)
        per_seed.append(_score(c, nets, tests, zff=False)[0])
    rows = []
    for cond, _ in tests:
        for m in SCARCE:
            runs = [s[m, cond] for s in per_seed]
            row = {k: float(np.mean([r[k] for r in runs])) for k in ("idr", "mr", "far")}
            row["ida_ms"] = _finite_mean([r["ida_ms"] for r in runs])
            rows.append({"method": m, "condition": cond, **row, "idr_sd": float(np.std([r["idr"] for r in runs]))})
    seed_idr = {m: [float(np.mean([s[m, k]["idr"] for k, _ in tests])) for s in per_seed] for m in SCARCE}
    seed_other = {m: {k: [_finite_mean([s[m, cond][k] for cond, _ in tests]) for s in per_seed]
                      for k in ("mr", "far", "ida_ms")} for m in SCARCE}
    helps = [a > b for a, b in zip(*seed_idr.values())]
    by_cond = {(r["method"], r["condition"]): r["idr"] for r in rows}
    summary = {"paired_utterances": _paired_count(c), "unpaired_utterances": c.train_utterances - _paired_count(c),
               "seeds": list(c.scarce_seeds), "mean_idr_per_seed": seed_idr,
               "mean_idr": {m: float(np.mean(v)) for m, v in seed_idr.items()},
               "mean_idr_sd": {m: float(np.std(v)) for m, v in seed_idr.items()},
               "other_per_seed": seed_other,
               "adversary_helps_seeds": int(sum(helps)),
               "adversary_helps_in": [k for k, _ in tests if by_cond[SCARCE[0], k] > by_cond[SCARCE[1], k]]}
    return rows, summary


def _run(c: SpeechEGGConfig, out_dir: Path) -> RecipeResult:
    cpu_s: dict = {}
    nets = {}
    for name, weight in (("model", c.speech.adv_weight), ("no-adversary", 0.0)):
        nets[name], cpu_s[name] = _train(c, weight, out_dir / name)
    tests = _test_sets(c)
    scores, example = _score(c, nets, tests)
    rows = [{"method": m, "condition": k, **scores[m, k]} for k, _ in tests for m in METHODS]
    mean = {m: float(np.mean([r["idr"] for r in rows if r["method"] == m])) for m in METHODS}
    conds = [k for k, _ in tests]
    idr = {(r["method"], r["condition"]): r["idr"] for r in rows}
    summary = {"mean_idr": mean, "model_beats_zff": mean["model"] > mean["zff"],
               "adversary_helps": mean["model"] > mean["no-adversary"],
               "model_beats_zff_in": [k for k in conds if idr["model", k] > idr["zff", k]],
               "adversary_helps_in": [k for k in conds if idr["model", k] > idr["no-adversary", k]]}
    columns = ["method", "condition", "idr", "mr", "far", "ida_ms"]
    if c.scarce_seeds:
        scarce_rows, summary["scarce"] = _scarce(c, tests, out_dir, cpu_s)
        rows, columns = [{**r, "idr_sd": None} for r in rows] + scarce_rows, columns + ["idr_sd"]
    atomic_write(out_dir / "timing.json", json.dumps({"cpu_s": cpu_s, "total_cpu_s": time.process_time()}, indent=1))
    plots = [_idr_plot(rows, conds, summary, out_dir / "speech_egg.png"),
             _plot(*example, c.sample_rate, c.speech.frame_len, out_dir / "speech_egg_frame.png")]
    return RecipeResult(columns, rows, [str(p) for p in plots], summary)


_STYLE = {"model": dict(color="C0"), "no-adversary": dict(color="C1"),
          "zff": dict(color="0.6", hatch="//", edgecolor="0.3"),  # the baseline looks unlike the networks
          "model-scarce": dict(color="C2"), "no-adversary-scarce": dict(color="C3")}


def _label(method: str, summary: dict) -> str:
    if method == "zff":
        return "ZFF (baseline)"
    if method in SCARCE:
        sc = summary["scarce"]
        return (f"{method} ({sc['paired_utterances']} pairs + {sc['unpaired_utterances']} unpaired; "
                f"mean ± sd over {len(sc['seeds'])} seeds)")
    return method


def _idr_plot(rows: list[dict], conds: list[str], summary: dict, path: Path) -> Path:
    """IDR per condition for each method, ZFF as the baseline: a panel per test voice (x: channel/SNR);
    scarce-pair methods with their spread over seeds; the means over all conditions in the title."""
    methods = [m for m in METHODS + SCARCE if any(r["method"] == m for r in rows)]
    get = {(r["method"], r["condition"]): r for r in rows}
    idr = {m: [get[m, k]["idr"] for k in conds] for m in methods}
    sd = {m: [get[m, k]["idr_sd"] for k in conds] for m in methods if m in SCARCE}
    voices = list(dict.fromkeys(k.split("/")[0] for k in conds))
    per_voice = max(sum(k.split("/")[0] == v for k in conds) for v in voices)
    fig, axes = plt.subplots(len(voices), 1, figsize=(max(6.4, 0.3 * len(methods) * per_voice + 2),
                                                      2.4 * len(voices) + 1.6), sharey=True, squeeze=False)
    width = 0.8 / len(methods)
    for ax, voice in zip(axes[:, 0], voices):
        idx = [i for i, k in enumerate(conds) if k.split("/")[0] == voice]
        for j, m in enumerate(methods):
            xs = [i + (j - (len(methods) - 1) / 2) * width for i in range(len(idx))]
            err = dict(yerr=[sd[m][i] for i in idx], capsize=2, error_kw=dict(lw=0.8)) if m in sd else {}
            bars = ax.bar(xs, [idr[m][i] for i in idx], width=width, label=_label(m, summary), **err, **_STYLE[m])
            ax.bar_label(bars, fmt="%.2f", fontsize=5 if len(methods) > 3 else 6, padding=1)
        ax.set_xticks(range(len(idx)), [conds[i].split("/", 1)[1] for i in idx], fontsize=8)
        ax.set(ylim=(0, 1.45 if sd else 1.35), ylabel="IDR")  # headroom: the legend sits above bars at 1
        ax.set_title(f"{voice} voice", fontsize=9)
    axes[-1, 0].set_xlabel("test condition: recording channel / SNR")
    axes[0, 0].legend(fontsize=6 if sd else 7, ncol=3 if not sd else 2, loc="upper center")
    mean = dict(summary["mean_idr"])
    title = ", ".join(f"{'ZFF' if m == 'zff' else m} {mean[m]:.3f}" for m in METHODS)
    if sd:
        sc = summary["scarce"]
        mean.update(sc["mean_idr"])
        title += "\nscarce pairs: " + ", ".join(f"{m} {sc['mean_idr'][m]:.3f} ± {sc['mean_idr_sd'][m]:.3f}"
                                                for m in SCARCE)
    fig.suptitle(f"GCI identification rate (IDR) per condition, networks against ZFF\nmean over conditions: {title}",
                 fontsize=9)
    data = {"conditions": conds, "idr": idr, "mean_idr": mean, **({"idr_sd": sd} if sd else {})}
    return save_figure(fig, path, data=data)


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
