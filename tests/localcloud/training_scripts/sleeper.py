"""Runs until stopped: saves a model at once, then prints its pid and sleeps."""

import os
import time

with open(os.path.join(os.environ["SM_MODEL_DIR"], "early.txt"), "w") as f:
    f.write("saved before the stop")
print(f"pid {os.getpid()}", flush=True)
while True:
    time.sleep(0.05)
