"""Search space, architecture text form, presets, evolution operators and the OPs counter.

Pure Python: nothing here imports torch.
"""
from .arch import Architecture, ArchitectureError, LayerChoice
from .evolution import crossover, mutate
from .ops_counter import LayerCost, OpsReport, count_ops, profile_arch
from .presets import PRESET_NAMES, PRESET_TEXTS, get_preset, preset_name
from .search_space import TABLE1_SPACE, SearchSpace, StageSpace, StemSpace

__all__ = [
    'Architecture', 'ArchitectureError', 'LayerChoice', 'SearchSpace', 'StageSpace', 'StemSpace',
    'TABLE1_SPACE', 'PRESET_NAMES', 'PRESET_TEXTS', 'get_preset', 'preset_name', 'mutate', 'crossover',
    'count_ops', 'profile_arch', 'OpsReport', 'LayerCost',
]
