import os
import sys

import pytest

# tests import helpers from each other (e.g. test_distributed uses test_search's settings)
sys.path.insert(0, os.path.dirname(__file__))

_SCOPES_AT_START = None


def pytest_sessionstart(session):
    global _SCOPES_AT_START
    from mmengine.registry import DefaultScope
    _SCOPES_AT_START = DefaultScope._instance_dict.copy()


@pytest.fixture(autouse=True)
def _isolate_default_scope():
    """A Runner built anywhere (a test, a module fixture) makes its default scope the current one
    for the whole process; every test starts from the scopes the session started with, so that it
    sees only the scope it sets up itself."""
    from mmengine.registry import DefaultScope
    DefaultScope._instance_dict.clear()
    DefaultScope._instance_dict.update(_SCOPES_AT_START or {})
    yield
    DefaultScope._instance_dict.clear()
    DefaultScope._instance_dict.update(_SCOPES_AT_START or {})
