"""Recipe ``kd-cls``: distil a classifier with each divergence (and SinKD) into a smaller student.

Data need no download: a synthetic 10-class problem whose classes are mixtures
of Gaussians in ``dim`` dimensions (``modes_per_class`` unit-variance modes per
class, means drawn with std ``separation``), so the Bayes-optimal classifier
and its accuracy are known exactly and printed as the ceiling. The teacher (a
wide MLP) is trained in the recipe with cross-entropy on a large labelled set;
each student (a narrow MLP) sees only a small labelled transfer set and is
trained with :class:`divmin.distill.DistillTrainer`:

* ``ce``: hard labels only (the no-teacher baseline);
* a registry name (forward_kl, reverse_kl, js, total_variation, skew_forward_kl, ...):
  ``alpha * T^2 * D(teacher || student) + (1 - alpha) * CE`` at temperature T (``kd.alpha``, ``kd.temperature``);
* ``sinkd``: the SinKD recipe, forward-KL KD + CE + ``kd.sinkd_weight`` x the
  reference-mode Sinkhorn loss (research code: 0.001 x beta 0.8).

Reported per method over ``seeds`` (student init and data order): test accuracy
(mean, std), agreement with the teacher's argmax and KL(teacher || student) at T = 1.
Hinton et al.'s claim to check (``summary["claim_holds"]``): a student taught the
teacher's soft targets (forward KL) beats the same student trained on the labels
alone; ``kd_beats_ce`` says it for every method.

Full-size run (``divmin recipes`` shows it): ``divmin run kd-cls --out runs/kd-cls --full``, that is
``--set setting.teacher_examples=20000 --set setting.teacher_steps=1500 --set kd.engine.max_steps=400
--set "seeds=(0, 1, 2)"``.
"""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path

import torch
from torch import Tensor, nn

from ..distill import DistillConfig, DistillTrainer, token_kd_loss
from ..divergences import divergence
from ..engine import Bool, CrossEntropyTask, Instance, Int, IsDivergence, Number, Trainer, Tuple, validate
from ._engines import check_recipe_kd, recipe_engine
from ._plots import students_plot
from ._seeds import mean_sd
from ._registry import RecipeResult, recipe
from ._runs import resumable, run_engine, run_history

__all__ = ["KDClsConfig", "MixtureSetting", "MixtureTask", "mean_std", "mlp", "run_kd_cls",
           "student_metrics", "train_teacher"]

_SPECIAL = ("ce", "sinkd")


@dataclasses.dataclass
class MixtureSetting:
    """The synthetic classification problem, its teacher and its students (kd-cls and kd-sinkd)."""

    data_seed: int = 0  # seed of the class mixtures, the samples and the teacher
    classes: int = 10  # number of classes
    dim: int = 8  # input dimension
    modes_per_class: int = 2  # Gaussian modes per class
    separation: float = 1.5  # std of the mode means (larger = easier)
    teacher_examples: int = 20000  # labelled examples the teacher trains on
    transfer_examples: int = 300  # examples the students train on
    test_examples: int = 5000  # held-out examples for every metric
    teacher_width: int = 256  # hidden width of the teacher MLP (2 hidden layers)
    student_width: int = 32  # hidden width of the student MLP (1 hidden layer)
    teacher_steps: int = 1500  # teacher training steps (batch 256, AdamW at the students' `kd.lr`)

    CHECKS = dict(  # one per field: divmin.engine.validate
        data_seed=Int(ge=0), classes=Int(ge=2), dim=Int(ge=1), modes_per_class=Int(ge=1), separation=Number(gt=0),
        teacher_examples=Int(ge=1), transfer_examples=Int(ge=1), test_examples=Int(ge=1), teacher_width=Int(ge=1),
        student_width=Int(ge=1), teacher_steps=Int(ge=1),
    )

    def __post_init__(self) -> None:
        validate(self)


def _default_kd() -> DistillConfig:
    return DistillConfig(task="sequence_classification", lr=3e-3, batch_size=64, temperature=4.0,
                         temperature_squared=True, alpha=0.9, sinkd_weight=0.0008,
                         engine=recipe_engine(400))


