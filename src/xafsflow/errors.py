"""Exception types shared by every xafsflow step.

Any problem with a user's input (a malformed file, a bad scan sheet, a
spectrum a step cannot analyse) is an :class:`InputError`. The CLI prints it
as one line without a traceback and exits with status 2.
"""

from __future__ import annotations

from pathlib import Path


class InputError(Exception):
    """A user input that xafsflow cannot use, with where and why.

    Parameters
    ----------
    reason : str
        What is wrong, and if possible what to do about it.
    path : str or Path, optional
        The offending file.
    line : int, optional
        1-based line number in ``path``.
    """

    def __init__(self, reason: str, path: str | Path | None = None, line: int | None = None):
        self.reason = reason
        self.path = None if path is None else str(path)
        self.line = line
        super().__init__(self._format())

    def _format(self) -> str:
        where = ""
        if self.path is not None:
            where = self.path if self.line is None else f"{self.path}, line {self.line}"
            where += ": "
        return f"{where}{self.reason}"


class FileFormatError(InputError):
    """A raw data file that does not follow its format (XDI, columns, TIFF, HDF5)."""


class ScanSheetError(InputError):
    """A scan sheet (TSV) row or field that is missing, duplicated or invalid."""


class ConfigError(InputError):
    """A campaign configuration that fails validation."""


class AnalysisInputError(InputError):
    """Data that read fine but that a step cannot analyse (e.g. not an absorption scan)."""
