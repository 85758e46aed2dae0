"""Every config parses, and its model builds."""
import glob

import pytest
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.utils import import_modules_from_strings

import nasbnn_mm  # noqa: F401
from nasbnn_mm.registry import MODELS

CONFIGS = sorted(p for p in glob.glob('configs/**/*.py', recursive=True) if '/_base_/' not in p)


@pytest.mark.parametrize('path', CONFIGS)
def test_config_parses_and_model_builds(path):
    cfg = Config.fromfile(path)
    # OpenMMLab projects import what they register: classification configs the engine (runner, loops,
    # hooks) and datasets, detection configs the engine and nasbnn_mm.det (mmdet's registry)
    imports = cfg.get('custom_imports', {}).get('imports')
    det = 'coco' in path
    assert imports == (['nasbnn_mm.engine', 'nasbnn_mm.det'] if det else ['nasbnn_mm.engine', 'nasbnn_mm.datasets'])
    import_modules_from_strings(imports)
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope', 'mmengine')):
        model = MODELS.build(cfg.model)
    assert sum(p.numel() for p in model.parameters()) > 0
