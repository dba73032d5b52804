"""The rule that root-only e2e tests follow when not root (`rootgate`)."""

import pytest

from rootgate import FAIL, RUN, SKIP, root_gate

SKIP_ROOT = {"FERROSTACK_SKIP_ROOT": "1"}


@pytest.mark.parametrize(
    "is_root, env, want",
    [
        (True, {}, RUN),
        (True, {"CI": "true", **SKIP_ROOT}, RUN),
        # Not root and nothing said: fail, never a silent pass.
        (False, {}, FAIL),
        (False, {"FERROSTACK_SKIP_ROOT": "0"}, FAIL),
        (False, {"FERROSTACK_SKIP_ROOT": ""}, FAIL),
        # A developer's explicit opt-out skips.
        (False, SKIP_ROOT, SKIP),
        (False, {"FERROSTACK_SKIP_ROOT": "true"}, SKIP),
        (False, {"CI": "false", **SKIP_ROOT}, SKIP),
        # Under CI or scripts/test the opt-out is not honoured.
        (False, {"CI": "true"}, FAIL),
        (False, {"CI": "true", **SKIP_ROOT}, FAIL),
        (False, {"CI": "1", **SKIP_ROOT}, FAIL),
        (False, {"FERROSTACK_STRICT_TESTS": "1", **SKIP_ROOT}, FAIL),
    ],
)
def test_root_gate(is_root, env, want):
    assert root_gate(is_root, env) == want
