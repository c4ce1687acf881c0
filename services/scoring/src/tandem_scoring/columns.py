"""The common case in one numpy pass: rows whose numeric features are all plain finite numbers.

Checking each value of each task through the full rules (missing, wrong type, not finite, out
of range) costs more than the model. Almost every row is clean, so the scorer and the drift
monitor take the clean rows as one matrix and send only the others down the per-value path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from tandem_shared.events import FeatureValue

_PLAIN = frozenset({float, int})


@dataclass(frozen=True)
class PlainNumbers:
    """What ``plain_numbers`` read from a batch's rows, kept for the next reader of the same
    rows (the drift monitor after the scorer), so the batch is read once."""

    names: Sequence[str]
    matrix: NDArray[np.float64]
    clean: NDArray[np.bool_]

    def covers(self, names: Sequence[str], rows: int) -> bool:
        """Whether this holds ``names`` for a batch of ``rows`` rows. A row clean in these
        names is clean in any of them; a row that is not goes down the per-value path."""
        return len(self.matrix) == rows and set(names) <= set(self.names)


def plain_numbers(names: Sequence[str], rows: Sequence[Mapping[str, FeatureValue]]) -> PlainNumbers:
    """A (rows x names) float64 matrix and the mask of the rows it holds: those where every
    named feature is present, an int or a float (not a bool, not a string) and finite. The
    other rows are zeros in the matrix and False in the mask."""
    matrix = np.zeros((len(rows), len(names)), dtype=np.float64)
    clean = np.zeros(len(rows), dtype=np.bool_)
    picked: list[list[FeatureValue]] = []
    where: list[int] = []
    for i, row in enumerate(rows):
        try:
            values = [row[name] for name in names]
        except KeyError:
            continue
        if _PLAIN.issuperset(map(type, values)):  # exact types: a bool is not a number here
            picked.append(values)
            where.append(i)
    if not picked:
        return PlainNumbers(names, matrix, clean)
    try:
        block = np.array(picked, dtype=np.float64)
    except OverflowError:  # an int beyond float64: let the per-value path flag it
        return PlainNumbers(names, matrix, clean)
    finite = np.isfinite(block).all(axis=1)
    index = np.asarray(where, dtype=np.intp)[finite]
    matrix[index] = block[finite]
    clean[index] = True
    return PlainNumbers(names, matrix, clean)
