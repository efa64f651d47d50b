"""Hypothesis reports a failing example through libcst, whose import warns under -W error."""

from __future__ import annotations

import contextlib
import warnings

# Import it once here, warnings silenced, so a failing property reports its example instead
# of crashing pytest's report hook with a DeprecationWarning from a dependency of libcst.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    with contextlib.suppress(ImportError):
        import hypothesis.extra._patching  # noqa: F401
