from .checkpoint import (CheckpointMismatchError, UntrustedCheckpointError, load_checkpoint_file, publish_checkpoint,
                         save_checkpoint_file)

__all__ = [
    'CheckpointMismatchError', 'UntrustedCheckpointError', 'load_checkpoint_file', 'save_checkpoint_file',
    'publish_checkpoint'
]
