#!/usr/bin/python3
"""PyTorch reference for generic-perceptual-loss (see docs/api.md).

Usage: /usr/bin/python3 scripts/reference.py CASES.json OUTDIR

Each case of CASES.json names its options, input shape and raw input files (paths relative to the
directory of CASES.json). For each case this writes OUTDIR/<id>.json, plus raw little-endian float64
files for the requested features and gradient. The tests compare the native implementation to these.
Torch is imported once for all cases because the import is slow.
"""

import hashlib
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
# torchvision's VGG configurations (torchvision/models/vgg.py, "A", "B", "D", "E"), for a PyTorch
# that has no torchvision it can load (pip's torch 2.13+cpu: the only torchvision 0.28 is a CUDA
# build). Where torchvision loads, the copy is checked against it on every run.
VGG_CFGS = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}
try:
    from torchvision.models.vgg import cfgs
except (ImportError, RuntimeError):
    cfgs = VGG_CFGS
else:
    assert all(cfgs[k] == v for k, v in VGG_CFGS.items()), "VGG_CFGS differs from torchvision's cfgs"

ARCHS = {"vgg11": cfgs["A"], "vgg13": cfgs["B"], "vgg16": cfgs["D"], "vgg19": cfgs["E"]}
DTYPES = {"float32": torch.float32, "float64": torch.float64}
OUTPUTS = {"weights", "features", "loss", "grad"}
# Options of docs/api.md that do not change the result on the CPU: accepted and ignored, so that a
# user's options can be passed as they are.
IGNORED_OPTIONS = {"device", "checkFinite"}
DEFAULTS = {
    "arch": "vgg19",
    "criterion": "l2",
    "featureWeight": 1,
    "styleWeight": 0,
    "reduction": "mean",
    "init": "kaiming_normal",
    "seed": 0,
    "pool": "max",
    "dtype": "float32",
    "layout": "nchw",
}


class CaseError(Exception):
    pass


def resolve_arch(arch):
    if isinstance(arch, str):
        if arch not in ARCHS:
            raise CaseError(f"unknown arch {arch!r}; allowed: {sorted(ARCHS)} or a list")
        return list(ARCHS[arch])
    if not isinstance(arch, list) or not arch:
        raise CaseError(f"arch must be a VGG name or a non-empty list, got {arch!r}")
    for v in arch:
        if v != "M" and not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
            raise CaseError(f"arch entries must be positive integers or 'M', got {v!r}")
    return list(arch)


def tap_table(cfg):
    """Map every tap name to its module index k in the torchvision-style Sequential."""
    taps = {}
    k, block, conv = 0, 1, 0
    for v in cfg:
        if v == "M":
            taps[f"pool{block}"] = k
            k += 1
            block, conv = block + 1, 0
        else:
            conv += 1
            taps[f"conv{block}_{conv}"] = k
            taps[f"relu{block}_{conv}"] = k + 1
            k += 2
    return taps


def default_layers(cfg):
    """The last ReLU of each block; a trailing block without a closing 'M' counts too."""
    layers, block, conv = [], 1, 0
    for v in cfg:
        if v == "M":
            if conv:
                layers.append(f"relu{block}_{conv}")
            block, conv = block + 1, 0
        else:
            conv += 1
    if conv:
        layers.append(f"relu{block}_{conv}")
    return layers


def init_draw(init, fan_in, fan_out):
    """(method, parameter) of the weight draw: ('normal', std) or ('uniform', bound)."""
    if isinstance(init, dict):
        if set(init) != {"normal"}:
            raise CaseError(f"init object must be {{'normal': std}}, got {init!r}")
        return "normal", float(init["normal"])
    if init == "kaiming_normal":
        return "normal", math.sqrt(2.0 / fan_in)
    if init == "kaiming_uniform":
        return "uniform", math.sqrt(6.0 / fan_in)
    if init == "xavier_normal":
        return "normal", math.sqrt(2.0 / (fan_in + fan_out))
    if init == "xavier_uniform":
        return "uniform", math.sqrt(6.0 / (fan_in + fan_out))
    raise CaseError(f"unknown init {init!r}")


def nn_pool(pool):
    return torch.nn.MaxPool2d(2, 2) if pool == "max" else torch.nn.AvgPool2d(2, 2)


