"""Speech to EGG (Prathosh et al., 2019): paired synthetic speech / EGG data with exact
glottal instants (voice qualities, noise colours, recording channels, corpora drawn over
f0 / SNR ranges), WAV I/O, the zero-frequency-filtering (ZFF) GCI baseline, and the
model: a convolutional EGG autoencoder prior, a speech encoder, a decoder, trained with an
adversarial latent term on the shared engine (:class:`SpeechToEGGTrainer`).

Data lives here, not in ``divmin.data``: it is specific to this method (source-filter
speech, EGG contact), while ``divmin.data`` holds the generic toys shared by methods.
"""

from ..engine import deprecated_aliases

from ._model import FrameDecoder, FrameEncoder, LatentCritic, frame_signal, overlap_add
from ._lf import VOICE_QUALITIES, LFParams, VoiceQuality, lf_params_from_rd, lf_waveform, pitch_marks
from ._corpus import synthesize_corpus
from ._method import SpeechEGGNet, SpeechEGGTrainConfig  # registers `divmin train speech_egg`
from ._synth import (CHANNELS, NOISE_COLORS, VOWELS, SpeechEGG, add_noise, apply_channel, egg_from_instants, synthesize,
                     vocal_tract)
from ._train import SpeechToEGGConfig, SpeechToEGGTrainer, egg_loss, normalize_speech
from ._wav import read_wav, write_wav
from ._zff import average_pitch_period, zff_gci, zff_signal

# the API page (members_order: __all__) lists the entry points first, internals last
__all__ = [
    "SpeechToEGGTrainer",
    "SpeechToEGGConfig",
    "SpeechEGG",
    "synthesize_corpus",
    "synthesize",
    "egg_loss",
    "zff_gci",
    "CHANNELS",
    "FrameDecoder",
    "FrameEncoder",
    "LatentCritic",
    "LFParams",
    "NOISE_COLORS",
    "VOICE_QUALITIES",
    "VOWELS",
    "VoiceQuality",
    "add_noise",
    "apply_channel",
    "average_pitch_period",
    "egg_from_instants",
    "frame_signal",
    "lf_params_from_rd",
    "lf_waveform",
    "normalize_speech",
    "overlap_add",
    "pitch_marks",
    "read_wav",
    "vocal_tract",
    "write_wav",
    "zff_signal",
    "SpeechEGGNet",
    "SpeechEGGTrainConfig",
]

__getattr__ = deprecated_aliases(globals(), SpeechToEGG="SpeechToEGGTrainer")  # former name, one release
