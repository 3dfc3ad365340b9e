#!/usr/bin/python3
"""PyTorch side of the CPU benchmark (bench/bench.js).

Usage (any python with torch: Debian's /usr/bin/python3, or a venv's pip torch):
  PYTHON bench/bench_torch.py serve
      One persistent process (torch is imported once) that reads one JSON command per line on
      stdin and answers one JSON line on stdout: {"ok": true, ...} or {"ok": false, "error": ...}.
      Commands:
        {"cmd": "hello"}                         versions and the out-of-the-box thread count
        {"cmd": "threads", "n": N}               torch.set_num_threads(N)
        {"cmd": "network", "spatialDims": 3, "arch": [...], "layers": [...]}
                                                 the network of 5-D shapes (volumes): the package's
                                                 resolved 3-D default, sent by the parent; Conv3d and
                                                 MaxPool3d from reference/perceptual.py
        {"cmd": "setup", "shape": [N,C,H,W] or [N,C,D,H,W], "variant": V}   build the loss (not
                                                 timed); replies {"error": ...} where V cannot run here
        {"cmd": "prepare", "shape": [...], "variant": V}  target features of one random target, once
        {"cmd": "step", "path": P, "shape": [...], "variant": V}
            one step on fresh random inputs made outside the timed region; replies {"ms": ...}.
            P: lossAndGrad | prepared | loss | features
            V: float32 | channels_last | bf16 (torch.autocast("cpu", torch.bfloat16)) |
               bf16_channels_last | compile (torch.compile of the float32 network) |
               compile_bf16_channels_last; for 5-D shapes channels_last_3d and
               bf16_channels_last_3d (torch.channels_last_3d) instead of the channels_last ones
        {"cmd": "check", "shape": [...], "pred": B64, "target": B64}
            loss and gradient of given float32 inputs (base64), to check both sides agree
        {"cmd": "quit"}
  PYTHON bench/bench_torch.py steps --shape NxCxHxW --threads N --steps S [--variant V] [--arch A --layers L]
      For bench/profile.js: one warm-up step, then S lossAndGrad steps, each announced on stdout
      by a line "profile-step I" (where oneDNN's verbose lines go too); the step times go to
      stderr as one line "profile-json: {...}".
  PYTHON bench/bench_torch.py memory --shape NxCxHxW --threads N [--variant V] [--arch A --layers L]
      In a fresh process: build, one warm-up step, then the peak resident memory of one
      lossAndGrad step (see measure_memory). Prints one JSON line.
  A 5-D shape NxCxDxHxW is a volume: --arch (comma-separated widths and M) and --layers
  (comma-separated taps) give its 3-D network, as the "network" command does.

The loss is written as a careful PyTorch user would write it: frozen weights, eval mode, the
network cut after the deepest tap, in-place ReLUs (as torchvision's VGG), the target under
torch.no_grad(), and torch.autograd.grad(loss, pred) so that no weight gradient is computed.
"""

import base64
import json
import re
import sys
import time
import traceback
from pathlib import Path

import torch

sys.dont_write_bytecode = True  # no __pycache__ left in the working tree
# reference/perceptual.py, one folder up: the same architecture, cut, seeded weights and loss as
# docs/api.md says (and as the parity tests use).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reference"))
import perceptual as ref  # noqa: E402

# Read before anything sets it: this is what a user gets without calling set_num_threads.
DEFAULT_THREADS = torch.get_num_threads()


VARIANTS = {
    # name: (channels_last, autocast bf16, torch.compile)
    "float32": (False, False, False),
    "channels_last": (True, False, False),
    "bf16": (False, True, False),
    "bf16_channels_last": (True, True, False),
    "compile": (False, False, True),
    "compile_bf16_channels_last": (True, True, True),
    # Volumes (5-D inputs): torch.channels_last_3d, the channels-last format of Conv3d.
    "channels_last_3d": (True, False, False),
    "bf16_channels_last_3d": (True, True, False),
}
VARIANTS_3D_ONLY = {"channels_last_3d", "bf16_channels_last_3d"}
VARIANTS_2D_ONLY = {"channels_last", "bf16_channels_last", "compile", "compile_bf16_channels_last"}

# The network of each number of spatial dimensions: None for 2-D (the package's defaults, vgg19 and
# its five taps, as reference.resolve_options fills them in); for 3-D the arch and taps the parent
# sends (the package's resolved 3-D default), so both sides build the same Conv3d network.
NETWORKS = {2: None, 3: None}


