"""Every config parses, and its model builds."""
import glob

import pytest
from mmengine.config import Config
from mmengine.registry import DefaultScope

import nasbnn_mm  # noqa: F401
from nasbnn_mm.registry import MODELS

CONFIGS = sorted(p for p in glob.glob('configs/**/*.py', recursive=True) if '/_base_/' not in p)


@pytest.mark.parametrize('path', CONFIGS)
def test_config_parses_and_model_builds(path):
    cfg = Config.fromfile(path)
    assert cfg.get('custom_imports', {}).get('imports') == ['nasbnn_mm']
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope', 'mmengine')):
        model = MODELS.build(cfg.model)
    assert sum(p.numel() for p in model.parameters()) > 0
