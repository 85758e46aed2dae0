"""Validation / test loops that evaluate a list of subnets of a supernet, each after BN
recalibration, and log top-1 / top-5 per subnet."""
from __future__ import annotations
import random
from typing import Dict, List, Optional, Sequence, Tuple, Union

from mmengine.model import is_model_wrapper
from mmengine.runner import TestLoop, ValLoop

from ..ops import BINARY
from ..registry import LOOPS
from ..space import Architecture, ArchitectureError, count_ops
from .bn_recalibration import recalibrated_bn

__all__ = ['SubnetValLoop', 'SubnetTestLoop', 'resolve_subnets']


def resolve_subnets(space, subnets: Sequence[Union[str, dict]], seed: int = 0) -> List[Tuple[str, Architecture]]:
    """Names and architectures from a list of 'largest', 'smallest', preset names,
    architecture texts/dicts and 'random:N' entries."""
    out: List[Tuple[str, Architecture]] = []
    rng = random.Random(seed)
    for s in subnets:
        if isinstance(s, str) and s.strip().lower() == 'largest':
            out.append(('largest', space.largest()))
        elif isinstance(s, str) and s.strip().lower() == 'smallest':
            out.append(('smallest', space.smallest()))
        elif isinstance(s, str) and s.strip().lower().startswith('random:'):
            try:
                n = int(s.split(':', 1)[1])
            except ValueError:
                raise ArchitectureError(f"subnets: malformed entry {s!r} (expected 'random:N')") from None
            out += [(f'random{i}', space.sample(rng)) for i in range(n)]
        else:
            arch = space.validate(s)
            name = s if isinstance(s, str) and len(s) <= 12 else f'arch{len(out)}'
            out.append((name, arch))
    return out


class _SubnetLoopMixin:

    def _setup_subnets(self, subnets, calib_batches: int, calib_dataloader, random_seed: int, ops_img_size):
        self.subnet_specs = list(subnets)
        self.calib_batches = calib_batches
        self._calib_dataloader_cfg = calib_dataloader
        self._calib_loader = None
        self.random_seed = random_seed
        self.ops_img_size = ops_img_size

    @property
    def calib_dataloader(self):
        if self._calib_loader is None and self.calib_batches > 0:
            if self._calib_dataloader_cfg is None:
                self._calib_loader = self.runner.train_dataloader
            else:
                self._calib_loader = self.runner.build_dataloader(self._calib_dataloader_cfg, seed=self.random_seed)
        return self._calib_loader

    def _core(self):
        m = self.runner.model
        return m.module if is_model_wrapper(m) else m

    def _evaluate_subnets(self, hook_prefix: str) -> Dict[str, float]:
        core = self._core()
        subnets = resolve_subnets(core.space, self.subnet_specs, self.random_seed)
        num_classes = getattr(core.head, 'num_classes', 1000)
        all_metrics: Dict[str, float] = {}
        previous = core.backbone.arch
        for name, arch in subnets:
            core.set_subnet(arch, BINARY)
            with recalibrated_bn(self.runner.model, self.calib_dataloader, self.calib_batches):
                for idx, data_batch in enumerate(self.dataloader):
                    self.run_iter(idx, data_batch)
                metrics = self.evaluator.evaluate(len(self.dataloader.dataset))
            ops = count_ops(arch, self.ops_img_size, num_classes, space=core.space) / 1e6
            msg = ', '.join(f'{k}: {v:.2f}' for k, v in metrics.items() if isinstance(v, (int, float)))
            self.runner.logger.info(f'[{hook_prefix}] subnet {name} ({ops:.2f}M OPs): {msg} | {arch.to_text()}')
            all_metrics.update({f'{name}/{k}': v for k, v in metrics.items()})
        core.set_subnet(previous, BINARY)
        return all_metrics


class _SubnetEvalLoop(_SubnetLoopMixin):
    """``run`` of a val / test loop over several subnets (``_phase``: 'val' or 'test')."""

    _phase = 'val'

    def __init__(self,
                 runner,
                 dataloader,
                 evaluator,
                 subnets=('largest', 'smallest'),
                 calib_batches: int = 10,
                 calib_dataloader: Optional[dict] = None,
                 random_seed: int = 0,
                 ops_img_size=224,
                 fp16=False):
        super().__init__(runner, dataloader, evaluator, fp16)
        self._setup_subnets(subnets, calib_batches, calib_dataloader, random_seed, ops_img_size)

    def run(self) -> dict:
        phase = self._phase
        self.runner.call_hook(f'before_{phase}')
        self.runner.call_hook(f'before_{phase}_epoch')
        self.runner.model.eval()
        metrics = self._evaluate_subnets(phase)
        self.runner.call_hook(f'after_{phase}_epoch', metrics=metrics)
        self.runner.call_hook(f'after_{phase}')
        return metrics


@LOOPS.register_module()
class SubnetValLoop(_SubnetEvalLoop, ValLoop):
    """ValLoop over several subnets.

    Args:
        subnets: entries 'largest', 'smallest', preset names (A..F), architecture texts or
            'random:N' (N random subnets under ND, drawn with ``random_seed``).
        calib_batches: training batches used to recalibrate BN before each subnet (0: none).
        calib_dataloader: dataloader config for recalibration (default: the train dataloader).
        random_seed: seed of the 'random:N' subnets and of the calibration dataloader.
        ops_img_size: input size at which the logged OPs are counted.
        fp16: as mmengine's ValLoop.
    """
    _phase = 'val'


@LOOPS.register_module()
class SubnetTestLoop(_SubnetEvalLoop, TestLoop):
    """TestLoop over several subnets (same arguments as :class:`SubnetValLoop`)."""
    _phase = 'test'
