"""Held-out split tool: deterministic, exact counts, disjoint, labels as mmpretrain assigns them."""
import collections
import importlib.util
import inspect
import os
import random
import tarfile

import pytest
from mmpretrain.datasets import CustomDataset

from nasbnn_mm.datasets import ArchiveImageFolder, extract_archive
from nasbnn_mm.datasets.heldout_split import (HELDOUT_FILE, IMG_EXTENSIONS, TRAIN_FILE, HeldoutSplitError,
                                              write_heldout_split)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CIFAR_ARCHIVE = os.path.join(
    os.environ.get('NASBNN_DATA', os.path.join(ROOT, '..', 'shared', 'data')), 'cifar10_jpg.tar.gz')
# ImageNet-like: wnid folders, .JPEG names; uneven class sizes
CLASS_SIZES = {'n01440764': 12, 'n01443537': 9, 'n01484850': 15, 'n01491361': 10}


def _touch(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, 'wb').close()


@pytest.fixture
def tiny_root(tmp_path):
    """<root>/train/<wnid>/<wnid>_<i>.JPEG created in a shuffled order, plus files the dataset
    ignores (non-image, hidden) and one image in a nested folder (which it reads)."""
    root = tmp_path / 'imagenet'
    files = [f'{c}/{c}_{i:08d}.JPEG' for c, n in CLASS_SIZES.items() for i in range(n)]
    random.Random(7).shuffle(files)
    for f in files:
        _touch(str(root / 'train' / f))
    _touch(str(root / 'train' / 'n01440764' / 'notes.txt'))
    _touch(str(root / 'train' / 'n01443537' / '.hidden.JPEG'))
    _touch(str(root / 'train' / 'n01484850' / 'extra' / 'x.jpeg'))
    return str(root)


def _lines(path):
    with open(path) as f:
        return [ln.rsplit(' ', 1) for ln in f.read().splitlines()]


def _folder_samples(root, split='train'):
    ds = CustomDataset(data_root=root, data_prefix=split, lazy_init=False)
    prefix = os.path.join(root, split) + os.sep
    return [(d['img_path'][len(prefix):], d['gt_label']) for d in ds.load_data_list()], ds.metainfo['classes']


def test_split_is_exact_disjoint_complete_and_labelled_like_custom_dataset(tiny_root):
    res = write_heldout_split(tiny_root, per_class=4, seed=0)
    assert res.heldout_file == os.path.join(tiny_root, 'meta', HELDOUT_FILE)
    assert res.train_file == os.path.join(tiny_root, 'meta', TRAIN_FILE)
    held = [(p, int(lb)) for p, lb in _lines(res.heldout_file)]
    train = [(p, int(lb)) for p, lb in _lines(res.train_file)]
    assert collections.Counter(lb for _, lb in held) == {0: 4, 1: 4, 2: 4, 3: 4}
    assert not set(held) & set(train)
    folder, classes = _folder_samples(tiny_root)
    assert classes == tuple(sorted(CLASS_SIZES))
    assert IMG_EXTENSIONS == inspect.signature(CustomDataset.__init__).parameters['extensions'].default
    assert sorted(held + train) == sorted(folder)  # union = all, labels = CustomDataset's
    assert len(folder) == sum(CLASS_SIZES.values()) + 1  # the nested image counts, notes/hidden do not
    assert (res.num_heldout, res.num_train) == (16, len(folder) - 16)
    # the default layout loads with data_root / data_prefix / relative ann_file
    for ann, expect in (('meta/heldout.txt', held), ('meta/train_minus_heldout.txt', train)):
        ds = CustomDataset(data_root=tiny_root, data_prefix='train', ann_file=ann, lazy_init=False)
        got = [(os.path.relpath(d['img_path'], os.path.join(tiny_root, 'train')), d['gt_label'])
               for d in ds.load_data_list()]
        assert got == expect


