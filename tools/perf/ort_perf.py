"""ONNX Runtime's side of the `predict` workload of `cargo xtask perf`: the graph that
`cargo xtask perf --workloads predict --save-onnx DIR` exported (DRA with five references baked
in), run on a batch of the same size, printed as the same JSON line. By hand (CI never runs it):

    pip install onnxruntime numpy
    python tools/perf/ort_perf.py DIR/predict-resnet18-128.onnx [--threads 2] [--reps 3]
"""
import argparse
import json
import resource
import time

import numpy as np
import onnxruntime as ort


def batch_for(size):
    return 16 if size >= 448 else 48


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    size = session.get_inputs()[0].shape[2]
    batch = batch_for(size)
    x = np.random.default_rng(0).standard_normal((batch, 3, size, size), dtype=np.float32)
    session.run(None, {"image": x})  # warm-up
    times = []
    for _ in range(max(args.reps, 1)):
        t0 = time.perf_counter()
        session.run(None, {"image": x})
        times.append(time.perf_counter() - t0)
    times.sort()
    median = times[len(times) // 2]
    print(json.dumps({
        "workload": "predict", "size": size, "batch": batch, "img_per_s": batch / median,
        "seconds_median": median, "seconds_min": times[0],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "device": "cpu", "impl": f"onnxruntime {ort.__version__} ({args.threads} threads)",
        "model": args.model,
    }))


if __name__ == "__main__":
    main()
