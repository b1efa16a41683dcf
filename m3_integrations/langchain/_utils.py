"""Private helpers shared by the LangChain adapters: model resolution and optional imports."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from m3_integrations.model import DEFAULT_MODEL, M3Model


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


def check_query_text(text: Any) -> str:
    """``text`` itself when it is a string (embedding an empty query is allowed), else ``TypeError``."""
    if not isinstance(text, str):
        msg = f"text must be a string, got {type(text).__name__}"
        raise TypeError(msg)
    return text


class M3EncoderFields(BaseModel):
    """Fields shared by the embedding classes: which model, how to load it, batch size and progress."""

    model: M3Model | str = DEFAULT_MODEL
    """An M3Model instance (shared) or a model name/path loaded with ``model_kwargs``."""
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments for :class:`M3Model` when ``model`` is a name or path."""
    batch_size: int | None = Field(default=None, gt=0)
    """Texts per forward pass; ``None`` uses the model's ``batch_size``."""
    show_progress: bool = False
    """Show a progress bar while embedding documents."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, protected_namespaces=())

    @model_validator(mode="after")
    def _load_model(self) -> M3EncoderFields:
        self.model = resolve_model(self.model, self.model_kwargs)
        return self

    @property
    def m3_model(self) -> M3Model:
        """The loaded :class:`M3Model`."""
        assert isinstance(self.model, M3Model)  # the validator loads it
        return self.model
