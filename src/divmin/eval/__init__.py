"""Metrics shared by the methods: divergences to targets, sample quality, diversity, calibration,
generative perplexity under an exact-likelihood judge, glottal-instant detection and Naylor's GCI measures."""

from ._calibration import calibration_error, top_label_calibration_error
from ._clustering import ari, clustering_accuracy, nmi
from ._diversity import distinct_n, self_bleu
from ._generative import generative_perplexity, unigram_entropy
from ._glottal import GCIMetrics, GlottalInstants, detect_egg_instants, gci_metrics, mono_signal, real_array
from ._samples import (ModeStats, PrecisionRecall, class_coverage, frechet_distance, gaussian_frechet_distance,
                       mode_stats, precision_recall, sliced_wasserstein)
from ._target_metrics import TargetMetrics, acceptance_rate, exact_divergence, is_divergence, is_expectation, target_metrics

# the API page (members_order: __all__) lists the entry points first, internals last
__all__ = [
    "exact_divergence",
    "generative_perplexity",
    "target_metrics",
    "calibration_error",
    "clustering_accuracy",
    "gci_metrics",
    "mode_stats",
    "precision_recall",
    "distinct_n",
    "self_bleu",
    "GCIMetrics",
    "GlottalInstants",
    "ModeStats",
    "PrecisionRecall",
    "TargetMetrics",
    "acceptance_rate",
    "ari",
    "detect_egg_instants",
    "class_coverage",
    "frechet_distance",
    "gaussian_frechet_distance",
    "is_divergence",
    "is_expectation",
    "nmi",
    "sliced_wasserstein",
    "top_label_calibration_error",
    "unigram_entropy",
    "mono_signal",
    "real_array",
]
