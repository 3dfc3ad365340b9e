"""The PyTorch reference of generic-perceptual-loss (docs/api.md): the one place in the project
that builds the random-weight VGG in PyTorch and computes the loss.

Importers: reference/cases.py (the oracle of the parity tests), test/gpu/torch_ref.py (the oracle
of the GPU suite), bench/bench_torch.py and bench/gpu_torch.py (the benchmarks' PyTorch side).
They put this folder on sys.path by a path relative to their own file, then `import perceptual`.

Only torch (and numpy through Tensor.numpy, for the weights' digest); torchvision, where it loads,
only cross-checks VGG_CFGS. Written for torch 1.13 (Debian's python3-torch) up to torch 2.x: no API
newer than 1.13.

- resolve_options: a user's options with the defaults of docs/api.md filled in (taps, weights).
- build_network: the torchvision-style Sequential (module k is `features.{k}`), cut after the
  deepest tap, weights drawn as docs/api.md says (or given), frozen, in eval mode.
- features, perceptual_loss, input_grad: the taps' outputs, the loss, d loss / d input.
- apply_mask, segmentation_inputs: masks, and softmax / one-hot with an ignore index.
- instance_mask_loss: the loss of instanceMaskLoss, sigmoid and per-instance weights.
"""

import hashlib
import math

import torch
import torch.nn.functional as F

# torchvision's VGG configurations (torchvision/models/vgg.py, "A", "B", "D", "E"), for a PyTorch
# that has no torchvision it can load (pip's torch 2.13+cpu: the only torchvision 0.28 is a CUDA
# build; the GPU machine may have none, or one built for another torch). Where torchvision loads,
# the copy is checked against it on every import.
VGG_CFGS = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}
try:
    from torchvision.models.vgg import cfgs
except Exception:  # noqa: BLE001 - absent, or built for another torch (ImportError, RuntimeError, ...)
    cfgs = VGG_CFGS
else:
    assert all(cfgs[k] == v for k, v in VGG_CFGS.items()), "VGG_CFGS differs from torchvision's cfgs"

ARCHS = {"vgg11": cfgs["A"], "vgg13": cfgs["B"], "vgg16": cfgs["D"], "vgg19": cfgs["E"]}
CRITERIA = ("l1", "l2", "smooth_l1")
REDUCTIONS = ("mean", "sum", "none")
POOLS = ("max", "avg")
INITS = ("kaiming_normal", "kaiming_uniform", "xavier_normal", "xavier_uniform")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
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
# What spatialDims 3 changes in the defaults: the volume layout names, and the 3-D default arch
# (five convs of VGG's widths, a pool after each but the last; see docs/api.md).
DEFAULTS_3D = {"arch": [64, "M", 128, "M", 256, "M", 512, "M", 512], "layout": "ncdhw"}
LAYOUTS = {2: ("nchw", "nhwc"), 3: ("ncdhw", "ndhwc")}
# Conv and pool modules by the number of spatial dimensions (2: images, 3: volumes).
CONVS = {2: torch.nn.Conv2d, 3: torch.nn.Conv3d}
POOL_MODULES = {2: {"max": torch.nn.MaxPool2d, "avg": torch.nn.AvgPool2d}, 3: {"max": torch.nn.MaxPool3d, "avg": torch.nn.AvgPool3d}}


class OptionsError(ValueError):
    """Options, inputs or weights that docs/api.md does not allow."""


# ---------------------------------------------------------------------------- options and taps


def resolve_arch(arch):
    """A VGG name or a custom list of conv widths and 'M' -> the list."""
    if isinstance(arch, str):
        if arch not in ARCHS:
            raise OptionsError(f"unknown arch {arch!r}; allowed: {sorted(ARCHS)} or a list")
        return list(ARCHS[arch])
    if not isinstance(arch, list) or not arch:
        raise OptionsError(f"arch must be a VGG name or a non-empty list, got {arch!r}")
    for v in arch:
        if v != "M" and not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
            raise OptionsError(f"arch entries must be positive integers or 'M', got {v!r}")
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


