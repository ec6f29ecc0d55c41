"""One rank of a torch.distributed job: all_reduce each rank's (rank + 1) and keep the sum."""

import json
import os

import torch
import torch.distributed as dist

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
value = torch.tensor([float(rank + 1)])
dist.all_reduce(value)
print(f"rank {rank} of {world}: all_reduce sum {value.item()}")
with open(os.path.join(os.environ["SM_MODEL_DIR"], "result.json"), "w") as f:
    json.dump({"rank": rank, "world_size": world, "sum": value.item(), "host": os.environ["SM_CURRENT_HOST"]}, f)
dist.destroy_process_group()
