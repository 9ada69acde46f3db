"""Run an exported fedkd student with onnxruntime alone: no fedkd, no torch.

    fedkd export runs/quickstart                 # writes runs/quickstart/export/student.onnx
    python examples/onnx_predict.py runs/quickstart/export/student.onnx

Needs numpy, onnxruntime and (for the example inputs) scikit-learn. The model takes
float32 ``x`` of shape ``(batch, *input_shape)`` scaled as in training (digits: / 16) and
returns ``logits`` ``(batch, classes)``.
"""

import sys

import numpy as np
import onnxruntime as ort
from sklearn.datasets import load_digits

session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
x, y = load_digits(return_X_y=True)
x = (x / 16.0).astype(np.float32).reshape(-1, 8, 8)  # the quickstart's inputs
logits = session.run(["logits"], {"x": x})[0]
print("first predictions", logits[:10].argmax(1), "labels", y[:10])
accuracy = np.mean(logits.argmax(1) == y)
print(f"accuracy on all {len(y)} digits (the run's train and test splits): {accuracy:.4f}")
