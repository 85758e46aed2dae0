"""NAS-BNN for MMDetection: the detection backbone, its FPN channels and weight inheritance."""
from .backbone import NASBNNDetBackbone, fpn_in_channels, resolve_backbone_arch
from .inherit import InheritFromSupernet, inherited_backbone_state

__all__ = ['NASBNNDetBackbone', 'fpn_in_channels', 'resolve_backbone_arch', 'InheritFromSupernet',
           'inherited_backbone_state']
