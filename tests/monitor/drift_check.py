"""Recomputes Sluice's drift scores from the raw samples with numpy and scipy.

Reads the JSON the `monitor` test writes (the samples, the reference's bin edges and frequent
values, Sluice's scores) and prints a JSON object of the independent scores. Binning follows
the reference's rule: (-inf, e0), [e0, e1), ... [e(n-2), e(n-1)], (e(n-1), inf).
"""
import json
import sys

import numpy as np
from scipy import stats
from scipy.spatial import distance

EPSILON = 1e-4


def bins(edges, values):
    edges = np.asarray(edges)
    values = np.asarray(values)
    n = len(edges)
    at = np.searchsorted(edges, values, side="right")
    inside = (values >= edges[0]) & (values <= edges[-1])
    at = np.where(inside, np.minimum(at, n - 1), at)
    at = np.where(values > edges[-1], n, at)
    return np.bincount(at, minlength=n + 1)


def shares(counts):
    counts = np.asarray(counts, dtype=float)
    return counts / counts.sum()


def scores(p, q):
    pe, qe = np.maximum(p, EPSILON), np.maximum(q, EPSILON)
    return {
        "psi": float(np.sum((qe - pe) * np.log(qe / pe))),
        "jensen_shannon": float(distance.jensenshannon(p, q)),
        "hellinger": float(np.sqrt(0.5 * np.sum((np.sqrt(p) - np.sqrt(q)) ** 2))),
        "tvd": float(0.5 * np.sum(np.abs(p - q))),
    }


def main():
    case = json.load(open(sys.argv[1]))
    reference, live = np.asarray(case["reference"]), np.asarray(case["live"])
    numeric = scores(shares(bins(case["edges"], reference)), shares(bins(case["edges"], live)))
    numeric["ks"] = float(stats.ks_2samp(reference, live).statistic)

    values = case["values"]
    def mix(sample):
        counts = [sum(1 for v in sample if v == value) for value in values]
        counts.append(sum(1 for v in sample if v not in values))
        return np.asarray(counts)
    expected, observed = shares(mix(case["reference_categories"])), mix(case["live_categories"])
    categorical = scores(expected, shares(observed))
    f_exp = np.maximum(expected, EPSILON) * observed.sum()
    # Pearson's statistic (an empty expected bin counted as EPSILON, as Sluice does), its p-value
    # from scipy's chi-square distribution.
    statistic = float(np.sum((observed - f_exp) ** 2 / f_exp))
    p_value = float(stats.chi2.sf(statistic, len(observed) - 1))
    categorical["chi_square_p"] = p_value
    print(json.dumps({"numeric": numeric, "categorical": categorical}))


main()
