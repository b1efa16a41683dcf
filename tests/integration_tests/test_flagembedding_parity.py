"""Parity with FlagEmbedding's BGEM3FlagModel, run from its own virtual environment (opt-in).

Set ``M3_FLAG_PYTHON`` to the python of a venv with ``flagembedding==1.4.2`` and ``transformers<5``
(see benchmarks/parity_flagembedding.py); skipped otherwise.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FLAG_PYTHON = os.environ.get("M3_FLAG_PYTHON", "")


@pytest.mark.skipif(not Path(FLAG_PYTHON).is_file(), reason="M3_FLAG_PYTHON (FlagEmbedding venv) not set")
def test_outputs_match_flagembedding(tiny_checkpoint: str) -> None:
    script = ROOT / "benchmarks" / "parity_flagembedding.py"
    result = subprocess.run(
        [sys.executable, str(script), "--flag-python", FLAG_PYTHON, "--model", tiny_checkpoint],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAIL" not in result.stdout
