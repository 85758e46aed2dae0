"""1-bit inference runtime for deployed NAS-BNN subnets (phase 1: the binary convolution kernels).

:class:`BinaryConvKernel` runs one binary conv of :class:`nasbnn_mm.models.packed.NASBNNDeployedSubnet`
exactly (``float32(acc) * alpha``, bitwise equal to the float reference) with a native XNOR-popcount
kernel or an exact PyTorch / oneDNN backend, chosen per layer shape by timing (see
:mod:`nasbnn_mm.deploy.bitconv`).

Imports torch only: usable without mmengine / mmpretrain / mmdet.
"""
from .bitconv import (BACKENDS, ISAS, BinaryConvKernel, autotune_cache_path, autotune_layer, available_backends,
                      cpu_model, dispatch_path, pack_weight_words, popcount_peak, reference_binary_conv, supported_isas,
                      unpack_weight_words)
from .native import bitconv_ops

__all__ = [
    'BACKENDS', 'ISAS', 'BinaryConvKernel', 'reference_binary_conv', 'dispatch_path', 'supported_isas',
    'available_backends', 'pack_weight_words', 'unpack_weight_words', 'autotune_layer', 'autotune_cache_path',
    'cpu_model', 'popcount_peak', 'bitconv_ops'
]
