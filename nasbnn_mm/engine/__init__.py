"""mmengine parts: the runner with the checkpoint trust policy, BN recalibration, the subnet
val/test loops, the evolutionary Pareto search loop, the subnet export, CPU-safe DDP and hooks."""
from .bn_recalibration import recalibrate_bn, recalibrated_bn
from .distributed import SandwichDDP, init_cpu_dist_if_needed
from .export import export_subnet, load_supernet_classifier, resolve_export_arch
from .hooks import DistSyncCheckHook, PublishCheckpointHook
from .runner import NASBNNRunner
from .samplers import UnshardedSampler
from .sampling import SubnetSamplingLoop, compare_samples, plot_samples, training_curves
from .search_loop import EvolutionParetoSearchLoop, evaluate_subnet, plot_pareto, reseed
from .subnet_loops import SubnetTestLoop, SubnetValLoop, resolve_subnets

__all__ = [
    'SubnetSamplingLoop', 'compare_samples', 'plot_samples', 'training_curves', 'UnshardedSampler',
    'EvolutionParetoSearchLoop', 'evaluate_subnet', 'plot_pareto', 'reseed', 'NASBNNRunner', 'PublishCheckpointHook',
    'DistSyncCheckHook', 'SandwichDDP', 'init_cpu_dist_if_needed', 'recalibrate_bn', 'recalibrated_bn', 'SubnetValLoop',
    'SubnetTestLoop', 'resolve_subnets', 'export_subnet', 'load_supernet_classifier', 'resolve_export_arch'
]
