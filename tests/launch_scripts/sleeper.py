"""A rank of tests/test_launch.py that never joins a cluster: prints its role, then sleeps."""
import os
import time

print(f"{os.environ.get('MS_ROLE')} {os.environ.get('RANK_ID')} sleeping", flush=True)
time.sleep(120)
