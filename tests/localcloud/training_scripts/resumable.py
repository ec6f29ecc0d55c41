"""Counts steps, saving a checkpoint after each; resumes from the last checkpoint after a spot interruption."""

import json
import os
import time

checkpoint_dir = os.environ.get("SM_CHECKPOINT_DIR", "/opt/ml/checkpoints")
checkpoint = os.path.join(checkpoint_dir, "state.json")
steps = int(os.environ.get("SM_HP_STEPS", "20"))
start = 0
if os.path.exists(checkpoint):
    with open(checkpoint) as f:
        start = json.load(f)["step"]
print(f"starting at step {start}")
for step in range(start, steps):
    time.sleep(0.1)
    with open(checkpoint + ".tmp", "w") as f:
        json.dump({"step": step + 1}, f)
    os.replace(checkpoint + ".tmp", checkpoint)
    print(f"step {step + 1}")
with open(os.path.join(os.environ["SM_MODEL_DIR"], "run.json"), "w") as f:
    json.dump({"resumed_from": start, "steps_run": steps - start}, f)
