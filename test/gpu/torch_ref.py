"""PyTorch reference for the GPU suite: the loss and d loss / d pred of each case, on its device.

Usage: python3 test/gpu/torch_ref.py CASES.json  (written by test/gpu/common.mjs)
Each case carries the package's weights (stateDict), its resolved native options, the inputs as raw
float32 files and whether TF32 is allowed. Prints one JSON line [{"loss": ...}, ...] and writes each
gradient (float32, pred's layout) to the case's "out" file. The network and the loss are those of
reference/perceptual.py (two folders up, here and in the GPU pack); torch and numpy only.

A case's "spatialDims" 3 makes it a volume: [N, C, D, H, W] inputs (or channels last, "nhwc": true)
through the Conv3d network. A case with "instance" is an instance-mask loss: pred is the mask logits
[M, 1, ...], target the binary masks; the loss is taken of sigmoid(logits), each instance weighted
(instance.weights, or 1 each) as the SPEC's "Instance masks" says, and the gradient is with respect
to the logits, by autograd. Its answer also holds "values": the M values under reduction 'none'.
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
        loss, values = instance_loss(net, taps, p, t, o, terms, case["instance"].get("weights"))
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


def instance_loss(net, taps, logits, masks, o, terms, weights):
    """The instance-mask loss of the SPEC by autograd: pred = sigmoid(logits), target = masks; t_i
    instance i's loss under reduction 'none', s_i under 'sum'; 'mean': sum_i w_i t_i / sum_i w_i,
    'sum': sum_i w_i s_i, 'none': the vector w_i t_i (its sum is what the gradient is of).
    Returns the loss and the M values (w_i t_i, w_i s_i or w_i t_i)."""
    m = logits.shape[0]
    with torch.no_grad():
        ft = ref.features(net, masks, taps)
    fp = ref.features(net, torch.sigmoid(logits), taps)
    reduction = o["reduction"]
    if reduction == "sum":
        # s_i: the 'sum' loss of instance i alone (the network treats every sample on its own).
        per = torch.stack([ref.perceptual_loss([f[i : i + 1] for f in fp], [f[i : i + 1] for f in ft], o["tapWeights"], reduction="sum", **terms) for i in range(m)])
    else:
        per = ref.perceptual_loss(fp, ft, o["tapWeights"], reduction="none", **terms)
    w = torch.ones(m, dtype=per.dtype, device=per.device) if weights is None else torch.tensor(weights, dtype=per.dtype, device=per.device)
    weighted = w * per
    if reduction == "mean":
        loss = weighted.sum() / w.sum()
    elif reduction == "sum":
        loss = weighted.sum()
    else:
        loss = weighted
    return loss, [float(v) for v in weighted.detach().cpu()]


def main():
    with open(sys.argv[1]) as f:
        cases = json.load(f)
    print(json.dumps([run(c) for c in cases]))


if __name__ == "__main__":
    main()
