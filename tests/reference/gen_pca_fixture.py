#!/usr/bin/python3
"""gen_pca_fixture.py — the reference of nl_pca2 (analyses/moe_sweep.h) for tests/test_moe_sweep.c.

Writes tests/fixtures/pca/pca.json: cases {X (n, p), scores (n, 2), variance (2)} computed with
numpy: centre the columns, eigh of the covariance Xcᵀ·Xc, the two largest eigenvalues' vectors,
scores = Xc·v, each score column's entry of largest |value| made positive (ties: the lower row),
variance = λ / (n − 1). Cases: more rows than columns (covariance path), fewer (Gram path), and
usage-like rows (each block of E values sums to K). Run: python3 tests/reference/gen_pca_fixture.py
"""
import json
import os

import numpy as np


def pca2(X):
    Xc = X - X.mean(axis=0)
    lam, V = np.linalg.eigh(Xc.T @ Xc)
    order = np.argsort(-lam, kind="stable")[:2]
    S = Xc @ V[:, order]
    for k in range(2):
        big = int(np.argmax(np.abs(S[:, k])))
        if S[big, k] < 0:
            S[:, k] = -S[:, k]
    return S, lam[order] / (X.shape[0] - 1)


def main():
    rng = np.random.default_rng(7)
    cases = []
    # tall: 12 x 5 with a dominant direction
    X = rng.normal(size=(12, 5)) @ np.diag([3.0, 2.0, 1.0, 0.5, 0.2])
    cases.append(X)
    # wide: 5 x 9 (Gram path)
    cases.append(rng.normal(size=(5, 9)))
    # usage-like: 20 documents, 2 layers x 4 experts, K = 2: token fractions
    U = np.zeros((20, 8))
    for d in range(20):
        for l in range(2):
            w = rng.dirichlet(np.ones(4) * (0.5 if d % 2 else 3.0))
            U[d, 4 * l:4 * l + 4] = np.minimum(1.0, 2 * w)
            U[d, 4 * l:4 * l + 4] *= 2.0 / U[d, 4 * l:4 * l + 4].sum()
    cases.append(U)
    out = []
    for X in cases:
        S, var = pca2(X)
        out.append({"n": X.shape[0], "p": X.shape[1], "X": X.ravel().tolist(), "scores": S.ravel().tolist(),
                    "variance": var.tolist()})
    path = os.path.join(os.path.dirname(__file__), "..", "fixtures", "pca", "pca.json")
    with open(path, "w") as f:
        json.dump({"generator": "tests/reference/gen_pca_fixture.py", "cases": out}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
