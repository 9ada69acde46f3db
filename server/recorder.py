"""The end of a round on disk: metrics, student, ledger, checkpoint, progress line.

Each round writes the ledger once, to ``ledger.json`` (atomically), and once more inside
``checkpoint.pt``, the commit point a resume starts from; ``metrics.json`` names the ledger
file instead of embedding it. ``ledger.json`` is written first, before anything derived from
the round's release (metrics, student), so a run killed before its checkpoint landed has
every published release in it; a resume continues with that ledger when it is ahead of the
checkpoint's, and the re-run round is charged again (the ledger only over-counts).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fedkd.config import Config
from fedkd.mechanisms import CentralMechanism
from fedkd.privacy.ledger import PrivacyLedger
from fedkd.rundir import CHECKPOINT, LEDGER, RunDir, RunDirError
from fedkd.student import Student
from fedkd.teacher import TeacherCache

from .record import RoundRecord

logger = logging.getLogger(__name__)


class RunRecorder:
    """Writes each finished round of one run and restores a run from its checkpoint.

    Parameters
    ----------
    cfg : Config
        The run configuration.
    run : RunDir
        The run's output folder.
    student, cache, mechanism
        The server state a checkpoint holds.
    """

    def __init__(
        self,
        cfg: Config,
        run: RunDir,
        student: Student,
        cache: TeacherCache,
        mechanism: CentralMechanism,
    ) -> None:
        self.cfg = cfg
        self.run = run
        self.student = student
        self.cache = cache
        self.mechanism = mechanism
        self.rows: list[dict[str, Any]] = []
        #: The strategy's checkpoint state (its teacher and failure tally), set by ``serve``.
        self.strategy_state: Callable[[], dict[str, Any]] | None = None

    def restore(self) -> dict[str, Any] | None:
        """Load the run's checkpoint into the server state; returns it (None: fresh run)."""
        ckpt = self.run.load_checkpoint()
        if ckpt is not None:
            self.student.load_state_dict(ckpt["student"])
            probs, labelled = ckpt["cache_probs"], ckpt["cache_labelled"]
            self.cache.probs[:], self.cache.labelled[:] = probs, labelled
            self.mechanism.load_state_dict(ckpt["mechanism"])
            self.rows = list(ckpt["rows"])
            logger.info("resuming %s after round %d", self.run.path, int(ckpt["round"]))
        self._keep_published_charges()
        return ckpt

    def _keep_published_charges(self) -> None:
        """Continue with ``ledger.json`` when it is ahead of the checkpoint's ledger.

        A round killed after its ledger was written but before its checkpoint landed may
        have published results of its release; the re-run releases again with fresh noise,
        so both are charged.
        """
        path = self.run.path / LEDGER
        if not path.exists():
            return
        try:
            published = PrivacyLedger.load(path).releases
        except ValueError as err:
            raise RunDirError(f"{err}; cannot resume") from err
        held = self.mechanism.ledger.releases
        if len(published) <= len(held):
            return
        if published[: len(held)] != held:
            raise RunDirError(f"{path} disagrees with {CHECKPOINT}; cannot resume")
        logger.warning(
            "%s holds %d releases the checkpoint does not (a round killed mid-commit): "
            "keeping them charged",
            path,
            len(published) - len(held),
        )
        self.mechanism.ledger.extend(published[len(held) :])

    def __call__(self, record: RoundRecord) -> None:
        """Record one finished round: ledger, metrics, student, then the checkpoint."""
        self.mechanism.ledger.save(self.run.path / LEDGER)  # before anything it paid for
        row = record.metrics()
        self.rows.append(row)
        self.run.write_metrics(self.rows, {"ledger": LEDGER})
        self.run.write_student(self.student.model.state_dict(), self.student.meta)
        self.run.save_checkpoint(
            {
                "round": record.round,
                "student": self.student.state_dict(),
                "cache_probs": self.cache.probs.copy(),
                "cache_labelled": self.cache.labelled.copy(),
                "mechanism": self.mechanism.state_dict(),
                "rows": self.rows,
                **(self.strategy_state() if self.strategy_state else {}),
            }
        )
        self._progress(row)

    def _progress(self, row: dict[str, Any]) -> None:
        logger.info(
            "round %d/%d  student acc %.4f  teacher acc %.4f  up %s B  down %s B  "
            "clients %s  %ss%s",
            row["round"],
            self.cfg.rounds,
            row["student_accuracy"],
            row["teacher_accuracy"],
            _shown(row["bytes_up"]),
            _shown(row["bytes_down"]),
            _shown(row["clients"]),
            _shown(None if row["seconds"] is None else f"{row['seconds']:.1f}"),
            self.mechanism.describe(row),
        )


def _shown(value: Any) -> str:
    return "(withheld)" if value is None else str(value)
