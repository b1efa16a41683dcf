"""Loading damaged, hostile and non-BGE-M3 checkpoints: one clear error type, pooling, quiet loads."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from m3_integrations import CheckpointError, CheckpointNotFoundError, M3Model, MissingHeadsError
from m3_integrations.testing import build_tiny_checkpoint


@pytest.fixture(autouse=True)
def _transformers_warnings_on() -> Iterator[None]:
    """transformers at its default verbosity (a CLI test may have set it to errors only)."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()
    yield
    hf_logging.set_verbosity(verbosity)


# ------------------------------------------------------------------ damaged and hostile checkpoints


def _edit_json(path: Path, **changes: object) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    data.update(changes)
    path.write_text(json.dumps(data), encoding="utf-8")


def _edit_head(path: Path, key: str, edit: Callable[[torch.Tensor], torch.Tensor]) -> None:
    state = torch.load(path, weights_only=True)
    state[key] = edit(state[key].clone())
    torch.save(state, path)


def _with_value(value: float) -> Callable[[torch.Tensor], torch.Tensor]:
    def edit(tensor: torch.Tensor) -> torch.Tensor:
        tensor.view(-1)[0] = value
        return tensor

    return edit


class _Payload:
    """Unpickling this runs ``os.system``: what a hostile pickle does."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("touch PWNED",))


def _pickled_weights(folder: Path) -> None:
    (folder / "model.safetensors").unlink()
    torch.save(
        {"embeddings.word_embeddings.weight": torch.zeros(2, 2), "x": _Payload()},
        folder / "pytorch_model.bin",
    )


def _custom_code(folder: Path, model_type: str | None = None) -> None:
    """An ``auto_map`` pointing at Python in the folder that leaves a marker file if it ever runs."""
    code = f"open({str(folder / 'PWNED')!r}, 'w').close()\n"
    (folder / "evil.py").write_text(code, encoding="utf-8")
    changes: dict[str, object] = {
        "auto_map": {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"}
    }
    if model_type:
        changes["model_type"] = model_type
    _edit_json(folder / "config.json", **changes)


def _tokenizer_with_extra_tokens(folder: Path) -> None:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.add_tokens([f"extra{i}" for i in range(20)])
    tokenizer.save(str(folder / "tokenizer.json"))


def _tokenizer_of_five_pieces(folder: Path) -> None:
    from tokenizers import Tokenizer, models

    pieces = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁a", -1.0)]
    Tokenizer(models.Unigram(pieces, unk_id=3)).save(str(folder / "tokenizer.json"))


def _config_of_another_width(folder: Path) -> None:
    """config.json says 64 wide (heads to match); the encoder weights are 32 wide."""
    _edit_json(folder / "config.json", hidden_size=64)
    torch.save({"weight": torch.zeros(64, 64)}, folder / "colbert_linear.pt")
    torch.save({"weight": torch.zeros(1, 64)}, folder / "sparse_linear.pt")


def _head_replaced_by_a_folder(folder: Path) -> None:
    (folder / "sparse_linear.pt").unlink()
    (folder / "sparse_linear.pt").mkdir()


def _modules_json_pointing_outside(folder: Path) -> None:
    modules = [{"path": "../../etc", "type": "sentence_transformers.models.Pooling"}]
    (folder / "modules.json").write_text(json.dumps(modules), encoding="utf-8")


def _weights_without_embeddings(folder: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(folder / "model.safetensors")
    tensors = {k: v for k, v in tensors.items() if "word_embeddings" not in k}
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


DAMAGE = [
    pytest.param(
        lambda f: (f / "tokenizer.json").unlink(),
        CheckpointError,
        r"has no tokenizer\.json",
        id="no tokenizer.json",
    ),
    pytest.param(
        lambda f: (f / "tokenizer.json").write_text("{}"),
        CheckpointError,
        r"cannot load tokenizer\.json",
        id="tokenizer.json empty object",
    ),
    pytest.param(
        _tokenizer_of_five_pieces,
        CheckpointError,
        r"has only \d+ tokens for the model's \d+ embedding rows.*tokenizer\.json",
        id="tokenizer of 5 pieces",
    ),
    pytest.param(
        _tokenizer_with_extra_tokens,
        CheckpointError,
        r"has \d+ tokens but the model has \d+ embedding rows",
        id="tokenizer larger than embeddings",
    ),
    pytest.param(
        lambda f: _edit_head(f / "colbert_linear.pt", "weight", _with_value(float("nan"))),
        CheckpointError,
        r"colbert_linear\.pt has 1 NaN or infinite value\(s\) in its weight",
        id="NaN in colbert weight",
    ),
    pytest.param(
        lambda f: _edit_head(f / "sparse_linear.pt", "bias", _with_value(float("inf"))),
        CheckpointError,
        r"sparse_linear\.pt has 1 NaN or infinite value\(s\) in its bias",
        id="inf in sparse bias",
    ),
    pytest.param(
        lambda f: _edit_head(f / "sparse_linear.pt", "bias", lambda t: torch.zeros(3)),
        CheckpointError,
        r"sparse_linear\.pt has bias shape \(3,\), expected \(1,\)",
        id="wrong bias shape",
    ),
    pytest.param(
        lambda f: torch.save(5, f / "sparse_linear.pt"),
        CheckpointError,
        r"sparse_linear\.pt holds a int, not a Linear state dict",
        id="head holding an int",
    ),
    pytest.param(
        lambda f: torch.save({"weight": "abc"}, f / "sparse_linear.pt"),
        CheckpointError,
        r"sparse_linear\.pt: 'weight' must be a floating-point tensor, got str",
        id="head weight is a string",
    ),
    pytest.param(
        lambda f: torch.save({"weight": torch.ones(1, 32, dtype=torch.int64)}, f / "sparse_linear.pt"),
        CheckpointError,
        r"'weight' must be a floating-point tensor, got a torch\.int64",
        id="head weight of integers",
    ),
    pytest.param(
        lambda f: torch.save(
            {"weight": torch.zeros(32, 32), "scale": torch.ones(1)}, f / "colbert_linear.pt"
        ),
        CheckpointError,
        r"colbert_linear\.pt must hold 'weight' and optionally 'bias', got keys \['scale', 'weight'\]",
        id="head with extra keys",
    ),
    pytest.param(
        lambda f: torch.save({"weight": torch.zeros(16, 16)}, f / "colbert_linear.pt"),
        CheckpointError,
        r"colbert_linear\.pt takes inputs of width 16 but the encoder's hidden size is 32",
        id="head of another hidden size",
    ),
    pytest.param(
        lambda f: (f / "sparse_linear.pt").write_bytes(b"not a torch file"),
        CheckpointError,
        r"could not read head sparse_linear\.pt",
        id="head not a torch file",
    ),
    pytest.param(
        lambda f: torch.save({"weight": torch.zeros(1, 32), "x": _Payload()}, f / "sparse_linear.pt"),
        CheckpointError,
        r"sparse_linear\.pt .*pickled Python objects besides tensors",
        id="head with a pickled payload",
    ),
    pytest.param(
        lambda f: (f / "sparse_linear.pt").write_bytes(b"\0" * (3 << 20)),
        CheckpointError,
        r"sparse_linear\.pt .* more than a head of width 32 can hold",
        id="head far too large",
    ),
    pytest.param(
        _head_replaced_by_a_folder,
        CheckpointError,
        r"sparse_linear\.pt .* is not a regular file",
        id="head is a folder",
    ),
    pytest.param(
        lambda f: (f / "sparse_linear.pt").unlink(),
        MissingHeadsError,
        r"no sparse_linear\.pt",
        id="missing head",
    ),
    pytest.param(
        _pickled_weights,
        CheckpointError,
        r"pytorch_model\.bin .* holds pickled Python objects besides tensors: refused",
        id="pickled pytorch_model.bin",
    ),
    pytest.param(
        lambda f: (f / "model.safetensors").write_bytes(b"garbage"),
        CheckpointError,
        r"cannot load model\.safetensors",
        id="garbage model.safetensors",
    ),
    pytest.param(
        lambda f: (f / "model.safetensors").unlink(),
        CheckpointError,
        r"has no model weights",
        id="no weights",
    ),
    pytest.param(
        _config_of_another_width,
        CheckpointError,
        r"weights in model\.safetensors .* do not fit config\.json .*MISMATCH",
        id="weights of another hidden size",
    ),
    pytest.param(
        _weights_without_embeddings,
        CheckpointError,
        r"model\.safetensors .* lacks 1 weights .*word_embeddings.*random",
        id="encoder weights missing",
    ),
    pytest.param(
        lambda f: (f / "config.json").unlink(),
        CheckpointError,
        r"has no config\.json",
        id="no config.json",
    ),
    pytest.param(
        lambda f: (f / "config.json").write_text("{not json"),
        CheckpointError,
        r"config\.json in .* is not valid JSON",
        id="config.json not JSON",
    ),
    pytest.param(
        lambda f: (f / "config.json").write_text("[1, 2]"),
        CheckpointError,
        r"config\.json in .* holds a list, not a JSON object",
        id="config.json a list",
    ),
    pytest.param(
        lambda f: _edit_json(f / "config.json", model_type="evil-model"),
        CheckpointError,
        r"config\.json in .* names model type 'evil-model', which transformers does not know$",
        id="unknown model type",
    ),
    pytest.param(
        lambda f: _custom_code(f, "evil-model"),
        CheckpointError,
        r"model type 'evil-model'.*auto_map points to custom code in the folder, which is never run",
        id="custom code of an unknown type",
    ),
    pytest.param(
        lambda f: _edit_json(f / "config.json", hidden_size="32"),
        CheckpointError,
        r"config\.json .*hidden_size",
        id="hidden size not a number",
    ),
    pytest.param(
        _modules_json_pointing_outside,
        CheckpointError,
        r"names '\.\./\.\./etc/config\.json', a path outside its folder: refused",
        id="modules.json pointing outside",
    ),
    pytest.param(
        lambda f: (f / "modules.json").write_text("[{"),
        CheckpointError,
        r"modules\.json in .* is not valid JSON",
        id="modules.json not JSON",
    ),
]


@pytest.mark.parametrize(("damage", "error", "match"), DAMAGE)
def test_damaged_checkpoint_raises_one_clear_error(
    checkpoint_copy: Path,
    damage: Callable[[Path], object],
    error: type[Exception],
    match: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    damage(checkpoint_copy)
    monkeypatch.chdir(checkpoint_copy)  # where a hostile payload would leave its marker
    with pytest.raises(error, match=match) as caught:
        M3Model(str(checkpoint_copy), device="cpu")
    assert isinstance(caught.value, CheckpointError)
    assert not (checkpoint_copy / "PWNED").exists()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_special_files_are_refused_without_reading(checkpoint_copy: Path) -> None:
    """A FIFO in place of a head or a config would block a reader forever."""
    (checkpoint_copy / "sparse_linear.pt").unlink()
    os.mkfifo(checkpoint_copy / "sparse_linear.pt")
    with pytest.raises(CheckpointError, match=r"sparse_linear\.pt .* is not a regular file"):
        M3Model(str(checkpoint_copy), device="cpu")
    (checkpoint_copy / "sparse_linear.pt").unlink()
    os.mkfifo(checkpoint_copy / "modules.json")
    with pytest.raises(CheckpointError, match=r"modules\.json in .* is not a regular file"):
        M3Model(str(checkpoint_copy), device="cpu", allow_missing_heads=True)


def test_custom_code_of_a_known_type_is_ignored_with_a_warning(
    checkpoint_copy: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    _custom_code(checkpoint_copy)
    monkeypatch.chdir(checkpoint_copy)
    with caplog.at_level(logging.WARNING, logger="m3_integrations"):
        model = M3Model(str(checkpoint_copy), device="cpu")
    assert type(model.model).__module__.startswith("transformers.models.xlm_roberta")
    assert not (checkpoint_copy / "PWNED").exists()
    warnings = [r.getMessage() for r in caplog.records if "auto_map" in r.getMessage()]
    assert len(warnings) == 1 and "never run" in warnings[0], warnings


def test_missing_head_is_both_checkpoint_and_file_not_found_error(checkpoint_copy: Path) -> None:
    (checkpoint_copy / "colbert_linear.pt").unlink()
    with pytest.raises(FileNotFoundError, match=r"colbert_linear\.pt"):
        M3Model(str(checkpoint_copy), device="cpu")


# ------------------------------------------------------------------ where to find a model


def test_unreachable_hub_id_says_how_to_proceed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(CheckpointNotFoundError) as caught:
        M3Model("no-such-org/no-such-model", device="cpu")
    message = str(caught.value)
    assert isinstance(caught.value, FileNotFoundError)
    assert "could not find model 'no-such-org/no-such-model'" in message
    assert "Pass the path of a local checkpoint folder" in message
    assert "allow_missing_heads=True" in message and "pooling='mean'" in message
    assert "\n" not in message  # one line, however long the hub's own explanation is


def test_missing_folder_is_checkpoint_not_found(tmp_path: Path) -> None:
    with pytest.raises(CheckpointNotFoundError, match="does not exist"):
        M3Model(str(tmp_path / "nope"), device="cpu")


# ------------------------------------------------------------------ pooling


def _pooling_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and "pooling" in r.getMessage()
    ]


def _naive_mean_pooled(model: M3Model, text: str) -> np.ndarray:
    ids = model.tokenizer(text)["input_ids"]
    with torch.no_grad():
        hidden = model.model(input_ids=torch.tensor([ids])).last_hidden_state[0].numpy()
    mean = hidden.mean(0)
    return mean / np.linalg.norm(mean)


def test_sentence_transformers_pooling_is_read_from_the_folder(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = build_tiny_checkpoint(tmp_path / "st", colbert_head=False, sparse_head=False, pooling="mean")
    with caplog.at_level(logging.WARNING, logger="m3_integrations"):
        model = M3Model(folder, device="cpu", allow_missing_heads=True)
    assert model.pooling == "mean" and model.identity["pooling"] == "mean"
    assert not _pooling_warnings(caplog)
    out = model.encode(["the capital of France"], return_sparse=False)
    assert out.dense is not None
    np.testing.assert_allclose(
        out.dense[0], _naive_mean_pooled(model, "the capital of France"), rtol=1e-5, atol=1e-6
    )


def test_pooling_that_contradicts_the_folder_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = build_tiny_checkpoint(tmp_path / "st", colbert_head=False, sparse_head=False, pooling="cls")
    with caplog.at_level(logging.WARNING, logger="m3_integrations"):
        model = M3Model(folder, device="cpu", allow_missing_heads=True, pooling="mean")
        model.encode(["a", "b"], return_sparse=False)
    assert model.pooling == "mean"
    warnings = _pooling_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert "contradicts 1_Pooling/config.json" in warnings[0] and "'cls'" in warnings[0]


def test_plain_encoder_without_pooling_config_warns_once(
    checkpoint_copy: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for head in ("colbert_linear.pt", "sparse_linear.pt"):
        (checkpoint_copy / head).unlink()
    with caplog.at_level(logging.WARNING, logger="m3_integrations"):
        model = M3Model(str(checkpoint_copy), device="cpu", allow_missing_heads=True)
        model.encode(["a", "b"], return_sparse=False)
    assert model.pooling == "cls"
    warnings = _pooling_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert "no pooling config" in warnings[0] and "using CLS pooling" in warnings[0]


@pytest.mark.parametrize("st_pooling", [None, "cls"])
def test_bge_m3_layout_is_cls_without_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, st_pooling: str | None
) -> None:
    """bge-m3 ships both heads (and on the hub a CLS 1_Pooling config): no warning either way."""
    folder = build_tiny_checkpoint(tmp_path / "m3", pooling=st_pooling)
    with caplog.at_level(logging.WARNING, logger="m3_integrations"):
        model = M3Model(folder, device="cpu")
    assert model.pooling == "cls"
    assert not _pooling_warnings(caplog)


def test_unsupported_pooling_is_refused_unless_overridden(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = build_tiny_checkpoint(tmp_path / "st", colbert_head=False, sparse_head=False, pooling="max")
    with pytest.raises(
        CheckpointError, match=r"1_Pooling/config\.json in .* declares 'max' pooling.*pooling='mean'"
    ):
        M3Model(folder, device="cpu", allow_missing_heads=True)
    with caplog.at_level(logging.WARNING, logger="m3_integrations"):
        model = M3Model(folder, device="cpu", allow_missing_heads=True, pooling="mean")
    assert model.pooling == "mean"
    assert len(_pooling_warnings(caplog)) == 1


def test_bad_pooling_argument_is_refused(tiny_checkpoint: str) -> None:
    with pytest.raises(ValueError, match="pooling must be 'cls', 'mean' or None"):
        M3Model(tiny_checkpoint, device="cpu", pooling="max")  # type: ignore[arg-type]


# ------------------------------------------------------------------ quiet loads


def test_transformers_load_report_goes_to_debug_log(
    checkpoint_copy: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """A checkpoint without the pooler (e5, MiniLM) makes transformers print a report on every load."""
    from safetensors.torch import load_file, save_file
    from transformers.utils import logging as hf_logging

    tensors = load_file(checkpoint_copy / "model.safetensors")
    save_file({k: v for k, v in tensors.items() if "pooler" not in k}, checkpoint_copy / "model.safetensors")

    class Printed(logging.Handler):
        """Stands for transformers' stderr handler: what it receives is what a user sees."""

        def __init__(self) -> None:
            super().__init__()
            self.messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.messages.append(record.getMessage())

    printed = Printed()
    library_logger = hf_logging.get_logger()
    library_logger.addHandler(printed)
    bars_before = hf_logging.is_progress_bar_enabled()
    try:
        capfd.readouterr()
        with caplog.at_level(logging.DEBUG, logger="m3_integrations"):
            M3Model(str(checkpoint_copy), device="cpu")
        bars = capfd.readouterr()
        assert not printed.messages, printed.messages
        assert "Loading weights" not in bars.err + bars.out
        debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
        assert any("pooler.dense.weight" in message for message in debug), debug
        # transformers' settings are as they were: its later messages reach its handlers again
        assert hf_logging.is_progress_bar_enabled() == bars_before
        assert not printed.filters
        hf_logging.get_logger("transformers.modeling_utils").warning("after the load")
        assert printed.messages == ["after the load"]
    finally:
        library_logger.removeHandler(printed)


def test_tiny_checkpoint_builds_silently(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    build_tiny_checkpoint(tmp_path / "quiet")
    printed = capfd.readouterr()
    assert "Writing model shards" not in printed.err + printed.out


def test_pickled_payload_in_a_head_never_runs(checkpoint_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(checkpoint_copy)
    torch.save({"weight": torch.zeros(1, 32), "x": _Payload()}, checkpoint_copy / "sparse_linear.pt")
    with pytest.raises(CheckpointError):
        M3Model(str(checkpoint_copy), device="cpu")
    assert not (checkpoint_copy / "PWNED").exists()
    assert sys.modules.get("evil") is None
