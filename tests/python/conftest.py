"""Adds the ymesh node's log tail to the report of a failed test that used the node."""

import pytest


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    if rep.failed and rep.when in ("setup", "call"):
        node = getattr(item, "funcargs", {}).get("node")
        if node is not None:
            rep.sections.append(("ymesh log tail", node.logs_tail()))
    return rep
