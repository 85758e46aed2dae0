"""The top layer, for the command-line tools: config set-up from common flags, one-line errors,
and the runs the tools start (training, testing, search)."""
from .cli import add_common_args, load_tool_config, run_cli, user_errors
from .runs import build_runner, run_sampling, run_search, run_test, run_train

__all__ = [
    'add_common_args', 'load_tool_config', 'run_cli', 'user_errors', 'build_runner', 'run_train', 'run_test',
    'run_search', 'run_sampling'
]
