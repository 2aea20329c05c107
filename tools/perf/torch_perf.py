"""PyTorch counterpart of `cargo xtask perf`: the same workloads, the same JSON lines.
Run by hand where torch is installed (CI never runs it):

    pip install torch torchvision
    python tools/perf/torch_perf.py --sizes 128,224 [--reps 3] [--device cpu|cuda]
        [--backbone resnet18|mobilenet_v2] [--count-flops]

Each (workload, size) runs in a fresh subprocess so that its peak RSS is its own.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

WORKLOADS = ["backbone_train", "backbone_eval", "dra_step", "predict"]


def batch_for(workload, size):
    if workload == "dra_step":
        return 48
    return 16 if size >= 448 else 48


def with_backbone(g, backbone):
    """The golden script's modules on `backbone`: its ResNet-18 as it is, or torchvision's
    MobileNetV2 `features` (1280 channels) as `--backbone mobilenet_v2` builds it."""
    import torch.nn as nn
    from torchvision import models

    if backbone == "resnet18":
        return g.Backbone, g.DRA

    class MobileNetBackbone(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = models.mobilenet_v2(weights=None).features

        def forward(self, x):
            return self.net(x)

    def dra():
        model = g.DRA()
        model.feature_extractor = MobileNetBackbone()
        model.holistic_head = g.HolisticHead(1280)
        model.seen_head = g.PlainHead(1280)
        model.pseudo_head = g.PlainHead(1280)
        model.composite_head = g.CompositeHead(1280)
        return model

    return MobileNetBackbone, dra


class GpuMemory:
    """The most device memory `nvidia-smi` sees this process hold (its CUDA context included),
    polled every 50 ms: the same measure as `cargo xtask perf` takes of dra-rs. In a container
    whose process ids nvidia-smi does not see, the one process on the GPU (a worker runs alone)."""

    def __init__(self):
        import threading
        self.peak, self.done = 0, False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        pid = str(os.getpid())
        while not self.done:
            try:
                out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory",
                                      "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True).stdout
                rows = [tuple(x.strip() for x in l.split(",")) for l in out.splitlines() if "," in l]
                mine = [int(mb) for p, mb in rows if p == pid] or ([int(rows[0][1])] if len(rows) == 1 else [])
                if mine:
                    self.peak = max(self.peak, mine[0])
            except (OSError, ValueError):
                pass
            time.sleep(0.05)

    def stop(self):
        self.done = True
        self.thread.join()
        return float(self.peak)


def worker(workload, size, reps, device, backbone, count_flops=False):
    import torch
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "golden"))
    import make_golden as g

    make_backbone, make_dra = with_backbone(g, backbone)

    torch.set_num_threads(os.cpu_count())
    torch.manual_seed(0)
    batch = batch_for(workload, size)
    dev = torch.device(device)
    sync = (lambda: torch.cuda.synchronize()) if device == "cuda" else (lambda: None)
    if workload in ("backbone_train", "backbone_eval"):
        net = make_backbone().to(dev)
        x = torch.randn(batch, 3, size, size, device=dev)
        if workload == "backbone_train":
            net.train()

            def step():
                net.zero_grad(set_to_none=True)
                net(x).sum().backward()
        else:
            net.eval()

            def step():
                with torch.no_grad():
                    net(x).sum().item()
    elif workload == "predict":
        # The official model's eval forward: five references, then the batch's queries.
        g.SIZE, g.N_REF = size, 5
        model = make_dra().to(dev)
        model.eval()
        x = torch.randn(5 + batch, 3, size, size, device=dev)
        label = torch.zeros(batch, dtype=torch.long, device=dev)

        def step():
            with torch.no_grad():
                sum(s.sum() for s in model(x, label, {})).item()
    else:
        g.SIZE, g.N_REF = size, 5
        model = make_dra().to(dev)
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=2e-4, weight_decay=1e-5)
        x = torch.randn(5 + batch, 3, size, size, device=dev)
        label = torch.tensor([[0, 2, 1][i * 3 // batch] for i in range(batch)], device=dev)
        t = label
        targets = [(t == 0), (t != 0)[t != 2], (t != 0)[t != 1], (t != 0)]
        targets = [v.float() for v in targets]

        def step():
            scores = model(x, label, {})
            loss = 0
            for sc, tg in zip(scores, targets):
                r = torch.normal(mean=0.0, std=torch.full([5000], 1.0)).to(dev)
                loss = loss + g.deviation_loss(sc, tg, (r.mean(), r.std()))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
    gpu = GpuMemory() if device == "cuda" else None
    gflop = None
    if count_flops:
        # Counted by PyTorch's own counter over one step: convolutions and matrix products as
        # their direct arithmetic (2 per multiply-add), forward and backward; this step is the
        # warm-up.
        from torch.utils.flop_counter import FlopCounterMode
        with FlopCounterMode(display=False) as counter:
            step()
        gflop = counter.get_total_flops() / 1e9
    else:
        step()
    sync()
    times = []
    for _ in range(max(reps, 1)):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    times.sort()
    median = times[len(times) // 2]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    result = {"workload": workload, "size": size, "batch": batch, "img_per_s": batch / median,
              "seconds_median": median, "seconds_min": times[0], "peak_rss_mb": peak, "device": device,
              "impl": f"torch {torch.__version__}", "backbone": backbone}
    if gflop is not None:
        result["gflop_per_step"] = gflop
    if gpu is not None:
        result["peak_gpu_mb"] = gpu.stop()
        result["torch_max_reserved_mb"] = torch.cuda.max_memory_reserved() / 2**20
    print(json.dumps(result))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="128,224")
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--backbone", default="resnet18", choices=["resnet18", "mobilenet_v2"])
    ap.add_argument("--worker", nargs=2)
    ap.add_argument("--count-flops", action="store_true",
                    help="also count each step's floating-point operations (gflop_per_step)")
    args = ap.parse_args()
    if args.worker:
        worker(args.worker[0], int(args.worker[1]), args.reps, args.device, args.backbone,
               args.count_flops)
        return
    for size in [int(s) for s in args.sizes.split(",")]:
        for w in args.workloads.split(","):
            out = subprocess.run([sys.executable, __file__, "--worker", w, str(size), "--reps", str(args.reps),
                                  "--device", args.device, "--backbone", args.backbone]
                                 + (["--count-flops"] if args.count_flops else []),
                                 capture_output=True, text=True, check=True)
            print(out.stdout.strip(), flush=True)


if __name__ == "__main__":
    main()
