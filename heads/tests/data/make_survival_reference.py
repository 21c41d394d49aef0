"""Reference values for the survival metrics and losses of dinoadapt-heads.

Run from the repository root with numpy, pandas, torch, scipy, lifelines and scikit-survival
installed:

    python heads/tests/data/make_survival_reference.py

It writes heads/tests/data/survival_reference.json, which the unit tests of
heads/src/survival/ compare against. Inputs are fixed and seeded; they include tied times
(events with events, events with censorings), tied risks and censoring.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from lifelines import KaplanMeierFitter
from lifelines.statistics import logrank_test, multivariate_logrank_test
from lifelines.utils import concordance_index as lifelines_cindex
from scipy.stats import chi2
from sksurv.metrics import concordance_index_censored

rng = np.random.default_rng(20240607)
out = {}


def cohort(n, ties):
    time = rng.exponential(10.0, n)
    if ties:
        time = np.ceil(time)  # integer times: many ties
    event = rng.random(n) < 0.7
    return time.astype(float), event


# --- Harrell's C-index -------------------------------------------------------------------
cases = []
for name, n, ties, risk_round in [
    ("continuous", 50, False, None),
    ("tied_times", 60, True, None),
    ("tied_times_and_risks", 60, True, 1),
]:
    time, event = cohort(n, ties)
    risk = rng.normal(size=n) - 0.05 * time  # some signal
    if risk_round is not None:
        risk = np.round(risk, risk_round)
    sk = concordance_index_censored(event, time, risk)
    # lifelines takes predicted survival times: higher = longer survival, so negate the risk.
    ll = lifelines_cindex(time, -risk, event)
    cases.append(
        {
            "name": name,
            "time": time.tolist(),
            "event": event.astype(int).tolist(),
            "risk": risk.tolist(),
            "sksurv": float(sk[0]),
            "concordant": int(sk[1]),
            "discordant": int(sk[2]),
            "tied_risk": int(sk[3]),
            "tied_time": int(sk[4]),
            "lifelines": float(ll),
        }
    )
out["concordance"] = cases

# --- Kaplan–Meier ------------------------------------------------------------------------
km_cases = []
for name, n, ties in [("continuous", 40, False), ("tied", 80, True)]:
    time, event = cohort(n, ties)
    kmf = KaplanMeierFitter().fit(time, event)
    sf = kmf.survival_function_
    km_cases.append(
        {
            "name": name,
            "time": time.tolist(),
            "event": event.astype(int).tolist(),
            "timeline": sf.index.to_numpy().astype(float).tolist(),
            "survival": sf.iloc[:, 0].to_numpy().astype(float).tolist(),
            "median": float(kmf.median_survival_time_),
        }
    )
out["kaplan_meier"] = km_cases

# --- log-rank ------------------------------------------------------------------------------
lr_cases = []
for name, groups, ties in [("two_groups", 2, True), ("three_groups", 3, True), ("two_continuous", 2, False)]:
    n = 90
    time, event = cohort(n, ties)
    group = rng.integers(0, groups, n)
    time = time * (1.0 + 0.4 * group)  # groups differ
    if ties:
        time = np.ceil(time)
    if groups == 2:
        a, b = group == 0, group == 1
        r = logrank_test(time[a], time[b], event_observed_A=event[a], event_observed_B=event[b])
    else:
        r = multivariate_logrank_test(time, group, event)
    lr_cases.append(
        {
            "name": name,
            "time": time.tolist(),
            "event": event.astype(int).tolist(),
            "group": group.tolist(),
            "statistic": float(r.test_statistic),
            "p_value": float(r.p_value),
            "dof": int(r.degrees_of_freedom),
        }
    )
out["logrank"] = lr_cases

# --- chi-square survival function ---------------------------------------------------------
out["chi2_sf"] = [
    {"x": x, "dof": k, "sf": float(chi2.sf(x, k))}
    for x, k in [(0.0, 1), (1e-6, 1), (0.5, 1), (3.84, 1), (10.0, 1), (40.0, 1), (2.0, 2),
                 (7.5, 3), (0.3, 4), (25.0, 5), (100.0, 10), (5.0, 12)]
]

# --- time bins (MCAT's `pd.qcut` of uncensored times, outer edges at min/max of all) ---------
bins_cases = []
for name, n, ties, n_bins in [("continuous", 70, False, 4), ("tied", 90, True, 4), ("eight", 120, False, 8)]:
    time, event = cohort(n, ties)
    eps = 1e-6
    _, q_bins = pd.qcut(time[event], q=n_bins, retbins=True, labels=False)
    q_bins[-1] = time.max() + eps
    q_bins[0] = time.min() - eps
    labels, edges = pd.cut(time, bins=q_bins, retbins=True, labels=False, right=False, include_lowest=True)
    bins_cases.append(
        {
            "name": name,
            "n_bins": n_bins,
            "time": time.tolist(),
            "event": event.astype(int).tolist(),
            "edges": np.asarray(edges, dtype=float).tolist(),
            "labels": np.asarray(labels, dtype=int).tolist(),
        }
    )
out["bins"] = bins_cases


# --- losses ----------------------------------------------------------------------------------
def f32(a):
    """Values that f32 holds exactly, so the Rust inputs are the same numbers."""
    return np.asarray(a, dtype=np.float32).astype(np.float64)


def cox_breslow(risk, time, event):
    """Negative Cox partial log-likelihood, Breslow ties, divided by the number of events:
    -(1/E) sum_{i: event} [r_i - log sum_{j: T_j >= T_i} exp(r_j)]."""
    risk = torch.tensor(risk, dtype=torch.float64)
    t = torch.tensor(time)
    e = torch.tensor(event, dtype=torch.float64)
    at_risk = (t[None, :] >= t[:, None]).double()  # row i: the risk set of i
    lse = torch.logsumexp(risk[None, :] + torch.log(at_risk), dim=1)
    return float(-((risk - lse) * e).sum() / e.sum())


def nll_loss(hazards, S, Y, c, alpha=0.4, eps=1e-7):
    """MCAT / PORPOISE `nll_loss` (utils/utils.py), verbatim."""
    batch_size = len(Y)
    Y = Y.view(batch_size, 1)  # ground truth bin, 1,2,...,k
    c = c.view(batch_size, 1).float()  # censorship status, 0 or 1
    if S is None:
        S = torch.cumprod(1 - hazards, dim=1)  # surival is cumulative product of 1 - hazards
    S_padded = torch.cat([torch.ones_like(c), S], 1)
    uncensored_loss = -(1 - c) * (
        torch.log(torch.gather(S_padded, 1, Y).clamp(min=eps))
        + torch.log(torch.gather(hazards, 1, Y).clamp(min=eps))
    )
    censored_loss = -c * torch.log(torch.gather(S_padded, 1, Y + 1).clamp(min=eps))
    neg_l = censored_loss + uncensored_loss
    loss = (1 - alpha) * neg_l + alpha * uncensored_loss
    loss = loss.mean()
    return loss


loss_cases = []
for name, n, ties in [("continuous", 24, False), ("tied", 32, True)]:
    time, event = cohort(n, ties)
    risk = f32(rng.normal(size=n))
    logits = f32(rng.normal(size=(n, 4)) * 2.0)
    logits[0, :] = [9.0, 9.0, 9.0, 9.0]  # saturated hazards: the eps clamp matters
    y = rng.integers(0, 4, n)
    case = {
        "name": name,
        "time": time.tolist(),
        "event": event.astype(int).tolist(),
        "risk": risk.tolist(),
        "cox": cox_breslow(risk, time, event),
        "logits": logits.tolist(),
        "bin": y.tolist(),
        "nll": {},
    }
    h = torch.sigmoid(torch.tensor(logits, dtype=torch.float64))
    c = torch.tensor(1 - event.astype(int), dtype=torch.float64)
    for alpha in [0.0, 0.15, 0.4]:
        # MCAT's `.float()` on c would make the loss float32; keep float64 for the reference.
        loss = nll_loss(h, None, torch.tensor(y), c.double(), alpha=alpha)
        case["nll"][str(alpha)] = float(loss)
    S = torch.cumprod(1 - h, dim=1)
    case["risk_from_logits"] = (-S.sum(dim=1)).tolist()
    loss_cases.append(case)
out["losses"] = loss_cases

path = Path(__file__).with_name("survival_reference.json")
path.write_text(json.dumps(out, indent=1) + "\n")
print(f"wrote {path}")
