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


@pytest.fixture(scope='session', autouse=True)
def _heldout_split():
    """The CPU configs train on the CIFAR-10 training set minus the search's held-out split: write
    the two annotation files once (deterministic; what the demo's first stage does)."""
    archive = os.path.join(os.environ.get('NASBNN_DATA', os.path.join('..', 'shared', 'data')), 'cifar10_jpg.tar.gz')
    if os.path.isfile(archive):
        from nasbnn_mm.datasets.archive_folder import extract_archive
        from nasbnn_mm.datasets.heldout_split import write_heldout_split
        root = extract_archive(archive)
        if not all(os.path.isfile(os.path.join(root, 'meta', f)) for f in ('heldout.txt', 'train_minus_heldout.txt')):
            write_heldout_split(root, per_class=50, seed=0)
    yield


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
