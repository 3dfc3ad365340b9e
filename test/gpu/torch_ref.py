"""PyTorch reference for the GPU suite: the loss and d loss / d pred of each case, on its device.

Usage: python3 test/gpu/torch_ref.py CASES.json  (written by test/gpu/common.mjs)
Each case carries the package's weights (stateDict), its resolved native options, the inputs as raw
float32 files and whether TF32 is allowed. Prints one JSON line [{"loss": ...}, ...] and writes each
gradient (float32, pred's layout) to the case's "out" file. The network and the loss are those of
reference/perceptual.py (two folders up, here and in the GPU pack); torch and numpy only.

A case's "spatialDims" 3 makes it a volume: [N, C, D, H, W] inputs (or channels last, "nhwc": true)
through the Conv3d network. A case with "instance" is an instance-mask loss: pred is the mask logits
[M, 1, ...], target the binary masks; the loss is taken of sigmoid(logits), each instance weighted
(instance.weights, or 1 each) as the SPEC's "Instance masks" says (reference.instance_mask_loss), and
the gradient is with respect to the logits, by autograd. Under reduction 'none' its answer also holds
"values": the M values w_i t_i.
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
    shape = case["shape"]
    spatial_dims = case.get("spatialDims", 2)
    if len(shape) != spatial_dims + 2:
        raise ValueError(f"case {case['id']}: shape {shape} has not {spatial_dims} spatial axes")
    net = ref.build_network(arch, o["inChannels"], max(taps), pool=o["pool"], spatial_dims=spatial_dims, state_dict=weights, device=device)
    # Channels last ('nhwc', 'ndhwc'): the channels are the last axis; the network takes them first.
    channels_last = case.get("nhwc", False)
    load = lambda f: torch.from_numpy(np.fromfile(f, dtype=np.float32).reshape(shape)).to(device)
    pred = load(case["pred"]).requires_grad_(True)
    target = load(case["target"])
    p = pred.movedim(-1, 1) if channels_last else pred
    t = target.movedim(-1, 1) if channels_last else target
    terms = dict(criterion=o["criterion"], feature_weight=o["featureWeight"], style_weight=o["styleWeight"])
    values = None
    if "instance" in case:
        # instanceMaskLoss: sigmoid(logits) against the masks, each instance weighted.
        loss = ref.instance_mask_loss(net, taps, p, t, case["instance"].get("weights"), layer_weights=o["tapWeights"], reduction=o["reduction"], **terms)
        if o["reduction"] == "none":
            values = [float(v) for v in loss.detach().cpu()]
    else:
        with torch.no_grad():
            ft = ref.features(net, t, taps)
        fp = ref.features(net, p, taps)
        loss = ref.perceptual_loss(fp, ft, o["tapWeights"], reduction=o["reduction"], **terms)
    grad = ref.input_grad(loss, pred)
    grad.detach().float().contiguous().cpu().numpy().tofile(case["out"])
    # reduction none: the sum of the per-sample values, whose gradient this is.
    answer = {"loss": loss.detach().sum().item()}
    if values is not None:
        answer["values"] = values
    return answer


def main():
    with open(sys.argv[1]) as f:
        cases = json.load(f)
    print(json.dumps([run(c) for c in cases]))


if __name__ == "__main__":
    main()
