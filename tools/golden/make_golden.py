"""Golden fixtures for dra-rs's parity tests, computed with PyTorch.

Run by hand where torch is installed (CI never runs it):

    pip install torch torchvision safetensors numpy
    python tools/golden/make_golden.py crates/dra-model/tests/fixtures/golden_dra.safetensors

The DRA model below is written from ../shared/docs/dra-protocol.md (the official
`modeling/net.py` architecture on torchvision's ResNet-18). Weights and inputs are not stored:
both sides derive them from tensor names with the same integer hash (`golden_values`), so the
fixture stays small. What is stored: the deviation priors used, every head's score per scale and
averaged, each head's loss and the total, the gradients of a selection of tensors, BatchNorm
running statistics after the training forward, and the parameters after one clipped Adam step.
"""
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file
from torchvision import models

MASK = np.uint64(0xFFFFFFFFFFFFFFFF)
SIZE, N_REF, LABELS = 64, 2, [0, 1, 2, 0]
LR, WEIGHT_DECAY, CLIP = 2e-4, 1e-5, 1.0
SAMPLE_STRIDE = 1009  # large gradients are compared on every 1009th element


def fnv1a(name):
    h = 0xCBF29CE484222325
    for b in name.encode():
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def unit_uniform(name, n):
    """n values in [0, 1): splitmix64(fnv1a(name) + i) >> 40, over 2^24."""
    with np.errstate(over="ignore"):
        x = np.uint64(fnv1a(name)) + np.arange(n, dtype=np.uint64)
        x = x + np.uint64(0x9E3779B97F4A7C15)
        z = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(40)).astype(np.float64) / 16777216.0


def golden_values(name, shape):
    n = int(np.prod(shape))
    u = unit_uniform(name, n)
    leaf = name.rsplit(".", 1)[-1]
    if name in ("input", "mbv2.input"):
        v = (u * 2.0 - 1.0) * np.sqrt(3.0)
    elif leaf == "running_mean":
        v = (u * 2.0 - 1.0) * 0.1
    elif leaf == "running_var":
        v = 1.0 + 0.5 * u
    elif leaf == "weight" and len(shape) == 1:
        v = 1.0 + (u * 2.0 - 1.0) * 0.1
    elif leaf == "bias":
        v = (u * 2.0 - 1.0) * 0.1
    else:
        fan_in = int(np.prod(shape[1:]))
        v = (u * 2.0 - 1.0) * np.sqrt(3.0 / fan_in)
    return torch.from_numpy(v.astype(np.float32).reshape(shape))


class HolisticHead(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.fc1 = nn.Linear(c, 256)
        self.fc2 = nn.Linear(256, 1)

    def forward(self, x):
        x = F.adaptive_avg_pool2d(x, (1, 1)).flatten(1)
        return torch.abs(self.fc2(F.relu(self.fc1(x))))


class PlainHead(nn.Module):
    def __init__(self, c, rate=0.1):
        super().__init__()
        self.scoring = nn.Conv2d(c, 1, 1)
        self.rate = rate

    def forward(self, x):
        x = self.scoring(x).view(x.size(0), -1)
        k = max(int(x.size(1) * self.rate), 1)
        return torch.topk(torch.abs(x), k, dim=1)[0].mean(dim=1).view(-1, 1)


class CompositeHead(PlainHead):
    def __init__(self, c, rate=0.1):
        super().__init__(c, rate)
        self.conv = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU())

    def forward(self, x, ref):
        ref = torch.mean(ref, dim=0).repeat([x.size(0), 1, 1, 1])
        return super().forward(self.conv(ref - x))


class Backbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = models.resnet18(weights=None)

    def forward(self, x):
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        return n.layer4(n.layer3(n.layer2(n.layer1(x))))