def test_deterministic_by_seed_and_independent_of_listing_order(tiny_root, tmp_path, monkeypatch):

    def read(d):
        return {n: open(os.path.join(d, n)).read() for n in (TRAIN_FILE, HELDOUT_FILE)}

    write_heldout_split(tiny_root, 3, seed=0, out_dir=str(tmp_path / 'a'))
    write_heldout_split(tiny_root, 3, seed=1, out_dir=str(tmp_path / 'b'))
    real_scandir = os.scandir

    def reversed_scandir(path='.'):  # the file system lists entries in the opposite order
        with real_scandir(path) as it:
            return iter(sorted(it, key=lambda e: e.name, reverse=True))

    monkeypatch.setattr(os, 'scandir', reversed_scandir)
    write_heldout_split(tiny_root, 3, seed=0, out_dir=str(tmp_path / 'c'))
    monkeypatch.undo()
    a, b, c = read(tmp_path / 'a'), read(tmp_path / 'b'), read(tmp_path / 'c')
    assert a == c
    assert a[HELDOUT_FILE] != b[HELDOUT_FILE] and a[TRAIN_FILE] != b[TRAIN_FILE]


def test_bad_inputs_give_one_line_errors(tiny_root, tmp_path):
    # every class keeps a training image: per_class < the smallest class (9 images)
    with pytest.raises(
            HeldoutSplitError,
            match=r"^per_class: 10 leaves no training image in 2 class.*"
            r"'n01443537' has 9, 'n01491361' has 10\); allowed: 1\.\.8$"):
        write_heldout_split(tiny_root, per_class=10)
    with pytest.raises(HeldoutSplitError, match=r"^per_class: 9 leaves no training image .*allowed: 1\.\.8$"):
        write_heldout_split(tiny_root, per_class=9)
    with pytest.raises(HeldoutSplitError, match=r'^root: .* does not exist'):
        write_heldout_split(str(tmp_path / 'missing'))
    with pytest.raises(HeldoutSplitError, match=r"^split: 'val' not found .*\(allowed: train\)$"):
        write_heldout_split(tiny_root, split='val')
    with pytest.raises(HeldoutSplitError, match=r'^per_class: 0 not allowed'):
        write_heldout_split(tiny_root, per_class=0)
    with pytest.raises(HeldoutSplitError, match=r'^out_dir: .* lies inside the split folder'):
        write_heldout_split(tiny_root, out_dir=os.path.join(tiny_root, 'train', 'meta'))
    assert not os.path.exists(os.path.join(tiny_root, 'meta'))  # nothing written on errors
    with pytest.raises(HeldoutSplitError, match=r'^out_dir: .* is a file'):
        (tmp_path / 'afile').write_text('x')
        write_heldout_split(tiny_root, 3, out_dir=str(tmp_path / 'afile'))


def test_existing_split_is_kept_or_replaced_only_on_request(tiny_root):
    first = write_heldout_split(tiny_root, 3, seed=0)
    before = open(first.heldout_file).read()
    write_heldout_split(tiny_root, 3, seed=0)  # the same split again: fine, unchanged
    with pytest.raises(HeldoutSplitError, match=r'^out_dir: .* already holds a different split .*--overwrite'):
        write_heldout_split(tiny_root, 3, seed=1)
    assert open(first.heldout_file).read() == before
    second = write_heldout_split(tiny_root, 3, seed=1, overwrite=True)
    assert open(second.heldout_file).read() != before
    assert not [f for f in os.listdir(os.path.dirname(first.heldout_file)) if f.endswith(('.tmp', '.bak'))]


def test_hidden_folders_symlink_loops_and_bad_archives_are_one_line_errors(tiny_root, tmp_path):
    os.makedirs(os.path.join(tiny_root, 'train', '.ipynb_checkpoints'))
    with pytest.raises(HeldoutSplitError, match=r"^split folder: .* hidden folder\(s\) \['\.ipynb_checkpoints'\]"):
        write_heldout_split(tiny_root, 3)
    os.rmdir(os.path.join(tiny_root, 'train', '.ipynb_checkpoints'))
    os.symlink(os.path.join(tiny_root, 'train', 'n01440764'), os.path.join(tiny_root, 'train', 'n01440764', 'loop'))
    try:
        write_heldout_split(tiny_root, 3)  # either listed (links not followed) or a one-line error
    except HeldoutSplitError as e:
        assert '\n' not in str(e)
    from nasbnn_mm.datasets import extract_archive
    bad = tmp_path / 'not_a.tar.gz'
    bad.write_bytes(b'this is not a tar archive')
    with pytest.raises(FileNotFoundError, match=r'not a readable tar archive'):
        extract_archive(str(bad), str(tmp_path / 'cache'))


