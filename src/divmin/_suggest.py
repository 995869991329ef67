""""Did you mean ...?" for a mistyped name (a recipe, a config key, a divergence)."""

from __future__ import annotations

import difflib
from typing import Iterable

__all__ = ["did_you_mean"]


def did_you_mean(word: str, choices: Iterable[str], *, prefix: str = "") -> str:
    """``" (did you mean 'x'?)"`` for the choice closest to ``word`` (``prefix`` + choice), or ``""``.

    >>> did_you_mean("fti", ["fit", "weat"])
    " (did you mean 'fit'?)"
    >>> did_you_mean("zzz", ["fit", "weat"])
    ''
    """
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {prefix + close[0]!r}?)" if close else ""
