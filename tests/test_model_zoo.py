"""metafile.yml / model-index.yml and the README's model-zoo region (tools/gen_model_zoo.py)."""
import importlib.util
import os

import pytest
import yaml

from nasbnn_mm.apis import model_zoo as mz

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METAFILE = os.path.join(ROOT, 'metafile.yml')
START, END = mz.MARKERS
PAPER = {
    ('nasbnn-b-finetune_8xb64_in1k', 'Top 1 Accuracy'): 68.20,
    ('faster-rcnn_nasbnn-d_binary-fpn_1x_coco', 'box AP'): 31.6
}


def _tool():
    spec = importlib.util.spec_from_file_location('gen_model_zoo_tool', os.path.join(ROOT, 'tools', 'gen_model_zoo.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope='module')
def meta():
    with open(METAFILE, encoding='utf-8') as f:
        return yaml.safe_load(f)


@pytest.fixture(scope='module')
def built():
    """What the code generates now (loads the 18 configs once)."""
    return mz.build_metafile(ROOT)


def test_model_index_imports_metafile():
    with open(os.path.join(ROOT, 'model-index.yml'), encoding='utf-8') as f:
        assert yaml.safe_load(f) == {'Import': ['metafile.yml']}


def test_metafile_parses_and_configs_exist(meta):
    (coll, ) = meta['Collections']
    assert coll['Name'] == 'NAS-BNN'
    assert coll['Paper'] == {
        'Title': 'NAS-BNN: Neural Architecture Search for Binary Neural Networks',
        'URL': 'https://arxiv.org/abs/2408.15484'
    }
    assert coll['Code']['URL'] == 'https://github.com/VDIGPKU/NAS-BNN'
    assert {'Training Techniques', 'Architecture'} <= set(coll['Metadata'])
    configs = [m['Config'] for m in meta['Models']]
    expected = ([f'configs/imagenet/nasbnn-{x}-finetune_8xb64_in1k.py'
                 for x in 'abcdef'] + [f'configs/coco/faster-rcnn_nasbnn-{x}_binary-fpn_1x_coco.py' for x in 'abcdef'] +
                [f'configs/coco/faster-rcnn_nasbnn-{x}_fpn_1x_coco.py' for x in 'abcdef'])
    assert configs == expected
    for m in meta['Models']:
        assert os.path.isfile(os.path.join(ROOT, m['Config'])), m['Config']
        assert m['In Collection'] == 'NAS-BNN' and 'Weights' not in m
        assert m['Name'] == os.path.splitext(os.path.basename(m['Config']))[0]
        task = m['Metadata']['Task']
        assert task == ('Image Classification' if 'imagenet' in m['Config'] else 'Object Detection')
        assert all(r['Task'] == task for r in m['Results'])


def test_metafile_is_what_the_code_gives_now(meta, built):
    """A change of the space, the counters or a config that is not regenerated fails here."""
    with open(METAFILE, encoding='utf-8') as f:
        assert f.read() == mz.dump_metafile(built), 'run: python tools/gen_model_zoo.py --write-metafile'
    assert meta == built


def test_metafile_ops_equal_count_ops(meta):
    """Cross-check with the APIs of tools/count_ops.py (--presets --json; --det-config X --convention paper)."""
    from mmengine.config import Config

    from nasbnn_mm.det.ops_counter import detector_ops
    from nasbnn_mm.space import get_preset, profile_arch
    for m in meta['Models']:
        md = m['Metadata']
        letter = md['Backbone'][-1]
        assert md['Backbone'] == f'NAS-BNN-{letter}' and f'nasbnn-{letter.lower()}' in m['Config']
        if md['Task'] == 'Image Classification':
            rep = profile_arch(get_preset(letter), 224, 1000)
            assert md['OPs (M)'] == round(rep.ops / 1e6, 2)
            assert md['Parameters'] == rep.total_params
            assert (md['Binary Parameters'], md['8-bit Parameters'],
                    md['FP32 Parameters']) == (rep.binary_params, rep.int8_params, rep.fp_params)
        else:
            rep = detector_ops(Config.fromfile(os.path.join(ROOT, m['Config'])).model, convention='paper')
            assert md['OPs (M)'] == round(rep['ops'] / 1e6, 2)
    by_name = {m['Name']: m['Metadata']['OPs (M)'] for m in meta['Models']}
    # the paper's own OPs for its two reported results: "57M OPs" (B) and "370M OPs" (detector D, Table 3)
    assert round(by_name['nasbnn-b-finetune_8xb64_in1k']) == 57
    assert abs(by_name['faster-rcnn_nasbnn-d_binary-fpn_1x_coco'] - 370) / 370 < 0.012


def test_stale_metafile_detected(tmp_path, built, monkeypatch):
    monkeypatch.setattr(mz, 'build_metafile', lambda root=None: built)
    text = mz.dump_metafile(built)
    path = tmp_path / 'metafile.yml'
    path.write_text(text, encoding='utf-8')
    assert not mz.metafile_stale(str(path))
    path.write_text(text.replace('OPs (M): 56.83', 'OPs (M): 56.84'), encoding='utf-8')
    assert mz.metafile_stale(str(path))


def test_paper_values_exactly_b_and_detector_d(meta):
    found = {}
    for m in meta['Models']:
        for r in m['Results']:
            assert r['Source'].startswith('paper (arXiv 2408.15484 abstract)')
            for metric, value in r['Metrics'].items():
                found[(m['Name'], metric)] = value
    assert found == PAPER
    assert {(k, metric): v for k, r in mz.PAPER_RESULTS.items() for metric, v in r['Metrics'].items()} == PAPER


def _run(tool, argv, capsys):
    rc = tool.main(argv + ['--metafile', METAFILE])
    out, err = capsys.readouterr()
    return rc, out, err


def test_readme_region_update_and_check(tmp_path, capsys):
    tool = _tool()
    readme = tmp_path / 'README.md'
    readme.write_text(f'# title\n\nintro\n\n{START}\nold table\n{END}\n\n## next\n', encoding='utf-8')
    rc, out, err = _run(tool, ['--check', str(readme)], capsys)
    assert rc == 1 and err.count('\n') == 1 and 'out of date' in err and str(readme) in err
    rc, out, err = _run(tool, ['--update-readme', str(readme)], capsys)
    assert rc == 0 and 'updated' in out
    text = readme.read_text(encoding='utf-8')
    assert text.startswith('# title\n\nintro\n\n' + START + '\n') and text.endswith(END + '\n\n## next\n')
    assert 'old table' not in text
    assert "| model | task | config | OPs (M) | params | paper's result | our result |" in text
    assert ('| NAS-BNN-B | Image Classification | [nasbnn-b-finetune_8xb64_in1k.py]'
            '(configs/imagenet/nasbnn-b-finetune_8xb64_in1k.py) | 56.83 | 23.98M (22.30M 1-bit) | 68.20 top-1 (paper) '
            '| — |') in text
    assert '| 31.6 box AP (paper) | — |' in text
    assert text.count('(paper)') == 2  # the two reported results, nothing else
    rc, out, err = _run(tool, ['--check', str(readme)], capsys)
    assert rc == 0 and 'up to date' in out and err == ''
    rc, out, err = _run(tool, ['--update-readme', str(readme)], capsys)
    assert rc == 0 and 'already up to date' in out and readme.read_text(encoding='utf-8') == text
    # an edit inside the region is outdated again
    readme.write_text(text.replace('56.83', '56.80'), encoding='utf-8')
    assert _run(tool, ['--check', str(readme)], capsys)[0] == 1
    # default: print the table
    rc, out, err = _run(tool, [], capsys)
    assert rc == 0 and out.strip() == mz.render_table(mz.load_metafile(METAFILE)).strip()


@pytest.mark.parametrize('body,marker', [('no markers here\n', START), (f'{START}\nonly the start\n', END),
                                         (f'{END}\n{START}\n', END)])
def test_missing_markers_one_line_error(tmp_path, capsys, body, marker):
    tool = _tool()
    readme = tmp_path / 'README.md'
    readme.write_text(body, encoding='utf-8')
    for flag in ('--check', '--update-readme'):
        rc, out, err = _run(tool, [flag, str(readme)], capsys)
        assert rc == 2 and err.count('\n') == 1, err
        assert err.startswith('error: ') and str(readme) in err and repr(marker) in err
    assert readme.read_text(encoding='utf-8') == body


def test_missing_files_one_line_error(tmp_path, capsys):
    tool = _tool()
    rc, out, err = _run(tool, ['--check', str(tmp_path / 'nope.md')], capsys)
    assert rc == 2 and err.count('\n') == 1 and 'nope.md' in err
    rc = tool.main(['--metafile', str(tmp_path / 'missing.yml')])
    err = capsys.readouterr().err
    assert rc == 2 and err.count('\n') == 1 and 'missing.yml' in err


def test_missing_config_one_line_error(tmp_path):
    with pytest.raises(mz.ModelZooError, match=r'^configs/imagenet/nasbnn-a-finetune_8xb64_in1k.py: no such config$'):
        mz.build_metafile(str(tmp_path))
