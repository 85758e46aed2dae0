"""Held-out split of a training set for the architecture search.

NAS-BNN scores search candidates on a few images per class (50 in the paper) taken out of
the training set; BN recalibration uses the rest. :func:`write_heldout_split` writes that
split as two mmpretrain annotation files without moving or copying any image:

    <out_dir>/train_minus_heldout.txt   # the training set minus the held-out images
    <out_dir>/heldout.txt               # ``per_class`` images of every class

Each line is ``<path relative to the split folder> <label>`` (e.g. ``n01440764/x.JPEG 0``).
Classes, labels and files are exactly those that mmpretrain's ``CustomDataset`` finds in
``<root>/<split>`` (its own ``find_folders`` / ``get_samples`` are used: every sub-folder is a
class, labelled by its index in sorted order; images are the files with an image extension
anywhere below it, hidden files excluded, in sorted order), so a ``CustomDataset`` reading an
annotation file sees the same labels as one reading the folders.

The choice is deterministic: per class, ``random.Random('nasbnn-heldout/<seed>/<class>')``
samples ``per_class`` indices of the sorted file list, so it does not depend on the file
system's listing order, on the other classes, or on the Python process.

With the default ``out_dir`` (``<root>/meta``) a dataset reads the split as::

    CustomDataset(data_root=root, data_prefix='train', ann_file='meta/heldout.txt')
    ArchiveImageFolder(archive=..., split='train', ann_file='meta/heldout.txt')

(mmengine joins a relative ``ann_file`` to ``data_root``, and the paths inside it to
``data_root/data_prefix``.)
"""
from __future__ import annotations
import os
import random
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from mmpretrain.datasets.custom import find_folders, get_samples

__all__ = [
    'IMG_EXTENSIONS', 'HeldoutSplit', 'HeldoutSplitError', 'list_class_images', 'choose_heldout', 'write_heldout_split',
    'TRAIN_FILE', 'HELDOUT_FILE'
]

# mmpretrain CustomDataset's default extensions (compared lower-case)
IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif')
TRAIN_FILE = 'train_minus_heldout.txt'
HELDOUT_FILE = 'heldout.txt'


class HeldoutSplitError(ValueError):
    """Bad input to the held-out split (one-line message naming the field)."""


@dataclass
class HeldoutSplit:
    """What :func:`write_heldout_split` wrote."""
    split_dir: str
    train_file: str
    heldout_file: str
    classes: Tuple[str, ...]
    num_train: int
    num_heldout: int
    per_class: int
    seed: int


def list_class_images(split_dir: str,
                      extensions: Sequence[str] = IMG_EXTENSIONS) -> Tuple[List[str], Dict[str, List[str]]]:
    """Classes (sorted sub-folders of ``split_dir``) and, per class, its image paths relative
    to ``split_dir`` in sorted order -- as mmpretrain's ``CustomDataset`` lists them."""
    if not os.path.isdir(split_dir):
        raise HeldoutSplitError(f'split folder: {split_dir!r} does not exist or is not a folder')
    exts = tuple(e.lower() for e in extensions)
    try:
        classes, folder_to_idx = find_folders(split_dir)
        hidden = [c for c in classes if c.startswith('.')]
        if hidden:
            # mmpretrain's CustomDataset would read it as a class too: refuse rather than guess
            raise HeldoutSplitError(f'split folder: {split_dir!r} holds hidden folder(s) {hidden[:3]}, which '
                                    'would become classes (allowed: class folders only; move them out)')
        if not classes:
            raise HeldoutSplitError(f'split folder: {split_dir!r} has no class sub-folders '
                                    '(expected <split>/<class>/<image>)')
        samples, _ = get_samples(split_dir, folder_to_idx, is_valid_file=lambda f: f.lower().endswith(exts))
    except (OSError, RecursionError) as e:  # unreadable folders, symlink loops
        raise HeldoutSplitError(f'split folder: {split_dir!r} cannot be listed ({type(e).__name__}: '
                                f'{str(e).splitlines()[0][:160] if str(e) else "a symlink loop?"})') from None
    by_class: Dict[str, List[str]] = {c: [] for c in classes}
    for path, label in samples:
        if '\n' in path or '\r' in path:
            raise HeldoutSplitError(f'image path: {path!r} contains a line break, which annotation files '
                                    'cannot hold')
        by_class[classes[label]].append(path.replace(os.sep, '/'))
    for c in classes:  # get_samples sorts per class already; sorting again makes the order explicit
        by_class[c].sort()
    return classes, by_class


def choose_heldout(files: Sequence[str], per_class: int, seed: int, class_name: str) -> List[int]:
    """Sorted indices into ``files`` (one class's sorted image list) of its held-out images."""
    rng = random.Random(f'nasbnn-heldout/{seed}/{class_name}')
    return sorted(rng.sample(range(len(files)), per_class))


