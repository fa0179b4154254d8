"""Text generation metrics through well-kept libraries: BLEU (sacrebleu) and ROUGE (rouge-score).

BLEU is a corpus metric: sacrebleu's per-sentence sufficient statistics (lengths, n-gram
matches and totals) are summed with the bootstrap weights and scored by sacrebleu itself, so
every resample gives exactly sacrebleu's corpus BLEU. ROUGE is the mean per-sentence F-measure.
Values are on a 0–1 scale (BLEU divided by 100). The per-sentence statistics come from
``BLEU._extract_corpus_statistics`` and are scored by ``BLEU._compute_score_from_stats``, the
pair sacrebleu's own paired-bootstrap significance test uses.
"""

from __future__ import annotations

import numpy as np

from loopml.errors import LoopMLError
from loopml.evaluation.data import EvalData
from loopml.evaluation.kernels import Kernel, SumKernel, safe_div


def _bleu_kernel(d: EvalData) -> Kernel:
    try:
        from sacrebleu.metrics.bleu import BLEU
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise LoopMLError("BLEU needs the `sacrebleu` package (pip install sacrebleu)") from exc
    bleu = BLEU()
    stats = np.asarray(bleu._extract_corpus_statistics(d.score, [d.y]), dtype=np.float64)
    if stats.size == 0:
        stats = np.zeros((0, 10))

    def fin(s: np.ndarray) -> np.ndarray:
        out = np.empty(s.shape[0])
        for i, row in enumerate(s):
            out[i] = bleu._compute_score_from_stats([round(v) for v in row]).score / 100.0
        return out

    return SumKernel(stats, fin)


def _rouge_kernel(kind: str, d: EvalData) -> Kernel:
    try:
        from rouge_score import rouge_scorer
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise LoopMLError("ROUGE needs the `rouge-score` package (pip install rouge-score)") from exc
    scorer = rouge_scorer.RougeScorer([kind], use_stemmer=True)
    f = np.array([scorer.score(ref, hyp)[kind].fmeasure for ref, hyp in zip(d.y, d.score)], dtype=np.float64)
    return SumKernel(np.column_stack([np.ones_like(f), f]), lambda s: safe_div(s[:, 1], s[:, 0]))


def kernel(metric: str, d: EvalData) -> Kernel:
    """The kernel of a text metric (``bleu``, ``rouge1``, ``rouge2``, ``rougeL``)."""
    if metric == "bleu":
        return _bleu_kernel(d)
    return _rouge_kernel(metric, d)
