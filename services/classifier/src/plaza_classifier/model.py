"""The trained service model: a linear model over hashed TF-IDF features, in numpy only.

The artifact (model/service_model.npz) holds, per hashed feature column, one weight per service
code plus one for "actionable", stored as float16; an intercept per output; the idf of each
column; a temperature that turns service scores into calibrated probabilities; and the
thresholds of the combination rule chosen on the validation split (see classify.py and
model/MODEL_CARD.md). scikit-learn is needed only to train it (plaza_classifier.train).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from plaza_classifier import features

ARTIFACT: Final = "service_model.npz"
FORMAT: Final = 1

Matrix = npt.NDArray[np.float32]


def packaged_artifact() -> Path:
    """Where the committed artifact lives inside the installed package."""
    return Path(str(resources.files("plaza_classifier").joinpath("model", ARTIFACT)))


@dataclass(frozen=True, slots=True)
class Prediction:
    probabilities: Mapping[str, float]  # service code -> probability, over the trained codes
    actionable: float  # probability that the post is a request at all


@dataclass(frozen=True)
class ServiceModel:
    classes: tuple[str, ...]
    weights: Matrix  # (BUCKETS, len(classes) + 1): the last column is "actionable"
    intercepts: Matrix  # (len(classes) + 1,)
    idf: Matrix  # (BUCKETS,)
    temperature: float
    settings: Mapping[str, float]  # thresholds of the combination rule
    meta: Mapping[str, object] = field(default_factory=dict)  # data, split and validation figures
    version: str = ""

    def __post_init__(self) -> None:
        outputs = len(self.classes) + 1
        if self.weights.shape != (features.BUCKETS, outputs):
            raise ValueError(
                f"weights have shape {self.weights.shape}, expected ({features.BUCKETS}, {outputs})"
            )
        if self.intercepts.shape != (outputs,) or self.idf.shape != (features.BUCKETS,):
            raise ValueError("intercepts or idf do not match the classes and feature buckets")

    def scores(self, folded: str) -> npt.NDArray[np.float32]:
        """Raw linear scores of one folded text: one per class, then the actionable logit."""
        indices, counts = features.hashed(folded)
        if not len(indices):
            return self.intercepts.copy()
        values = features.tfidf_row(indices, counts, self.idf)
        result: npt.NDArray[np.float32] = values @ self.weights[indices] + self.intercepts
        return result

    def predict(self, folded: str) -> Prediction:
        return self.prediction(self.scores(folded))

    def prediction(self, scores: npt.NDArray[np.float32]) -> Prediction:
        service = scores[:-1] / self.temperature
        exp = np.exp(service - service.max())
        probabilities = exp / exp.sum()
        actionable = 1.0 / (1.0 + float(np.exp(-scores[-1])))
        return Prediction(
            probabilities=dict(zip(self.classes, probabilities.tolist(), strict=True)),
            actionable=actionable,
        )

    def predict_batch(self, folded_texts: Sequence[str]) -> list[Prediction]:
        """predict() of many texts, scored in one matrix product."""
        if not folded_texts:
            return []
        scores = self.scores_batch(folded_texts)
        service = scores[:, :-1] / self.temperature
        exp = np.exp(service - service.max(axis=1, keepdims=True))
        probabilities = (exp / exp.sum(axis=1, keepdims=True)).tolist()
        actionable = (1.0 / (1.0 + np.exp(-scores[:, -1]))).tolist()
        return [
            Prediction(dict(zip(self.classes, row, strict=True)), float(act))
            for row, act in zip(probabilities, actionable, strict=True)
        ]

    def scores_batch(self, folded_texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Raw scores of many texts at once, (len(texts), len(classes) + 1)."""
        indptr, indices, counts = features.hashed_rows(folded_texts)
        values = features.tfidf(indptr, indices, counts, self.idf)
        out = np.tile(self.intercepts, (len(folded_texts), 1))
        filled = np.diff(indptr) > 0
        if filled.any():
            contributions = self.weights[indices]  # a copy: scaled in place
            contributions *= values[:, None]
            out[filled] += np.add.reduceat(contributions, indptr[:-1][filled], axis=0)
        return out

    def save(self, path: Path) -> str:
        """Writes the artifact (float16 weights) and returns its version string."""
        arrays = {
            "format": np.array(FORMAT),
            "classes": np.array(self.classes),
            "weights": self.weights.astype(np.float16),
            "intercepts": self.intercepts.astype(np.float32),
            "idf": self.idf.astype(np.float16),
            "temperature": np.array(self.temperature, dtype=np.float32),
            "settings": np.array(json.dumps(dict(self.settings), sort_keys=True)),
            "meta": np.array(json.dumps(dict(self.meta), sort_keys=True)),
        }
        digest = hashlib.sha256()
        for name in sorted(arrays):
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(arrays[name]).tobytes())
        version = f"tfidf-linear-{digest.hexdigest()[:10]}"
        arrays["version"] = np.array(version)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, allow_pickle=False, **arrays)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(buffer.getvalue())
        return version

    @classmethod
    def load(cls, path: Path | None = None) -> ServiceModel:
        """Reads an artifact written by save(); the packaged one by default."""
        source = path or packaged_artifact()
        try:
            with np.load(source, allow_pickle=False) as data:
                if int(data["format"]) != FORMAT:
                    raise ValueError(
                        f"{source}: artifact format {int(data['format'])}, expected {FORMAT}"
                    )
                return cls(
                    classes=tuple(str(c) for c in data["classes"]),
                    weights=data["weights"].astype(np.float32),
                    intercepts=data["intercepts"].astype(np.float32),
                    idf=data["idf"].astype(np.float32),
                    temperature=float(data["temperature"]),
                    settings=json.loads(str(data["settings"])),
                    meta=json.loads(str(data["meta"])),
                    version=str(data["version"]),
                )
        except FileNotFoundError as e:
            raise FileNotFoundError(
                f"service model artifact not found at {source}: run `make train`"
            ) from e
        except KeyError as e:
            raise ValueError(
                f"{source}: not a service model artifact, {e.args[0]} is missing"
            ) from e