def build_network(opts, last_k):
    """Sequential of modules 0..last_k, conv weights drawn as docs/api.md says; returns (net, names, sha)."""
    cfg = opts["arch"]
    gen = torch.Generator().manual_seed(opts["seed"])
    modules, in_ch = [], opts["inChannels"]
    for v in cfg:
        if len(modules) > last_k:  # cut: later convs would draw only after the kept ones
            break
        if v == "M":
            modules.append(nn_pool(opts["pool"]))
            continue
        conv = torch.nn.Conv2d(in_ch, v, 3, padding=1)
        method, param = init_draw(opts["init"], in_ch * 9, v * 9)
        with torch.no_grad():
            if method == "normal":
                conv.weight.normal_(0.0, param, generator=gen)
            else:
                conv.weight.uniform_(-param, param, generator=gen)
            conv.bias.zero_()
        modules.append(conv)
        modules.append(torch.nn.ReLU())  # not in place: a conv tap keeps its pre-activation
        in_ch = v
    net = torch.nn.Sequential(*modules[: last_k + 1])

    names, digest = [], hashlib.sha256()
    for k, m in enumerate(net):
        if isinstance(m, torch.nn.Conv2d):
            for pname in ("weight", "bias"):
                names.append(f"features.{k}.{pname}")
                digest.update(getattr(m, pname).detach().numpy().astype("<f4").tobytes())
    net = net.to(DTYPES[opts["dtype"]])
    net.requires_grad_(False)
    net.eval()
    return net, names, digest.hexdigest()


def criterion_fn(name):
    if name == "l2":
        return F.mse_loss
    if name == "l1":
        return F.l1_loss
    return lambda a, b, reduction: F.smooth_l1_loss(a, b, reduction=reduction, beta=1.0)


def distance(crit, a, b, reduction):
    if reduction in ("mean", "sum"):
        return crit(a, b, reduction=reduction)
    # 'none': one value per sample, the mean over all non-batch elements of that sample.
    return crit(a, b, reduction="none").flatten(1).mean(dim=1)


def gram(f):
    n, c, h, w = f.shape
    m = f.reshape(n, c, h * w)
    return torch.bmm(m, m.transpose(1, 2)) / (c * h * w)


def run_features(net, x, taps):
    """Outputs of the modules at the given indices, keyed by index."""
    wanted, out = set(taps), {}
    for k, m in enumerate(net):
        x = m(x)
        if k in wanted:
            out[k] = x
    return out


def resolve_options(raw):
    """The defaults of docs/api.md filled into a user's options, independently of the package."""
    if not isinstance(raw, dict):
        raise CaseError("options must be an object")
    known = set(DEFAULTS) | {"inChannels", "layers", "layerWeights"} | IGNORED_OPTIONS
    unknown = set(raw) - known
    if unknown:
        raise CaseError(f"unknown options {sorted(unknown)}")
    opts = {**DEFAULTS, **{k: v for k, v in raw.items() if k not in IGNORED_OPTIONS}}
    if "inChannels" not in opts:
        raise CaseError("options.inChannels is required")
    if opts["dtype"] not in DTYPES:
        raise CaseError(f"dtype {opts['dtype']!r} not supported by the reference; use {sorted(DTYPES)}")
    if opts["layout"] not in ("nchw", "nhwc"):
        raise CaseError(f"unknown layout {opts['layout']!r}")
    if opts["reduction"] not in ("mean", "sum", "none"):
        raise CaseError(f"unknown reduction {opts['reduction']!r}")
    if opts["pool"] not in ("max", "avg"):
        raise CaseError(f"unknown pool {opts['pool']!r}")
    if opts["criterion"] not in ("l1", "l2", "smooth_l1"):
        raise CaseError(f"unknown criterion {opts['criterion']!r}")
    opts["arch"] = resolve_arch(opts["arch"])
    # Default taps: the last ReLU of each block of the architecture.
    layers = opts["layers"] if "layers" in opts else default_layers(opts["arch"])
    if not isinstance(layers, list) or not layers:
        raise CaseError(f"layers must be a non-empty list of tap names, got {layers!r}")
    taps = tap_table(opts["arch"])
    for name in layers:
        if name not in taps:
            raise CaseError(f"unknown tap {name!r} for this arch; known: {sorted(taps, key=taps.get)}")
    # Default weights: 1 per tap; an object names some taps, the others keep 1.
    weights = opts.get("layerWeights", [1.0] * len(layers))
    if isinstance(weights, dict):
        stray = sorted(set(weights) - set(layers))
        if stray:
            raise CaseError(f"layerWeights names {stray}, which are not among the layers {layers}")
        weights = [weights.get(name, 1.0) for name in layers]
    if len(weights) != len(layers):
        raise CaseError(f"{len(weights)} layerWeights for {len(layers)} layers")
    opts["layers"], opts["layerWeights"], opts["taps"] = layers, [float(w) for w in weights], taps
    return opts


def read_raw(base, name, dtype, count, what):
    path = os.path.join(base, name)
    data = np.fromfile(path, dtype=dtype)
    if data.size != count:
        raise CaseError(f"{what} file {path} holds {data.size} values, shape needs {count}")
    return torch.from_numpy(data)


def to_layout(t, layout):
    """NCHW tensor -> the case's layout (nhwc gives [N, H, W, C])."""
    return t.permute(0, 2, 3, 1) if layout == "nhwc" else t


def write_f64(outdir, name, t):
    t.detach().to(torch.float64).contiguous().numpy().astype("<f8").tofile(os.path.join(outdir, name))


