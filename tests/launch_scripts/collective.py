"""A rank of tests/test_launch.py: AllGather of the rank ids, then MODE.

    ok     every rank prints the gathered ids and exits 0
    kill   rank 1 SIGKILLs itself; the others block in a second AllGather
    raise  rank 1 raises RuntimeError; the others block in a second AllGather
    hang   rank 1 sleeps; the others block in a second AllGather
"""
import os
import signal
import sys
import time

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn, ops
from mindspore.communication import get_group_size, get_rank, init

ms.set_device("CPU")
ms.set_context(mode=ms.GRAPH_MODE, jit_config={"jit_level": "O0"})
init()                      # the scheduler process (MS_ROLE=MS_SCHED) stays in here until the end
rank, size = get_rank(), get_group_size()
mode = sys.argv[1]


class Gather(nn.Cell):
    def __init__(self):
        super().__init__()
        self.gather = ops.AllGather()

    def construct(self, x):
        return self.gather(x)


gather = Gather()
ids = gather(Tensor(np.array([rank], np.float64))).asnumpy()
print(f"rank {rank} of {size} (RANK_ID={os.environ.get('RANK_ID')}, "
      f"RANK_SIZE={os.environ.get('RANK_SIZE')}): gathered {ids.astype(int).tolist()}", flush=True)
if mode != "ok":
    if rank == 1 and mode == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if rank == 1 and mode == "raise":
        raise RuntimeError("rank 1 gives up on purpose")
    if rank == 1 and mode == "hang":
        time.sleep(300)
    gather(Tensor(np.array([rank], np.float64)))      # blocks: rank 1 never joins
    print(f"rank {rank}: the second AllGather returned", flush=True)