def _write_pair(paths: Sequence[str], texts: Sequence[str]) -> None:
    """Write several files so that either all of them have the new contents or all keep the old:
    temp files first, then renames, restoring the renamed ones if a later rename fails."""
    tmps, done = [], []
    try:
        for path, text in zip(paths, texts):
            tmp = f'{path}.{os.getpid()}.tmp'
            with open(tmp, 'w') as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            tmps.append(tmp)
        backups = {}
        for path in paths:
            if os.path.isfile(path):
                backups[path] = f'{path}.{os.getpid()}.bak'
                os.replace(path, backups[path])
        try:
            for path, tmp in zip(paths, tmps):
                os.replace(tmp, path)
                done.append(path)
        except BaseException:
            for path in done:
                os.remove(path)
            for path, bak in backups.items():
                os.replace(bak, path)
            raise
        for bak in backups.values():
            os.remove(bak)
    finally:
        for tmp in tmps:
            if os.path.exists(tmp):
                os.remove(tmp)


def write_heldout_split(root: str,
                        per_class: int = 50,
                        seed: int = 0,
                        out_dir: Optional[str] = None,
                        split: str = 'train',
                        extensions: Sequence[str] = IMG_EXTENSIONS,
                        overwrite: bool = False) -> HeldoutSplit:
    """Write ``train_minus_heldout.txt`` and ``heldout.txt`` for ``<root>/<split>``.

    Args:
        root: data root holding ``<split>/<class>/<images>`` (ImageNet-style class folders).
        per_class: images held out per class (every class must have at least that many).
        seed: integer seed of the choice; same seed and same files give the same split.
        out_dir: where to write the two files (default ``<root>/meta``); must not lie inside
            the split folder (it would become a class).
        split: sub-folder of ``root`` to split.
        extensions: image extensions (default: those of mmpretrain's ``CustomDataset``).
        overwrite: replace an existing split with different contents (default: refuse; an
            identical one is left as it is).

    Returns:
        A :class:`HeldoutSplit` with the written paths and counts. The two files are written
        together (both new or both old, never one of each); lines follow the dataset's own order
        (class by class, sorted paths).
    """
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise HeldoutSplitError(f'per_class: {per_class!r} not allowed (allowed: an integer >= 1)')
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise HeldoutSplitError(f'seed: {seed!r} not allowed (allowed: an integer)')
    if not os.path.isdir(root):
        raise HeldoutSplitError(f'root: {root!r} does not exist or is not a folder')
    split_dir = os.path.join(root, split)
    if not os.path.isdir(split_dir):
        found = sorted(e for e in os.listdir(root) if os.path.isdir(os.path.join(root, e)))
        raise HeldoutSplitError(f'split: {split!r} not found in {root!r} '
                                f'(allowed: {", ".join(found) if found else "no sub-folders there"})')
    out_dir = os.path.join(root, 'meta') if out_dir is None else out_dir
    real_split, real_out = os.path.realpath(split_dir), os.path.realpath(out_dir)
    if os.path.commonpath([real_split, real_out]) == real_split:
        raise HeldoutSplitError(f'out_dir: {out_dir!r} lies inside the split folder {split_dir!r}, where it '
                                'would be read as a class (allowed: any folder outside it)')

    classes, by_class = list_class_images(split_dir, extensions)
    # every class keeps at least one training image
    short = [(c, len(by_class[c])) for c in classes if len(by_class[c]) <= per_class]
    if short:
        listed = ', '.join(f'{c!r} has {n}' for c, n in short[:5]) + (', ...' if len(short) > 5 else '')
        fewest = min(len(v) for v in by_class.values())
        allowed = f'1..{fewest - 1}' if fewest > 1 else 'none until every class folder holds 2 images or more'
        raise HeldoutSplitError(f'per_class: {per_class} leaves no training image in {len(short)} class(es) of '
                                f'{split_dir!r} ({listed}); allowed: {allowed}')

    train_lines: List[str] = []
    heldout_lines: List[str] = []
    for label, c in enumerate(classes):
        files = by_class[c]
        held = set(choose_heldout(files, per_class, seed, c))
        for i, f in enumerate(files):
            (heldout_lines if i in held else train_lines).append(f'{f} {label}\n')

    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise HeldoutSplitError(f'out_dir: {out_dir!r} is a file (allowed: a folder, created if missing)')
    paths = [os.path.abspath(os.path.join(out_dir, f)) for f in (TRAIN_FILE, HELDOUT_FILE)]
    texts = [''.join(train_lines), ''.join(heldout_lines)]
    existing = [p for p in paths if os.path.exists(p)]
    if existing and not overwrite:
        same = all(os.path.isfile(p) for p in paths) and all(open(p).read() == t for p, t in zip(paths, texts))
        if not same:
            raise HeldoutSplitError(f'out_dir: {out_dir!r} already holds a different split ({", ".join(existing)}); '
                                    'pass overwrite=True (--overwrite) to replace it, or another out_dir')
    else:
        try:
            os.makedirs(out_dir, exist_ok=True)
            _write_pair(paths, texts)
        except OSError as e:
            raise HeldoutSplitError(f'out_dir: cannot write into {out_dir!r} ({type(e).__name__}: {e.strerror or e})') \
                from None
    return HeldoutSplit(split_dir, paths[0], paths[1], tuple(classes), len(train_lines), len(heldout_lines), per_class,
                        seed)
