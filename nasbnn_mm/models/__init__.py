"""Supernet, static subnet, blocks, head and the sandwich classifier."""
from .blocks import SeparableBinaryLayer, Stem, shortcut
from .classifier import SandwichClassifier
from .export import build_static_backbone, subnet_backbone_state, subnet_classifier_state
from .heads import SlicedLinearClsHead
from .packed import NASBNNDeployedSubnet, load_packed, pack_classifier, pack_subnet, save_packed, unpack_subnet
from .supernet import NASBNNSubnet, NASBNNSupernet

__all__ = ['Stem', 'SeparableBinaryLayer', 'shortcut', 'NASBNNSupernet', 'NASBNNSubnet',
           'SlicedLinearClsHead', 'SandwichClassifier', 'subnet_backbone_state', 'subnet_classifier_state',
           'build_static_backbone', 'NASBNNDeployedSubnet', 'load_packed', 'pack_classifier', 'pack_subnet',
           'save_packed', 'unpack_subnet']
