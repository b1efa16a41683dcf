"""Private helpers shared by the LlamaIndex adapters."""

from __future__ import annotations

import os
from typing import Any

from m3_integrations.model import M3Model


def resolve_model(
    model: M3Model | str | os.PathLike[str], model_kwargs: dict[str, Any] | None = None
) -> M3Model:
    """Return ``model`` itself when it is an :class:`M3Model`, else load one from a name or path."""
    if isinstance(model, M3Model):
        if model_kwargs:
            msg = "model_kwargs only apply when model is a name or path, not an M3Model instance"
            raise ValueError(msg)
        return model
    if isinstance(model, str | os.PathLike):
        return M3Model(model, **(model_kwargs or {}))
    msg = f"model must be an M3Model or a model name/path, got {type(model).__name__}"
    raise TypeError(msg)
