"""Private helpers shared by the LangChain adapters: query checks and the embedding classes' fields."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from m3_integrations.model import DEFAULT_MODEL, M3Model, resolve_model


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
