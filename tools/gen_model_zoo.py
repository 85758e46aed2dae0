#!/usr/bin/env python
"""The model zoo (logic: nasbnn_mm.apis.model_zoo).

    python tools/gen_model_zoo.py --write-metafile            # regenerate metafile.yml from the configs and counters
    python tools/gen_model_zoo.py                             # print the model-zoo table (markdown) of metafile.yml
    python tools/gen_model_zoo.py --update-readme README.md   # replace the table between the model-zoo markers
    python tools/gen_model_zoo.py --check README.md           # CI: exit 1 if that region is out of date
    python tools/gen_model_zoo.py --check-metafile            # CI: exit 1 if metafile.yml is not what the code gives

The README region is the text between ``<!-- model-zoo:start -->`` and ``<!-- model-zoo:end -->``.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nasbnn_mm.apis import model_zoo as mz


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--metafile', default=os.path.join(mz.REPO_ROOT, 'metafile.yml'))
    p.add_argument('--write-metafile', action='store_true', help='regenerate the metafile from the code')
    p.add_argument('--check-metafile', action='store_true', help='exit 1 if the metafile is out of date')
    g = p.add_mutually_exclusive_group()
    g.add_argument('--update-readme', metavar='FILE', help="replace FILE's model-zoo region with the table")
    g.add_argument('--check', metavar='FILE', help="exit 1 if FILE's model-zoo region is out of date")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if args.write_metafile:
            print(f'wrote {mz.write_metafile(args.metafile)}')
        if args.check_metafile and mz.metafile_stale(args.metafile):
            print(
                f'{args.metafile}: out of date with the code (python tools/gen_model_zoo.py --write-metafile)',
                file=sys.stderr)
            return 1
        meta = mz.load_metafile(args.metafile)
        if args.check:
            msg = mz.check_readme(args.check, meta)
            if msg:
                print(msg, file=sys.stderr)
                return 1
            print(f'{args.check}: model-zoo region up to date')
        elif args.update_readme:
            changed = mz.update_readme(args.update_readme, meta)
            print(f'{args.update_readme}: model-zoo region {"updated" if changed else "already up to date"}')
        elif not (args.write_metafile or args.check_metafile):
            print(mz.render_table(meta))
    except mz.ModelZooError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
