"""What a running pipeline uses to report its stage and progress."""

from __future__ import annotations

from typing import Callable, Optional

from attrs import evolve

from .model import Progress

# At most this often a progress change is stored and published (stage changes always are).
PUBLISH_INTERVAL = 0.5


class ProgressReporter:
    """Holds a running job's progress; forwards changes at most twice a second.

    ``emit(progress, note)`` is called with ``note`` set on a stage change (it
    goes into the job's history) and None for a plain progress update.
    """

    def __init__(self, progress: Progress, seconds: Callable[[], float], emit: Callable[[Progress, Optional[str]], None]):
        self.progress = progress
        self._seconds = seconds
        self._emit = emit
        self._last_emit = float("-inf")

    @property
    def stage(self) -> str:
        return self.progress.stage

    def stage_started(self, stage: str, message: str = "") -> None:
        self.progress = evolve(self.progress, stage=stage, message=message or f"{stage} started")
        self._last_emit = self._seconds()
        self._emit(self.progress, self.progress.message)

    def note(self, message: str) -> None:
        """A sentence for the job's history, at once (a resume, a start over)."""
        self.progress = evolve(self.progress, message=message)
        self._last_emit = self._seconds()
        self._emit(self.progress, message)

    def update(self, **changes) -> None:
        self.progress = evolve(self.progress, **changes)
        now = self._seconds()
        if now - self._last_emit >= PUBLISH_INTERVAL:
            self._last_emit = now
            self._emit(self.progress, None)
