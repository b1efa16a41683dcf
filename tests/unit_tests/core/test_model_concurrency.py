"""M3Model and the cross-encoder used from many threads give what one thread gives (issue 13, item 6)."""

from __future__ import annotations

import threading

import numpy as np

from m3_integrations import CrossEncoderReranker, M3Model

TEXTS = [f"word{i} " * (i % 40 + 1) + "the capital of France" for i in range(36)]


def _run_threads(work, n_threads: int = 4) -> list[BaseException]:
    errors: list[BaseException] = []

    def guarded(seed: int) -> None:
        try:
            work(seed)
        except BaseException as err:  # reported by the caller
            errors.append(err)

    threads = [threading.Thread(target=guarded, args=(seed,)) for seed in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return errors


def test_concurrent_encodes_equal_sequential_ones(tiny_checkpoint: str) -> None:
    """Forward passes share the model's weights only; each call's batches are its own."""
    model = M3Model(tiny_checkpoint, device="cpu", batch_size=4)
    reference = model.encode(TEXTS, return_colbert=True, max_length=48)
    mismatches: list[str] = []

    def work(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(8):
            picked = rng.choice(len(TEXTS), size=7, replace=False)
            out = model.encode([TEXTS[i] for i in picked], return_colbert=True, max_length=48)
            assert out.dense is not None and reference.dense is not None
            assert out.colbert_vecs is not None and reference.colbert_vecs is not None
            assert out.lexical_weights is not None and reference.lexical_weights is not None
            if not np.allclose(out.dense, reference.dense[picked], rtol=1e-4, atol=1e-6):
                mismatches.append("dense")
            for row, i in enumerate(picked):
                if not np.allclose(out.colbert_vecs[row], reference.colbert_vecs[i], rtol=1e-4, atol=1e-6):
                    mismatches.append("colbert")
                if out.lexical_weights[row].keys() != reference.lexical_weights[i].keys():
                    mismatches.append("lexical")
            assert model.fingerprint == fingerprint

    fingerprint = M3Model(tiny_checkpoint, device="cpu").fingerprint
    errors = _run_threads(work)
    assert not errors, errors
    assert not mismatches, mismatches


def test_concurrent_cross_encoder_scores_equal_sequential_ones(tiny_reranker_checkpoint: str) -> None:
    reranker = CrossEncoderReranker(tiny_reranker_checkpoint, device="cpu", batch_size=3, max_length=64)
    reference = reranker.score("capital of France", TEXTS)
    mismatches: list[int] = []

    def work(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(6):
            picked = rng.choice(len(TEXTS), size=5, replace=False)
            scores = reranker.score("capital of France", [TEXTS[i] for i in picked])
            if not np.allclose(scores, reference[picked], rtol=1e-4, atol=1e-6):
                mismatches.append(seed)

    errors = _run_threads(work)
    assert not errors, errors
    assert not mismatches