def resolve_options(raw):
    """The defaults of docs/api.md filled into a user's options, independently of the package.

    Adds "taps" (every tap name -> module index) and "tapModules" (the module index of each of
    "layers", in order); "arch" becomes the list, "layerWeights" one float per layer.
    """
    if not isinstance(raw, dict):
        raise OptionsError("options must be an object")
    known = set(DEFAULTS) | {"inChannels", "layers", "layerWeights", "spatialDims"} | IGNORED_OPTIONS
    unknown = set(raw) - known
    if unknown:
        raise OptionsError(f"unknown options {sorted(unknown)}")
    dims = raw.get("spatialDims", 2)
    if dims not in LAYOUTS:
        raise OptionsError(f"spatialDims must be 2 or 3, got {dims!r}")
    defaults = {**DEFAULTS, **(DEFAULTS_3D if dims == 3 else {}), "spatialDims": dims}
    opts = {**defaults, **{k: v for k, v in raw.items() if k not in IGNORED_OPTIONS}}
    if "inChannels" not in opts:
        raise OptionsError("options.inChannels is required")
    if opts["dtype"] not in DTYPES:
        raise OptionsError(f"dtype {opts['dtype']!r} not supported by the reference; use {sorted(DTYPES)}")
    if opts["layout"] not in LAYOUTS[dims]:
        raise OptionsError(f"layout {opts['layout']!r} is not one of {LAYOUTS[dims]} (spatialDims {dims})")
    if opts["reduction"] not in REDUCTIONS:
        raise OptionsError(f"unknown reduction {opts['reduction']!r}")
    if opts["pool"] not in POOLS:
        raise OptionsError(f"unknown pool {opts['pool']!r}")
    if opts["criterion"] not in CRITERIA:
        raise OptionsError(f"unknown criterion {opts['criterion']!r}")
    opts["arch"] = resolve_arch(opts["arch"])
    # Default taps: the last ReLU of each block of the architecture.
    layers = opts["layers"] if "layers" in opts else default_layers(opts["arch"])
    if not isinstance(layers, list) or not layers:
        raise OptionsError(f"layers must be a non-empty list of tap names, got {layers!r}")
    taps = tap_table(opts["arch"])
    for name in layers:
        if name not in taps:
            raise OptionsError(f"unknown tap {name!r} for this arch; known: {sorted(taps, key=taps.get)}")
    # Default weights: 1 per tap; an object names some taps, the others keep 1.
    weights = opts.get("layerWeights", [1.0] * len(layers))
    if isinstance(weights, dict):
        stray = sorted(set(weights) - set(layers))
        if stray:
            raise OptionsError(f"layerWeights names {stray}, which are not among the layers {layers}")
        weights = [weights.get(name, 1.0) for name in layers]
    if len(weights) != len(layers):
        raise OptionsError(f"{len(weights)} layerWeights for {len(layers)} layers")
    opts["layers"], opts["layerWeights"], opts["taps"] = layers, [float(w) for w in weights], taps
    opts["tapModules"] = [taps[name] for name in layers]
    return opts


# ---------------------------------------------------------------------------- the network


def init_draw(init, fan_in, fan_out):
    """(method, parameter) of the weight draw: ('normal', std) or ('uniform', bound)."""
    if isinstance(init, dict):
        if set(init) != {"normal"}:
            raise OptionsError(f"init object must be {{'normal': std}}, got {init!r}")
        return "normal", float(init["normal"])
    if init == "kaiming_normal":
        return "normal", math.sqrt(2.0 / fan_in)
    if init == "kaiming_uniform":
        return "uniform", math.sqrt(6.0 / fan_in)
    if init == "xavier_normal":
        return "normal", math.sqrt(2.0 / (fan_in + fan_out))
    if init == "xavier_uniform":
        return "uniform", math.sqrt(6.0 / (fan_in + fan_out))
    raise OptionsError(f"unknown init {init!r}")


