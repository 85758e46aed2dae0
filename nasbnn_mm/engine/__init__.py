from .bn_recalibration import recalibrate_bn, recalibrated_bn
from .runner import NASBNNRunner
from .subnet_loops import SubnetTestLoop, SubnetValLoop, resolve_subnets

__all__ = ['NASBNNRunner', 'recalibrate_bn', 'recalibrated_bn', 'SubnetValLoop', 'SubnetTestLoop',
           'resolve_subnets']
