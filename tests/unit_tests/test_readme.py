"""The README's examples run as written, on tiny checkpoints instead of BAAI/bge-m3 and e5."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from m3_integrations.cli import main
from m3_integrations.testing import build_tiny_checkpoint

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)
BASH = re.findall(r"```bash\n(.*?)```", README, re.S)


def test_readme_has_examples() -> None:
    assert len(BLOCKS) >= 3


def test_readme_examples_run(tiny_checkpoint: str, tmp_path: Path) -> None:
    # Each block runs in a fresh namespace: a snippet that needs names from another one is a bug.
    namespaces = []
    for block in BLOCKS:
        code = block.replace('"BAAI/bge-m3"', repr(tiny_checkpoint)).replace(
            '"my-index"', repr(str(tmp_path / "ix"))
        )
        if "M3Model(" not in code:  # the engine snippet continues the quickstart's model
            code = f"from m3_integrations import M3Model\nmodel = M3Model({tiny_checkpoint!r})\n" + code
        namespace: dict = {}
        try:
            exec(code, namespace)
        except Exception as err:  # pragma: no cover - the failure message is the point
            pytest.fail(f"README example failed: {type(err).__name__}: {err}\n{block}")
        namespaces.append(namespace)
    index = next(n["index"] for n in namespaces if "index" in n)
    assert len(index) == 3  # two documents, saved and loaded, then one more saved as a segment
    reloaded = type(index).load(tmp_path / "ix", model=index.model)
    assert reloaded.ids == index.ids
    assert json.loads((tmp_path / "ix" / "manifest.json").read_text())["format_version"] == 3
    frameworks = next(n for n in namespaces if "llama_retriever" in n)
    assert frameworks["docs"] and "relevance_score" in frameworks["docs"][0].metadata
    assert frameworks["llama_retriever"].retrieve("capital of France")


def test_readme_offline_commands_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The offline variant of the first command, with the flags a checkpoint without M3 heads needs.
    commands = [line for block in BASH for line in block.splitlines() if line.startswith("m3-integrations ")]
    assert [shlex.split(c)[1] for c in commands] == ["index", "search"]
    assert "--allow-missing-heads" in commands[0] and "--pooling mean" in commands[0]
    plain = build_tiny_checkpoint(tmp_path / "e5", colbert_head=False, sparse_head=False)
    monkeypatch.setenv("E5", plain)
    monkeypatch.chdir(ROOT)  # the commands name examples/data relative to the repository
    for command in commands:
        argv = [a.replace("$E5", plain) for a in shlex.split(command)[1:]]
        argv = [str(tmp_path / "my.index") if a == "my.index" else a for a in argv]
        assert main(["-q", *argv]) == 0, command
    out = capsys.readouterr().out
    assert any(name in out for name in ("bge_m3_overview.md", "hybrid_search.txt"))
