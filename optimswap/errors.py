"""The errors optimswap raises for problems with the user's input or environment (anything else is a bug).

Messages speak in library terms (option names are config field names); the command line maps them to one
line that names the command-line option.
"""

from __future__ import annotations


class OptimswapError(Exception):
    """A problem with the input, the options or the environment, reported in one line."""


class ImageError(OptimswapError, ValueError):
    """A photo that cannot be used: unreadable, too large, or without a usable face."""


class NoFaceError(ImageError):
    """No face was found in a photo."""


class FaceIndexError(ImageError):
    """The requested face does not exist among the faces found (several faces, another index asked for)."""


class BackendUnavailable(OptimswapError, RuntimeError):
    """An optional model or package is missing or cannot be loaded; the message says how to get it."""

    def __init__(self, message: str, option: str | None = None):
        super().__init__(message)
        self.option = option  # the config field that chose this backend, if any


class OptimizationError(OptimswapError, RuntimeError):
    """The optimization kept failing (non-finite or exploding loss) even with smaller steps; nothing is written."""


class OptionError(OptimswapError, ValueError):
    """An option value that is out of range, of the wrong kind or inconsistent with another."""

    def __init__(self, option: str, message: str):
        super().__init__(f"{option}: {message}")
        self.option, self.reason = option, message


__all__ = ["BackendUnavailable", "FaceIndexError", "ImageError", "NoFaceError", "OptimizationError", "OptimswapError",
           "OptionError"]
