"""Pair scoring of :class:`~m3_integrations.M3Model`: FlagEmbedding's ``compute_score`` and token names.

The formulas are :mod:`m3_integrations.scoring`'s; this only encodes both sides and applies them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from m3_integrations import fusion, scoring

if TYPE_CHECKING:
    from m3_integrations._model_encoding import M3Output

__all__ = ["ScoringMethods"]

_T = TypeVar("_T")


def _required(value: _T | None) -> _T:
    if value is None:  # pragma: no cover - encode() fills every output it is asked for
        msg = "internal error: an output that was asked for is missing"
        raise RuntimeError(msg)
    return value


class ScoringMethods:
    """``compute_score`` and ``convert_id_to_token`` of :class:`~m3_integrations.M3Model` (a mixin)."""

    tokenizer: Any
    query_max_length: int
    passage_max_length: int
    query_instruction: str | None
    passage_instruction: str | None

    encode: Callable[..., M3Output]  # EncodingMethods.encode, on M3Model

    def convert_id_to_token(
        self, lexical_weights: Mapping[int, float] | Sequence[Mapping[int, float]]
    ) -> dict[str, float] | list[dict[str, float]]:
        """Turn token-id weights into readable token → weight maps (one map or a list of maps)."""
        if isinstance(lexical_weights, Mapping):
            return self._ids_to_tokens(lexical_weights)
        return [self._ids_to_tokens(w) for w in lexical_weights]

    def _ids_to_tokens(self, weights: Mapping[int, float]) -> dict[str, float]:
        out: dict[str, float] = {}
        for token_id, weight in weights.items():
            token = str(self.tokenizer.decode([int(token_id)]))
            out[token] = max(out.get(token, 0.0), float(weight))
        return out

    def compute_score(
        self,
        sentence_pairs: Sequence[tuple[str, str]] | tuple[str, str],
        *,
        weights: Sequence[float] = fusion.PAPER_WEIGHTS,
        batch_size: int | None = None,
        max_query_length: int | None = None,
        max_passage_length: int | None = None,
    ) -> dict[str, list[float]]:
        """Score (query, passage) pairs with every mode, FlagEmbedding's ``compute_score`` semantics.

        Args:
            sentence_pairs: ``(query, passage)`` pairs, or one pair.
            weights: ``(w_dense, w_sparse, w_colbert)``; the paper's ``(0.4, 0.2, 0.4)`` by default.
            batch_size: texts per forward pass.
            max_query_length: default ``query_max_length``.
            max_passage_length: default ``passage_max_length``.

        Returns:
            ``{"dense", "sparse", "colbert", "sparse+dense", "colbert+sparse+dense"}`` → list of scores,
            where ``sparse+dense = (w_s·s + w_d·d) / (w_d + w_s)`` and the three-way score is
            ``Σ w_i s_i / Σ w_i``.
        """
        if (
            isinstance(sentence_pairs, tuple)
            and len(sentence_pairs) == 2
            and isinstance(sentence_pairs[0], str)
        ):
            sentence_pairs = [sentence_pairs]  # type: ignore[list-item]
        pairs = list(sentence_pairs)
        for i, pair in enumerate(pairs):
            if not isinstance(pair, tuple | list) or len(pair) != 2:
                msg = f"sentence_pairs[{i}] must be a (query, passage) pair"
                raise TypeError(msg)
        w = [float(x) for x in weights]
        if len(w) != 3 or any(x < 0 for x in w) or sum(w) <= 0:
            msg = (
                "weights must be three non-negative numbers (dense, sparse, colbert) with a positive sum, "
                f"got {weights}"
            )
            raise ValueError(msg)
        names = ("dense", "sparse", "colbert", "sparse+dense", "colbert+sparse+dense")
        if not pairs:
            return {k: [] for k in names}
        queries = self.encode(
            [p[0] for p in pairs],
            return_colbert=True,
            max_length=max_query_length or self.query_max_length,
            batch_size=batch_size,
            instruction=self.query_instruction,
        )
        passages = self.encode(
            [p[1] for p in pairs],
            return_colbert=True,
            max_length=max_passage_length or self.passage_max_length,
            batch_size=batch_size,
            instruction=self.passage_instruction,
        )
        q_dense, p_dense = _required(queries.dense), _required(passages.dense)
        q_lex, p_lex = _required(queries.lexical_weights), _required(passages.lexical_weights)
        q_col, p_col = _required(queries.colbert_vecs), _required(passages.colbert_vecs)
        dense = np.einsum("ij,ij->i", q_dense, p_dense)
        sparse = np.asarray(
            [scoring.lexical_score(q, p) for q, p in zip(q_lex, p_lex, strict=True)],
            dtype=np.float32,
        )
        colbert = np.asarray(
            [scoring.colbert_score(q, p) for q, p in zip(q_col, p_col, strict=True)],
            dtype=np.float32,
        )
        signals = {"dense": dense, "sparse": sparse, "colbert": colbert}
        both = scoring.combine_scores(signals, {"dense": w[0], "sparse": w[1]})
        three = scoring.combine_scores(signals, {"dense": w[0], "sparse": w[1], "colbert": w[2]})
        return {
            "dense": dense.tolist(),
            "sparse": sparse.tolist(),
            "colbert": colbert.tolist(),
            "sparse+dense": np.asarray(both).tolist(),
            "colbert+sparse+dense": np.asarray(three).tolist(),
        }
