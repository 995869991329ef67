"""Knowledge distillation with any divergence: token-level and fused losses, SinKD, a trainer.

``token_kd_loss`` and ``fused_linear_kd_loss`` minimise D(teacher || student)
over tokens for any registry member ([DESIGN.md][the-convention]'s convention: teacher P, student
Q); ``sinkd_loss`` is the batch-level Sinkhorn loss of SinKD; ``DistillTrainer``
runs off-policy, on-policy (GKD) and sequence-level KD on the shared engine;
``cache_teacher`` stores a teacher's top-k log-probabilities on disk once and
``TeacherCache`` serves them back as the teacher of off-policy KD.
"""

from ..lm import LMCollator, assemble, tokenize_pairs  # re-exported: they moved to divmin.lm
from ._cache import TAILS, TeacherCache, cache_teacher
from ._cache_cli import add_cache_parser, cache_command
from ._cache_io import ENCODINGS
from ._fused import default_chunk_size, fused_linear_cross_entropy, fused_linear_kd_loss
from ._sinkd import sinkd_loss
from ._tasks import DISTILL_TASKS, DistillTaskKind
from ._token import TopKTeacher, token_kd_loss
from ._trainer import DistillConfig, DistillTrainer

# the API page (members_order: __all__) lists the entry points first, internals last
__all__ = [
    "token_kd_loss",
    "DistillTrainer",
    "DistillConfig",
    "sinkd_loss",
    "fused_linear_kd_loss",
    "fused_linear_cross_entropy",
    "cache_teacher",
    "TeacherCache",
    "TopKTeacher",
    "TAILS",
    "ENCODINGS",
    "DISTILL_TASKS",
    "DistillTaskKind",
    "LMCollator",
    "assemble",
    "default_chunk_size",
    "tokenize_pairs",
    "add_cache_parser",
    "cache_command",
]

from ._method import KDTrainConfig  # noqa: E402  (`divmin train kd`: registered on import)

__all__ += ["KDTrainConfig"]
