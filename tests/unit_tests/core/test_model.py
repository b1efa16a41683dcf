"""M3Model against naive re-implementations of BGE-M3's formulas on the tiny checkpoint."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from m3_integrations import M3Model, M3Output
from m3_integrations.testing import build_tiny_checkpoint
from tests.common import (
    LEXICAL_WEIGHT_TOL,
    SAMPLE_TEXTS,
    naive_colbert_score,
    naive_encode,
    naive_lexical_score,
)


def test_encode_matches_naive_formulas(tiny_model: M3Model) -> None:
    out = tiny_model.encode(SAMPLE_TEXTS, return_dense=True, return_sparse=True, return_colbert=True)
    assert isinstance(out, M3Output)
    assert out.dense is not None and out.dense.dtype == np.float32
    assert out.dense.shape == (len(SAMPLE_TEXTS), tiny_model.dense_dim)
    for i, text in enumerate(SAMPLE_TEXTS):
        ref = naive_encode(tiny_model, text, max_length=tiny_model.passage_max_length)
        np.testing.assert_allclose(out.dense[i], ref["dense"], atol=1e-5)
        assert out.lexical_weights is not None and out.colbert_vecs is not None
        got = out.lexical_weights[i]
        assert set(got) == set(ref["lexical"]), text
        for token_id, weight in ref["lexical"].items():
            assert got[token_id] == pytest.approx(weight, **LEXICAL_WEIGHT_TOL)
        assert out.colbert_vecs[i].shape == (len(ref["ids"]) - 1, tiny_model.colbert_dim)
        np.testing.assert_allclose(out.colbert_vecs[i], ref["colbert"], atol=1e-5)
        assert out.num_tokens[i] == len(ref["ids"])


def test_lexical_weights_drop_specials_and_keep_max_of_repeats(tiny_model: M3Model) -> None:
    text = "capital capital capital of France"
    out = tiny_model.encode([text])
    assert out.lexical_weights is not None
    weights = out.lexical_weights[0]
    special = {tiny_model.tokenizer.cls_token_id, tiny_model.tokenizer.eos_token_id}
    assert not special & set(weights)
    assert all(w > 0 for w in weights.values())
    ids = tiny_model.tokenizer(text)["input_ids"]
    ref = naive_encode(tiny_model, text)
    # the repeated id appears once, with the largest of its per-position weights
    repeated = [t for t in set(ids) if ids.count(t) > 1 and t not in special]
    assert repeated
    for token_id in repeated:
        if token_id in ref["lexical"]:
            assert weights[token_id] == pytest.approx(ref["lexical"][token_id], **LEXICAL_WEIGHT_TOL)


def test_order_is_restored_under_length_sorted_batching(tiny_model: M3Model) -> None:
    texts = SAMPLE_TEXTS[::-1] + ["a b c d e f g h " * i for i in range(1, 6)]
    batched = tiny_model.encode(texts, batch_size=2, return_colbert=True)
    for i, text in enumerate(texts):
        single = tiny_model.encode([text], batch_size=1, return_colbert=True)
        assert batched.dense is not None and single.dense is not None
        np.testing.assert_allclose(batched.dense[i], single.dense[0], atol=1e-5)
        assert batched.lexical_weights is not None and single.lexical_weights is not None
        assert batched.lexical_weights[i].keys() == single.lexical_weights[0].keys()
        assert batched.colbert_vecs is not None and single.colbert_vecs is not None
        np.testing.assert_allclose(batched.colbert_vecs[i], single.colbert_vecs[0], atol=1e-5)


def test_token_budget_splits_long_batches(tiny_checkpoint: str) -> None:
    model = M3Model(tiny_checkpoint, device="cpu", batch_size=64, max_batch_tokens=64)
    order = np.arange(4)
    lengths = np.array([40, 30, 20, 10])
    batches = model._batches(order, lengths, 64)
    # 64 // 40 = 1 text, then 64 // 30 = 2 texts, then the 10-token text alone
    assert [b.tolist() for b in batches] == [[0], [1, 2], [3]]


def test_truncation_warns_once_with_count(tiny_model: M3Model, caplog: pytest.LogCaptureFixture) -> None:
    long_text = "the capital of France " * 100
    with caplog.at_level(logging.WARNING, logger="m3_integrations"):
        out = tiny_model.encode([long_text, "short", long_text], max_length=32)
    warnings = [r for r in caplog.records if "truncated" in r.getMessage()]
    assert len(warnings) == 1
    assert "2 of 3" in warnings[0].getMessage()
    assert out.num_tokens[0] == 32 and out.num_tokens[2] == 32
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="m3_integrations"):
        tiny_model.encode(["short"], max_length=32)
    assert not [r for r in caplog.records if "truncated" in r.getMessage()]


def test_queries_and_passages_use_their_own_lengths(tiny_checkpoint: str) -> None:
    model = M3Model(tiny_checkpoint, device="cpu", query_max_length=8, passage_max_length=16)
    text = "the capital of France and the capital of Germany and the cat sleeps in the sun"
    assert model.encode_queries([text]).num_tokens == [8]
    assert model.encode_passages([text]).num_tokens == [16]


def test_instructions_are_prefixed(tiny_checkpoint: str) -> None:
    model = M3Model(
        tiny_checkpoint, device="cpu", query_instruction="query: ", passage_instruction="passage: "
    )
    plain = M3Model(tiny_checkpoint, device="cpu")
    q = model.encode_queries(["capital of France"]).dense
    ref = plain.encode(["query: capital of France"]).dense
    assert q is not None and ref is not None
    np.testing.assert_allclose(q, ref, atol=1e-6)
    p = model.encode_passages(["capital of France"]).dense
    assert p is not None
    assert not np.allclose(p, q)


def test_multilingual_text(tiny_model: M3Model) -> None:
    out = tiny_model.encode(
        ["서울은 대한민국의 수도이다", "北京是中国的首都", "Wie spät ist es?"], return_colbert=True
    )
    assert out.dense is not None
    assert np.isfinite(out.dense).all()
    np.testing.assert_allclose(np.linalg.norm(out.dense, axis=1), 1.0, atol=1e-5)
    assert out.lexical_weights is not None
    assert out.lexical_weights[0]
    tokens = tiny_model.convert_id_to_token(out.lexical_weights[0])
    assert isinstance(tokens, dict)
    # every weighted token is a piece of the Korean text itself (or the word-start marker)
    assert all(t.strip() in "서울은 대한민국의 수도이다" for t in tokens), tokens


def test_single_string_and_empty_inputs(tiny_model: M3Model) -> None:
    one = tiny_model.encode("hello")
    assert one.dense is not None and one.dense.shape == (1, tiny_model.dense_dim)
    empty = tiny_model.encode([], return_colbert=True)
    assert len(empty) == 0
    assert empty.dense is not None and empty.dense.shape == (0, tiny_model.dense_dim)
    assert empty.lexical_weights == [] and empty.colbert_vecs == []
    blank = tiny_model.encode([""], return_colbert=True)
    assert blank.lexical_weights == [{}]
    assert blank.colbert_vecs is not None and blank.colbert_vecs[0].shape == (1, tiny_model.colbert_dim)


@pytest.mark.parametrize(
    ("texts", "match"),
    [
        (None, "got None"),
        (["ok", None], r"texts\[1\] must be a string, got NoneType"),
        (["ok", "fine", 3], r"texts\[2\] must be a string, got int"),
        (5, "must be a string or a list of strings"),
    ],
)
def test_bad_texts_name_the_problem(tiny_model: M3Model, texts: object, match: str) -> None:
    with pytest.raises(TypeError, match=match):
        tiny_model.encode(texts)  # type: ignore[arg-type]


def test_outputs_not_asked_for_are_none(tiny_model: M3Model) -> None:
    out = tiny_model.encode(["hello"], return_dense=False, return_sparse=False, return_colbert=True)
    assert out.dense is None and out.lexical_weights is None and out.colbert_vecs is not None


def test_compute_score_semantics(tiny_model: M3Model) -> None:
    pairs = [
        ("capital of France", "Paris is the capital of France."),
        ("sleeping cat", "The cat sleeps in the sun."),
        ("서울", "서울은 대한민국의 수도이다"),
    ]
    weights = (0.4, 0.2, 0.4)
    got = tiny_model.compute_score(pairs, weights=weights)
    assert set(got) == {"dense", "sparse", "colbert", "sparse+dense", "colbert+sparse+dense"}
    for i, (q, p) in enumerate(pairs):
        rq = naive_encode(tiny_model, q, tiny_model.query_max_length)
        rp = naive_encode(tiny_model, p, tiny_model.passage_max_length)
        dense = float(rq["dense"] @ rp["dense"])
        sparse = naive_lexical_score(rq["lexical"], rp["lexical"])
        colbert = naive_colbert_score(rq["colbert"], rp["colbert"])
        assert got["dense"][i] == pytest.approx(dense, abs=1e-5)
        # A sparse score sums products of lexical weights: it can exceed 1, so relative above 1.
        assert got["sparse"][i] == pytest.approx(sparse, rel=1e-4, abs=1e-4)
        assert got["colbert"][i] == pytest.approx(colbert, abs=1e-5)
        assert got["sparse+dense"][i] == pytest.approx((0.2 * sparse + 0.4 * dense) / 0.6, rel=1e-4, abs=1e-4)
        assert got["colbert+sparse+dense"][i] == pytest.approx(
            0.4 * dense + 0.2 * sparse + 0.4 * colbert, rel=1e-4, abs=1e-4
        )
    single = tiny_model.compute_score(pairs[0], weights=weights)
    # One pair alone against three in a padded batch: the same noise as the naive comparisons above.
    assert single["dense"][0] == pytest.approx(got["dense"][0], abs=1e-5)


@pytest.mark.parametrize("weights", [(1.0, 1.0), (0.0, 0.0, 0.0), (-1.0, 1.0, 1.0)])
def test_compute_score_rejects_bad_weights(tiny_model: M3Model, weights: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="weights"):
        tiny_model.compute_score([("a", "b")], weights=weights)


def test_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        M3Model(str(tmp_path / "nope"), device="cpu")


def test_unreachable_hub_id_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(FileNotFoundError, match="could not find model 'no-such-org/no-such-model'"):
        M3Model("no-such-org/no-such-model", device="cpu")


@pytest.mark.parametrize("missing", ["colbert_linear.pt", "sparse_linear.pt"])
def test_missing_head_is_an_error_naming_the_file(checkpoint_copy: Path, missing: str) -> None:
    (checkpoint_copy / missing).unlink()
    with pytest.raises(FileNotFoundError, match=missing):
        M3Model(str(checkpoint_copy), device="cpu")


def test_plain_encoder_opt_in(checkpoint_copy: Path) -> None:
    (checkpoint_copy / "colbert_linear.pt").unlink()
    (checkpoint_copy / "sparse_linear.pt").unlink()
    model = M3Model(str(checkpoint_copy), device="cpu", allow_missing_heads=True, pooling="mean")
    assert not model.has_sparse and not model.has_colbert_head
    with pytest.raises(ValueError, match="lexical weights are unavailable"):
        model.encode(["hello"])
    out = model.encode(["hello world"], return_sparse=False, return_colbert=True)
    # identity projection: ColBERT vectors are the normalised hidden states themselves
    ids = model.tokenizer("hello world")["input_ids"]
    with torch.no_grad():
        hidden = model.model(input_ids=torch.tensor([ids])).last_hidden_state[0].numpy()
    ref = hidden[1:] / np.linalg.norm(hidden[1:], axis=1, keepdims=True)
    assert out.colbert_vecs is not None
    np.testing.assert_allclose(out.colbert_vecs[0], ref, atol=1e-5)
    mean = hidden.mean(0)
    assert out.dense is not None
    np.testing.assert_allclose(out.dense[0], mean / np.linalg.norm(mean), atol=1e-5)


def test_corrupted_or_misshapen_head_is_an_error(checkpoint_copy: Path) -> None:
    (checkpoint_copy / "sparse_linear.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match=r"could not read head sparse_linear\.pt"):
        M3Model(str(checkpoint_copy), device="cpu")
    torch.save({"weight": torch.zeros(2, 7)}, checkpoint_copy / "sparse_linear.pt")
    with pytest.raises(ValueError, match=r"sparse_linear\.pt has weight shape \(2, 7\)"):
        M3Model(str(checkpoint_copy), device="cpu")


def test_heads_refuse_pickled_code(checkpoint_copy: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"weight": torch.zeros(1, 32), "payload": Evil()}, checkpoint_copy / "sparse_linear.pt")
    with pytest.raises(ValueError, match="could not read head"):
        M3Model(str(checkpoint_copy), device="cpu")


def test_fp16_heads_load_into_model_dtype(tiny_checkpoint: str) -> None:
    state = torch.load(Path(tiny_checkpoint) / "colbert_linear.pt", weights_only=True)
    assert state["weight"].dtype == torch.float16  # stored like upstream
    fp32 = M3Model(tiny_checkpoint, device="cpu")
    assert fp32.colbert_linear is not None and fp32.colbert_linear.weight.dtype == torch.float32
    torch.testing.assert_close(fp32.colbert_linear.weight.half(), state["weight"])
    half = M3Model(tiny_checkpoint, device="cpu", use_fp16=True)
    assert half.colbert_linear is not None and half.colbert_linear.weight.dtype == torch.float16
    assert half.sparse_linear is not None and half.sparse_linear.weight.dtype == torch.float16
    out = half.encode(["the capital of France"], return_colbert=True)
    ref = fp32.encode(["the capital of France"], return_colbert=True)
    assert out.dense is not None and ref.dense is not None and out.dense.dtype == np.float32
    np.testing.assert_allclose(out.dense, ref.dense, atol=2e-2)


def test_identity_and_fingerprint(tiny_checkpoint: str, tmp_path: Path) -> None:
    a = M3Model(tiny_checkpoint, device="cpu")
    b = M3Model(tiny_checkpoint, device="cpu")
    assert a.fingerprint == b.fingerprint
    assert a.identity["dense_dim"] == 32 and a.identity["has_sparse"]
    other = M3Model(build_tiny_checkpoint(tmp_path / "other", seed=7), device="cpu")
    assert other.fingerprint != a.fingerprint


def test_max_length_is_clamped_to_positions(tiny_checkpoint: str) -> None:
    model = M3Model(tiny_checkpoint, device="cpu", passage_max_length=8192)
    assert model.passage_max_length == 1024
    with pytest.raises(ValueError, match="batch_size"):
        M3Model(tiny_checkpoint, device="cpu", batch_size=0)


def test_progress_bar_can_be_shown_and_silenced(
    tiny_model: M3Model, capsys: pytest.CaptureFixture[str]
) -> None:
    tiny_model.encode(["a", "b"], show_progress=False)
    assert "Encoding" not in capsys.readouterr().err
    tiny_model.encode(["a", "b"], show_progress=True)
    assert "Encoding" in capsys.readouterr().err


def test_copy_of_checkpoint_is_independent(tiny_checkpoint: str, tmp_path: Path) -> None:
    target = tmp_path / "copy"
    shutil.copytree(tiny_checkpoint, target)
    a = M3Model(tiny_checkpoint, device="cpu").encode(["x y z"]).dense
    b = M3Model(str(target), device="cpu").encode(["x y z"]).dense
    assert a is not None and b is not None
    # Exact on purpose: the same weights, input and code path twice; any difference is state shared
    # between the two models, not rounding.
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "text",
    [
        "hello world ",
        "  leading and   inner spaces",
        "line one\nline two\n",
        "tabs\tand\ttrailing\t",
        "서울은  ",
    ],
)
def test_tokenization_follows_the_serialized_tokenizer(
    tiny_model: M3Model, tiny_checkpoint: str, text: str
) -> None:
    from tokenizers import Tokenizer

    serialized = Tokenizer.from_file(str(Path(tiny_checkpoint) / "tokenizer.json"))
    expected = serialized.encode(text).ids
    out = tiny_model.encode([text], max_length=512)
    assert out.num_tokens == [len(expected)]
    assert tiny_model.tokenizer(text)["input_ids"] == expected


def test_tiny_checkpoint_builds_are_reproducible(tiny_checkpoint: str, tmp_path: Path) -> None:
    again = Path(build_tiny_checkpoint(tmp_path / "again"))
    for name in ("tokenizer.json", "config.json", "model.safetensors"):
        assert (again / name).read_bytes() == (Path(tiny_checkpoint) / name).read_bytes(), name
