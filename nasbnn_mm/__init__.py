"""NAS-BNN for OpenMMLab (mmpretrain + MMDetection).

Importing the package creates the ``nasbnn`` registries (mmengine only; no torch): then any
config can name our components as ``type='nasbnn.X'`` and mmengine imports the module that
defines X on first use (the registries' ``locations``). Configs import explicitly what they use,
as OpenMMLab projects do: ``custom_imports=dict(imports=['nasbnn_mm.engine'])`` for
classification, ``['nasbnn_mm.engine', 'nasbnn_mm.det']`` for detection (``['nasbnn_mm']`` also
works). ``import nasbnn_mm.space`` (pure Python) loads neither torch nor mmdet.

Layers (imports point one way): space <- ops <- models <- engine, det <- apis <- tools.
"""
__version__ = '0.2.0'

from . import registry  # noqa: F401,E402
