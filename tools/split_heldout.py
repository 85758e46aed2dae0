#!/usr/bin/env python
"""Write the search's held-out split (N images per class out of the training set) as two
mmpretrain annotation files, ``train_minus_heldout.txt`` and ``heldout.txt``; no image is
moved or copied. See :mod:`nasbnn_mm.datasets.heldout_split`.

Examples::

    python tools/split_heldout.py data/imagenet                  # -> data/imagenet/meta/*.txt
    python tools/split_heldout.py data/imagenet --per-class 50 --seed 0 --out-dir data/imagenet/meta
    python tools/split_heldout.py --archive ../shared/data/cifar10_jpg.tar.gz
        # unpacks into the cache (as nasbnn.ArchiveImageFolder does) -> <cache>/data/cifar10_jpg/meta/*.txt
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('root', nargs='?', help='data root holding <split>/<class>/<images>')
    p.add_argument('--archive', help='a .tar.gz of such a root instead (unpacked once into the cache)')
    p.add_argument('--cache-dir', help='cache for --archive (default: $NASBNN_CACHE or <checkout>/.cache)')
    p.add_argument('--per-class', type=int, default=50, help='images held out per class (default 50)')
    p.add_argument('--seed', type=int, default=0, help='seed of the choice (default 0)')
    p.add_argument('--out-dir', help='where to write the files (default <root>/meta)')
    p.add_argument('--split', default='train', help='sub-folder to split (default train)')
    p.add_argument('--overwrite', action='store_true', help='replace an existing split with different contents')
    args = p.parse_args(argv)
    if (args.root is None) == (args.archive is None):
        p.error('give exactly one of: a data root folder, --archive <tar.gz>')
    if args.cache_dir and not args.archive:
        p.error('--cache-dir: only allowed with --archive')
    return p, args


def main(argv=None):
    p, args = parse_args(argv)
    from nasbnn_mm.datasets.archive_folder import extract_archive
    from nasbnn_mm.datasets.heldout_split import HeldoutSplitError, write_heldout_split
    try:
        root = extract_archive(args.archive, args.cache_dir) if args.archive else args.root
        res = write_heldout_split(root, args.per_class, args.seed, args.out_dir, args.split, overwrite=args.overwrite)
    except (HeldoutSplitError, OSError) as e:
        p.error(str(e).splitlines()[0] if str(e) else type(e).__name__)
    print(f'{len(res.classes)} classes in {res.split_dir}: held out {res.per_class} per class (seed {res.seed})')
    print(f'  {res.heldout_file}: {res.num_heldout} images')
    print(f'  {res.train_file}: {res.num_train} images')
    rel = os.path.relpath(res.heldout_file, root)
    rel = res.heldout_file if rel.startswith('..') else rel
    print(f"read with: data_root={root!r}, data_prefix={args.split!r}, ann_file={rel!r}")


if __name__ == '__main__':
    main()
