#!/usr/bin/python3
"""The test oracle: runs the PyTorch reference (reference/perceptual.py) on the cases of the
parity tests (test/helpers/reference.ts writes them).

Usage: /usr/bin/python3 reference/cases.py CASES.json OUTDIR

Each case of CASES.json names its options, input shape and raw input files (paths relative to the
directory of CASES.json). For each case this writes OUTDIR/<id>.json, plus raw little-endian float64
files for the requested features and gradient. The tests compare the native implementation to these.
Torch is imported once for all cases because the import is slow.

A case: {"id", "options" (a user's options of docs/api.md), "shape" (in the options' layout),
"pred" (float32 file), "target" (float32 file) or "labels" (int32 [N, H, W] class ids: a
segmentation case, pred holds the logits) with "ignoreIndex" (default 255), optionally "mask"
(float32 [N, 1, H, W] or [N, H, W]: pred and target are multiplied by it before the network),
"autocast": "bfloat16", "stateDict" ({"features.{k}.weight": {"file", "shape"}, ...}: float32 files
of every kept conv's weight and bias, used instead of drawing them: loaded weights, biases not 0),
"instance" ({"masks": float32 file of pred's shape, "weights": [M floats] or absent}: an
instance-mask case, pred holds the mask logits), and "outputs" (of weights, features, loss, grad).
"route": "onednn" runs the case on PyTorch's oneDNN CPU conv route, which PyTorch picks by itself
for batches of 16 and more: every input is repeated ONEDNN_COPIES times along the batch, channels
last, and the results are those of the first copy (the loss and gradient scaled back exactly). At
batch 1 PyTorch's default route on the CPU is im2col + BLAS, which rounds differently.
Volumes: options {"spatialDims": 3}, a 5-D shape in 'ncdhw' or 'ndhwc', labels [N, D, H, W].
"""

import json
import os
import sys

sys.dont_write_bytecode = True  # no reference/__pycache__ left in the working tree

import numpy as np  # noqa: E402
import torch  # noqa: E402

# This script's folder is sys.path[0]: perceptual.py beside it is the reference.
import perceptual as ref  # noqa: E402

OUTPUTS = {"weights", "features", "loss", "grad"}
ROUTES = (None, "onednn")
# A power of two: the mean over the copies scales the gradient by exactly 1 / ONEDNN_COPIES.
ONEDNN_COPIES = 16


class CaseError(Exception):
    pass


def read_raw(base, name, dtype, count, what):
    path = os.path.join(base, name)
    data = np.fromfile(path, dtype=dtype)
    if data.size != count:
        raise CaseError(f"{what} file {path} holds {data.size} values, shape needs {count}")
    return torch.from_numpy(data)


def channels_last(layout):
    return layout in ("nhwc", "ndhwc")


def to_layout(t, layout):
    """Channels-first tensor -> the case's layout (nhwc gives [N, H, W, C], ndhwc [N, D, H, W, C])."""
    return t.permute(0, *range(2, t.dim()), 1) if channels_last(layout) else t


def channels_first(t, layout):
    """The case's layout -> channels first."""
    return t.permute(0, t.dim() - 1, *range(1, t.dim() - 1)) if channels_last(layout) else t


def write_f64(outdir, name, t):
    t.detach().to(torch.float64).contiguous().numpy().astype("<f8").tofile(os.path.join(outdir, name))


