"""Saying once that something stopped working, and once that it works again (not every attempt)."""

from __future__ import annotations


class OnceLogged:
    def __init__(self, log, failing: str, recovered: str):
        """``failing``: a log format with ``{error}``; ``recovered``: a plain line."""
        self._log = log
        self._failing_text = failing
        self._recovered_text = recovered
        self.failing = False

    def ok(self, result=None):
        if self.failing:
            self.failing = False
            self._log.info(self._recovered_text)
        return result

    def failed(self, failure) -> None:
        if not self.failing:
            self.failing = True
            self._log.warn(self._failing_text, error=failure.getErrorMessage())
