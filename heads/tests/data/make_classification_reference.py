"""Reference values of the classification metrics (heads/src/metrics.rs) from scikit-learn.

Seeded cases: labels and per-class scores (softmax, rounded so that scores tie), including a
class that is never predicted and a case where one class is absent from the labels. Each case
records scikit-learn's accuracy_score, balanced_accuracy_score, f1_score(average="macro"),
confusion_matrix and roc_auc_score (one-vs-rest, macro; per class over the classes present,
as dinoadapt reports it when a class is missing from the labels).

    pip install scikit-learn numpy
    python make_classification_reference.py > classification_reference.json
"""
import json
import sys

import numpy as np
from sklearn.metrics import (accuracy_score, balanced_accuracy_score, confusion_matrix,
                             f1_score, roc_auc_score)


def case(seed, n, classes, absent=None, never_predicted=None):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    if absent is not None:
        labels[labels == absent] = (absent + 1) % classes
    logits = rng.normal(size=(n, classes)) + 1.5 * np.eye(classes)[labels]
    if never_predicted is not None:
        logits[:, never_predicted] -= 10.0
    scores = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    scores = np.round(scores, 2)  # ties in the rankings
    pred = np.argmax(scores, axis=1)  # first maximum, as dinoadapt
    present = sorted(set(labels.tolist()))
    aucs = [roc_auc_score(labels == c, scores[:, c]) for c in range(classes)
            if 0 < (labels == c).sum() < n]
    out = {
        "classes": classes,
        "labels": labels.tolist(),
        "scores": scores.reshape(-1).tolist(),
        "accuracy": accuracy_score(labels, pred),
        "balanced_accuracy": balanced_accuracy_score(labels, pred),
        "macro_f1": f1_score(labels, pred, average="macro"),
        "confusion": confusion_matrix(labels, pred, labels=list(range(classes))).tolist(),
        "auroc": float(np.mean(aucs)),
    }
    if len(present) == classes and classes > 2:
        # With every class present, the per-class mean is scikit-learn's multi-class OvR AUROC
        # (on the scores normalised to sum to one, as it requires).
        p = scores / scores.sum(axis=1, keepdims=True)
        macro = roc_auc_score(labels, p, multi_class="ovr", average="macro")
        per_class = [roc_auc_score(labels == c, p[:, c]) for c in range(classes)]
        assert abs(macro - np.mean(per_class)) < 1e-12
    return out


cases = [
    case(0, 60, 3),
    case(1, 200, 5),
    case(2, 80, 4, never_predicted=2),
    case(3, 50, 4, absent=3),
    case(4, 30, 2),
]
json.dump({"sklearn": __import__("sklearn").__version__, "cases": cases}, sys.stdout)
