"""mmengine Runner with this project's checkpoint trust policy.

mmengine 0.10.7 calls ``torch.load`` with torch's default, which since torch 2.6 is
``weights_only=True``: it then cannot resume from its own checkpoints. Instead of switching
safe loading off for everything, this runner decides per file:
  * inside the run's own ``work_dir`` (resume after a kill) -> full unpickling;
  * elsewhere -> safe loading, unless the config sets ``trust_checkpoint=True``
    (``--trust-checkpoint`` on the tools).
"""
from __future__ import annotations
import os

from mmengine.model import is_model_wrapper
from mmengine.runner import Runner
from mmengine.runner.checkpoint import _load_checkpoint_to_model

from ..registry import RUNNERS
from ..utils.checkpoint import load_checkpoint_file


def _inside(path: str, folder: str) -> bool:
    try:
        path, folder = os.path.realpath(path), os.path.realpath(folder)
        return os.path.commonpath([path, folder]) == folder
    except ValueError:
        return False


@RUNNERS.register_module()
class NASBNNRunner(Runner):

    @property
    def trust_checkpoint(self) -> bool:
        return bool(self.cfg.get('trust_checkpoint', False))

    def load_checkpoint(self, filename, map_location='cpu', strict=False, revise_keys=[(r'^module.', '')]):
        trusted = self.trust_checkpoint or _inside(filename, self.work_dir)
        checkpoint = load_checkpoint_file(filename, map_location=map_location, trusted=trusted)
        self.call_hook('after_load_checkpoint', checkpoint=checkpoint)
        model = self.model.module if is_model_wrapper(self.model) else self.model
        checkpoint = _load_checkpoint_to_model(model, checkpoint, strict, revise_keys=revise_keys)
        self._has_loaded = True
        self.logger.info(f'Load checkpoint from {filename} ({"full" if trusted else "safe"} unpickling)')
        return checkpoint
