"""`python -m ascend_v4.serve ...`: the entry point the plan's launch scripts run."""
import os

from ascend_v4.serve.cli import command

if __name__ == "__main__":
    os.environ.setdefault("GLOG_v", "3")
    command(prog_name="python -m ascend_v4.serve")
