"""Binary-network operators: binarizers, LSQ, sliced BN and the weight-shared binary conv."""
from .binarize import RPReLU, RSign, approx_sign, sign_ste
from .dynamic_conv import (BINARY, TEACHER, WEIGHT_MODES, SharedBinaryConv2d, binarize_weight,
                           normalize_weight)
from .lsq import LSQConv2d, lsq_quantize
from .norm import SlicedBatchNorm2d

__all__ = ['RSign', 'RPReLU', 'approx_sign', 'sign_ste', 'SharedBinaryConv2d', 'BINARY', 'TEACHER',
           'WEIGHT_MODES', 'normalize_weight', 'binarize_weight', 'LSQConv2d', 'lsq_quantize',
           'SlicedBatchNorm2d']
