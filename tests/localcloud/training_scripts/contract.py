"""Writes what the container contract gave it (environment, arguments, channel files) into the model folder."""

import json
import os
import sys

model_dir = os.environ["SM_MODEL_DIR"]
channels = {
    name: sorted(os.listdir(os.environ[f"SM_CHANNEL_{name.upper()}"])) for name in json.loads(os.environ["SM_CHANNELS"])
}
seen = {
    "argv": sys.argv[1:],
    "env": {
        k: v
        for k, v in os.environ.items()
        if k.startswith(("SM_", "AWS_ENDPOINT_URL", "TRAINING_JOB", "MASTER_", "WORLD_SIZE", "RANK"))
    },
    "channels": channels,
    "checkpoint_dir_writable": os.access(os.environ["SM_CHECKPOINT_DIR"], os.W_OK),
}
with open(os.path.join(model_dir, "seen.json"), "w") as f:
    json.dump(seen, f)
print(f"contract script ran on {os.environ['SM_CURRENT_HOST']} with {' '.join(sys.argv[1:])}")
print("validation:accuracy=0.875")
