"""The CLI's user-error handling lives with the package (`ascend_v4.errors`), shared by the
`ascend-v4` sub-commands and `python -m ascend_v4.serve`."""
from ascend_v4.errors import user_errors  # noqa: F401
