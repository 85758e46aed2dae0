import os
import time

import pytest

from nasbnn_mm.utils.native_build import clear_stale_lock


def test_stale_build_lock_is_removed_fresh_one_kept(tmp_path):
    lock = tmp_path / 'lock'
    lock.write_text('')
    assert not clear_stale_lock(str(tmp_path), max_age_s=600)  # a build in progress: keep waiting
    assert lock.exists()
    old = time.time() - 3600
    os.utime(lock, (old, old))
    with pytest.warns(UserWarning, match=r'removed a stale build lock .*lock \(36\d\d s old'):
        assert clear_stale_lock(str(tmp_path), max_age_s=600)
    assert not lock.exists()
    assert not clear_stale_lock(str(tmp_path))  # nothing there: nothing to do
