"""Shared test configuration: Hypothesis profiles.

* ``default`` — what CI and the README's test command run: derandomized (the same examples every run, so a
  failure is never a flake of the draw), with at least 200 examples for the main simulated-cluster machine.
* ``thorough`` — on demand, fresh random examples and many more of them:
  ``HYPOTHESIS_PROFILE=thorough python -m pytest tests/test_sim_properties.py``.

Tests that need a different number of examples than a profile's default scale it with :func:`examples`.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

#: ``pytester`` runs a user's test file against the installed plugin (tests/test_testing_kit.py).
pytest_plugins = ["pytester"]

settings.register_profile(
    "default",
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough",
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "default")
settings.load_profile(PROFILE)

#: Multiplier for ``max_examples`` under the thorough profile.
THOROUGH = PROFILE == "thorough"


def examples(default: int, thorough: int) -> int:
    """How many examples to run: ``default`` in CI, ``thorough`` under the thorough profile."""
    return thorough if THOROUGH else default