class DRA(nn.Module):
    def __init__(self):
        super().__init__()
        self.feature_extractor = Backbone()
        self.holistic_head = HolisticHead(512)
        self.seen_head = PlainHead(512)
        self.pseudo_head = PlainHead(512)
        self.composite_head = CompositeHead(512)

    def forward(self, image, label, record):
        heads = [[], [], [], []]
        for s in range(2):
            x = F.interpolate(image, size=SIZE // (2 ** s)) if s > 0 else image
            f = self.feature_extractor(x)
            ref, f = f[:N_REF], f[N_REF:]
            # Every head on every row, for the per-scale record ...
            for name, out in [
                ("normal", self.holistic_head(f)),
                ("seen", self.seen_head(f)),
                ("pseudo", self.pseudo_head(f)),
            ]:
                record[f"s{s}.{name}"] = out.detach().flatten()
            # ... and the official routing for the outputs that feed the loss.
            if self.training:
                scores = [
                    self.holistic_head(f),
                    self.seen_head(f[label != 2]),
                    self.pseudo_head(f[label != 1]),
                    self.composite_head(f, ref),
                ]
            else:
                scores = [self.holistic_head(f), self.seen_head(f), self.pseudo_head(f),
                          self.composite_head(f, ref)]
            record[f"s{s}.residual"] = scores[3].detach().flatten()
            for i, sc in enumerate(scores):
                heads[i].append(sc)
        return [torch.cat(h, dim=1).mean(dim=1) for h in heads]


def deviation_loss(pred, target, prior):
    mean, std = prior
    dev = (pred - mean) / std
    return torch.mean((1 - target) * torch.abs(dev) + target * torch.clamp(5.0 - dev, min=0.0))


def build(dtype):
    torch.manual_seed(0)
    model = DRA().to(dtype)
    state = model.state_dict()
    for name, t in state.items():
        if name.endswith("num_batches_tracked"):
            continue
        t.copy_(golden_values(name, tuple(t.shape)).to(dtype))
    image = golden_values("input", (N_REF + len(LABELS), 3, SIZE, SIZE)).to(dtype)
    return model, state, image


def evaluate(model, image, label, prefix, out):
    model.eval()
    with torch.no_grad():
        rec = {}
        scores = model(image, label, rec)
    for k, v in rec.items():
        out[f"{prefix}.{k}"] = v
    for name, sc in zip(["normal", "seen", "pseudo", "residual"], scores):
        out[f"{prefix}.{name}"] = sc


def main(out_path):
    label = torch.tensor(LABELS)
    # float32, as the model runs: eval-mode scores.
    model, _, image = build(torch.float32)
    out = {"input_check": image.flatten()[:16].clone()}
    evaluate(model, image, label, "eval32", out)
    # float64 for everything else: the backward through BatchNorm over few values is
    # ill-conditioned enough that float32 rounding alone moves some gradients by ~1e-2, so the
    # exact comparison of the arithmetic is made in double precision on both sides.
    model, state, image = build(torch.float64)
    evaluate(model, image, label, "eval", out)

    model.train()
    rec = {}
    scores = model(image, label, rec)
    for k, v in rec.items():
        out[f"train.{k}"] = v
    names = ["normal", "seen", "pseudo", "residual"]
    for name, sc in zip(names, scores):
        out[f"train.{name}"] = sc.detach()
    t = label
    targets = [(t == 0), (t != 0)[t != 2], (t != 0)[t != 1], (t != 0)]
    targets = [x.to(torch.float64) for x in targets]
    gen = torch.Generator().manual_seed(1)
    priors = []
    losses = []
    for sc, tg in zip(scores, targets):
        r = torch.normal(mean=0.0, std=torch.full([5000], 1.0), generator=gen)
        prior = (torch.mean(r).item(), torch.std(r).item())
        priors.append(prior)
        losses.append(deviation_loss(sc, tg, prior))
    total = sum(losses)
    out["priors"] = torch.tensor(priors, dtype=torch.float64)
    for name, l in zip(names, losses):
        out[f"loss.{name}"] = l.detach().reshape(1)
    out["loss.total"] = total.detach().reshape(1)

    params = dict(model.named_parameters())
    opt = torch.optim.Adam(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    opt.zero_grad()
    total.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
    out["grad_norm"] = norm.detach().reshape(1).double()
    selection = [
        "feature_extractor.net.conv1.weight",
        "feature_extractor.net.bn1.weight",
        "feature_extractor.net.bn1.bias",
        "feature_extractor.net.layer1.0.conv1.weight",
        "feature_extractor.net.layer4.1.bn2.weight",
        "feature_extractor.net.layer4.1.bn2.bias",
        "holistic_head.fc1.weight",
        "holistic_head.fc2.weight",
        "holistic_head.fc2.bias",
        "seen_head.scoring.weight",
        "seen_head.scoring.bias",
        "pseudo_head.scoring.weight",
        "composite_head.conv.0.weight",
        "composite_head.conv.1.weight",
        "composite_head.scoring.weight",
    ]
    for name in selection:
        # Gradients after clipping, as the optimiser sees them.
        out[f"grad.{name}"] = params[name].grad.detach().flatten()[::SAMPLE_STRIDE].clone() \
            if params[name].numel() > 20000 else params[name].grad.detach().flatten().clone()
    for name in ["feature_extractor.net.bn1.running_mean", "feature_extractor.net.bn1.running_var",
                 "composite_head.conv.1.running_mean", "composite_head.conv.1.running_var"]:
        out[f"running.{name}"] = state[name].clone()
    opt.step()
    for name in selection:
        p = params[name].detach().flatten()
        out[f"after.{name}"] = (p[::SAMPLE_STRIDE] if p.numel() > 20000 else p).clone()
    # The lightweight backbone: torchvision's MobileNetV2 features, float64, eval and train mode.
    mbv2 = models.mobilenet_v2(weights=None).features.to(torch.float64)
    for name, t in mbv2.state_dict().items():
        if not name.endswith("num_batches_tracked"):
            t.copy_(golden_values("feature_extractor.net.features." + name, tuple(t.shape)).to(torch.float64))
    x = golden_values("mbv2.input", (3, 3, SIZE, SIZE)).to(torch.float64)
    mbv2.eval()
    with torch.no_grad():
        out["mbv2.eval"] = mbv2(x).flatten()
    mbv2.train()
    with torch.no_grad():
        out["mbv2.train"] = mbv2(x).flatten()
    save_file({k: v.contiguous() for k, v in out.items()}, out_path,
              metadata={"torch": torch.__version__, "size": str(SIZE), "n_ref": str(N_REF),
                        "labels": ",".join(map(str, LABELS)), "lr": str(LR),
                        "weight_decay": str(WEIGHT_DECAY), "clip": str(CLIP),
                        "sample_stride": str(SAMPLE_STRIDE)})
    print(f"wrote {out_path}: {len(out)} tensors; total loss {total.item():.6f}, grad norm {norm.item():.6f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "golden_dra.safetensors")
