"""Binary-network operators, each in a dynamic (supernet), static (one choice) and deployed
(packed) form: binarizers, LSQ, sliced BN and the weight-shared binary conv."""
from .binarize import RPReLU, RSign, approx_sign, sign_ste
from .dynamic_conv import (BINARY, FULL, TEACHER, WEIGHT_MODES, DeployedBinaryConv2d, SharedBinaryConv2d,
                           binarize_weight, check_mode, normalize_binarize_weight, normalize_weight)
from .lsq import LSQConv2d, lsq_quantize
from .norm import SlicedBatchNorm2d
from .packing import BITS, FP32, INT8, Field, PackedFormatError

__all__ = [
    'RSign', 'RPReLU', 'approx_sign', 'sign_ste', 'SharedBinaryConv2d', 'DeployedBinaryConv2d', 'BINARY', 'TEACHER',
    'FULL', 'WEIGHT_MODES', 'check_mode', 'normalize_weight', 'normalize_binarize_weight', 'binarize_weight',
    'LSQConv2d', 'lsq_quantize', 'SlicedBatchNorm2d', 'Field', 'BITS', 'INT8', 'FP32', 'PackedFormatError'
]
