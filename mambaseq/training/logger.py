"""Metrics logging: CSV always (long format: step, time, name, value), TensorBoard when it imports."""

from __future__ import annotations

import csv
import logging
import time
from pathlib import Path
from typing import Mapping

from mambaseq.fileio import atomic_path

log = logging.getLogger(__name__)


class MetricsLogger:
    """Append metrics to ``run_dir/metrics.csv``; optionally mirror them to TensorBoard.

    On resume from step s, rows logged after s by the interrupted run are dropped first, so the file
    reads as one uninterrupted run.
    """

    def __init__(self, run_dir: str | Path, tensorboard: bool = False, resume_step: int | None = None,
                 enabled: bool = True):
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.csv"
        self._tb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            with open(self.path, newline="") as f:
                rows = [r for r in csv.reader(f)]
            keep = [rows[0]] + [r for r in rows[1:] if int(r[0]) <= resume_step] if rows else []
            with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as f:
                csv.writer(f).writerows(keep)
        elif resume_step is None and self.path.exists():
            self.path.unlink()
        new = not self.path.exists()
        self._f = open(self.path, "a", newline="")
        self._w = csv.writer(self._f)
        if new:
            self._w.writerow(["step", "time", "name", "value"])
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self._tb = SummaryWriter(str(Path(run_dir) / "tb"))
            except ImportError as e:  # optional: say so once, keep the CSV
                log.warning("TensorBoard logging off (%s); metrics go to %s", e, self.path)

    def log(self, step: int, metrics: Mapping[str, float], prefix: str = "") -> None:
        if not self.enabled:
            return
        now = time.time()
        for k, v in metrics.items():
            self._w.writerow([step, f"{now:.3f}", prefix + k, f"{float(v):.6g}"])
            if self._tb is not None:
                self._tb.add_scalar(prefix + k, float(v), step)
        self._f.flush()

    def close(self) -> None:
        if self.enabled:
            self._f.close()
            if self._tb is not None:
                self._tb.close()


def read_metrics(run_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """metrics.csv -> {name: [(step, value), ...]}."""
    out: dict[str, list[tuple[int, float]]] = {}
    with open(Path(run_dir) / "metrics.csv", newline="") as f:
        for r in csv.DictReader(f):
            out.setdefault(r["name"], []).append((int(r["step"]), float(r["value"])))
    return out
