"""Supernet, static subnet, blocks, head and the sandwich classifier."""
from .blocks import SeparableBinaryLayer, Stem, shortcut
from .classifier import SandwichClassifier
from .heads import SlicedLinearClsHead
from .supernet import NASBNNSubnet, NASBNNSupernet

__all__ = ['Stem', 'SeparableBinaryLayer', 'shortcut', 'NASBNNSupernet', 'NASBNNSubnet',
           'SlicedLinearClsHead', 'SandwichClassifier']
