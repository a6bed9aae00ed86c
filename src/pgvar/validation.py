"""One validation idiom for the library, the command line and the explorer.

Every check takes the value and the name the user knows it by (a keyword argument, an option such as
``--N``, a query-string key) and returns the value in its checked type, or raises
:class:`~pgvar.errors.SpecError` with one line, ``NAME: must be ..., got VALUE`` (scikit-learn's
``check_scalar`` is the model). Strings are accepted where a number is asked for, so the explorer's
query string and text boxes go through the same checks as library calls.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from pgvar.errors import SpecError


def _range_text(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f" from {low:g} to {high:g}"
    if low is not None:
        return f" >= {low:g}"
    if high is not None:
        return f" <= {high:g}"
    return ""


def check_int(value: object, name: str, *, low: int | None = None, high: int | None = None) -> int:
    """A whole number in [low, high]: an int, a NumPy integer, an integral float or such a string."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        number = int(value)
    elif isinstance(value, (bool, np.bool_)):
        number = None
    else:
        try:
            as_float = float(value.strip() if isinstance(value, str) else value)  # type: ignore[arg-type]
        except (TypeError, ValueError, OverflowError):
            as_float = math.nan
        number = int(as_float) if math.isfinite(as_float) and as_float.is_integer() else None
    if number is None or (low is not None and number < low) or (high is not None and number > high):
        raise SpecError(f"{name}: must be a whole number{_range_text(low, high)}, got {value!r}")
    return number


def _as_float(value: object) -> float:
    """The value as a float, NaN when it is not a number (bools are not numbers here)."""
    if isinstance(value, (bool, np.bool_)):
        return math.nan
    try:
        return float(value.strip() if isinstance(value, str) else value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return math.nan


def check_number(
    value: object,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
) -> float:
    """A finite number in [low, high] (or (low, high] with ``low_open``), from a number or a string."""
    number = value if type(value) is float else _as_float(value)  # the common case costs one test
    above = low is None or (number > low if low_open else number >= low)
    if not (math.isfinite(number) and above and (high is None or number <= high)):
        bound = _range_text(low, high)
        if low_open and low is not None:
            bound = f" > {low:g}" + (f" and <= {high:g}" if high is not None else "")
        raise SpecError(f"{name}: must be a finite number{bound}, got {value!r}")
    return number


def check_flag(value: object, name: str) -> bool:
    """On or off: a bool, 0/1, or one of the strings 1/0, true/false, on/off, yes/no."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("1", "true", "on", "yes"):
            return True
        if text in ("0", "false", "off", "no"):
            return False
    raise SpecError(f"{name}: must be on or off (1/0, true/false), got {value!r}")


def check_choice(value: object, name: str, choices: Iterable[str]) -> str:
    """One of ``choices`` (exactly as spelled there)."""
    options = list(choices)
    if not isinstance(value, str) or value not in options:
        raise SpecError(f"{name}: unknown {value!r}; use one of {', '.join(options)}")
    return value


def check_seed(value: object, name: str = "seed") -> int:
    """A seed for NumPy's SeedSequence: a whole number >= 0."""
    return check_int(value, name, low=0)


def check_int_list(
    value: str | Sequence[object], name: str, *, low: int | None = 1, high: int | None = None
) -> list[int]:
    """A non-empty list of whole numbers, from a sequence or a comma-separated string ("1,4,16")."""
    items = [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value
    numbers = [check_int(item, name, low=low, high=high) for item in items]
    if not numbers:
        raise SpecError(f"{name}: give at least one whole number, e.g. 1,4,16")
    return numbers
