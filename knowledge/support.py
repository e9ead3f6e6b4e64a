"""One support score, from 0 to 1, from the measured signals of a search (``knowledge.selectors.SearchSupport``).

A logistic model of three signals that read alike in a small and a large knowledge base: the best dense similarity,
the largest share of the query's IDF weight that one returned passage holds (``coverage``), and the best BM25 score
as a share of the most the query could score (``bm25_share``). Neither signal alone separates "nothing relevant"
from a real hit: dense similarity is low for a CSV row that holds the answer (its many fields dilute it), coverage is
low for a paraphrase, and BM25 is high for a near miss that shares the topic's words.

Calibrated on the QA set in ``bench/answers`` (89 questions, 16 that the documents cannot answer; ``make
bench-answers BENCH_ARGS="--retrieval-only --signals FILE"`` writes every question's signals): a logistic regression
with balanced classes (L2, C = 10). In leave-one-out cross-validation on that set the best threshold with at most 5 %
of answerable questions refused abstained on 13 of the 16 unanswerable ones and on none of the 73 answerable; the
default threshold, 0.2 (``CHAT_ABSTAIN_BELOW``), abstains on 13 of 16 and on 2 of 73 with the weights below. The
misses are near misses (a guest Wi-Fi password for an office the documents describe, pets in the office, a limit on
hotel nights in a travel policy that has other limits): what the documents would need is one fact their topic
lacks. A knowledge base whose questions are all close to its documents may raise the threshold; 0 never abstains.
"""

from __future__ import annotations

import math

from knowledge.selectors import SearchSupport

WEIGHT_DENSE = 6.507
WEIGHT_COVERAGE = 6.384
WEIGHT_BM25_SHARE = 3.221
BIAS = -7.067


def support_score(support: SearchSupport) -> float:
    """How likely the searched documents hold the answer (0: nothing was found)."""
    if support.terms == 0 and support.dense <= 0.0:
        return 0.0
    z = (
        BIAS
        + WEIGHT_DENSE * support.dense
        + WEIGHT_COVERAGE * support.coverage
        + WEIGHT_BM25_SHARE * support.bm25_share
    )
    return 1.0 / (1.0 + math.exp(-z))
