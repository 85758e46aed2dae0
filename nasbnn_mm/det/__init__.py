"""NAS-BNN for MMDetection: the detection backbone, the binary FPN and RPN, FPN channels and detection OPs.

Detection configs import it: ``custom_imports=dict(imports=['nasbnn_mm.engine', 'nasbnn_mm.det'])``
(it also registers the backbone in mmdet's registry as ``NASBNNDetBackbone``). Weight inheritance
(``nasbnn.InheritFromSupernet``) lives in :mod:`nasbnn_mm.models`.
"""
from ..models.inherit import InheritFromSupernet, inherited_backbone_state
from .backbone import NASBNNDetBackbone, fpn_in_channels, resolve_backbone_arch, sync_neck_in_channels
from .heads import BinaryFPN, BinaryRPNHead
from .visualization import DetSamplesVisualizationHook, visualization_hook_cfg

__all__ = [
    'NASBNNDetBackbone', 'BinaryFPN', 'BinaryRPNHead', 'fpn_in_channels', 'resolve_backbone_arch',
    'sync_neck_in_channels', 'InheritFromSupernet', 'inherited_backbone_state', 'DetSamplesVisualizationHook',
    'visualization_hook_cfg'
]
