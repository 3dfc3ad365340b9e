"""PyTorch reference for the GPU suite: the loss and d loss / d pred of each case, on its device.

Usage: python3 test/gpu/torch_ref.py CASES.json  (written by test/gpu/common.mjs)
Each case carries the package's weights (stateDict), its resolved native options, the inputs as raw
float32 files and whether TF32 is allowed. Prints one JSON line [{"loss": ...}, ...] and writes each
gradient (float32, pred's layout) to the case's "out" file. The network and the loss are those of
reference/perceptual.py (two folders up, here and in the GPU pack); torch and numpy only.
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.dont_write_bytecode = True  # nothing written beside the reference
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "reference"))
import perceptual as ref  # noqa: E402


def run(case):
    device = torch.device(case["device"])
    torch.backends.cudnn.allow_tf32 = case["tf32"]
    torch.backends.cuda.matmul.allow_tf32 = case["tf32"]
    o = case["options"]
    weights = {t["name"]: torch.from_numpy(np.fromfile(t["file"], dtype=np.float32).reshape(t["shape"])) for t in case["weights"]}
    # The native options name their enums ("l2", "mean", "max"), as the addon's tables do; their
    # arch writes a pool as 0.
    arch = ["M" if v == 0 else v for v in o["arch"]]
    taps = o["tapModules"]
    net = ref.build_network(arch, o["inChannels"], max(taps), pool=o["pool"], state_dict=weights, device=device)
    shape = case["shape"]
    nhwc = case.get("nhwc", False)
    load = lambda f: torch.from_numpy(np.fromfile(f, dtype=np.float32).reshape(shape)).to(device)
    pred = load(case["pred"]).requires_grad_(True)
    target = load(case["target"])
    p = pred.permute(0, 3, 1, 2) if nhwc else pred
    t = target.permute(0, 3, 1, 2) if nhwc else target
    with torch.no_grad():
        ft = ref.features(net, t, taps)
    fp = ref.features(net, p, taps)
    loss = ref.perceptual_loss(
        fp,
        ft,
        o["tapWeights"],
        criterion=o["criterion"],
        reduction=o["reduction"],
        feature_weight=o["featureWeight"],
        style_weight=o["styleWeight"],
    )
    grad = ref.input_grad(loss, pred)
    grad.detach().float().contiguous().cpu().numpy().tofile(case["out"])
    # reduction none: the sum of the per-sample values, whose gradient this is.
    return {"loss": loss.detach().sum().item()}


def main():
    with open(sys.argv[1]) as f:
        cases = json.load(f)
    print(json.dumps([run(c) for c in cases]))


if __name__ == "__main__":
    main()
