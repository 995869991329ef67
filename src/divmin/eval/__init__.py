"""Metrics shared by the methods: divergences to targets, sample quality, diversity, calibration,
generative perplexity under an exact-likelihood judge, glottal-instant detection and Naylor's GCI measures."""

from ._calibration import calibration_error, top_label_calibration_error
from ._clustering import ari, clustering_accuracy, nmi
from ._diversity import distinct_n, self_bleu
from ._generative import generative_perplexity, unigram_entropy
from ._glottal import GCIMetrics, GlottalInstants, detect_egg_instants, gci_metrics
from ._samples import (ModeStats, PrecisionRecall, class_coverage, frechet_distance, gaussian_frechet_distance,
                       mode_stats, precision_recall, sliced_wasserstein)
from ._target_metrics import TargetMetrics, acceptance_rate, exact_divergence, is_divergence, is_expectation, target_metrics

__all__ = [
    "GCIMetrics",
    "GlottalInstants",
    "ModeStats",
    "PrecisionRecall",
    "TargetMetrics",
    "acceptance_rate",
    "ari",
    "calibration_error",
    "detect_egg_instants",
    "class_coverage",
    "clustering_accuracy",
    "distinct_n",
    "exact_divergence",
    "frechet_distance",
    "gci_metrics",
    "gaussian_frechet_distance",
    "generative_perplexity",
    "is_divergence",
    "is_expectation",
    "mode_stats",
    "nmi",
    "precision_recall",
    "self_bleu",
    "sliced_wasserstein",
    "target_metrics",
    "top_label_calibration_error",
    "unigram_entropy",
]
