"""Reading checkpoint folders: config, tokenizer, encoder weights, BGE-M3 heads and pooling config.

A checkpoint folder may come from anyone. Everything here either returns what the folder holds or
raises :class:`~m3_integrations.errors.CheckpointError` naming the file and what is wrong with it;
nothing from the folder chooses code to run (``auto_map`` entries are never followed unless the caller
itself passed ``trust_remote_code=True``, pickles are refused by ``weights_only`` loading) and nothing
outside the folder is read. transformers' own load messages and progress bars go to this package's
logger at DEBUG while a folder is read.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

import torch

from m3_integrations.errors import CheckpointError, CheckpointNotFoundError

logger = logging.getLogger("m3_integrations.model")

CONFIG_FILE = "config.json"
# BGE-M3's two heads beside the encoder (FlagEmbedding's file names).
COLBERT_HEAD_FILE = "colbert_linear.pt"
SPARSE_HEAD_FILE = "sparse_linear.pt"
TOKENIZER_FILE = "tokenizer.json"
# Files transformers can build a tokenizer from when there is no tokenizer.json.
_SLOW_VOCAB_FILES = ("sentencepiece.bpe.model", "spiece.model", "tokenizer.model", "vocab.txt", "vocab.json")
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
# Small JSON files (config, modules.json, pooling config) are read whole; a larger one is not a config.
_MAX_CONFIG_BYTES = 1 << 20
# A tokenizer with fewer ids than this share of the embedding rows is not the model's own (transformers
# silently builds a 5-token vocabulary when tokenizer.json is missing); padded embedding matrices
# (e5: 250,002 ids for 250,037 rows) stay far above it.
_MIN_VOCAB_SHARE = 0.5


# ---------------------------------------------------------------------------------------- resolving
def resolve_checkpoint(
    name_or_path: str,
    *,
    local_files_only: bool | None,
    revision: str | None,
    cache_dir: str | os.PathLike[str] | None,
    allow_patterns: list[str],
    offline_hint: str,
) -> Path:
    """The local folder of a checkpoint: ``name_or_path`` itself, or its Hugging Face Hub snapshot.

    Raises:
        CheckpointNotFoundError: no such folder, or a hub id that could not be fetched; the message
            ends with ``offline_hint`` (what to pass instead).
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    # Hub ids are "name" or "org/name"; anything else (absolute, relative, deeper) is meant as a folder.
    looks_like_path = name_or_path.startswith((".", "/", "~", "\\")) or name_or_path.count("/") > 1
    if path.exists() or looks_like_path:
        msg = f"model path {name_or_path!r} does not exist or is not a folder"
        raise CheckpointNotFoundError(msg)
    from huggingface_hub import snapshot_download

    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
    try:
        folder = snapshot_download(
            repo_id=name_or_path,
            revision=revision,
            cache_dir=str(cache_dir) if cache_dir is not None else None,
            local_files_only=bool(local_files_only) or offline,
            allow_patterns=allow_patterns,
        )
    except Exception as err:
        reason = str(err).splitlines()[0] if str(err) else ""
        msg = (
            f"could not find model {name_or_path!r}: it is not a local folder and could not be fetched "
            f"from the Hugging Face Hub ({type(err).__name__}: {reason}). {offline_hint}"
        )
        raise CheckpointNotFoundError(msg) from err
    return Path(folder)


