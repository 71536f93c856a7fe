"""A training loop shaped like a PyTorch one (model, loss, optimizer step, epochs, a saved
state dict), in plain Python so it runs on any CPU: it fits y = w*x + b to the input CSV."""

import csv
import json
import os
import random
import time
from pathlib import Path

inputs = Path(os.environ.get("DANTE_INPUTS_DIR", "."))
outputs = Path(os.environ.get("DANTE_OUTPUTS_DIR", "."))
epochs = int(os.environ.get("EPOCHS", "5"))
lr = float(os.environ.get("LEARNING_RATE", "0.05"))

with (inputs / "examples" / "data.csv").open() as fh:
    data = [(float(r["x"]), float(r["y"])) for r in csv.DictReader(fh)]
print(f"loaded {len(data)} samples", flush=True)

random.seed(0)
state = {"w": 0.0, "b": 0.0}  # the "model"
batch = 16
for epoch in range(1, epochs + 1):
    random.shuffle(data)
    total = 0.0
    for start in range(0, len(data), batch):
        chunk = data[start : start + batch]
        # forward + mean squared error, then the gradient step
        grad_w = grad_b = 0.0
        for x, y in chunk:
            err = state["w"] * x + state["b"] - y
            total += err * err
            grad_w += 2 * err * x / len(chunk)
            grad_b += 2 * err / len(chunk)
        state["w"] -= lr * grad_w * 10
        state["b"] -= lr * grad_b * 10
    print(f"epoch {epoch}/{epochs}  loss {total / len(data):.4f}", flush=True)
    time.sleep(0.5)  # a real epoch takes a while; this makes the live log visible

(outputs / "examples").mkdir(parents=True, exist_ok=True)
(outputs / "examples" / "model.json").write_text(json.dumps(state))
print(f"saved w={state['w']:.3f} b={state['b']:.3f}", flush=True)
