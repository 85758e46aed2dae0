"""mmengine Runner with this project's checkpoint trust policy and strict, checked loading.

mmengine 0.10.7 calls ``torch.load`` with torch's default, which since torch 2.6 is
``weights_only=True``: it then cannot resume from its own checkpoints. Instead of switching
safe loading off for everything, this runner decides per file, by provenance:

* a checkpoint this runner saved itself (a resume checkpoint of this work dir) is recorded, when
  it is written, in ``<work_dir>/trusted_checkpoints.json`` with its SHA-256 and an HMAC of path and
  digest under a per-user secret key (``$NASBNN_TRUST_KEY`` or ``~/.cache/nasbnn_mm/trust.key``,
  created with mode 0600). It is unpickled fully only if the file is unchanged since (same digest)
  and the record's MAC verifies: a file merely placed in the work dir, or a record forged by
  someone who cannot read the key, is not trusted;
* every other file (``load_from``, a tool's checkpoint argument) loads with safe unpickling,
  unless the config sets ``trust_checkpoint=True`` (``--trust-checkpoint`` on the tools);
* a refusal is a one-line error naming the offending pickled global.

Loading is strict: missing, unexpected or wrongly shaped keys, non-finite values and a backbone
whose recorded arithmetic settings differ are one-line errors naming the first keys, unless the
config asks for partial loading (``load_partial=True``). Checkpoints are written atomically.
"""
from __future__ import annotations
import hashlib
import hmac
import json
import os
import os.path as osp
import secrets

from mmengine.dist import is_main_process
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner
from mmengine.runner.checkpoint import _load_checkpoint_to_model

from ..registry import RUNNERS
from ..utils.checkpoint import CheckpointMismatchError, atomic_write_text, check_finite, load_checkpoint_file

__all__ = ['NASBNNRunner', 'TRUST_MANIFEST', 'trust_key']

TRUST_MANIFEST = 'trusted_checkpoints.json'


def trust_key() -> bytes:
    """The per-user secret of the resume-checkpoint records (created on first use, mode 0600)."""
    path = os.environ.get('NASBNN_TRUST_KEY') or osp.join(osp.expanduser('~'), '.cache', 'nasbnn_mm', 'trust.key')
    if not osp.isfile(path):
        os.makedirs(osp.dirname(path) or '.', exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, 'w') as f:
                f.write(secrets.token_hex(32))
        except FileExistsError:  # another rank created it meanwhile
            pass
    with open(path) as f:
        return f.read().strip().encode()


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def _mac(key: bytes, path: str, digest: str) -> str:
    return hmac.new(key, f'{osp.realpath(path)}\0{digest}'.encode(), hashlib.sha256).hexdigest()


def _inside(path: str, folder: str) -> bool:
    try:
        path, folder = osp.realpath(path), osp.realpath(folder)
        return osp.commonpath([path, folder]) == folder
    except ValueError:
        return False


