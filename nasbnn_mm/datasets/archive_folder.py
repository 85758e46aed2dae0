"""ImageNet-style class folders read from a .tar.gz archive unpacked once into a cache."""
from __future__ import annotations
import fcntl
import os
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Optional

from mmpretrain.datasets import CustomDataset

from ..registry import DATASETS

__all__ = ['default_cache_dir', 'extract_archive', 'ArchiveImageFolder']


def default_cache_dir() -> str:
    """``$NASBNN_CACHE`` or the git-ignored ``.cache`` of the project checkout."""
    env = os.environ.get('NASBNN_CACHE')
    if env:
        return env
    return str(Path(__file__).resolve().parents[2] / '.cache')


def extract_archive(archive: str, cache_dir: Optional[str] = None) -> str:
    """Unpack ``archive`` once into ``<cache>/<archive name>/`` (atomic, safe under
    concurrent ranks) and return that folder."""
    if not os.path.isfile(archive):
        raise FileNotFoundError(
            f'data: archive {archive!r} not found; put it there or set NASBNN_DATA to the folder holding it '
            '(default ../shared/data)')
    cache_dir = cache_dir or default_cache_dir()
    name = os.path.basename(archive)
    for ext in ('.tar.gz', '.tgz', '.tar'):
        if name.endswith(ext):
            name = name[:-len(ext)]
    target = os.path.join(cache_dir, 'data', name)
    if os.path.isfile(os.path.join(target, '.complete')):
        return target
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target + '.lock', 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.isfile(os.path.join(target, '.complete')):
            return target
        tmp = tempfile.mkdtemp(prefix='.' + name + '.', dir=os.path.dirname(target))
        try:
            try:
                with tarfile.open(archive) as tar:
                    tar.extractall(tmp, filter='data')
            except (tarfile.TarError, EOFError, OSError) as e:
                raise FileNotFoundError(f'data: {archive!r} is not a readable tar archive ({type(e).__name__}: '
                                        f'{str(e).splitlines()[0][:120] if str(e) else "truncated?"})') from None
            entries = [e for e in os.listdir(tmp) if not e.startswith('.')]
            root = os.path.join(tmp, entries[0]) if len(entries) == 1 and not {'train', 'test', 'val'} & set(entries) \
                else tmp
            open(os.path.join(root, '.complete'), 'w').close()
            if os.path.exists(target):
                shutil.rmtree(target)
            os.rename(root, target)
        finally:
            if os.path.exists(tmp):
                shutil.rmtree(tmp, ignore_errors=True)
    return target


@DATASETS.register_module()
class ArchiveImageFolder(CustomDataset):
    """mmpretrain ``CustomDataset`` over ``<archive>/<split>/<class>/*.jpg``.

    Args:
        archive: path of the .tar.gz (e.g. ``../shared/data/cifar10_jpg.tar.gz``).
        split: sub-folder to read (``train``, ``test``, ...).
        ann_file: optional mmpretrain annotation file (``<rel path> <label>`` lines) relative to
            the unpacked folder, e.g. written by the held-out split tool.
        cache_dir: where to unpack (default: :func:`default_cache_dir`).
    """

    def __init__(self,
                 archive: str,
                 split: str = 'train',
                 ann_file: str = '',
                 cache_dir: Optional[str] = None,
                 **kwargs):
        root = extract_archive(archive, cache_dir)
        if not os.path.isdir(os.path.join(root, split)):
            raise FileNotFoundError(f'data: split {split!r} not found in {root} '
                                    f'(found: {", ".join(sorted(os.listdir(root)))})')
        if ann_file and not os.path.isfile(os.path.join(root, ann_file)):
            raise FileNotFoundError(f'data: ann_file {ann_file!r} not found in {root}; the held-out split files '
                                    f'are written by: python tools/split_heldout.py --archive {archive}')
        metainfo = dict(kwargs.pop('metainfo', None) or {})
        if 'classes' not in metainfo:
            # the class folders (sorted, as CustomDataset labels them): names also for annotation files,
            # which hold only labels -- what inferencers and published checkpoints show
            from mmpretrain.datasets.custom import find_folders
            metainfo['classes'] = tuple(find_folders(os.path.join(root, split))[0])
        super().__init__(data_root=root, data_prefix=split, ann_file=ann_file, metainfo=metainfo, **kwargs)