def build_network(arch, in_channels, last_k=None, *, init="kaiming_normal", seed=0, pool="max", spatial_dims=2,
                  state_dict=None, inplace_relu=False, device=None, dtype=None):
    """The torchvision-style Sequential of modules 0..last_k (all of `arch` for None), frozen, in eval mode.

    arch: a VGG name or a list of conv widths and 'M'. Every conv is 3x3 (3x3x3 for spatial_dims 3),
    padding 1, with bias, followed by a ReLU; 'M' a 2x2 max (or avg) pool with stride 2.
    Weights as docs/api.md says: drawn on the CPU in float32 from torch.Generator().manual_seed(seed),
    conv by conv in network order, weight only; biases 0. A `state_dict` ({"features.{k}.weight":
    tensor, ...}, every conv's weight and bias) replaces the draw. Then moved to device and dtype.
    inplace_relu: ReLU(inplace=True), as torchvision's VGG; only where no conv tap needs its
    pre-activation.
    """
    cfg = resolve_arch(arch)
    conv_cls, pool_cls = CONVS[spatial_dims], POOL_MODULES[spatial_dims][pool]
    if last_k is None:
        last_k = sum(2 if v != "M" else 1 for v in cfg) - 1
    gen = torch.Generator().manual_seed(seed)
    kernel = 3**spatial_dims
    modules, in_ch = [], in_channels
    for v in cfg:
        if len(modules) > last_k:  # cut: later convs would draw only after the kept ones
            break
        if v == "M":
            modules.append(pool_cls(2, 2))
            continue
        conv = conv_cls(in_ch, v, 3, padding=1)
        if state_dict is None:
            method, param = init_draw(init, in_ch * kernel, v * kernel)
            with torch.no_grad():
                if method == "normal":
                    conv.weight.normal_(0.0, param, generator=gen)
                else:
                    conv.weight.uniform_(-param, param, generator=gen)
                conv.bias.zero_()
        modules.append(conv)
        # Not in place by default: a conv tap keeps its pre-activation.
        modules.append(torch.nn.ReLU(inplace=inplace_relu))
        in_ch = v
    net = torch.nn.Sequential(*modules[: last_k + 1])
    if state_dict is not None:
        prefix = "features."
        stray = [name for name in state_dict if not name.startswith(prefix)]
        if stray:
            raise OptionsError(f"state_dict names must start with {prefix!r}, got {stray}")
        # strict: every conv's weight and bias, nothing else, in the shapes of this network.
        net.load_state_dict({name[len(prefix):]: t for name, t in state_dict.items()})
    net.requires_grad_(False)
    net.eval()
    if device is not None or dtype is not None:
        net = net.to(device=device, dtype=dtype)
    return net


def state_dict_names(net):
    """The names docs/api.md gives the weights: features.{k}.weight, features.{k}.bias."""
    return [f"features.{k}.{p}" for k, m in enumerate(net) if isinstance(m, tuple(CONVS.values())) for p in ("weight", "bias")]


def weights_sha256(net):
    """sha256 (hex) of the float32 little-endian bytes of the weights, in state_dict_names order."""
    digest = hashlib.sha256()
    for k, m in enumerate(net):
        if isinstance(m, tuple(CONVS.values())):
            for t in (m.weight, m.bias):
                digest.update(t.detach().cpu().numpy().astype("<f4").tobytes())
    return digest.hexdigest()


class TapNet(torch.nn.Module):
    """A network with its taps: forward(x) gives the outputs of the modules `taps` (indices, in
    that order). Its state_dict names are those of docs/api.md (features.{k}.*)."""

    def __init__(self, features, taps):
        super().__init__()
        self.features = features
        self.taps = list(taps)

    def forward(self, x):
        out = tap_outputs(self.features, x, self.taps)
        return [out[k] for k in self.taps]


# ---------------------------------------------------------------------------- the loss


def tap_outputs(net, x, taps):
    """Outputs of the modules at the given indices, keyed by index."""
    wanted, out = set(taps), {}
    for k, m in enumerate(net):
        x = m(x)
        if k in wanted:
            out[k] = x
    return out


def features(net, x, taps, autocast=None):
    """The outputs at `taps` (module indices), in that order.

    autocast "bfloat16": as a PyTorch user would run it under torch.autocast(device, bfloat16):
    float32 weights and inputs, bfloat16 convs; the features cast back to float32.
    """
    if autocast is None:
        out = tap_outputs(net, x, taps)
        return [out[k] for k in taps]
    if autocast != "bfloat16":
        raise OptionsError(f"unknown autocast {autocast!r}; allowed: 'bfloat16'")
    with torch.autocast(x.device.type, dtype=torch.bfloat16):
        out = tap_outputs(net, x, taps)
        return [out[k].float() for k in taps]


def criterion_fn(name):
    if name == "l2":
        return F.mse_loss
    if name == "l1":
        return F.l1_loss
    if name == "smooth_l1":
        return lambda a, b, reduction: F.smooth_l1_loss(a, b, reduction=reduction, beta=1.0)
    raise OptionsError(f"unknown criterion {name!r}; allowed: {list(CRITERIA)}")


def distance(crit, a, b, reduction):
    if reduction in ("mean", "sum"):
        return crit(a, b, reduction=reduction)
    if reduction != "none":
        raise OptionsError(f"unknown reduction {reduction!r}; allowed: {list(REDUCTIONS)}")
    # 'none': one value per sample, the mean over all non-batch elements of that sample.
    return crit(a, b, reduction="none").flatten(1).mean(dim=1)


