"""Supernet, static and deployed subnets, blocks, head, the sandwich classifier, export, the packed
1-bit form, weight inheritance and the authors' checkpoint layout."""
from .blocks import BinaryConvUnit, SeparableBinaryLayer, Stem, shortcut
from .classifier import SandwichClassifier, sandwich_students
from .export import build_static_backbone, subnet_backbone_state, subnet_classifier_state
from .heads import SlicedLinearClsHead
from .inherit import InheritFromSupernet, inherited_backbone_state
from .packed import build_deployed_classifier, load_packed, pack_classifier, pack_subnet, save_packed, unpack_subnet
from .supernet import (BACKBONE_SETTINGS, NASBNNDeployedSubnet, NASBNNSubnet, NASBNNSupernet, check_backbone_settings,
                       check_out_indices)

__all__ = [
    'BinaryConvUnit', 'Stem', 'SeparableBinaryLayer', 'shortcut', 'NASBNNSupernet', 'NASBNNSubnet',
    'NASBNNDeployedSubnet', 'SlicedLinearClsHead', 'SandwichClassifier', 'sandwich_students', 'subnet_backbone_state',
    'subnet_classifier_state', 'build_static_backbone', 'load_packed', 'pack_classifier', 'pack_subnet', 'save_packed',
    'unpack_subnet', 'build_deployed_classifier', 'InheritFromSupernet', 'inherited_backbone_state',
    'BACKBONE_SETTINGS', 'check_backbone_settings', 'check_out_indices'
]