@dataclasses.dataclass
class KDClsConfig:
    methods: tuple[str, ...] = ("ce", "forward_kl", "reverse_kl", "js", "total_variation", "skew_forward_kl",
                                "sinkd")  # "ce", "sinkd" or registry names (default parameters)
    seeds: tuple[int, ...] = (0, 1, 2)  # student seeds (init and data order)
    setting: MixtureSetting = dataclasses.field(default_factory=MixtureSetting)  # data, teacher, student sizes
    num_threads: int | None = 1  # torch intra-op threads during the run (tiny models: 1 is fastest); None = as is
    resume: bool = False  # resume every training run from its latest checkpoint
    # the students' KD settings (lr, batch_size, temperature, alpha, engine...); per method the recipe sets
    # `divergence`, "ce" sets alpha = 0, and only "sinkd" keeps `sinkd_weight` (the research code: 0.001 x 0.8)
    kd: DistillConfig = dataclasses.field(default_factory=_default_kd)

    CHECKS = dict(  # one per field: divmin.engine.validate
        methods=Tuple(each=IsDivergence(parse=lambda m: None if m in _SPECIAL else divergence(m)), min_len=1),
        seeds=Tuple(each=Int(ge=0), min_len=1), setting=Instance(MixtureSetting),
        num_threads=Int(ge=1, optional=True), resume=Bool(), kd=Instance(DistillConfig),
    )

    def __post_init__(self) -> None:
        validate(self)
        check_recipe_kd(self.kd, by="methods", task="sequence_classification")


class MixtureTask:
    """The synthetic problem: class c has modes mu[c, m] ~ N(0, s^2 I), x | c ~ mean of N(mu[c, m], I)."""

    def __init__(self, c: MixtureSetting) -> None:
        g = torch.Generator().manual_seed(c.data_seed)
        self.means = c.separation * torch.randn(c.classes, c.modes_per_class, c.dim, generator=g)
        self.gen = g

    def sample(self, n: int) -> tuple[Tensor, Tensor]:
        k, m, d = self.means.shape
        y = torch.randint(0, k, (n,), generator=self.gen)
        mode = torch.randint(0, m, (n,), generator=self.gen)
        return self.means[y, mode] + torch.randn(n, d, generator=self.gen), y

    def bayes_log_posterior(self, x: Tensor) -> Tensor:
        """(n, classes) exact log p(c | x) (equal class and mode weights)."""
        sq = ((x[:, None, None, :] - self.means[None]) ** 2).sum(-1)  # (n, k, m)
        return torch.log_softmax(torch.logsumexp(-0.5 * sq, dim=-1), dim=-1)