# ---------------------------------------------------------------------------------------- quiet loads
@contextmanager
def transformers_output_to_debug() -> Iterator[list[str]]:
    """Send transformers' messages and progress bars from this thread to our logger at DEBUG.

    transformers prints a load report (``pooler.dense.weight | MISSING``) and a "Loading weights" bar on
    every load of a plain encoder. While the block runs, a filter on the handlers that would print
    transformers' records (its own stderr handler, or the root's when it propagates) re-logs this
    thread's records on ``m3_integrations.model`` at DEBUG instead; other threads' records pass. The
    progress-bar switch is global in transformers: it is off for the block and restored after it.

    Yields:
        The diverted messages, for error messages that need transformers' details.
    """
    from transformers.utils import logging as hf_logging

    thread = threading.get_ident()
    diverted: list[str] = []

    class _Divert(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            if record.thread != thread or not record.name.startswith("transformers"):
                return True
            if not getattr(record, "_m3_diverted", False):  # several handlers see one record
                record._m3_diverted = True  # type: ignore[attr-defined]
                diverted.append(record.getMessage())
                logger.debug("transformers: %s", diverted[-1])
            return False

    divert = _Divert()
    handlers: list[logging.Handler] = []
    current: logging.Logger | None = hf_logging.get_logger()
    while current is not None:
        handlers.extend(current.handlers)
        if not current.propagate:
            break
        current = current.parent
    if not handlers and logging.lastResort is not None:
        handlers.append(logging.lastResort)
    for handler in handlers:
        handler.addFilter(divert)
    bars_were_on = getattr(hf_logging, "_tqdm_active", None)
    if bars_were_on:
        hf_logging._tqdm_active = False
    try:
        yield diverted
    finally:
        if bars_were_on:
            hf_logging._tqdm_active = bars_were_on
        for handler in handlers:
            handler.removeFilter(divert)


# ---------------------------------------------------------------------------------------- config
def confined_path(folder: Path, name: str) -> Path:
    """``folder / name`` for a relative ``name`` that stays inside ``folder``; refuses anything else."""
    relative = PurePosixPath(name.replace("\\", "/"))
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        msg = f"checkpoint {folder} names {name!r}, a path outside its folder: refused"
        raise CheckpointError(msg)
    return folder.joinpath(*relative.parts)


def read_json_file(folder: Path, name: str) -> Any:
    """Parse a small JSON file of the checkpoint (``name`` relative to ``folder``, never outside it)."""
    path = confined_path(folder, name)
    if not path.is_file():  # follows the hub cache's links to blobs; FIFOs and devices are not files
        msg = f"{name} in {folder} is not a regular file"
        raise CheckpointError(msg)
    with path.open("rb") as handle:
        data = handle.read(_MAX_CONFIG_BYTES + 1)
    if len(data) > _MAX_CONFIG_BYTES:
        msg = f"{name} in {folder} is larger than {_MAX_CONFIG_BYTES} bytes: not a configuration file"
        raise CheckpointError(msg)
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        msg = f"{name} in {folder} is not valid JSON ({err})"
        raise CheckpointError(msg) from err


def load_config(folder: Path, *, trust_remote_code: bool) -> Any:
    """``config.json`` as a transformers config, checked before anything else is read.

    Raises:
        CheckpointError: no or unreadable ``config.json``, an unknown model type, a missing hidden size.
    """
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if not (folder / CONFIG_FILE).exists():
        msg = f"{folder} has no {CONFIG_FILE}: not a transformers checkpoint folder"
        raise CheckpointError(msg)
    raw = read_json_file(folder, CONFIG_FILE)
    if not isinstance(raw, dict):
        msg = f"{CONFIG_FILE} in {folder} holds a {type(raw).__name__}, not a JSON object"
        raise CheckpointError(msg)
    model_type = raw.get("model_type")
    custom_code = "auto_map" in raw
    if not trust_remote_code:
        if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
            msg = (
                f"{CONFIG_FILE} in {folder} names model type {model_type!r}, which transformers does not know"
            )
            if custom_code:
                msg += (
                    "; its auto_map points to custom code in the folder, which is never run "
                    "(pass trust_remote_code=True yourself only for a folder you trust)"
                )
            raise CheckpointError(msg)
        if custom_code:
            logger.warning(
                "%s in %s has an auto_map (custom model code): ignored, the built-in %r implementation "
                "is used; custom code from a checkpoint folder is never run",
                CONFIG_FILE,
                folder,
                model_type,
            )
    try:
        with transformers_output_to_debug():
            config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except Exception as err:
        msg = f"cannot read {CONFIG_FILE} in {folder}: {type(err).__name__}: {_first_line(err)}"
        raise CheckpointError(msg) from err
    for attribute in ("hidden_size", "vocab_size"):
        value = getattr(config, attribute, None)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            msg = f"{CONFIG_FILE} in {folder} has {attribute}={value!r}, expected a positive integer"
            raise CheckpointError(msg)
    return config


# ---------------------------------------------------------------------------------------- tokenizer
def load_tokenizer(folder: Path, *, embedding_rows: int, trust_remote_code: bool) -> Any:
    """The checkpoint's tokenizer, exactly as its ``tokenizer.json`` describes it.

    With a ``tokenizer.json`` the generic fast tokenizer reads it once: model-specific classes in
    transformers 5 parse it two more times and rebuild the vocabulary in Python (about 5 s for XLM-R's
    250k pieces), and their rebuilt pre-tokenizer differs from the serialized one (text ending in white
    space loses its final ``▁`` piece). Without ``tokenizer.json``, transformers converts a slow vocabulary
    file; a folder with neither is refused rather than given transformers' 5-token placeholder.

    Raises:
        CheckpointError: no tokenizer files, an unreadable ``tokenizer.json``, or a vocabulary that does
            not fit the model's ``embedding_rows``.
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    serialized = folder / TOKENIZER_FILE
    try:
        with transformers_output_to_debug():
            if serialized.is_file() and not trust_remote_code:
                tokenizer = PreTrainedTokenizerFast.from_pretrained(folder)
                if getattr(tokenizer.backend_tokenizer, "post_processor", None) is None:
                    # No serialized template for special tokens: let the model's class add them.
                    tokenizer = AutoTokenizer.from_pretrained(folder)
                    use_serialized_pipeline(tokenizer, folder)
            elif serialized.is_file() or any((folder / name).is_file() for name in _SLOW_VOCAB_FILES):
                tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
                use_serialized_pipeline(tokenizer, folder)
            else:
                msg = (
                    f"{folder} has no {TOKENIZER_FILE} (nor a vocabulary file such as "
                    "sentencepiece.bpe.model or vocab.txt): copy the checkpoint's tokenizer files into it"
                )
                raise CheckpointError(msg)
    except CheckpointError:
        raise
    except Exception as err:
        name = TOKENIZER_FILE if serialized.is_file() else "the tokenizer files"
        msg = f"cannot load {name} in {folder}: {type(err).__name__}: {_first_line(err)}"
        raise CheckpointError(msg) from err
    check_tokenizer_fits(tokenizer, embedding_rows, folder)
    return tokenizer


def check_tokenizer_fits(tokenizer: Any, embedding_rows: int, folder: Path) -> None:
    """Refuse a tokenizer whose ids overflow the embedding matrix or that is far smaller than it."""
    size = len(tokenizer)
    if size > embedding_rows:
        msg = (
            f"the tokenizer in {folder} has {size} tokens but the model has {embedding_rows} embedding "
            "rows: ids past the last row cannot be encoded (tokenizer and weights of different models?)"
        )
        raise CheckpointError(msg)
    if size < embedding_rows * _MIN_VOCAB_SHARE:
        msg = (
            f"the tokenizer in {folder} has only {size} tokens for the model's {embedding_rows} embedding "
            f"rows: it is not this model's tokenizer (a missing or wrong {TOKENIZER_FILE}?)"
        )
        raise CheckpointError(msg)


def use_serialized_pipeline(tokenizer: Any, folder: Path) -> None:
    """Make a model-specific tokenizer split text exactly as the checkpoint's ``tokenizer.json`` says.

    transformers 5 rebuilds XLM-R's pre-tokenizer in Python (``WhitespaceSplit`` + ``Metaspace``), which
    drops the trailing ``▁`` piece that transformers 4 and FlagEmbedding produce for text ending in
    white space; the serialized normalizer and pre-tokenizer keep outputs identical across versions.
    """
    path = folder / TOKENIZER_FILE
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not path.is_file():
        return
    from tokenizers import Tokenizer

    try:
        serialized = Tokenizer.from_file(str(path))
    except Exception as err:  # the tokenizer transformers built is used as is
        logger.debug("could not read %s (%s); keeping the loaded tokenizer as is", path, err)
        return
    if serialized.get_vocab_size(with_added_tokens=False) != backend.get_vocab_size(with_added_tokens=False):
        return
    for part in ("normalizer", "pre_tokenizer", "decoder"):
        setattr(backend, part, getattr(serialized, part))


# ---------------------------------------------------------------------------------------- weights
def load_encoder(folder: Path, config: Any, model_class: Any, *, trust_remote_code: bool) -> Any:
    """The transformers model of ``folder`` in float32 and eval mode, every weight from the folder.

    Raises:
        CheckpointError: no weights file, a damaged or pickled one, shapes that do not fit
            ``config.json``, or weights of the encoder missing from the file (they would be random).
    """
    present = [name for name in _WEIGHT_FILES if (folder / name).is_file()]
    if not present:
        msg = f"{folder} has no model weights ({' or '.join(_WEIGHT_FILES[::2])})"
        raise CheckpointError(msg)
    weights_file = present[0]
    with transformers_output_to_debug() as diverted:
        try:
            model, info = model_class.from_pretrained(
                folder,
                config=config,
                trust_remote_code=trust_remote_code,
                dtype=torch.float32,
                output_loading_info=True,
            )
        except Exception as err:
            raise _weights_error(err, folder, weights_file, diverted) from err
    # The pooler is not used (and absent from most sentence-transformers checkpoints); anything else
    # missing would be randomly initialised.
    missing = [key for key in info.get("missing_keys", ()) if "pooler" not in key.split(".")]
    if missing:
        shown = ", ".join(sorted(missing)[:3])
        msg = (
            f"{weights_file} in {folder} lacks {len(missing)} weights the {type(model).__name__} needs "
            f"(e.g. {shown}): they would be random"
        )
        raise CheckpointError(msg)
    model.eval()
    return model


def _weights_error(err: Exception, folder: Path, weights_file: str, diverted: list[str]) -> CheckpointError:
    text = f"{type(err).__name__}: {err}"
    if "weights_only" in text.lower() or "unpickl" in text.lower():
        return CheckpointError(
            f"{weights_file} in {folder} holds pickled Python objects besides tensors: refused (weights are "
            "read with torch.load(weights_only=True), so no code in the file runs); convert the checkpoint "
            "to model.safetensors with a tool you trust"
        )
    if "mismatch" in text.lower():
        detail = next(
            (line.strip() for msg in diverted for line in msg.splitlines() if "MISMATCH" in line), ""
        )
        return CheckpointError(
            f"the weights in {weights_file} in {folder} do not fit {CONFIG_FILE} (other tensor shapes"
            + (f", e.g. {' '.join(detail.split())}" if detail else "")
            + "): config and weights of different models?"
        )
    return CheckpointError(
        f"cannot load {weights_file} in {folder}: {type(err).__name__}: {_first_line(err)}"
    )


def load_linear_head(path: Path, in_features: int, out_features: int | None) -> torch.nn.Linear:
    """A BGE-M3 head (``Linear`` state dict) read with ``weights_only`` and checked against the encoder.

    Raises:
        CheckpointError: not a state dict of tensors, wrong keys, dtypes or shapes, NaN or infinite values.
    """
    name = path.name
    if not path.is_file():
        msg = f"head {name} ({path}) is not a regular file"
        raise CheckpointError(msg)
    # A square float64 matrix of the encoder's width, with room for the zip container, is the most a
    # head can hold; a larger file is not one (and is not read).
    limit = 8 * in_features * in_features + (1 << 20)
    size = path.stat().st_size
    if size > limit:
        msg = f"head {name} ({path}) has {size} bytes, more than a head of width {in_features} can hold"
        raise CheckpointError(msg)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        reason = (
            "it holds pickled Python objects besides tensors (refused: no code from the file runs)"
            if "weights_only" in str(err).lower()
            else f"{type(err).__name__}: {_first_line(err)}"
        )
        msg = f"could not read head {name} ({path}): {reason}"
        raise CheckpointError(msg) from err
    if not isinstance(state, Mapping):
        msg = f"head {name} holds a {type(state).__name__}, not a Linear state dict {{'weight', 'bias'}}"
        raise CheckpointError(msg)
    unexpected = sorted(str(key) for key in state if key not in ("weight", "bias"))
    if "weight" not in state or unexpected:
        msg = f"head {name} must hold 'weight' and optionally 'bias', got keys {sorted(map(str, state))[:5]}"
        raise CheckpointError(msg)
    weight, bias = state["weight"], state.get("bias")
    for key, value in (("weight", weight), ("bias", bias)):
        if value is not None and not (isinstance(value, torch.Tensor) and value.is_floating_point()):
            kind = f"a {value.dtype} tensor" if isinstance(value, torch.Tensor) else type(value).__name__
            msg = f"head {name}: {key!r} must be a floating-point tensor, got {kind}"
            raise CheckpointError(msg)
    if weight.ndim != 2 or weight.shape[0] == 0 or (out_features and weight.shape[0] != out_features):
        expected = f"({out_features or 'd'}, {in_features})"
        msg = f"head {name} has weight shape {tuple(weight.shape)}, expected {expected} for this encoder"
        raise CheckpointError(msg)
    if weight.shape[1] != in_features:
        msg = (
            f"head {name} takes inputs of width {weight.shape[1]} but the encoder's hidden size is "
            f"{in_features} ({CONFIG_FILE}): the head belongs to another model"
        )
        raise CheckpointError(msg)
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        msg = f"head {name} has bias shape {tuple(bias.shape)}, expected ({weight.shape[0]},)"
        raise CheckpointError(msg)
    for key, value in (("weight", weight), ("bias", bias)):
        if value is not None and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            msg = f"head {name} has {bad} NaN or infinite value(s) in its {key}"
            raise CheckpointError(msg)
    linear = torch.nn.Linear(in_features, int(weight.shape[0]), bias=bias is not None)
    # Heads ship in fp16 upstream; load_state_dict copies into the float32 parameters.
    linear.load_state_dict(dict(state))
    return linear


# ---------------------------------------------------------------------------------------- pooling
def read_pooling(folder: Path) -> tuple[str | None, str | None]:
    """The pooling a sentence-transformers folder declares, and the file that says so.

    ``modules.json`` names the Pooling module's folder (``1_Pooling`` by convention); its ``config.json``
    sets ``pooling_mode_*`` flags. Returns ``("cls" | "mean" | another mode such as "max" or
    "lasttoken" | several joined by "+", file)``, or ``(None, None)`` for a folder that declares none.

    Raises:
        CheckpointError: an unreadable ``modules.json`` or pooling config.
    """
    if (folder / "modules.json").exists():
        modules = read_json_file(folder, "modules.json")
        if not isinstance(modules, list):
            msg = f"modules.json in {folder} is not a list of modules"
            raise CheckpointError(msg)
        pooling_dirs = [
            str(module.get("path", ""))
            for module in modules
            if isinstance(module, dict) and str(module.get("type", "")).rsplit(".", 1)[-1] == "Pooling"
        ]
        pooling_dir = pooling_dirs[0] if pooling_dirs else ""
    else:
        pooling_dir = "1_Pooling"
    name = f"{pooling_dir.rstrip('/')}/{CONFIG_FILE}"
    if not pooling_dir or not confined_path(folder, name).exists():
        return None, None
    config = read_json_file(folder, name)
    if not isinstance(config, dict):
        msg = f"{name} in {folder} is not a JSON object"
        raise CheckpointError(msg)
    modes = [
        key.removeprefix("pooling_mode_").removesuffix("_tokens").removesuffix("_token")
        for key in sorted(k for k, v in config.items() if k.startswith("pooling_mode_") and v is True)
    ]
    if isinstance(config.get("pooling_mode"), str):  # newer sentence-transformers spell it out
        modes.append(config["pooling_mode"])
    modes = sorted(set(modes))
    return ("+".join(modes) if modes else None), name


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else ""
