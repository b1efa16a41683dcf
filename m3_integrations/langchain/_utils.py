"""Private helpers shared by the LangChain adapters: model resolution and optional imports."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from m3_integrations.model import M3Model


def resolve_model(model: M3Model | str, model_kwargs: Mapping[str, Any] | None = None) -> M3Model:
    """Return ``model`` itself when it is an :class:`M3Model`, else load it by name or path.

    Passing one ``M3Model`` to several components shares its weights; a name loads a new copy.
    """
    if isinstance(model, M3Model):
        if model_kwargs:
            msg = "model_kwargs only applies when model is a name or path, not an M3Model instance"
            raise ValueError(msg)
        return model
    if isinstance(model, str):
        return M3Model(model, **dict(model_kwargs or {}))
    msg = f"model must be an M3Model or a model name/path, got {type(model).__name__}"
    raise TypeError(msg)


def import_partner(module: str, package: str) -> Any:
    """Import a LangChain partner module, naming the pip package that provides it when it is missing."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        msg = f"`{module}` is required for this feature but is not installed: pip install {package}"
        raise ImportError(msg) from err