def run_case(case, base, outdir):
    cid = case["id"]
    opts = ref.resolve_options(case.get("options"))
    outputs = set(case.get("outputs", []))
    if not outputs <= OUTPUTS:
        raise CaseError(f"unknown outputs {sorted(outputs - OUTPUTS)}; allowed: {sorted(OUTPUTS)}")
    shape = case["shape"]
    dims = opts["spatialDims"]
    if len(shape) != dims + 2:
        raise CaseError(f"shape must have {dims + 2} dims for spatialDims {dims}, got {shape}")
    layout, dtype = opts["layout"], ref.DTYPES[opts["dtype"]]
    nchw = [shape[0], shape[-1], *shape[1:-1]] if channels_last(layout) else list(shape)
    n, c, spatial = nchw[0], nchw[1], nchw[2:]
    voxels = int(np.prod(spatial))
    if c != opts["inChannels"]:
        raise CaseError(f"input has {c} channels, inChannels is {opts['inChannels']}")

    tap_k = opts["tapModules"]
    # A given state dict (float32, as the package loads a file) replaces the draw.
    state_dict = None
    if "stateDict" in case:
        state_dict = {}
        for name, entry in case["stateDict"].items():
            count = int(np.prod(entry["shape"])) if entry["shape"] else 1
            state_dict[name] = read_raw(base, entry["file"], "<f4", count, name).reshape(entry["shape"])
    # Drawn in float32 on the CPU; the digest is of those weights, before the move to dtype.
    net = ref.build_network(opts["arch"], opts["inChannels"], max(tap_k), init=opts["init"], seed=opts["seed"], pool=opts["pool"],
                            spatial_dims=dims, state_dict=state_dict)
    result = {"id": cid, "stateDictNames": ref.state_dict_names(net)}
    if "weights" in outputs:
        result["weightsSha256"] = ref.weights_sha256(net)
    if not outputs & {"features", "loss", "grad"}:
        return result
    net = net.to(dtype)
    route = case.get("route")
    if route not in ROUTES:
        raise CaseError(f"unknown route {route!r}; allowed: 'onednn'")
    onednn = route == "onednn"
    if onednn and case.get("instance", {}).get("weights") is not None:
        raise CaseError("the onednn route takes no instance weights (one per sample of the batch given)")
    copies = ONEDNN_COPIES if onednn else 1
    memory_format = (torch.channels_last if dims == 2 else torch.channels_last_3d) if onednn else torch.contiguous_format
    net = net.to(memory_format=memory_format)

    def tiled(t):
        """The batch repeated `copies` times (a no-op on the default route)."""
        return t.repeat(copies, *[1] * (t.dim() - 1)) if copies > 1 else t

    def load(key):
        return tiled(read_raw(base, case[key], "<f4", n * c * voxels, key).reshape(shape))

    # The leaf that receives the gradient: pred, or the logits of a segmentation case.
    leaf = load("pred").to(dtype).requires_grad_(True)
    x = channels_first(leaf, layout).contiguous(memory_format=memory_format)
    if "labels" in case:
        labels = tiled(read_raw(base, case["labels"], "<i4", n * voxels, "labels").reshape(n, *spatial))
        pred_in, target_in = ref.segmentation_inputs(x, labels, case.get("ignoreIndex", 255))
    elif "instance" in case:
        pred_in = torch.sigmoid(x)
        target_in = channels_first(tiled(read_raw(base, case["instance"]["masks"], "<f4", n * c * voxels, "masks").reshape(shape)), layout).to(dtype)
    else:
        pred_in = x
        target_in = channels_first(load("target").to(dtype), layout)
    target_in = target_in.contiguous(memory_format=memory_format)
    if "mask" in case:
        mask_file = read_raw(base, case["mask"], "<f4", n * voxels, "mask")
        mask = tiled(mask_file.reshape(n, 1, *spatial))
        pred_in, target_in = ref.apply_mask(pred_in, mask), ref.apply_mask(target_in, mask)

    # "autocast": "bfloat16" runs the network as a PyTorch user would under
    # torch.autocast("cpu", torch.bfloat16): float32 weights and inputs, bf16 convs; the loss in
    # float32 from the features cast back.
    autocast = case.get("autocast")
    if autocast not in (None, "bfloat16"):
        raise CaseError(f"unknown autocast {autocast!r}; allowed: 'bfloat16'")
    if autocast and dtype != torch.float32:
        raise CaseError("autocast needs dtype float32")

    pred_feats = ref.features(net, pred_in, tap_k, autocast)
    if "features" in outputs:
        result["features"] = []
        for name, f in zip(opts["layers"], pred_feats):
            f = to_layout(f[:n], layout)
            fname = f"{cid}.feat.{name}.f64"
            write_f64(outdir, fname, f)
            result["features"].append({"name": name, "shape": list(f.shape), "file": fname})
    if not outputs & {"loss", "grad"}:
        return result

    loss_options = dict(criterion=opts["criterion"], reduction=opts["reduction"], feature_weight=opts["featureWeight"],
                        style_weight=opts["styleWeight"])
    if "instance" in case:
        if autocast:
            raise CaseError("an instance-mask case takes no autocast")
        loss = ref.instance_mask_loss(net, tap_k, x, target_in, case["instance"].get("weights"),
                                      layer_weights=opts["layerWeights"], **loss_options)
    else:
        with torch.no_grad():
            target_feats = ref.features(net, target_in, tap_k, autocast)
        loss = ref.perceptual_loss(pred_feats, target_feats, opts["layerWeights"], **loss_options)
    if "loss" in outputs:
        # Over the copies: 'mean' is their mean already, 'sum' their sum, 'none' one value each.
        result["loss"] = loss[:n].tolist() if opts["reduction"] == "none" else loss.item() / (copies if opts["reduction"] == "sum" else 1)
    if "grad" in outputs:
        # 'mean' divides each copy's gradient by the number of copies; ONEDNN_COPIES undoes it exactly.
        grad = ref.input_grad(loss, leaf)[:n] * (copies if opts["reduction"] == "mean" else 1)
        fname = f"{cid}.grad.f64"
        write_f64(outdir, fname, grad)
        result["grad"], result["gradShape"] = fname, list(grad.shape)
    return result


def main(argv):
    if len(argv) != 3:
        sys.exit("usage: cases.py CASES.json OUTDIR")
    cases_path, outdir = argv[1], argv[2]
    with open(cases_path) as f:
        cases = json.load(f)["cases"]
    base = os.path.dirname(os.path.abspath(cases_path))
    os.makedirs(outdir, exist_ok=True)
    # Same inputs must give the same bytes from run to run.
    torch.use_deterministic_algorithms(True)
    for case in cases:
        cid = case.get("id", "<no id>")
        try:
            result = run_case(case, base, outdir)
        except Exception as e:  # noqa: BLE001 - any failure is reported with the case id
            sys.exit(f"cases.py: case {cid}: {type(e).__name__}: {e}")
        with open(os.path.join(outdir, f"{cid}.json"), "w") as f:
            json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv)
