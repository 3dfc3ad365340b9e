"""PyTorch reference for the GPU suite: the loss and d loss / d pred of each case, on its device.

Usage: python3 test/gpu/torch_ref.py CASES.json  (written by test/gpu/common.mjs)
Each case carries the package's weights (stateDict), its resolved native options, the inputs as raw
float32 files and whether TF32 is allowed. Prints one JSON line [{"loss": ...}, ...] and writes each
gradient (float32, pred's layout) to the case's "out" file. Self-contained: torch and numpy only.
"""
import json
import sys

import numpy as np
import torch
import torch.nn.functional as F


def distance(criterion, reduction, a, b):
    if criterion == "l2":
        d = F.mse_loss(a, b, reduction="none")
    elif criterion == "l1":
        d = F.l1_loss(a, b, reduction="none")
    else:
        d = F.smooth_l1_loss(a, b, reduction="none", beta=1.0)
    if reduction == "mean":
        return d.mean()
    if reduction == "sum":
        return d.sum()
    return d.reshape(d.shape[0], -1).mean(1).sum()


def gram(f):
    n, c, h, w = f.shape
    flat = f.reshape(n, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)


def taps(x, convs, o):
    out = {}
    h = x
    conv = 0
    k = 0
    last = max(o["tapModules"])
    for width in o["arch"]:
        if k > last:
            break
        if width == 0:
            h = F.max_pool2d(h, 2, 2) if o["pool"] == "max" else F.avg_pool2d(h, 2, 2)
            out[k] = h
            k += 1
        else:
            w, b = convs[conv]
            conv += 1
            h = F.conv2d(h, w, b, padding=1)
            out[k] = h
            h = F.relu(h)
            out[k + 1] = h
            k += 2
    return [out[m] for m in o["tapModules"]]


def run(case):
    device = torch.device(case["device"])
    torch.backends.cudnn.allow_tf32 = case["tf32"]
    torch.backends.cuda.matmul.allow_tf32 = case["tf32"]
    o = case["options"]
    w = {t["name"]: torch.from_numpy(np.fromfile(t["file"], dtype=np.float32).reshape(t["shape"])).to(device) for t in case["weights"]}
    names = [t["name"] for t in case["weights"]]
    convs = [(w[names[2 * i]], w[names[2 * i + 1]]) for i in range(len(names) // 2)]
    shape = case["shape"]
    nhwc = case.get("nhwc", False)
    load = lambda f: torch.from_numpy(np.fromfile(f, dtype=np.float32).reshape(shape)).to(device)
    pred = load(case["pred"]).requires_grad_(True)
    target = load(case["target"])
    p = pred.permute(0, 3, 1, 2) if nhwc else pred
    t = target.permute(0, 3, 1, 2) if nhwc else target
    # The native options name their enums ("l2", "mean", "max"), as the addon's tables do.
    criterion = o["criterion"]
    reduction = o["reduction"]
    with torch.no_grad():
        ft = taps(t, convs, o)
    fp = taps(p, convs, o)
    loss = 0
    for weight, a, b in zip(o["tapWeights"], fp, ft):
        loss = loss + o["featureWeight"] * weight * distance(criterion, reduction, a, b)
        if o["styleWeight"] > 0:
            loss = loss + o["styleWeight"] * weight * distance(criterion, reduction, gram(a), gram(b))
    (grad,) = torch.autograd.grad(loss, pred)
    grad.detach().float().contiguous().cpu().numpy().tofile(case["out"])
    return {"loss": float(loss)}


def main():
    cases = json.load(open(sys.argv[1]))
    print(json.dumps([run(c) for c in cases]))


if __name__ == "__main__":
    main()
