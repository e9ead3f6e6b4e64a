"""One support score, from 0 to 1, from the measured signals of a search (``knowledge.selectors.SearchSupport``).

A logistic model of three signals: the best dense similarity, the largest share of the query's IDF weight that one
passage holds (``coverage``), and the best BM25 score (as ``log(1 + bm25)``). Calibrated on the QA set in
``bench/answers`` (89 questions, 16 that the documents cannot answer; ``make bench-answers --signals`` writes the
signals): a logistic regression with balanced classes (L2, C = 1). In leave-one-out cross-validation on that set, a
threshold of 0.35 (``CHAT_ABSTAIN_BELOW``) abstained on 14 of the 16 unanswerable questions and on 2 of the 73
answerable ones. Neither signal alone separates them: dense similarity is low for a CSV row that holds the answer
(many fields dilute it), coverage is low for a paraphrase, BM25 is high for a near miss that shares the topic's words.
"""

from __future__ import annotations

import math

from knowledge.selectors import SearchSupport

WEIGHT_DENSE = 1.177
WEIGHT_COVERAGE = 2.085
WEIGHT_BM25 = 2.565
BIAS = -7.198


def support_score(support: SearchSupport) -> float:
    """How likely the searched documents hold the answer (0: nothing relevant was found)."""
    if support.terms == 0 and support.dense <= 0.0:
        return 0.0
    z = (
        BIAS
        + WEIGHT_DENSE * support.dense
        + WEIGHT_COVERAGE * support.coverage
        + WEIGHT_BM25 * math.log1p(max(support.bm25, 0.0))
    )
    return 1.0 / (1.0 + math.exp(-z))
