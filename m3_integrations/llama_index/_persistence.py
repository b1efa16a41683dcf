"""The folder ``M3Retriever.persist`` writes and ``M3Retriever.from_persist_dir`` reads.

``manifest.json`` names one ``v-<hex>/`` data folder holding ``retriever.json`` (settings and filters),
``docstore.json`` (LlamaIndex's JSON docstore) and ``index/`` (:meth:`M3Index.save`), each file with its
size and SHA-256; the folder is switched atomically like :meth:`M3Index.save`. The earlier layout (the
files side by side, unchecked) still loads, and a persist converts it. No pickle anywhere.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llama_index.core.storage.docstore import BaseDocumentStore, SimpleDocumentStore
from llama_index.core.vector_stores.types import MetadataFilters

from m3_integrations.errors import IndexLoadError
from m3_integrations.index import M3Index
from m3_integrations.index.folder_reader import (
    MAX_MANIFEST_BYTES,
    OpenFolder,
    VanishedError,
    parse_json,
    read_file,
    read_manifest_file,
)
from m3_integrations.index.folder_writer import VERSION_DIR_RE, FolderFormat, write_folder

if TYPE_CHECKING:
    from m3_integrations.model import M3Model

__all__ = ["PERSIST_FORMAT", "PERSIST_VERSION", "read_retriever", "write_retriever"]

PERSIST_FORMAT = "m3-integrations/llama-index-retriever"
PERSIST_VERSION = 1
CONFIG_FILE = "retriever.json"
DOCSTORE_FILE = "docstore.json"
INDEX_DIR = "index"
# retriever.json and docstore.json are read whole: bounded, as every file of a folder anyone may hand us.
MAX_CONFIG_BYTES = MAX_MANIFEST_BYTES
MAX_DOCSTORE_BYTES = 1 << 40


def _legacy_problem(folder: Path) -> str | None:
    """Why ``folder`` is not a retriever folder of the earlier layout (files side by side); None if it is."""
    try:
        config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        return f"no readable {CONFIG_FILE} ({err})"
    if not isinstance(config, dict) or config.get("format") != PERSIST_FORMAT:
        return f"{CONFIG_FILE} is not an M3Retriever's"
    return None


# What persist() writes: manifest.json naming one v-<hex>/ data folder (retriever.json, docstore.json and
# the index's own folder), switched atomically like M3Index.save; it replaces only a folder of this
# format (or the earlier layout, converted), an empty folder or a new path.
RETRIEVER_FOLDER = FolderFormat(
    name=PERSIST_FORMAT,
    versions=(PERSIST_VERSION,),
    noun="M3Retriever",
    what="the retriever",
    folder_noun="M3Retriever folder",
    verb="persist",
    writer="M3Retriever.persist",
    lock_file=".m3-retriever.lock",
    legacy_entries={CONFIG_FILE: False, DOCSTORE_FILE: False, INDEX_DIR: True},
    legacy_check=_legacy_problem,
)


def write_retriever(
    path: str | os.PathLike[str],
    config: dict[str, Any],
    docstore: BaseDocumentStore,
    save_index: Callable[[Path], None],
) -> None:
    """Write a retriever folder: ``config`` (``M3Retriever.get_persist_args()``), the docstore, the index.

    Raises:
        FileExistsError: ``path`` holds something other than a retriever folder; nothing is touched.
    """
    if isinstance(config["weights"], tuple):
        config["weights"] = list(config["weights"])
    config_bytes = json.dumps(config, indent=2).encode("utf-8")
    docstore_bytes = json.dumps(docstore.to_dict()).encode("utf-8")
    write_folder(
        path,
        RETRIEVER_FOLDER,
        {"format": PERSIST_FORMAT, "format_version": PERSIST_VERSION},
        {
            CONFIG_FILE: lambda fh: fh.write(config_bytes),
            DOCSTORE_FILE: lambda fh: fh.write(docstore_bytes),
        },
        folders={INDEX_DIR: save_index},
    )


def read_retriever(
    folder: Path, model: M3Model, *, mmap: bool = False
) -> tuple[dict[str, Any], M3Index, SimpleDocumentStore]:
    """A retriever folder's settings (``M3Retriever`` keyword arguments), its index and its docstore.

    ``mmap`` leaves the index's ColBERT vectors memory-mapped (``M3Index.load``).

    Raises:
        FileNotFoundError: the folder or one of its files is missing.
        ValueError: not a retriever folder, a damaged file (an ``IndexLoadError``), or a docstore and an
            index that hold different node ids.
    """
    config_bytes, docstore_bytes, data = _read_persisted(folder)
    config = parse_json(config_bytes, data / CONFIG_FILE)
    if not isinstance(config, dict):
        msg = f"{data / CONFIG_FILE} holds a {type(config).__name__}, not a JSON object"
        raise IndexLoadError(msg)
    if config.get("format") != PERSIST_FORMAT or config.get("version") != PERSIST_VERSION:
        found = f"format {config.get('format')!r} version {config.get('version')!r}"
        msg = f"{data / CONFIG_FILE} has {found}; expected {PERSIST_FORMAT!r} version {PERSIST_VERSION}"
        raise ValueError(msg)
    index = M3Index.load(data / INDEX_DIR, model, mmap=mmap)
    try:
        docstore = SimpleDocumentStore.from_dict(parse_json(docstore_bytes, data / DOCSTORE_FILE))
    except (TypeError, ValueError, KeyError, AttributeError) as err:
        msg = f"{data / DOCSTORE_FILE} is not a LlamaIndex docstore: {err}"
        raise IndexLoadError(msg) from err
    if set(docstore.docs) != set(index.ids):
        msg = f"{folder}: the docstore and the index hold different node ids; the folder is damaged"
        raise ValueError(msg)

    settings = {k: config[k] for k in config if k not in ("format", "version")}
    if settings["filters"] is not None:
        settings["filters"] = MetadataFilters.model_validate(settings["filters"])
    if isinstance(settings["weights"], list):
        settings["weights"] = tuple(settings["weights"])
    return settings, index, docstore


def _read_persisted(folder: Path) -> tuple[bytes, bytes, Path]:
    """``retriever.json`` and ``docstore.json`` of a retriever folder, checked, and the folder holding them.

    A folder with a manifest names its data folder and each file's size and SHA-256; the earlier layout
    kept the files beside each other, unchecked.
    """
    try:
        manifest = read_manifest_file(folder)
    except FileNotFoundError as err:
        msg = f"{folder} is not an M3Retriever folder (no such folder)"
        raise FileNotFoundError(msg) from err
    except VanishedError:
        manifest = None
    if manifest is None:
        if not (folder / CONFIG_FILE).is_file():
            msg = f"{folder} is not an M3Retriever folder (no manifest.json or {CONFIG_FILE})"
            raise FileNotFoundError(msg)
        data, files = folder, {CONFIG_FILE: {}, DOCSTORE_FILE: {}}
    else:
        if not isinstance(manifest, dict) or manifest.get("format") != PERSIST_FORMAT:
            msg = f"{folder} is not an M3Retriever folder (its manifest.json is another format's)"
            raise IndexLoadError(msg)
        if manifest.get("format_version") != PERSIST_VERSION:
            msg = (
                f"{folder / 'manifest.json'} has format version {manifest.get('format_version')!r}; "
                f"this release reads version {PERSIST_VERSION}"
            )
            raise IndexLoadError(msg)
        name, files = manifest.get("data"), manifest.get("files")
        if not isinstance(name, str) or not VERSION_DIR_RE.fullmatch(name) or not isinstance(files, dict):
            msg = f"{folder / 'manifest.json'} names no valid data folder and files; the folder is damaged"
            raise IndexLoadError(msg)
        data = folder / name
        for file in (CONFIG_FILE, DOCSTORE_FILE):
            entry = files.get(file)
            if not isinstance(entry, dict) or not isinstance(entry.get("bytes"), int):
                msg = f"{folder / 'manifest.json'} does not list {file}; the folder is damaged"
                raise IndexLoadError(msg)
    try:
        root = OpenFolder.open(data, follow=data == folder)
    except FileNotFoundError as err:
        msg = f"{data} is missing: the folder is damaged"
        raise FileNotFoundError(msg) from err
    except OSError as err:
        msg = f"{data} cannot be opened: {err}"
        raise IndexLoadError(msg) from err
    try:
        contents = []
        for file, limit in ((CONFIG_FILE, MAX_CONFIG_BYTES), (DOCSTORE_FILE, MAX_DOCSTORE_BYTES)):
            entry = files[file]
            try:
                contents.append(
                    read_file(
                        root, file, max_bytes=limit, declared=entry.get("bytes"), sha256=entry.get("sha256")
                    )
                )
            except VanishedError as err:
                msg = f"{data / file} is missing: the folder is damaged"
                raise FileNotFoundError(msg) from err
    finally:
        root.close()
    return contents[0], contents[1], data
