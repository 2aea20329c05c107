"""Write scikit-learn's bundled handwritten digits (UCI, 1,797 real 8×8 scans) as a category in
the MVTec AD layout, for a by-hand check of `dra train` on data that dra-rs did not generate:
one digit is "good", every other digit is a defect class (one-vs-rest anomaly detection).

    pip install scikit-learn pillow numpy
    python tools/checks/digits_to_mvtec.py /tmp/digits --normal 0
    dra train --data-root /tmp/digits --dataset mvtec/digit0 --out /tmp/run --profile quick
"""
import argparse
import os

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("--normal", type=int, default=0)
    ap.add_argument("--size", type=int, default=64)
    args = ap.parse_args()
    digits = load_digits()
    cat = os.path.join(args.root, "mvtec_anomaly_detection", f"digit{args.normal}")
    rng = np.random.RandomState(0)
    normal = np.flatnonzero(digits.target == args.normal)
    rng.shuffle(normal)
    n_train = int(len(normal) * 0.75)
    def save(sub, i, img):
        d = os.path.join(cat, sub)
        os.makedirs(d, exist_ok=True)
        a = (img / 16.0 * 255).astype(np.uint8)
        Image.fromarray(a).resize((args.size, args.size), Image.NEAREST).convert("RGB").save(os.path.join(d, f"{i:04d}.png"))
    for j, i in enumerate(normal[:n_train]):
        save("train/good", j, digits.images[i])
    for j, i in enumerate(normal[n_train:]):
        save("test/good", j, digits.images[i])
    for k in range(10):
        if k == args.normal:
            continue
        for j, i in enumerate(np.flatnonzero(digits.target == k)[:20]):
            save(f"test/digit{k}", j, digits.images[i])
    print(cat)


if __name__ == "__main__":
    main()