def run_case(case, base, outdir):
    cid = case["id"]
    opts = resolve_options(case.get("options"))
    outputs = set(case.get("outputs", []))
    if not outputs <= OUTPUTS:
        raise CaseError(f"unknown outputs {sorted(outputs - OUTPUTS)}; allowed: {sorted(OUTPUTS)}")
    shape = case["shape"]
    if len(shape) != 4:
        raise CaseError(f"shape must have 4 dims, got {shape}")
    layout, dtype = opts["layout"], DTYPES[opts["dtype"]]
    nchw = [shape[0], shape[3], shape[1], shape[2]] if layout == "nhwc" else list(shape)
    n, c, h, w = nchw
    if c != opts["inChannels"]:
        raise CaseError(f"input has {c} channels, inChannels is {opts['inChannels']}")

    tap_k = [opts["taps"][name] for name in opts["layers"]]
    net, names, sha = build_network(opts, max(tap_k))
    result = {"id": cid, "stateDictNames": names}
    if "weights" in outputs:
        result["weightsSha256"] = sha
    if not outputs & {"features", "loss", "grad"}:
        return result

    def load(key):
        return read_raw(base, case[key], "<f4", n * c * h * w, key).reshape(shape)

    # The leaf that receives the gradient: pred, or the logits of a segmentation case.
    leaf = load("pred").to(dtype).requires_grad_(True)
    x = leaf.permute(0, 3, 1, 2) if layout == "nhwc" else leaf
    if "labels" in case:
        ignore = case.get("ignoreIndex", 255)
        labels = read_raw(base, case["labels"], "<i4", n * h * w, "labels").reshape(n, h, w).long()
        valid = labels != ignore
        bad = labels[valid & ((labels < 0) | (labels >= c))]
        if bad.numel():
            raise CaseError(f"label {int(bad[0])} is outside [0, {c}) and is not ignoreIndex {ignore}")
        # Ignored pixels get class 0 only so that one_hot accepts them; the mask zeroes them.
        onehot = F.one_hot(torch.where(valid, labels, torch.zeros_like(labels)), c)
        mask = valid.unsqueeze(1).to(dtype)
        pred_in = torch.softmax(x, dim=1) * mask
        target_in = onehot.permute(0, 3, 1, 2).to(dtype) * mask
    else:
        pred_in = x
        target_in = load("target").to(dtype)
        if layout == "nhwc":
            target_in = target_in.permute(0, 3, 1, 2)

    # "autocast": "bfloat16" runs the network as a PyTorch user would under
    # torch.autocast("cpu", torch.bfloat16): float32 weights and inputs, bf16 convs; the loss in
    # float32 from the features cast back.
    autocast = case.get("autocast")
    if autocast not in (None, "bfloat16"):
        raise CaseError(f"unknown autocast {autocast!r}; allowed: 'bfloat16'")
    if autocast and dtype != torch.float32:
        raise CaseError("autocast needs dtype float32")

    def features_of(x):
        if not autocast:
            return run_features(net, x, tap_k)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return {k: f.float() for k, f in run_features(net, x, tap_k).items()}

    pred_feats = features_of(pred_in)
    if "features" in outputs:
        result["features"] = []
        for name, k in zip(opts["layers"], tap_k):
            f = to_layout(pred_feats[k], layout)
            fname = f"{cid}.feat.{name}.f64"
            write_f64(outdir, fname, f)
            result["features"].append({"name": name, "shape": list(f.shape), "file": fname})
    if not outputs & {"loss", "grad"}:
        return result

    with torch.no_grad():
        target_feats = features_of(target_in)
    crit, red = criterion_fn(opts["criterion"]), opts["reduction"]
    perceptual = sum(
        wl * distance(crit, pred_feats[k], target_feats[k], red)
        for wl, k in zip(opts["layerWeights"], tap_k)
    )
    loss = opts["featureWeight"] * perceptual
    if opts["styleWeight"] != 0:
        style = sum(
            wl * distance(crit, gram(pred_feats[k]), gram(target_feats[k]), red)
            for wl, k in zip(opts["layerWeights"], tap_k)
        )
        loss = loss + opts["styleWeight"] * style

    if "loss" in outputs:
        result["loss"] = loss.tolist() if red == "none" else loss.item()
    if "grad" in outputs:
        (grad,) = torch.autograd.grad(loss.sum() if red == "none" else loss, leaf)
        fname = f"{cid}.grad.f64"
        write_f64(outdir, fname, grad)
        result["grad"], result["gradShape"] = fname, list(grad.shape)
    return result


def main(argv):
    if len(argv) != 3:
        sys.exit("usage: reference.py CASES.json OUTDIR")
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
            sys.exit(f"reference.py: case {cid}: {type(e).__name__}: {e}")
        with open(os.path.join(outdir, f"{cid}.json"), "w") as f:
            json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv)
