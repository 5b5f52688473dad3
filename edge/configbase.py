"""Base class for every config section.

Each module that needs settings defines its own section model next to its code (with a
description on every field) and `edge/config.py` assembles them. Unknown keys are errors.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A strict, immutable config section: unknown keys are rejected, values are checked."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)
