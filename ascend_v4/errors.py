"""Errors a user can cause (bad config, checkpoint, tokenizer, input) and the context manager that
turns them into one-line CLI messages (click.ClickException: exit code 1, no deep traceback)."""
from __future__ import annotations

import contextlib

import click


def user_error_types() -> tuple:
    from ascend_v4.api import InputError
    from ascend_v4.checkpoint import CheckpointError
    from ascend_v4.config import ConfigError
    from ascend_v4.safetensors_io import SafetensorsError
    from ascend_v4.tokenizer import TokenizerError
    return (ConfigError, SafetensorsError, InputError, CheckpointError, TokenizerError,
            FileNotFoundError, PermissionError, NotADirectoryError)


@contextlib.contextmanager
def user_errors():
    """Re-raise user-caused errors as click.ClickException."""
    try:
        yield
    except click.ClickException:
        raise
    except user_error_types() as exc:
        raise click.ClickException(str(exc)) from None
