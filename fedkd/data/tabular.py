"""Flat-feature data sets available offline, as ``py:`` loaders (no file is stored).

Name them as a run's data source by import path; :mod:`fedkd.data.pysource` calls them::

    data.source: py:fedkd.data.tabular:breast_cancer
    data.source: py:fedkd.data.tabular:synthetic

fedkd's recipe (``simulations/configs/quickstart.yaml``) was not tuned on either; see
``docs/distillation.md``. Each loader splits off its own stratified test set with a
fixed seed (:data:`SPLIT_SEED`, independent of the run's ``seed``, so every run of every
method is scored on the same rows) and standardises the features with the mean and
standard deviation of the remaining training rows only (the proxy that fedkd later holds
out of them is public, so using it there leaks nothing private).
"""

from __future__ import annotations

import numpy as np

TEST_FRACTION = 0.2
SPLIT_SEED = 20261201  # the date the data sets were named, fixed before any run on them


def _split_and_standardise(x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Stratified test split, then z-scores with the training rows' statistics."""
    from sklearn.model_selection import train_test_split

    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=TEST_FRACTION, stratify=y, random_state=SPLIT_SEED
    )
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std[std == 0] = 1.0
    return {
        "x_train": ((x_train - mean) / std).astype(np.float32),
        "y_train": y_train.astype(np.int64),
        "x_test": ((x_test - mean) / std).astype(np.float32),
        "y_test": y_test.astype(np.int64),
    }


def breast_cancer() -> dict[str, np.ndarray]:
    """Wisconsin Diagnostic Breast Cancer, as bundled with scikit-learn.

    569 rows, 30 real-valued features (mean, standard error and worst value of ten
    measurements of cell nuclei), 2 classes (212 malignant, 357 benign). Street, Wolberg
    and Mangasarian (1993); loaded with :func:`sklearn.datasets.load_breast_cancer`.

    Returns
    -------
    dict of str to numpy.ndarray
        ``x_train`` (455, 30), ``y_train``, ``x_test`` (114, 30), ``y_test``; float32
        z-scored features, int64 labels.
    """
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    return _split_and_standardise(np.asarray(x, np.float64), np.asarray(y))


def synthetic() -> dict[str, np.ndarray]:
    """A generated 4-class problem: :func:`sklearn.datasets.make_classification`, seeded.

    The procedure of Guyon (2003), the design of the NIPS 2003 "Madelon" data set: each of
    4 classes is 2 Gaussian clusters at the vertices of a 6-dimensional hypercube of side
    2 (``class_sep=1.0``), 6 informative features, 4 redundant ones (random linear
    combinations of the informative ones), 10 pure-noise features, 2 % of labels flipped
    at random. 2000 rows, 20 features, ``random_state=15`` (the issue number).

    Returns
    -------
    dict of str to numpy.ndarray
        ``x_train`` (1600, 20), ``y_train``, ``x_test`` (400, 20), ``y_test``; float32
        z-scored features, int64 labels.
    """
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=2000,
        n_features=20,
        n_informative=6,
        n_redundant=4,
        n_classes=4,
        n_clusters_per_class=2,
        class_sep=1.0,
        flip_y=0.02,
        random_state=15,
    )
    return _split_and_standardise(x, y)
