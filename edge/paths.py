"""Where bundled files live, whether run from a checkout or from an installed package."""

from __future__ import annotations

import os
import sys
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parent.parent


def default_models_dir() -> Path:
    """$ANPR_EDGE_MODELS, else the checkout's models/, else the installed share/anpr-edge/models."""
    env = os.environ.get("ANPR_EDGE_MODELS")
    if env:
        return Path(env)
    for candidate in (_CHECKOUT / "models", Path(sys.prefix) / "share" / "anpr-edge" / "models"):
        if candidate.is_dir():
            return candidate
    return _CHECKOUT / "models"
