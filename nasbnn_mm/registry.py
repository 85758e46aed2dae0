"""Registries of nasbnn_mm: direct children of mmengine's root registries, scope ``nasbnn``.

Because they hang off mmengine's roots (like mmdet's and mmpretrain's), configs of both
frameworks can name our components as ``type='nasbnn.X'`` once this module is imported (importing
``nasbnn_mm`` does it; it needs mmengine only). The modules that define the components are imported
on first use (``locations``); ``nasbnn_mm.det`` (mmdet) is imported by detection configs.
"""
from mmengine.registry import DATA_SAMPLERS as MMENGINE_DATA_SAMPLERS
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import LOOPS as MMENGINE_LOOPS
from mmengine.registry import MODEL_WRAPPERS as MMENGINE_MODEL_WRAPPERS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import RUNNERS as MMENGINE_RUNNERS
from mmengine.registry import WEIGHT_INITIALIZERS as MMENGINE_WEIGHT_INITIALIZERS
from mmengine.registry import Registry

SCOPE = 'nasbnn'

MODELS = Registry('model', parent=MMENGINE_MODELS, scope=SCOPE, locations=['nasbnn_mm.models'])
LOOPS = Registry('loop', parent=MMENGINE_LOOPS, scope=SCOPE, locations=['nasbnn_mm.engine'])
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, scope=SCOPE, locations=['nasbnn_mm.engine'])
RUNNERS = Registry('runner', parent=MMENGINE_RUNNERS, scope=SCOPE, locations=['nasbnn_mm.engine'])
MODEL_WRAPPERS = Registry('model_wrapper', parent=MMENGINE_MODEL_WRAPPERS, scope=SCOPE, locations=['nasbnn_mm.engine'])
WEIGHT_INITIALIZERS = Registry(
    'weight initializer', parent=MMENGINE_WEIGHT_INITIALIZERS, scope=SCOPE, locations=['nasbnn_mm.models'])
DATASETS = Registry('dataset', parent=MMENGINE_DATASETS, scope=SCOPE, locations=['nasbnn_mm.datasets'])
DATA_SAMPLERS = Registry('data sampler', parent=MMENGINE_DATA_SAMPLERS, scope=SCOPE, locations=['nasbnn_mm.engine'])
