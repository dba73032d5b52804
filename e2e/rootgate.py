"""What a test that needs root does when the process is not root.

The same rule as `hostlink::testing::root_gate` for the Rust tests: not
root, a test fails, so a run that could not test the data plane never
reports it as tested, unless a developer opted out with
`FERROSTACK_SKIP_ROOT=1`; under CI (`CI=true`) or `scripts/test`
(`FERROSTACK_STRICT_TESTS=1`) that opt-out is not honoured.
"""

from __future__ import annotations

import os
from typing import Mapping

import pytest

RUN, SKIP, FAIL = "run", "skip", "fail"


def _truthy(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def root_gate(is_root: bool, env: Mapping[str, str]) -> str:
    if is_root:
        return RUN
    if _truthy(env, "CI") or _truthy(env, "FERROSTACK_STRICT_TESTS"):
        return FAIL
    if _truthy(env, "FERROSTACK_SKIP_ROOT"):
        return SKIP
    return FAIL


def require_root(what: str) -> None:
    """Returns as root; otherwise skips or fails the calling test (or the
    fixture that calls it) as `root_gate` decides."""
    gate = root_gate(os.geteuid() == 0, os.environ)
    if gate == SKIP:
        pytest.skip(f"{what} need root; FERROSTACK_SKIP_ROOT=1 is set")
    if gate == FAIL:
        pytest.fail(
            f"{what} need root (namespaces, bridges, nftables) and this process is not root. "
            "Run as root; a developer may skip them with FERROSTACK_SKIP_ROOT=1, "
            "which CI (CI=true) and scripts/test (FERROSTACK_STRICT_TESTS=1) do not honour.",
            pytrace=False,
        )
