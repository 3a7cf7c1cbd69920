"""The rule for tests that need a tool from outside Python: skip here, fail in CI.

A developer without Chromium or Dovecot still runs the rest of the suite (the
skip names the package to install); CI, where the CI variable is set, installs
every package in .ci/run, so a missing one there is a failure, never a skip.
"""

from __future__ import annotations

import os

import pytest


def require(found: bool, what: str, package: str) -> None:
    """Skip a test whose tool is missing, naming the package; in CI, fail instead."""
    if found:
        return
    reason = f"{what} is missing: install the {package} package"
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must run these tests, not skip them)")
    pytest.skip(reason)
