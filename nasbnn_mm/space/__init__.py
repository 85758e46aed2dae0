"""Search space, architecture text form, presets, the shape walk, evolution operators and the
OPs counter.

Pure Python: nothing here imports torch (nor mmdet); ``SearchSpace.build`` reads config files
with mmengine's Config when given a path.
"""
from .arch import Architecture, LayerChoice, get_preset
from .errors import ArchitectureError
from .evolution import crossover, mutate
from .ops_counter import DIVISORS, LayerCost, OpsReport, count_ops, profile_arch
from .presets import PRESET_NAMES, PRESET_TEXTS, preset_name
from .search_space import TABLE1_SPACE, SearchSpace, StageSpace, StemSpace
from .shapes import Geometry, LayerShape, image_size, layer_shapes, stage_output_sizes

__all__ = [
    'Architecture',
    'ArchitectureError',
    'LayerChoice',
    'SearchSpace',
    'StageSpace',
    'StemSpace',
    'TABLE1_SPACE',
    'PRESET_NAMES',
    'PRESET_TEXTS',
    'get_preset',
    'preset_name',
    'mutate',
    'crossover',
    'count_ops',
    'profile_arch',
    'OpsReport',
    'LayerCost',
    'DIVISORS',
    'LayerShape',
    'Geometry',
    'layer_shapes',
    'stage_output_sizes',
    'image_size',
]
