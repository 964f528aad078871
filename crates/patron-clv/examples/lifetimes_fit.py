"""Fits BG/NBD with Python `lifetimes` on a CSV of frequency,recency,T (one customer a line,
a header line first) and prints one JSON object: the fit's wall time and the parameters.

Run by `bench_vs_lifetimes.rs` (the same data, in the same run); not part of the test suite.
"""

import json
import sys
import time

import numpy as np
from lifetimes import BetaGeoFitter


def main(path):
    data = np.loadtxt(path, delimiter=",", skiprows=1)
    frequency, recency, age = data[:, 0], data[:, 1], data[:, 2]
    fitter = BetaGeoFitter(penalizer_coef=0.0)
    started = time.perf_counter()
    fitter.fit(frequency, recency, age)
    seconds = time.perf_counter() - started
    params = {name: float(value) for name, value in fitter.params_.items()}
    print(json.dumps({"seconds": seconds, "params": params, "customers": int(len(data))}))


if __name__ == "__main__":
    main(sys.argv[1])
