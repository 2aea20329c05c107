"""A tiny PyTorch state dict (conv 4×3×3×3 + BatchNorm), saved with torch.save, to test reading
`.pth` files and the shape-mismatch error. Run by hand:

    python tools/golden/make_pth_fixture.py crates/dra-model/tests/fixtures/tiny_state_dict.pth
"""
import sys

import torch
import torch.nn as nn

torch.manual_seed(0)
model = nn.Sequential()
model.add_module("conv1", nn.Conv2d(3, 4, 3, bias=False))
model.add_module("bn1", nn.BatchNorm2d(4))
torch.save(model.state_dict(), sys.argv[1])
