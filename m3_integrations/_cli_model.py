"""The encoder options of the command line and the example chatbots, the model load, the log on stderr.

Public through :mod:`m3_integrations.cli`: :func:`add_model_arguments`, :func:`model_kwargs`,
:func:`load_model` and :func:`configure_logging`.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from m3_integrations._cli_common import EXIT_INPUT, CliError, _as_flags, _one_line, _positive_int
from m3_integrations.model import DEFAULT_MODEL

if TYPE_CHECKING:
    from m3_integrations import M3Model

__all__ = ["add_model_arguments", "configure_logging", "load_model", "model_kwargs"]

# A hub id is "name" or "org/name"; anything with other path characters is a folder.
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}(?:/[A-Za-z0-9][A-Za-z0-9_.-]{0,95})?")
_MISSING_HEADS_HINT = (
    'pass --allow-missing-heads --pooling mean (for e5 models also --query-instruction "query: " '
    '--passage-instruction "passage: ")'
)


def _device(text: str) -> str:
    """A torch device this machine has; refused here so that a typo costs no model load."""
    import torch

    value = text.strip()
    try:
        device = torch.device(value)
    except (RuntimeError, ValueError, TypeError) as err:
        msg = f"{text!r} is not a device; use cpu, cuda, cuda:N or mps"
        raise argparse.ArgumentTypeError(msg) from err
    if device.type == "cpu":
        return value
    backends = {
        "cuda": torch.cuda,
        "mps": getattr(torch.backends, "mps", None),
        "xpu": getattr(torch, "xpu", None),
    }
    backend = backends.get(device.type)
    if backend is None:
        msg = f"{text!r} is not a device the model runs on; use cpu, cuda, cuda:N or mps"
        raise argparse.ArgumentTypeError(msg)
    if not backend.is_available():
        msg = f"{text!r}: {device.type.upper()} is not available on this machine; use --device cpu"
        raise argparse.ArgumentTypeError(msg)
    count = backend.device_count() if hasattr(backend, "device_count") else 1
    if device.index is not None and device.index >= count:
        msg = f"{text!r}: this machine has {count} {device.type} device(s), numbered from 0"
        raise argparse.ArgumentTypeError(msg)
    return value


def add_model_arguments(
    parser: argparse.ArgumentParser,
    *,
    default_model: str | None = DEFAULT_MODEL,
    model_help: str | None = None,
) -> None:
    """Add the options that choose and configure the encoder (``--model``, ``--device``...) to a parser.

    The ``m3-integrations`` commands and both example chatbots take the same options; values are checked
    as they are parsed (an unknown or unavailable ``--device`` is a parse error), before any model loads.
    Turn the parsed options into :class:`~m3_integrations.M3Model` arguments with :func:`model_kwargs`.

    Args:
        parser: the parser (or argument group) to extend.
        default_model: the ``--model`` default; ``None`` when the caller resolves it later.
        model_help: the ``--model`` help text; default names the default model.

    Example:
        .. code-block:: python

            import argparse

            from m3_integrations.cli import add_model_arguments, load_model, model_kwargs

            parser = argparse.ArgumentParser()
            add_model_arguments(parser)
            args = parser.parse_args(["--model", "/models/e5", "--allow-missing-heads", "--pooling", "mean"])
            model = load_model(args.model, model_kwargs(args))
    """
    parser.add_argument(
        "--model",
        default=default_model,
        metavar="MODEL",
        help=model_help or f"hub id or local checkpoint folder (default: {default_model})",
    )
    parser.add_argument(
        "--allow-missing-heads",
        action="store_true",
        default=None,
        help="run a plain encoder without BGE-M3's sparse/ColBERT heads (BM25 and identity ColBERT)",
    )
    parser.add_argument(
        "--pooling",
        choices=("cls", "mean"),
        default=None,
        help="dense pooling (bge-m3: cls; e5, MiniLM: mean)",
    )
    parser.add_argument(
        "--query-instruction", metavar="TEXT", default=None, help='query prefix, e.g. "query: " for e5'
    )
    parser.add_argument(
        "--passage-instruction", metavar="TEXT", default=None, help='passage prefix, e.g. "passage: " for e5'
    )
    parser.add_argument(
        "--device", type=_device, default=None, help="cpu, cuda, cuda:1, mps (default: cuda if present)"
    )
    parser.add_argument(
        "--batch-size", type=_positive_int, metavar="N", default=None, help="texts per forward pass"
    )
    parser.add_argument(
        "--query-max-length", type=_positive_int, metavar="N", default=None, help="token limit of queries"
    )
    parser.add_argument(
        "--passage-max-length", type=_positive_int, metavar="N", default=None, help="token limit of passages"
    )


_MODEL_OPTIONS = (
    "device",
    "allow_missing_heads",
    "pooling",
    "query_instruction",
    "passage_instruction",
    "batch_size",
    "query_max_length",
    "passage_max_length",
)


def model_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`~m3_integrations.M3Model` keyword arguments set by :func:`add_model_arguments` options.

    Only options given on the command line appear, so they can override settings recorded elsewhere.

    Args:
        args: the parsed command line.

    Returns:
        Keyword arguments such as ``{"pooling": "mean", "allow_missing_heads": True}``.

    Example:
        >>> import argparse
        >>> model_kwargs(argparse.Namespace(pooling="mean", allow_missing_heads=True, device=None))
        {'allow_missing_heads': True, 'pooling': 'mean'}
    """
    return {name: getattr(args, name) for name in _MODEL_OPTIONS if getattr(args, name, None) is not None}