def set_network(spatial_dims, arch, layers):
    if spatial_dims != 3:
        raise ValueError(f"only the 3-D network is set by the parent; got spatialDims {spatial_dims!r}")
    arch = ["M" if v in ("M", 0) else int(v) for v in arch]
    NETWORKS[3] = {"arch": arch, "layers": list(layers)}


def spatial_dims_of(shape):
    if len(shape) not in (4, 5):
        raise ValueError(f"shape {shape} is neither [N, C, H, W] nor [N, C, D, H, W]")
    return len(shape) - 2


class Loss:
    """The default perceptual loss (vgg19, taps relu1_2 .. relu5_4, l2, mean) for inChannels, as
    `variant` runs it: channels-last memory, bf16 autocast, torch.compile, or plain float32. With
    spatial_dims 3, the 3-D network set by set_network (Conv3d, MaxPool3d), on 5-D inputs."""

    def __init__(self, in_channels, variant="float32", spatial_dims=2):
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; known: {sorted(VARIANTS)}")
        if spatial_dims == 3 and variant in VARIANTS_2D_ONLY:
            raise ValueError(f"variant {variant!r} is for 4-D inputs; for volumes use {sorted(VARIANTS_3D_ONLY)}, float32 or bf16")
        if spatial_dims == 2 and variant in VARIANTS_3D_ONLY:
            raise ValueError(f"variant {variant!r} is for 5-D inputs (volumes)")
        self.channels_last, self.bf16, compiled = VARIANTS[variant]
        if self.bf16 and not torch.backends.mkldnn.is_available():
            raise RuntimeError("bf16 autocast needs torch built with oneDNN")
        if compiled and not hasattr(torch, "compile"):
            raise RuntimeError(f"torch {torch.__version__} has no torch.compile")
        if spatial_dims == 3:
            if NETWORKS[3] is None:
                raise RuntimeError("no 3-D network: send {cmd: network, spatialDims: 3, arch, layers} (or pass --arch and --layers) first")
            opts = ref.resolve_options({"inChannels": in_channels, "arch": NETWORKS[3]["arch"], "layers": NETWORKS[3]["layers"]})
        else:
            opts = ref.resolve_options({"inChannels": in_channels})
        tap_k = opts["tapModules"]
        # build_network cuts after the deepest tap, freezes the weights and sets eval mode. Every
        # default tap is a ReLU output, so in-place ReLUs are safe (no pre-activation is needed)
        # and save one activation per conv, as in torchvision's own VGG.
        if not all(name.startswith("relu") for name in opts["layers"]):
            raise ValueError(f"in-place ReLUs need ReLU taps only; got {opts['layers']}")
        net = ref.build_network(opts["arch"], in_channels, max(tap_k), init=opts["init"], seed=opts["seed"], pool=opts["pool"],
                                spatial_dims=spatial_dims, inplace_relu=True)
        assert all(not p.requires_grad for p in net.parameters())
        self.memory_format = torch.channels_last_3d if spatial_dims == 3 else torch.channels_last
        if self.channels_last:
            net = net.to(memory_format=self.memory_format)
        self.net = net
        self.taps = tap_k
        self.prepared = {}  # shape -> target features, computed once
        self._features = torch.compile(self._run) if compiled else self._run

    def _run(self, x):
        return ref.features(self.net, x, self.taps)

    def features(self, x):
        if self.channels_last:
            x = x.contiguous(memory_format=self.memory_format)
        if not self.bf16:
            return self._features(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            # The loss in float32, as autocast itself computes mse_loss.
            return [f.float() for f in self._features(x)]

    @staticmethod
    def distance(pred_feats, target_feats):
        # The defaults (l2, mean, layerWeights and featureWeight 1): the reference's loss adds no
        # operation for a weight of 1, so this is a plain sum of per-tap MSEs, as a user writes it.
        return ref.perceptual_loss(pred_feats, target_feats)

    def loss_and_grad(self, pred, target):
        """pred must already require grad. Returns (loss value, d loss / d pred)."""
        with torch.no_grad():
            target_feats = self.features(target)
        loss = self.distance(self.features(pred), target_feats)
        (grad,) = torch.autograd.grad(loss, pred)
        return loss.item(), grad

    def loss_and_grad_prepared(self, pred, target_feats):
        loss = self.distance(self.features(pred), target_feats)
        (grad,) = torch.autograd.grad(loss, pred)
        return loss.item(), grad

    def loss_only(self, pred, target):
        with torch.no_grad():
            return self.distance(self.features(pred), self.features(target)).item()

    def features_only(self, x):
        with torch.no_grad():
            return self.features(x)


def timed(fn, *args):
    t0 = time.perf_counter_ns()
    result = fn(*args)
    t1 = time.perf_counter_ns()
    return (t1 - t0) / 1e6, result


def one_step(loss, path, shape):
    """One timed step of `path`; inputs are made (and marked) before the clock starts."""
    pred = torch.rand(shape)
    if path == "lossAndGrad":
        target = torch.rand(shape)
        pred.requires_grad_(True)
        ms, _ = timed(loss.loss_and_grad, pred, target)
    elif path == "prepared":
        pred.requires_grad_(True)
        ms, _ = timed(loss.loss_and_grad_prepared, pred, loss.prepared[tuple(shape)])
    elif path == "loss":
        target = torch.rand(shape)
        ms, _ = timed(loss.loss_only, pred, target)
    elif path == "features":
        ms, _ = timed(loss.features_only, pred)
    else:
        raise ValueError(f"unknown path {path!r}")
    return ms


def serve():
    out = sys.stdout
    # Anything a library prints must not corrupt the protocol: stdout now goes to stderr.
    sys.stdout = sys.stderr
    losses = {}  # (spatial dims, inChannels, variant) -> Loss

    def loss_key(shape, variant):
        return (spatial_dims_of(shape), shape[1], variant)

    def loss_for(shape, variant="float32"):
        key = loss_key(shape, variant)
        if key not in losses:
            losses[key] = Loss(shape[1], variant, key[0])
        return losses[key]

    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            req = json.loads(line)
            cmd = req.get("cmd")
            if cmd == "hello":
                try:
                    import torchvision

                    torchvision_version = torchvision.__version__
                except ImportError:
                    torchvision_version = None
                reply = {
                    "torch": torch.__version__,
                    "torchvision": torchvision_version,
                    "onednn": (re.search(r"oneDNN v([\d.]+)", torch.__config__.show()) or [None, None])[1],
                    "executable": sys.executable,
                    "python": sys.version.split()[0],
                    "defaultThreads": DEFAULT_THREADS,
                    "mkldnn": torch.backends.mkldnn.is_available(),
                    "parallelInfo": torch.__config__.parallel_info(),
                }
            elif cmd == "threads":
                torch.set_num_threads(int(req["n"]))
                reply = {"threads": torch.get_num_threads()}
            elif cmd == "network":
                set_network(int(req["spatialDims"]), req["arch"], req["layers"])
                for key in [k for k in losses if k[0] == 3]:
                    del losses[key]
                reply = {"spatialDims": 3, **NETWORKS[3]}
            elif cmd == "setup":
                # A variant that cannot run here (no torch.compile, a compiler error) is reported,
                # not fatal: one warm step shows it.
                shape, variant = req["shape"], req.get("variant", "float32")
                try:
                    one_step(loss_for(shape, variant), "lossAndGrad", shape)
                    reply = {}
                except Exception as e:  # noqa: BLE001 - reported to the parent
                    losses.pop(loss_key(shape, variant), None)
                    reply = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
            elif cmd == "prepare":
                shape = req["shape"]
                loss = loss_for(shape, req.get("variant", "float32"))
                with torch.no_grad():
                    loss.prepared[tuple(shape)] = loss.features(torch.rand(shape))
                reply = {}
            elif cmd == "step":
                shape = req["shape"]
                loss = loss_for(shape, req.get("variant", "float32"))
                reply = {"ms": one_step(loss, req["path"], shape), "threads": torch.get_num_threads()}
            elif cmd == "check":
                # Same inputs as the package: the loss and the gradient's sum of squares, so the
                # parent can confirm that both sides compute the same thing.
                shape = req["shape"]
                data = lambda key: torch.frombuffer(bytearray(base64.b64decode(req[key])), dtype=torch.float32).reshape(shape)
                pred = data("pred").requires_grad_(True)
                value, grad = loss_for(shape, req.get("variant", "float32")).loss_and_grad(pred, data("target"))
                reply = {"loss": value, "gradSumSq": float(grad.double().pow(2).sum())}
            elif cmd == "quit":
                out.write(json.dumps({"ok": True}) + "\n")
                out.flush()
                return
            else:
                raise ValueError(f"unknown command {cmd!r}")
            reply["ok"] = True
        except Exception as e:  # noqa: BLE001 - reported to the parent, which stops the run
            reply = {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
        out.write(json.dumps(reply) + "\n")
        out.flush()


def read_status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_hwm():
    """Resets VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs). True if it worked."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure_memory(shape, threads, variant="float32"):
    """Peak extra resident memory of one lossAndGrad step, in a fresh process.

    Load, build, one warm-up step (one-time costs: thread pool, oneDNN primitives, lazy init),
    fresh inputs, then VmRSS; VmHWM is reset to it, one step runs, and VmHWM is read again.
    """
    torch.set_num_threads(threads)
    loss = Loss(shape[1], variant, spatial_dims_of(shape))
    pred = torch.rand(shape).requires_grad_(True)
    loss.loss_and_grad(pred, torch.rand(shape))
    del pred
    pred = torch.rand(shape).requires_grad_(True)
    target = torch.rand(shape)
    rss_before = read_status_kib("VmRSS")
    reset = reset_hwm()
    hwm_at_reset = read_status_kib("VmHWM")
    value, grad = loss.loss_and_grad(pred, target)
    hwm_after = read_status_kib("VmHWM")
    rss_after = read_status_kib("VmRSS")
    return {
        "side": "torch",
        "variant": variant,
        "torch": torch.__version__,
        "shape": shape,
        "threads": torch.get_num_threads(),
        "rssBeforeKiB": rss_before,
        "hwmAtResetKiB": hwm_at_reset,
        "hwmAfterKiB": hwm_after,
        "rssAfterKiB": rss_after,
        "hwmReset": reset,
        "loss": value,
        "gradNumel": grad.numel(),
    }


def profile_steps(shape, threads, steps, variant="float32"):
    torch.set_num_threads(threads)
    loss = Loss(shape[1], variant, spatial_dims_of(shape))
    one_step(loss, "lossAndGrad", shape)
    times = []
    for i in range(steps):
        print(f"profile-step {i}", flush=True)
        times.append(one_step(loss, "lossAndGrad", shape))
    print(f"profile-step {steps}", flush=True)
    side = {"side": "torch", "torch": torch.__version__, "variant": variant, "threads": torch.get_num_threads()}
    print("profile-json: " + json.dumps({**side, "ms": times}), file=sys.stderr, flush=True)


def network_args(parser):
    parser.add_argument("--arch", help="3-D network (5-D shapes): comma-separated conv widths and M")
    parser.add_argument("--layers", help="3-D network (5-D shapes): comma-separated taps")


def shape_and_network(args):
    shape = [int(d) for d in args.shape.split("x")]
    if spatial_dims_of(shape) == 3:
        if not args.arch or not args.layers:
            raise SystemExit("a 5-D shape needs --arch and --layers (the package's 3-D network)")
        set_network(3, args.arch.split(","), args.layers.split(","))
    return shape


def main(argv):
    if len(argv) >= 2 and argv[1] == "steps":
        import argparse

        parser = argparse.ArgumentParser(prog="bench_torch.py steps")
        parser.add_argument("--shape", required=True)
        parser.add_argument("--threads", type=int, required=True)
        parser.add_argument("--steps", type=int, required=True)
        parser.add_argument("--variant", default="float32", choices=sorted(VARIANTS))
        network_args(parser)
        args = parser.parse_args(argv[2:])
        profile_steps(shape_and_network(args), args.threads, args.steps, args.variant)
        return
    if len(argv) >= 2 and argv[1] == "serve":
        serve()
        return
    if len(argv) >= 2 and argv[1] == "memory":
        import argparse

        parser = argparse.ArgumentParser(prog="bench_torch.py memory")
        parser.add_argument("--shape", required=True)
        parser.add_argument("--threads", type=int, required=True)
        parser.add_argument("--variant", default="float32", choices=sorted(VARIANTS))
        network_args(parser)
        args = parser.parse_args(argv[2:])
        shape = shape_and_network(args)
        print(json.dumps(measure_memory(shape, args.threads, args.variant)))
        return
    sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
