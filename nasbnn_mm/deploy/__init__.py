"""1-bit inference runtime for deployed NAS-BNN subnets.

* :class:`BinaryConvKernel` runs one binary conv of :class:`nasbnn_mm.models.packed.NASBNNDeployedSubnet`
  exactly (``float32(acc) * alpha``, bitwise equal to the float reference) with a native XNOR-popcount
  kernel or an exact PyTorch / oneDNN backend, chosen per layer shape by timing (see
  :mod:`nasbnn_mm.deploy.bitconv`);
* :class:`Glue` is the element-wise rest of a deployed layer (folded BN, shortcut, RPReLU) in one native
  pass, fused into the popcount conv (:mod:`nasbnn_mm.deploy.glue`);
* :class:`BinaryRuntime` / :func:`load_runtime` run a whole packed or exported subnet classifier on them,
  with logits bitwise equal to the float deployed model's (:mod:`nasbnn_mm.deploy.runtime`);
  :mod:`nasbnn_mm.deploy.infer` classifies image files (``tools/infer.py``).

Imports torch only (the loaders import the model code, hence mmpretrain, when called): the kernels are
usable without mmengine / mmpretrain / mmdet.
"""
from .bitconv import (BACKENDS, ISAS, BinaryConvKernel, autotune_cache_path, autotune_layer, available_backends,
                      cpu_model, dispatch_path, pack_weight_words, popcount_peak, reference_binary_conv, supported_isas,
                      unpack_weight_words)
from .glue import Glue, bn_mode
from .native import bitconv_ops
from .runtime import (BinaryRuntime, RuntimeBackbone, RuntimeConv, checkpoint_kind, deployed_classifier, load_packed,
                      load_runtime, runtime_detector)

__all__ = [
    'BACKENDS', 'ISAS', 'BinaryConvKernel', 'reference_binary_conv', 'dispatch_path', 'supported_isas',
    'available_backends', 'pack_weight_words', 'unpack_weight_words', 'autotune_layer', 'autotune_cache_path',
    'cpu_model', 'popcount_peak', 'bitconv_ops', 'Glue', 'bn_mode', 'BinaryRuntime', 'RuntimeConv', 'load_runtime',
    'deployed_classifier', 'checkpoint_kind', 'load_packed', 'RuntimeBackbone', 'runtime_detector'
]