def load_model(name: str, kwargs: dict[str, Any] | None = None, *, show_progress: bool = False) -> M3Model:
    """Load :class:`~m3_integrations.M3Model`, turning failures into a :class:`CliError` with the next step.

    A local checkpoint without BGE-M3's heads is refused before it loads, naming the flags it needs; a hub
    id that cannot be fetched suggests ``--model /path/to/folder``. Messages name command-line flags,
    never Python arguments. Nothing here passes ``trust_remote_code``.

    Args:
        name: a hub id or a local folder.
        kwargs: ``M3Model`` options (from :func:`model_kwargs`).
        show_progress: the model's own progress bar on every encode call (an index shows its own).

    Returns:
        The model.

    Raises:
        CliError: exit code 3, with a one-line message.
    """
    from m3_integrations import M3Model
    from m3_integrations.errors import CheckpointError, CheckpointNotFoundError, MissingHeadsError
    from m3_integrations.model import COLBERT_HEAD_FILE, SPARSE_HEAD_FILE

    kwargs = dict(kwargs or {})
    path = Path(name).expanduser()
    local = name.startswith((".", "/", "~", "\\")) or path.exists() or not _HUB_ID.fullmatch(name)
    if local and not path.is_dir():
        msg = f"model folder {name!r} does not exist; pass --model with a checkpoint folder or a hub id"
        raise CliError(msg, EXIT_INPUT)
    if local and not kwargs.get("allow_missing_heads"):
        missing = [head for head in (COLBERT_HEAD_FILE, SPARSE_HEAD_FILE) if not (path / head).is_file()]
        if missing:
            msg = (
                f"model {name!r} has no {' and no '.join(missing)} (BGE-M3's heads); to run it as a plain "
                f"encoder, {_MISSING_HEADS_HINT}"
            )
            raise CliError(msg, EXIT_INPUT)
    try:
        return M3Model(name, show_progress=show_progress, **kwargs)
    except MissingHeadsError as err:
        msg = f"{_as_flags(str(err))} To run it as a plain encoder, {_MISSING_HEADS_HINT}"
        raise CliError(msg, EXIT_INPUT) from err
    except CheckpointNotFoundError as err:
        if local:
            raise CliError(f"cannot load model folder {name!r}: {_as_flags(str(err))}", EXIT_INPUT) from err
        root: BaseException = err
        while root.__cause__ is not None:  # the Hub client's error, not the layers that wrapped it
            root = root.__cause__
        reason = f"{type(root).__name__}: {_one_line(str(root))}"
        msg = (
            f"cannot load model {name!r} from the Hugging Face Hub ({reason[:300]}). Offline? Pass a "
            "local checkpoint folder: --model /path/to/folder (a checkpoint without BGE-M3's heads "
            "also needs --allow-missing-heads --pooling mean)"
        )
        raise CliError(msg, EXIT_INPUT) from err
    except CheckpointError as err:
        where = "model folder" if local else "model"
        raise CliError(f"cannot load {where} {name!r}: {_as_flags(str(err))}", EXIT_INPUT) from err
    except Exception as err:  # transformers, safetensors and torch raise many types for a bad checkpoint
        msg = f"cannot load model {name!r}: {_as_flags(str(err)) or type(err).__name__}"
        raise CliError(msg, EXIT_INPUT) from err


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to ``sys.stderr`` as it is when a record comes (callers and tests may replace it)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure_logging(quiet: bool = False, verbose: int = 0) -> None:
    """Show the package's log on stderr: warnings by default, errors only if ``quiet``, DEBUG if ``verbose``.

    ``quiet`` also hides the progress bars of transformers and the Hub; ``verbose >= 2`` adds transformers'
    own INFO log. Only command lines call this: the library never configures logging.

    Args:
        quiet: errors only, no progress bars.
        verbose: 1 for the package's DEBUG log, 2 to add transformers' INFO log.
    """
    level = logging.ERROR if quiet else logging.DEBUG if verbose else logging.WARNING
    root = logging.getLogger("m3_integrations")
    root.setLevel(level)
    handler = next((h for h in root.handlers if isinstance(h, _StderrHandler)), None)
    if handler is None:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    handler.setLevel(level)
    if quiet or verbose > 1:
        from huggingface_hub.utils import disable_progress_bars
        from transformers.utils import logging as hf_logging

        if quiet:
            # transformers 5 shows a "Loading weights" bar of its own; --quiet means no bars at all.
            hf_logging.disable_progress_bar()
            hf_logging.set_verbosity_error()
            disable_progress_bars()
        else:
            hf_logging.set_verbosity_info()
