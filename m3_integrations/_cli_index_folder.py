"""Index folders on the command line: the ``--out`` check, and the model an existing index was built with.

``search`` and ``eval --index`` rebuild the query encoder from the index's ``manifest.json``: only plain
settings from a fixed list, each checked, and the recorded model itself only when it is a plain hub id.
Nothing read from an index folder can make the command run code.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from m3_integrations._cli_common import EXIT_INPUT, EXIT_USAGE, CliError, _as_flags
from m3_integrations._cli_model import _HUB_ID, model_kwargs

if TYPE_CHECKING:
    from m3_integrations import M3Index, M3Model

logger = logging.getLogger("m3_integrations.cli")

# Written by earlier versions beside the index to say how to load the model; never read now, as a
# shared folder could name code to run in it.
LEGACY_MODEL_FILE = "cli_model.json"
MANIFEST_FILE = "manifest.json"
_MAX_INSTRUCTION_CHARS = 1000
_MAX_LENGTH_TOKENS = 1 << 20


def _check_output_folder(out: str, inputs: Sequence[str]) -> Path:
    """Refuse an ``--out`` that saving would destroy, before anything loads; return it as a path.

    Allowed: a new path, an empty folder, or a folder holding an index (replaced atomically). Refused,
    touching nothing: what :meth:`M3Index.save` refuses (a file or link at the path, a folder of anything
    else), and an input path or a folder holding one.
    """
    from m3_integrations.index.persistence import check_save_target

    target = Path(out).expanduser()
    resolved = target.resolve()
    for raw in inputs:
        source = Path(raw).expanduser().resolve()
        if source == resolved or resolved in source.parents:
            msg = f"--out {out!r} would replace the input {raw!r}; write the index to another folder"
            raise CliError(msg, EXIT_INPUT)
    try:
        check_save_target(target)
    except FileExistsError as err:
        raise CliError(f"--out {out!r}: {err} (nothing was written)", EXIT_INPUT) from err
    return target


def _read_manifest(folder: Path) -> dict[str, Any]:
    """An index folder's ``manifest.json``, read safely by the library (see ``persistence.read_manifest``)."""
    from m3_integrations.errors import IndexLoadError
    from m3_integrations.index.persistence import read_manifest

    try:
        return read_manifest(folder)
    except IndexLoadError as err:
        raise CliError(str(err), EXIT_INPUT) from err


def _recorded_value(manifest_path: Path, key: str, value: Any) -> Any:
    """Check one encoder setting read from a manifest; an index may come from anyone."""
    ok: bool
    if key == "pooling":
        ok = value in ("cls", "mean")
    elif key in ("allow_missing_heads", "normalize_embeddings"):
        ok = isinstance(value, bool)
    elif key in ("query_instruction", "passage_instruction"):
        ok = value is None or (isinstance(value, str) and len(value) <= _MAX_INSTRUCTION_CHARS)
    else:  # query_max_length, passage_max_length
        ok = isinstance(value, int) and not isinstance(value, bool) and 0 < value <= _MAX_LENGTH_TOKENS
    if not ok:
        msg = f"{manifest_path} records an invalid model setting {key} = {json.dumps(value)[:80]}"
        raise CliError(msg, EXIT_INPUT)
    return value


# The encoder settings search takes from an index: plain values only, each checked.
_RECORDED_SETTINGS = (
    "pooling",
    "normalize_embeddings",
    "query_instruction",
    "passage_instruction",
    "query_max_length",
    "passage_max_length",
    "allow_missing_heads",
)


class _IndexModel(NamedTuple):
    name: str
    kwargs: dict[str, Any]
    has_sparse: bool
    store_colbert: bool
    lexical: str


def _model_for_index(folder: Path, args: argparse.Namespace) -> _IndexModel:
    """The model to load for an existing index: ``--model`` or the recorded hub id, plus checked settings.

    The settings recorded in the manifest come first and the command line's options override them; the
    recorded model is used only when it is a plain hub id, never a path an index folder could choose.
    """
    manifest = _read_manifest(folder)
    manifest_path = folder / MANIFEST_FILE
    if (folder / LEGACY_MODEL_FILE).exists():
        logger.warning(
            "ignoring %s: the model settings now come from %s only (an index folder cannot choose "
            "code to run); pass --model and its flags if the index was built with a local model",
            folder / LEGACY_MODEL_FILE,
            MANIFEST_FILE,
        )
    identity = manifest.get("model")
    if not isinstance(identity, dict):
        msg = f"{manifest_path} does not record the model that built the index"
        raise CliError(msg, EXIT_INPUT)
    kwargs = {
        key: _recorded_value(manifest_path, key, identity[key])
        for key in _RECORDED_SETTINGS
        if key in identity
    }
    has_sparse, has_colbert_head = identity.get("has_sparse"), identity.get("has_colbert_head")
    if "allow_missing_heads" not in kwargs and (has_sparse is False or has_colbert_head is False):
        kwargs["allow_missing_heads"] = True  # indexes saved before the setting was recorded
    if kwargs.get("allow_missing_heads") is False:
        del kwargs["allow_missing_heads"]
    kwargs.update(model_kwargs(args))
    store_colbert, lexical = manifest.get("store_colbert", True), manifest.get("lexical", "m3")
    if not isinstance(store_colbert, bool) or lexical not in ("m3", "bm25"):
        msg = f"{manifest_path} records an invalid store_colbert or lexical setting"
        raise CliError(msg, EXIT_INPUT)

    recorded = identity.get("model_name_or_path")
    name = args.model
    if name is None:
        if not isinstance(recorded, str) or not _is_plain_hub_id(recorded):
            built = (
                f"with the local model {json.dumps(recorded)[:200]}"
                if isinstance(recorded, str)
                else "with a model its manifest does not name"
            )
            msg = (
                f"the index {str(folder)!r} was built {built}; an index cannot choose a folder to load: "
                "pass --model PATH (the same checkpoint)"
            )
            raise CliError(msg, EXIT_USAGE)
        name = recorded
        logger.info("using the model recorded in %s: %s", manifest_path, name)
    logger.debug("model settings for %s: %s", name, kwargs)
    return _IndexModel(name, kwargs, bool(has_sparse), store_colbert, lexical)


def _is_plain_hub_id(name: str) -> bool:
    # A name that is also a folder here would load that folder rather than the hub's model.
    return bool(_HUB_ID.fullmatch(name)) and ".." not in name and not Path(name).exists()


def _load_index(folder: Path, model: M3Model) -> M3Index:
    from m3_integrations import M3Index

    try:
        # A command answers its queries and exits: building the approximate dense stage (tens of
        # seconds at 100k documents) would cost more than the exact scans it saves (~30 ms a query).
        return M3Index.load(folder, model, ann=False)
    except (OSError, ValueError) as err:  # IndexLoadError is a ValueError
        msg = f"cannot load index {str(folder)!r}: {_as_flags(str(err))}"
        raise CliError(msg, EXIT_INPUT) from err


def _index_folder(raw: str) -> Path:
    folder = Path(raw).expanduser()
    if not folder.is_dir():
        msg = f"index folder {raw!r} does not exist"
        raise CliError(msg, EXIT_INPUT)
    return folder