def _check_fits(model, state_dict: dict, source: str) -> None:
    """One-line error naming the first missing, unexpected or wrongly shaped keys."""
    want = model.state_dict()
    missing = [k for k in want if k not in state_dict]
    unexpected = [k for k in state_dict if k not in want]
    shapes = [
        f'{k} {tuple(state_dict[k].shape)} vs {tuple(want[k].shape)}' for k in want
        if k in state_dict and tuple(getattr(state_dict[k], 'shape', ())) != tuple(want[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f'{len(missing)} missing ({", ".join(missing[:3])})')
    if unexpected:
        problems.append(f'{len(unexpected)} unexpected ({", ".join(unexpected[:3])})')
    if shapes:
        problems.append(f'{len(shapes)} of another shape ({", ".join(shapes[:2])})')
    if problems:
        raise CheckpointMismatchError(f'checkpoint {source}: does not fit the model: {"; ".join(problems)} '
                                      '(another search space or model? load_partial=True loads what fits)')


@RUNNERS.register_module()
class NASBNNRunner(Runner):

    @property
    def trust_checkpoint(self) -> bool:
        return bool(self.cfg.get('trust_checkpoint', False))

    @property
    def load_partial(self) -> bool:
        return bool(self.cfg.get('load_partial', False))

    # ------------------------------------------------------------------ provenance
    @property
    def _manifest_path(self) -> str:
        return osp.join(self.work_dir, TRUST_MANIFEST)

    def _read_manifest(self) -> dict:
        try:
            with open(self._manifest_path) as f:
                data = json.load(f)
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def _record_saved(self, path: str) -> None:
        key, digest = trust_key(), _sha256(path)
        manifest = {p: r for p, r in self._read_manifest().items() if osp.isfile(p)}  # drop deleted files
        manifest[osp.realpath(path)] = dict(sha256=digest, mac=_mac(key, path, digest))
        atomic_write_text(self._manifest_path, json.dumps(manifest, indent=1))

    def written_by_this_run(self, path: str) -> bool:
        """Whether ``path`` is a checkpoint this work dir's runs saved and that is unchanged since."""
        if not (osp.isfile(path) and _inside(path, self.work_dir)):
            return False
        rec = self._read_manifest().get(osp.realpath(path))
        if not isinstance(rec, dict) or not isinstance(rec.get('sha256'), str) or not isinstance(rec.get('mac'), str):
            return False
        digest = _sha256(path)
        return hmac.compare_digest(rec['sha256'], digest) and hmac.compare_digest(rec['mac'],
                                                                                  _mac(trust_key(), path, digest))

    def save_checkpoint(self, out_dir: str, filename: str, *args, **kwargs):
        """mmengine's checkpoint, written atomically (a temp name, then a rename) and recorded as this
        run's own (see the module doc)."""
        tmp = f'.{filename}.{secrets.token_hex(4)}.tmp'
        super().save_checkpoint(out_dir, tmp, *args, **kwargs)
        if not is_main_process():
            return
        src, dst = osp.join(out_dir, tmp), osp.join(out_dir, filename)
        if osp.isfile(src):
            os.replace(src, dst)
            self._record_saved(dst)

    # ------------------------------------------------------------------ loading
    def load_checkpoint(self, filename, map_location='cpu', strict=False, revise_keys=[(r'^module.', '')]):
        own = self.written_by_this_run(filename)
        trusted = self.trust_checkpoint or own
        checkpoint = load_checkpoint_file(filename, map_location=map_location, trusted=trusted)
        if not isinstance(checkpoint, dict):
            raise CheckpointMismatchError(
                f'checkpoint {filename}: a {type(checkpoint).__name__}, not a checkpoint dict')
        self.call_hook('after_load_checkpoint', checkpoint=checkpoint)
        model = self.model.module if is_model_wrapper(self.model) else self.model
        if not self.load_partial:
            self._check_loadable(model, checkpoint, filename)
        checkpoint = _load_checkpoint_to_model(
            model, checkpoint, strict and not self.load_partial, revise_keys=revise_keys)
        self._has_loaded = True
        how = ('full unpickling: saved by this run, unchanged'
               if own else 'full unpickling: --trust-checkpoint' if trusted else 'safe unpickling')
        self.logger.info(f'Load checkpoint from {filename} ({how})')
        return checkpoint

    @staticmethod
    def _check_loadable(model, checkpoint: dict, source: str) -> None:
        import re
        sd = checkpoint.get('state_dict', checkpoint)
        if not isinstance(sd, dict) or not sd:
            raise CheckpointMismatchError(f'checkpoint {source}: no state_dict of tensors')
        sd = {re.sub(r'^module\.', '', k): v for k, v in sd.items()}
        check_finite(sd, source)
        _check_fits(model, sd, source)
        backbone = getattr(model, 'backbone', None)
        if backbone is not None and hasattr(backbone, 'settings'):
            from ..models import check_backbone_settings
            check_backbone_settings(backbone, checkpoint.get('meta'), source)