def gram(f):
    """G(F) = F F^T / (C*H*W) per sample (C*D*H*W for a volume)."""
    m = f.flatten(2)
    return torch.bmm(m, m.transpose(1, 2)) / (m.shape[1] * m.shape[2])


def _scaled(weight, x):
    # A weight of 1 adds no operation: the same bits, and the same graph as a user's plain sum.
    return x if weight == 1 else weight * x


def perceptual_loss(pred_feats, target_feats, layer_weights=None, *, criterion="l2", reduction="mean",
                    feature_weight=1, style_weight=0):
    """featureWeight * sum_l w_l D(phi_l(pred), phi_l(target)) + styleWeight * sum_l w_l D(G(.), G(.)).

    The features are lists in the same (layers) order; layer_weights default to 1 each. A scalar,
    or one value per sample for reduction 'none'. The style term is skipped when style_weight is 0.
    """
    if layer_weights is None:
        layer_weights = [1.0] * len(pred_feats)
    if not len(pred_feats) == len(target_feats) == len(layer_weights):
        raise OptionsError(f"{len(pred_feats)} pred features, {len(target_feats)} target features, {len(layer_weights)} weights")
    crit = criterion_fn(criterion)
    perceptual = sum(_scaled(w, distance(crit, p, t, reduction)) for w, p, t in zip(layer_weights, pred_feats, target_feats))
    loss = _scaled(feature_weight, perceptual)
    if style_weight != 0:
        style = sum(
            _scaled(w, distance(crit, gram(p), gram(t), reduction)) for w, p, t in zip(layer_weights, pred_feats, target_feats)
        )
        loss = loss + _scaled(style_weight, style)
    return loss


def input_grad(loss, leaf):
    """d loss / d leaf by autograd; of the sum of the per-sample values for reduction 'none'."""
    (grad,) = torch.autograd.grad(loss if loss.dim() == 0 else loss.sum(), leaf)
    return grad


# ---------------------------------------------------------------------------- masks, segmentation


def apply_mask(x, mask):
    """x * mask, channels first: mask [N, 1, H, W], [N, H, W] (one value per pixel) or x's shape."""
    if mask.dim() == x.dim() - 1:
        mask = mask.unsqueeze(1)
    return x * mask.to(x.dtype)


def segmentation_inputs(logits, labels, ignore_index=255):
    """(pred, target) of the segmentation loss: softmax(logits) over channels and one_hot(labels),
    both zeroed where labels == ignore_index. logits channels first [N, C, H, W]; labels [N, H, W]."""
    c = logits.shape[1]
    labels = labels.long()
    valid = labels != ignore_index
    bad = labels[valid & ((labels < 0) | (labels >= c))]
    if bad.numel():
        raise OptionsError(f"label {int(bad[0])} is outside [0, {c}) and is not ignoreIndex {ignore_index}")
    # Ignored pixels get class 0 only so that one_hot accepts them; the mask zeroes them.
    onehot = F.one_hot(torch.where(valid, labels, torch.zeros_like(labels)), c)
    pred = apply_mask(torch.softmax(logits, dim=1), valid)
    target = apply_mask(onehot.movedim(-1, 1).to(logits.dtype), valid)
    return pred, target


def instance_mask_loss(net, taps, logits, masks, weights=None, *, layer_weights=None, criterion="l2", reduction="mean",
                       feature_weight=1, style_weight=0):
    """instanceMaskLoss: pred = sigmoid(logits) [M, 1, *spatial] against masks, instance i weighted by
    weights[i]: 'mean' gives sum_i w_i t_i / sum_i w_i (t_i its loss under 'none'), 'sum' gives
    sum_i w_i s_i (s_i its loss under 'sum'), 'none' the M values w_i t_i. Without weights, the
    perceptual loss of the whole batch. Each instance's loss is computed on its own, as the
    definition reads."""
    opts = dict(layer_weights=layer_weights, criterion=criterion, feature_weight=feature_weight, style_weight=style_weight)
    pred = torch.sigmoid(logits)
    if weights is None:
        return perceptual_loss(features(net, pred, taps), features(net, masks, taps), reduction=reduction, **opts)
    per_instance = []
    for i in range(pred.shape[0]):
        p, t = pred[i:i + 1], masks[i:i + 1]
        per_instance.append(perceptual_loss(features(net, p, taps), features(net, t, taps),
                                            reduction="sum" if reduction == "sum" else "mean", **opts))
    values = torch.stack(per_instance) * torch.tensor(weights, dtype=pred.dtype, device=pred.device)
    if reduction == "none":
        return values
    if reduction == "sum":
        return values.sum()
    return values.sum() / sum(weights)
