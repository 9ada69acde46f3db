"""The global student: distilled on the server from the teacher cache, evaluated on test."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fedkd.aggregate import sharpen
from fedkd.clientdata import splits_for
from fedkd.config import Config
from fedkd.distill import evaluate, make_optimizer, predict_probs, train_distill
from fedkd.early_stop import train_distill_early_stop
from fedkd.features import build_client_model, feature_args, split_features
from fedkd.propagate import knn_graph, propagate
from fedkd.protocol import derive_seed
from fedkd.rundir import STUDENT, RunDir, RunDirError
from fedkd.selection import unambiguous
from fedkd.teacher import TeacherCache

_STUDENT_INIT, _STUDENT_DISTILL = 11, 12


class Student:
    """The student model and its optimizer; its state is part of the server checkpoint."""

    def __init__(
        self,
        cfg: Config,
        input_shape: tuple[int, ...],
        num_classes: int,
        x_public: np.ndarray | None = None,
    ) -> None:
        self.cfg = cfg
        d = cfg.distill
        self.meta = {
            "model": d.student,
            "input_shape": list(input_shape),
            "num_classes": num_classes,
            "public_features": d.public_features,
            "feature_map": d.feature_map,
        }
        self.model = build_client_model(
            d.student,
            input_shape,
            num_classes,
            seed=derive_seed(cfg.seed, _STUDENT_INIT),
            x_public=x_public,
            **feature_args(d, "distill"),
        )
        # With fixed public features, train and evaluate the head on cached features.
        self.features, self.head = split_features(self.model)
        self.optimizer = make_optimizer(self.model, d.lr)
        self._graph = None  # kNN graph of the proxy set, built on first use
        self.best_epoch: int | None = None  # epoch kept by the last early-stopped distill

    def _inputs(self, x: np.ndarray) -> np.ndarray:
        return x if self.features is None else self.features.transform_array(x)

    def distill(self, x_proxy: np.ndarray, cache: TeacherCache, server_round: int) -> float:
        """Distil every labelled proxy row into the student; returns the mean KD loss."""
        rows = cache.rows()
        if len(rows) == 0 or self.cfg.distill.epochs == 0:
            return 0.0
        gen = torch.Generator().manual_seed(
            derive_seed(self.cfg.seed, server_round, _STUDENT_DISTILL)
        )
        targets = cache.probs[rows]  # (R, C)
        d = self.cfg.distill
        x_proxy = self._inputs(x_proxy)  # the graph lives in the student's input space
        if d.propagate_neighbors > 0:
            # Post-processing of released labels with public inputs: no privacy cost. Every
            # proxy row takes part, so unlabelled rows get labels from labelled neighbours.
            if self._graph is None or self._graph.shape[0] != len(x_proxy):
                self._graph = knn_graph(x_proxy, d.propagate_neighbors)
            spread = propagate(
                x_proxy,
                cache.probs * cache.labelled[:, None],
                neighbors=d.propagate_neighbors,
                alpha=d.propagate_alpha,
                graph=self._graph,
            )
            rows = np.flatnonzero(spread.sum(axis=1) > 0)
            targets = spread[rows]
        keep = unambiguous(targets, d.max_entropy)  # Selective-FD; all rows at 1.0
        rows, targets = rows[keep], targets[keep]
        if len(rows) == 0:
            return 0.0
        if d.sharpen != 1.0:
            targets = sharpen(targets, d.sharpen)
        return self._fit(x_proxy[rows], targets, gen)

    def _fit(self, x: np.ndarray, targets: np.ndarray, gen: torch.Generator) -> float:
        """One round's distillation loop: fixed epochs, or stopped early (``early_stop``)."""
        d = self.cfg.distill
        loop = {"batch_size": d.batch_size, "temperature": d.temperature, "augment": d.augment}
        if d.mixup > 0:
            loop["mixup"] = d.mixup
        if d.early_stop <= 0:
            loop["cosine"] = d.lr_schedule == "cosine"
            return train_distill(
                self.head, self.optimizer, x, targets, epochs=d.epochs, generator=gen, **loop
            )
        loss, self.best_epoch = train_distill_early_stop(
            self.head,
            self.optimizer,
            x,
            targets,
            max_epochs=d.epochs,
            patience=d.early_stop,
            holdout_fraction=d.holdout_fraction,
            generator=gen,
            **loop,
        )
        return loss

    def soft_labels(self, x_proxy: np.ndarray) -> np.ndarray:
        """The student's probabilities (P, C) on the whole proxy (``digest_target: student``).

        A function of the released teachers (through distillation) and of public proxy
        inputs only: post-processing, sent down at no privacy cost.
        """
        return predict_probs(self.head, self._inputs(x_proxy))

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        """Test loss and accuracy."""
        return evaluate(self.head, self._inputs(x), y)

    def state_dict(self) -> dict[str, Any]:
        """Model and optimizer state."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])


def load_student(run_dir: str | Path, *, finished: bool = True) -> nn.Module:
    """The trained student of a run, rebuilt from ``student.pt``, in eval mode.

    Parameters
    ----------
    run_dir : str or Path
        A fedkd run directory.
    finished : bool
        Refuse a run that has not finished (no ``DONE``): its student is a mid-run one.

    Raises
    ------
    RunDirError
        If the run has no student or has not finished.
    ModelError
        If the student's model cannot be built in this process (an unknown name, or an
        import path that is not importable here).
    """
    run = RunDir(Path(run_dir))
    cfg = run.read_config()
    path = run.path / STUDENT
    if not path.is_file():
        raise RunDirError(f"{run.path} has no trained student ({STUDENT}): no round finished")
    if finished and not run.is_done():
        raise RunDirError(
            f"{run.path} has not finished; finish it with `fedkd simulate --resume {run.path}`"
        )
    saved = torch.load(path, weights_only=True)
    x_public = splits_for(cfg.data, cfg.seed).x_proxy if saved["public_features"] else None
    model = build_client_model(
        saved["model"],
        tuple(saved["input_shape"]),
        int(saved["num_classes"]),
        seed=0,
        x_public=x_public,
        public_features=saved["public_features"],
        feature_map=saved["feature_map"],
        section="distill",
    )
    model.load_state_dict(saved["state_dict"])
    return model.eval()
