"""Rank 1 fails at once; rank 0 would run forever: the job must fail and stop rank 0."""

import os
import sys
import time

if os.environ["RANK"] == "1":
    sys.exit("rank 1 lost its data shard")  # to stderr, exit code 1
print(f"pid {os.getpid()}", flush=True)
while True:
    time.sleep(0.05)