def mlp(d_in: int, width: int, classes: int, layers: int, seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    mods: list[nn.Module] = []
    for i in range(layers):
        mods += [nn.Linear(d_in if i == 0 else width, width), nn.GELU()]
    return nn.Sequential(*mods, nn.Linear(width, classes))


def train_teacher(s: MixtureSetting, x: Tensor, y: Tensor, kd: DistillConfig, out: Path, resume: bool) -> nn.Module:
    """The wide MLP teacher, trained by cross-entropy on (x, y) at ``kd.lr``, batch 256, ``s.teacher_steps`` steps."""
    net = mlp(s.dim, s.teacher_width, s.classes, 2, seed=s.data_seed)
    engine = run_engine(kd.engine, out, max_steps=s.teacher_steps, seed=s.data_seed)
    trainer = Trainer(CrossEntropyTask(net, (x, y), lr=kd.lr, batch_size=256), engine)
    trainer.fit(resume=resumable(engine, resume))
    return trainer.models["model"].cpu().eval()


def _student_config(c: KDClsConfig, method: str, seed: int, out: Path) -> DistillConfig:
    kd = dataclasses.replace(c.kd, engine=run_engine(c.kd.engine, out, seed=seed))
    if method == "ce":
        return dataclasses.replace(kd, alpha=0.0, sinkd_weight=0.0)
    if method == "sinkd":
        return dataclasses.replace(kd, divergence="forward_kl")
    return dataclasses.replace(kd, divergence=method, sinkd_weight=0.0)


def student_metrics(student: nn.Module, teacher_logits: Tensor, x: Tensor, y: Tensor) -> dict[str, float]:
    with torch.no_grad():
        s = student(x)
    return {"accuracy": float((s.argmax(-1) == y).float().mean()),
            "agreement": float((s.argmax(-1) == teacher_logits.argmax(-1)).float().mean()),
            "kl": float(token_kd_loss(s, teacher_logits, divergence="forward_kl"))}


def mean_std(values: list[float]) -> tuple[float, float]:
    return mean_sd(values)


@recipe("kd-cls", KDClsConfig, "distil a classifier into a smaller student with each divergence and SinKD",
        full_size=("setting.teacher_examples=20000", "setting.teacher_steps=1500", "kd.engine.max_steps=400",
                   "seeds=(0, 1, 2)"))
def run_kd_cls(config: KDClsConfig, out_dir: Path) -> RecipeResult:
    c, s = config, config.setting
    data = MixtureTask(s)
    x_teach, y_teach = data.sample(s.teacher_examples)
    x_tr, y_tr = data.sample(s.transfer_examples)
    x_te, y_te = data.sample(s.test_examples)
    bayes = float((data.bayes_log_posterior(x_te).argmax(-1) == y_te).float().mean())
    teacher = train_teacher(s, x_teach, y_teach, c.kd, out_dir / "teacher", c.resume)
    with torch.no_grad():
        t_test = teacher(x_te)
    t_acc = float((t_test.argmax(-1) == y_te).float().mean())
    train_rows = [{"x": x_tr[i], "labels": y_tr[i]} for i in range(len(y_tr))]
    rows = [{"model": "Bayes classifier", "accuracy": bayes, "std": 0.0},
            {"model": f"teacher (width {s.teacher_width}, {s.teacher_examples} labels)", "accuracy": t_acc,
             "std": 0.0, "agreement": 1.0, "KL(T||S)": 0.0}]
    per_method, spread, sinkd_share = {}, {}, []
    for method in c.methods:
        runs = []
        for seed in c.seeds:
            student = mlp(s.dim, s.student_width, s.classes, 1, seed=1000 + seed)
            cfg = _student_config(c, method, seed, out_dir / "students" / method / f"seed{seed}")
            trainer = DistillTrainer(student, teacher, train_rows, config=cfg)
            trainer.fit(resume=resumable(cfg.engine, c.resume))
            runs.append(student_metrics(trainer.model.cpu().eval(), t_test, x_te, y_te))
            if method == "sinkd":  # how much of the loss the Sinkhorn term is, at its last log
                last = run_history(cfg.engine)[-1]
                sinkd_share.append(cfg.sinkd_weight * last["sinkd"] / last["loss"])
        acc, sd = mean_std([r["accuracy"] for r in runs])
        per_method[method], spread[method] = acc, sd
        rows.append({"model": f"student: {method}", "accuracy": acc, "std": sd,
                     "agreement": statistics.fmean(r["agreement"] for r in runs),
                     "KL(T||S)": statistics.fmean(r["kl"] for r in runs)})
    summary = {"bayes_accuracy": bayes, "teacher_accuracy": t_acc, "student_accuracy": per_method}
    if "ce" in per_method and len(per_method) > 1:
        kd = {m: a for m, a in per_method.items() if m != "ce"}
        summary["best_method"] = max(kd, key=kd.get)
        summary["kd_beats_ce"] = {m: a > per_method["ce"] for m, a in kd.items()}
        if "forward_kl" in kd:  # Hinton et al.'s claim is about forward-KL KD
            summary["claim_holds"] = kd["forward_kl"] > per_method["ce"]
    if sinkd_share:
        # SinKD = forward-KL KD + this share of Sinkhorn; at the research code's weight it is small, and
        # SinKD's accuracy then equals forward KL's within the seeds' spread
        summary["sinkd_loss_share"] = statistics.fmean(sinkd_share)
        if "forward_kl" in per_method:
            summary["sinkd_minus_forward_kl"] = per_method["sinkd"] - per_method["forward_kl"]
    plot = _plot(per_method, spread, {"Bayes classifier": bayes, "teacher": t_acc}, out_dir / "kd_cls.png")
    cols = ["model", "accuracy", "std", "agreement", "KL(T||S)"]
    return RecipeResult(cols, rows, [str(plot)], summary)


def _plot(accuracy: dict[str, float], std: dict[str, float], refs: dict[str, float], path: Path) -> Path:
    """Student test accuracy per method (+- std over seeds) against the Bayes, teacher and CE-student levels."""
    levels = [*accuracy.values(), *refs.values()]
    return students_plot(accuracy, std, refs, path, ce_label="student trained on labels (ce)", ylabel="test accuracy",
                         title="kd-cls: a student taught the teacher's soft targets vs one taught the labels",
                         ylim=(max(0.0, min(levels) - 0.1), min(1.0, max(levels) + 0.05)))
