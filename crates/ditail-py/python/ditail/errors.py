"""The exceptions ditail raises. Every one is a :class:`DitailError`; an input that ditail
refuses (a setting out of range, an image of the wrong size, an inversion that does not
fit a target) is also a :class:`ValueError`, so code that already catches ``ValueError``
keeps working."""

from __future__ import annotations

__all__ = [
    "DitailError",
    "InvalidInputError",
    "ModelError",
    "DeviceError",
    "CancelledError",
]


class DitailError(Exception):
    """Something went wrong in ditail; the message names the file, key or value."""


class InvalidInputError(DitailError, ValueError):
    """An input was refused before (or instead of) long work: a setting, an image, a mask,
    a latents file, an inversion that does not fit the target, an embedding of another
    family."""


class ModelError(DitailError):
    """A model could not be loaded: a missing or unreadable file, an architecture that is
    not SD1.x or SDXL, a LoRA whose keys do not match, a hub download that failed."""


class DeviceError(DitailError):
    """The backend or device asked for is not there (not compiled in, no adapter, no such
    device index)."""


class CancelledError(DitailError):
    """A progress callback returned ``False``: the call stopped after the current step."""
