"""Turn the errors a user can cause into one-line CLI messages (no deep tracebacks)."""
from __future__ import annotations

import contextlib

import click


def _user_error_types():
    from ascend_v4.config import ConfigError
    from ascend_v4.safetensors_io import SafetensorsError
    types = [ConfigError, SafetensorsError, FileNotFoundError, PermissionError, NotADirectoryError]
    try:
        from ascend_v4.api import InputError
        types.append(InputError)
    except ImportError:  # pragma: no cover
        pass
    try:
        from ascend_v4.checkpoint import CheckpointError
        types.append(CheckpointError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(types)


@contextlib.contextmanager
def user_errors():
    """Re-raise user-caused errors as click.ClickException (exit code 1, message only)."""
    try:
        yield
    except click.ClickException:
        raise
    except _user_error_types() as exc:
        raise click.ClickException(str(exc)) from None
