from .bn_recalibration import recalibrate_bn, recalibrated_bn
from .distributed import SandwichDDP, init_cpu_dist_if_needed
from .hooks import DistSyncCheckHook, PublishCheckpointHook
from .runner import NASBNNRunner
from .samplers import UnshardedSampler
from .search_loop import EvolutionParetoSearchLoop, evaluate_subnet, plot_pareto
from .subnet_loops import SubnetTestLoop, SubnetValLoop, resolve_subnets

__all__ = ['UnshardedSampler', 'EvolutionParetoSearchLoop', 'evaluate_subnet', 'plot_pareto', 'NASBNNRunner', 'PublishCheckpointHook', 'DistSyncCheckHook', 'SandwichDDP', 'init_cpu_dist_if_needed', 'recalibrate_bn', 'recalibrated_bn', 'SubnetValLoop', 'SubnetTestLoop',
           'resolve_subnets']
