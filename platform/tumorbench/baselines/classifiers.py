"""Classical classifiers on handcrafted features, trained and scored on the study's folds.

Every classifier is one scikit-learn :class:`~sklearn.pipeline.Pipeline`:
``HandcraftedFeatures -> StandardScaler -> estimator`` (steps ``features``, ``scaler``,
``clf``). Feature extraction learns nothing from the data, so :func:`fit_predict_fold`
computes each case's features once (:class:`FeatureCache`, shared by every classifier
and fold of a dataset) and tunes only the ``scaler -> clf`` head with an inner,
patient-grouped and stratified cross-validation inside the training fold.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Literal

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from tumorbench.baselines.features import HandcraftedFeatures, as_records, load_feature_inputs
from tumorbench.data.splits import sample_groups as sample_train_cases
from tumorbench.errors import DataError
from tumorbench.evaluation.oof import score_columns

ClassifierName = Literal["logreg", "svm", "random_forest", "gradient_boosting"]
CLASSIFIERS: tuple[str, ...] = ("logreg", "svm", "random_forest", "gradient_boosting")

# Small grids: the folds hold tens to hundreds of cases, and four models x k folds run per dataset.
CLASSIFIER_SEARCH_SPACES: Mapping[str, Mapping[str, list]] = MappingProxyType(
    {
        "logreg": {"clf__C": [0.01, 0.1, 1.0, 10.0]},
        "svm": {"clf__estimator__C": [0.1, 1.0, 10.0, 100.0]},
        "random_forest": {"clf__n_estimators": [100, 300], "clf__max_depth": [None, 8]},
        "gradient_boosting": {"clf__n_estimators": [100, 300], "clf__max_depth": [2, 3]},
    }
)
# Labels that are computed from the masks: giving the extractor those masks would leak the label.
MASK_DERIVED_LABELS = ("has_tumor",)
SPLIT_GROUP = "split_group"  # optional row field: the unit the inner CV keeps whole (default: the patient)


class GroupedCalibratedClassifier(ClassifierMixin, BaseEstimator):
    """Sigmoid (Platt) calibration whose held-out folds keep each patient's cases together.

    ``CalibratedClassifierCV(cv=3)`` splits rows, so a patient's other nodules calibrate the scores of
    its own; ``fit(X, y, groups=...)`` uses ``StratifiedGroupKFold`` instead (rows when groups is None).
    """

    def __init__(self, estimator: Any = None, *, n_splits: int = 3, random_state: int = 0) -> None:
        self.estimator, self.n_splits, self.random_state = estimator, n_splits, random_state

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> GroupedCalibratedClassifier:
        y = np.asarray(y)
        groups = np.arange(len(y)) if groups is None else np.asarray(groups)
        cv = _inner_cv(y, groups, self.n_splits, self.random_state)
        splits = list(cv.split(X, y, groups)) if cv is not None else 2
        self.calibrated_ = CalibratedClassifierCV(
            clone(self.estimator), method="sigmoid", cv=splits, ensemble=False
        ).fit(X, y)
        self.classes_ = self.calibrated_.classes_
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.calibrated_.predict_proba(X)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.calibrated_.predict(X)


def _estimator(name: str, random_state: int) -> Any:
    if name == "logreg":
        return LogisticRegression(max_iter=5000, class_weight="balanced")
    if name == "svm":
        # Platt scaling fitted on held-out predictions: scikit-learn's replacement for SVC(probability=True).
        svc = SVC(kernel="rbf", class_weight="balanced", random_state=random_state)
        return GroupedCalibratedClassifier(svc, random_state=random_state)
    if name == "random_forest":
        return RandomForestClassifier(n_estimators=300, class_weight="balanced", random_state=random_state)
    if name == "gradient_boosting":
        # sqrt(n) features per split: ~20x faster on the ~370 features, and a regularizer.
        return GradientBoostingClassifier(max_features="sqrt", random_state=random_state)
    raise ValueError(f"unknown classifier {name!r}; choose one of {', '.join(CLASSIFIERS)}")


def make_classifier(
    name: ClassifierName, *, features: HandcraftedFeatures | None = None, random_state: int = 0, **params: Any
) -> Pipeline:
    """Build ``HandcraftedFeatures -> StandardScaler -> estimator`` for a named classifier.

    Args:
        name: ``logreg``, ``svm`` (RBF SVC in a sigmoid ``CalibratedClassifierCV``, so it
            has probabilities), ``random_forest`` or ``gradient_boosting``; the first three
            use balanced class weights.
        features: Feature extractor to use (cloned); default ``HandcraftedFeatures()``.
        random_state: Seed of every random estimator.
        **params: Estimator parameters (``C=1.0``; the SVC's for ``svm``) or pipeline
            parameters with a step prefix (``features__hog=False``, ``clf__max_depth=3``).
    """
    extractor = clone(features) if features is not None else HandcraftedFeatures()
    pipe = Pipeline([("features", extractor), ("scaler", StandardScaler()), ("clf", _estimator(name, random_state))])
    if params:
        prefix = "clf__estimator__" if name == "svm" else "clf__"
        pipe.set_params(**{(k if "__" in k else prefix + k): v for k, v in params.items()})
    return pipe


def _featurize(features: HandcraftedFeatures, rows: list[dict], use_masks: bool) -> np.ndarray:
    return features.transform(load_feature_inputs(rows, with_masks=use_masks))


class FeatureCache:
    """Handcrafted feature vectors by case id, computed once and shared by classifiers and folds.

    Case ids are unique within a catalog, so one cache serves one dataset and one feature
    configuration; a case id seen again with other image files raises.

    Args:
        features: The extractor whose parameters fix what is cached; default ``HandcraftedFeatures()``.
        use_masks: Give the extractor the cases' masks (see :func:`load_feature_inputs`); off by default:
            masks are annotations a model has no access to at test time.
        chunk_size: Cases read and featurized together (bounds memory for large images).
        n_jobs: Chunks featurized in parallel (joblib semantics).
    """

    def __init__(
        self,
        features: HandcraftedFeatures | None = None,
        *,
        use_masks: bool = False,
        chunk_size: int = 32,
        n_jobs: int | None = None,
    ) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        self.features = (clone(features) if features is not None else HandcraftedFeatures()).fit()
        self.use_masks = use_masks
        self.chunk_size = chunk_size
        self.n_jobs = n_jobs
        self._vectors: dict[str, np.ndarray] = {}
        self._files: dict[str, tuple] = {}

    @property
    def feature_names(self) -> np.ndarray:
        return self.features.get_feature_names_out()

    def __len__(self) -> int:
        return len(self._vectors)

    def matrix(self, rows: pd.DataFrame | Iterable[Mapping[str, Any]]) -> np.ndarray:
        """Feature matrix of ``rows`` in their order, computing only the cases not seen yet."""
        records = as_records(rows)
        todo: dict[str, dict] = {}
        for row in records:
            files = (tuple(row["image"]), row.get("mask") if self.use_masks else None)
            known = self._files.get(row["case_id"])
            if known is not None and known != files:
                raise DataError(row["case_id"], f"case id cached with other files {known}; use one cache per dataset")
            if known is None:
                todo[row["case_id"]] = row
        pending = list(todo.values())
        chunks = [pending[i : i + self.chunk_size] for i in range(0, len(pending), self.chunk_size)]
        if self.n_jobs in (None, 1) or len(chunks) < 2:
            blocks = [_featurize(self.features, chunk, self.use_masks) for chunk in chunks]
        else:
            blocks = Parallel(n_jobs=self.n_jobs)(
                delayed(_featurize)(self.features, chunk, self.use_masks) for chunk in chunks
            )
        for chunk, block in zip(chunks, blocks):
            self.add(chunk, block)
        if not records:
            return np.empty((0, len(self.feature_names)))
        return np.vstack([self._vectors[row["case_id"]] for row in records])

    def add(self, rows: pd.DataFrame | Iterable[Mapping[str, Any]], block: np.ndarray) -> None:
        """Store feature vectors computed elsewhere (by a cache with this one's extractor), a row each."""
        records = as_records(rows)
        if len(records) != len(block):
            raise ValueError(f"{len(records)} rows but {len(block)} feature vectors")
        for row, vector in zip(records, block):
            self._vectors[row["case_id"]] = np.asarray(vector)
            self._files[row["case_id"]] = (tuple(row["image"]), row.get("mask") if self.use_masks else None)


def encode_labels(rows: Sequence[Mapping[str, Any]], label_column: str, classes: Sequence[Any]) -> np.ndarray:
    """Class indices of rows' labels in ``classes`` order; a label outside ``classes`` raises."""
    index = {c: k for k, c in enumerate(classes)}
    out = np.empty(len(rows), dtype=np.int64)
    for n, row in enumerate(rows):
        value = row.get(label_column)
        key = value.item() if isinstance(value, np.generic) else value
        if key not in index:
            raise DataError(row["case_id"], f"{label_column} {value!r} is not one of the classes {list(classes)}")
        out[n] = index[key]
    return out


def _inner_cv(y: np.ndarray, groups: np.ndarray, n_splits: int, seed: int) -> StratifiedGroupKFold | None:
    """Patient-grouped stratified folds, fewer when a class has fewer patients than folds."""
    patients_per_class = min(len(np.unique(groups[y == k])) for k in np.unique(y))
    n = min(n_splits, patients_per_class)
    return StratifiedGroupKFold(n_splits=n, shuffle=True, random_state=seed) if n >= 2 else None


def _fit_head(
    head: Pipeline,
    X: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    name: str,
    *,
    search: bool,
    inner_folds: int,
    seed: int,
    n_jobs: int | None,
) -> tuple[Pipeline, dict]:
    cv = _inner_cv(y, groups, inner_folds, seed) if search else None
    if search and cv is None:
        warnings.warn(f"{name}: too few patients per class for an inner search; default parameters used", stacklevel=3)
    # The SVM's calibration folds are patient-grouped too (GroupedCalibratedClassifier).
    fit_groups = {"clf__groups": groups} if isinstance(head.named_steps["clf"], GroupedCalibratedClassifier) else {}
    if cv is None:
        return head.fit(X, y, **fit_groups), {}
    scoring = "roc_auc" if len(np.unique(y)) == 2 else "roc_auc_ovr"
    grid = GridSearchCV(
        head,
        dict(CLASSIFIER_SEARCH_SPACES[name]),
        scoring=scoring,
        cv=cv,
        refit=True,
        n_jobs=n_jobs,
        error_score="raise",
    )
    grid.fit(X, y, groups=groups, **fit_groups)
    return grid.best_estimator_, dict(grid.best_params_)


def fit_predict_fold(
    name: ClassifierName,
    train_rows: pd.DataFrame | Iterable[Mapping[str, Any]],
    val_rows: pd.DataFrame | Iterable[Mapping[str, Any]],
    *,
    classes: Sequence[Any],
    label_column: str = "label",
    search: bool = True,
    seed: int = 0,
    cache: FeatureCache | None = None,
    inner_folds: int = 3,
    n_jobs: int | None = None,
    max_train_cases: int | None = None,
    **params: Any,
) -> pd.DataFrame:
    """Train a classifier on one fold's training rows and score its validation rows.

    Args:
        name: Classifier name (see :func:`make_classifier`).
        train_rows: Training catalog rows (e.g. from :func:`~tumorbench.data.splits.fold_frames`).
        val_rows: Validation catalog rows.
        classes: Class values in index order; the positive class of a binary problem is ``classes[1]``.
        label_column: Row field holding the class.
        search: Tune the parameters of :data:`CLASSIFIER_SEARCH_SPACES` by ROC AUC with an
            inner ``StratifiedGroupKFold`` inside the training rows (groups: the rows' ``split_group``
            when given, e.g. patients merged with their near-duplicates, else the patients).
        seed: Seed of the estimator and of the inner folds.
        cache: Features of the dataset, shared across calls; made here when None (then
            masks are used unless ``label_column`` is derived from them).
        inner_folds: Folds of the inner search.
        n_jobs: Parallel fits of the inner search.
        max_train_cases: Fit on about this many training cases (:func:`sample_train_cases`: whole patients,
            classes in proportion; None: all); every validation case is scored.
        **params: Passed to :func:`make_classifier` (``features__*`` keys configure the extractor).

    Returns:
        One row per validation case: ``case_id``, ``patient_id``, ``model``, ``y_true``
        and ``y_pred`` (class indices), ``p_<k>`` per class index and, for two classes,
        ``y_score`` (probability of ``classes[1]``): :func:`~tumorbench.evaluation.oof.score_columns`. ``attrs`` holds
        ``classes``, ``model``, the chosen ``best_params`` and ``train_cases`` (those fitted on, of the fold's).
    """
    pipe = make_classifier(name, random_state=seed, **params)
    extractor = pipe.named_steps["features"]
    if cache is None:
        # Masks are annotations (a reader's outline): a deep classifier never sees them at test time, nor does
        # this baseline (where only positive cases have masks, shape_has_mask would equal the label).
        cache = FeatureCache(extractor, use_masks=False)
    elif cache.features.get_params() != extractor.get_params():
        raise ValueError("the feature cache was built with other HandcraftedFeatures parameters than the pipeline")
    if cache.use_masks and label_column in MASK_DERIVED_LABELS:
        raise ValueError(f"{label_column} is computed from the masks: use a FeatureCache with use_masks=False")
    train, val = as_records(train_rows), as_records(val_rows)
    if len(classes) < 2 or not train or not val:
        raise ValueError(f"need two or more classes and non-empty folds ({len(train)} train, {len(val)} val rows)")
    y_train, y_val = encode_labels(train, label_column, classes), encode_labels(val, label_column, classes)
    absent = [classes[k] for k in range(len(classes)) if k not in set(y_train.tolist())]
    if absent:
        raise ValueError(f"the training rows hold no case of class {absent}")
    # A row's split group (its patient merged with near-duplicate copies, when the study sets it) stays whole in
    # the inner CV and the calibration folds, as it does across the outer folds.
    groups = np.asarray([str(row.get(SPLIT_GROUP) or row["patient_id"]) for row in train])
    picked = sample_train_cases(y_train, groups, max_train_cases, seed)
    train, y_train, groups, fold_cases = [train[i] for i in picked], y_train[picked], groups[picked], len(train)
    model, best = _fit_head(
        Pipeline(pipe.steps[1:]),
        cache.matrix(train),
        y_train,
        groups,
        name,
        search=search,
        inner_folds=inner_folds,
        seed=seed,
        n_jobs=n_jobs,
    )
    proba = model.predict_proba(cache.matrix(val))
    frame = pd.DataFrame(
        {
            "case_id": [r["case_id"] for r in val],
            "patient_id": [r["patient_id"] for r in val],
            "model": name,
            "y_true": y_val,
            "y_pred": proba.argmax(axis=1),
        }
    )
    for column, values in score_columns(proba).items():
        frame[column] = values
    frame.attrs.update(classes=list(classes), model=name, best_params=best, train_cases=[len(train), fold_cases])
    return frame