def _tool():
    spec = importlib.util.spec_from_file_location('split_heldout_tool', os.path.join(ROOT, 'tools', 'split_heldout.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tool_on_archive_loads_with_archive_image_folder(tiny_root, tmp_path, capsys):
    archive = str(tmp_path / 'tiny_in.tar.gz')
    with tarfile.open(archive, 'w:gz') as tar:
        tar.add(tiny_root, arcname='tiny_in')
    cache = str(tmp_path / 'cache')
    _tool().main(['--archive', archive, '--cache-dir', cache, '--per-class', '2', '--seed', '3'])
    assert 'held out 2 per class' in capsys.readouterr().out
    root = extract_archive(archive, cache)
    assert os.path.isfile(os.path.join(root, 'meta', HELDOUT_FILE))
    ds = ArchiveImageFolder(archive=archive, split='train', ann_file='meta/heldout.txt', cache_dir=cache)
    assert len(ds) == 2 * len(CLASS_SIZES)
    assert sorted(d['gt_label'] for d in ds.load_data_list()) == [0, 0, 1, 1, 2, 2, 3, 3]
    with pytest.raises(FileNotFoundError, match='tools/split_heldout.py --archive'):
        ArchiveImageFolder(archive=archive, split='train', ann_file='meta/other.txt', cache_dir=cache)
    # CLI errors: one line on stderr, exit status 2
    for argv, msg in ((['--archive', archive, '--cache-dir', cache, '--per-class',
                        '99'], 'per_class: 99'), ([], 'exactly one of'), ([tiny_root, '--archive',
                                                                           archive], 'exactly one of')):
        with pytest.raises(SystemExit) as e:
            _tool().main(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert msg in err[-1]


@pytest.mark.skipif(
    not os.path.isfile(CIFAR_ARCHIVE), reason=f'shared CIFAR-10 archive not found at {CIFAR_ARCHIVE} (set NASBNN_DATA)')
def test_real_cifar10_archive(tmp_path):
    root = extract_archive(CIFAR_ARCHIVE)  # unpacked once into the project cache
    res = write_heldout_split(root, per_class=50, seed=0, out_dir=str(tmp_path))
    assert (res.num_heldout, res.num_train) == (500, 49500)
    held = _lines(res.heldout_file)
    assert collections.Counter(int(lb) for _, lb in held) == {i: 50 for i in range(10)}
    ds = ArchiveImageFolder(
        archive=CIFAR_ARCHIVE,
        split='train',
        ann_file=res.heldout_file,
        pipeline=[dict(type='mmpretrain.LoadImageFromFile'),
                  dict(type='mmpretrain.PackInputs')])
    folder = ArchiveImageFolder(archive=CIFAR_ARCHIVE, split='train', lazy_init=True)
    label_of = {d['img_path']: d['gt_label'] for d in folder.load_data_list()}
    assert len(label_of) == 50000 and folder.metainfo['classes'][0] == 'airplane'
    assert all(label_of[d['img_path']] == d['gt_label'] for d in ds.load_data_list())
    assert held[0][0].startswith('airplane/') and held[0][1] == '0'
    sample = ds[0]
    assert tuple(sample['inputs'].shape) == (3, 32, 32) and sample['data_samples'].gt_label.item() == 0


@pytest.mark.skipif(
    not os.path.isfile(CIFAR_ARCHIVE), reason=f'cifar10_jpg.tar.gz missing at {CIFAR_ARCHIVE} (set NASBNN_DATA)')
def test_cpu_supernet_never_trains_on_the_searchs_heldout_images():
    """As the authors: the supernet's training set is the training set minus the held-out images
    that the search scores candidates on (the session fixture wrote the split into the cache)."""
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    from nasbnn_mm.registry import DATASETS
    supernet = Config.fromfile(os.path.join(ROOT, 'configs/cifar10/nasbnn-supernet_cifar-small_cifar10.py'))
    # the search config's train loop scores candidates on its train_dataloader: the held-out split
    search = Config.fromfile(os.path.join(ROOT, 'configs/cifar10/nasbnn-search_cifar-small_cifar10.py'))
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        train = DATASETS.build(dict(supernet.train_dataloader.dataset, lazy_init=True)).load_data_list()
        held = DATASETS.build(dict(search.train_dataloader.dataset, lazy_init=True)).load_data_list()
    train_paths, held_paths = {d['img_path'] for d in train}, {d['img_path'] for d in held}
    assert (len(train_paths), len(held_paths)) == (49500, 500)
    assert not train_paths & held_paths
