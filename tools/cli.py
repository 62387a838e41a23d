"""The `ascend-v4` click CLI. Each sub-command lives in its own `tools/cmd_*.py` module."""
from __future__ import annotations

import importlib
import os

import click

# sub-command name -> module defining `command` (a click.Command); imported lazily so that
# `ascend-v4 plan` does not pay MindSpore's import cost.
COMMANDS = {
    "inspect": "tools.cmd_inspect",
    "generate": "tools.cmd_generate",
    "demo": "tools.cmd_demo",
    "plan": "tools.cmd_plan",
    "socs": "tools.cmd_socs",
    "bench": "tools.cmd_bench",
    "compile": "tools.cmd_compile",
    "convert": "tools.cmd_convert",
    "parity": "tools.cmd_parity",
    "serve": "tools.cmd_serve",
    "launch": "tools.cmd_launch",
}


class LazyGroup(click.Group):
    """A click group whose sub-commands are imported on first use."""

    def list_commands(self, ctx):
        return sorted(name for name, mod in COMMANDS.items() if importlib.util.find_spec(mod))

    def get_command(self, ctx, name):
        module = COMMANDS.get(name)
        if module is None or importlib.util.find_spec(module) is None:
            return None
        return importlib.import_module(module).command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option("0.1.0", prog_name="ascend-v4")
def main():
    """ascend-v4: DeepSeek-V4 on MindSpore and Ascend."""
    os.environ.setdefault("GLOG_v", "3")   # MindSpore's C++ warnings are not for CLI users


if __name__ == "__main__":
    main()
