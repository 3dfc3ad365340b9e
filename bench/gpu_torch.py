"""The PyTorch side of the GPU benchmark (bench/gpu-bench.mjs runs it in the same suite run).

Usage: python3 bench/gpu_torch.py --mode gpu|cpu --grid 16x3x256x256,... --warmup N --steps N
       --out FILE [--compile-budget SECONDS]
       [--grid3d 2x1x64x64x64,... --arch3d 64,M,128,... --layers3d relu1_1,... --warmup3d N --steps3d N]

A step is the loss and d loss / d pred of vgg19 with five taps (relu1_2 ... relu5_4), l2, mean,
random frozen weights, the network cut after the deepest tap. Two users:
  typical: float32, NCHW, eval(), target under torch.no_grad(), torch.autograd.grad(loss, pred);
  expert:  the same under bfloat16 autocast (loss in float32), channels-last model and inputs,
           cudnn.benchmark, and torch.compile of the network when it works here (within the budget,
           which counts from the first compile: every eager row is measured before any compile).
The JSON is written after every row ("complete": false until the end), so a run cut short keeps
what it measured.
Every step gets fresh random inputs (drawn before its timer starts); CUDA events time it; the
median of `steps` timed steps after `warmup` is reported, with the peak memory above the resident
model and inputs. Also measures the card's dense bfloat16 matmul rate, the yardstick for "% of peak".

Volumes (--grid3d, [N, C, D, H, W]): the package's default 3-D network, whose arch and taps the
caller passes (--arch3d, --layers3d), as Conv3d and MaxPool3d from reference/perceptual.py; typical
as above, expert with channels_last_3d; torch.compile is not tried there (the suite's time budget).
"""
import argparse
import json
import math
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

sys.dont_write_bytecode = True  # nothing written beside the reference
# reference/perceptual.py: one folder up, here and in the GPU pack (scripts/gpu-pack.js).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reference"))
import perceptual as ref  # noqa: E402

VGG19 = ref.ARCHS["vgg19"]
# The default taps relu1_2, relu2_2, relu3_4, relu4_4, relu5_4: modules 3, 8, 17, 26, 35 of
# torchvision's Sequential.
TAPS = ref.resolve_options({"inChannels": 3})["tapModules"]


# The 3-D network (--arch3d, --layers3d): {"arch": [...], "taps": [module indices]}.
NET3D = {}


def taps_net(in_channels, spatial_dims=2):
    """vgg19 cut after relu5_4, seeded weights (seed 0, kaiming_normal), frozen, eval mode, in-place
    ReLUs as torchvision's VGG: the reference's network, with its taps. For volumes, NET3D's arch
    and taps in Conv3d."""
    if spatial_dims == 3:
        arch, taps = NET3D["arch"], NET3D["taps"]
    else:
        arch, taps = VGG19, TAPS
    return ref.TapNet(ref.build_network(arch, in_channels, max(taps), spatial_dims=spatial_dims, inplace_relu=True), taps)


def conv_flops(shape):
    """3 x the forward FLOPs of the convs up to the deepest tap: 2*Cin*Cout*9*H*W*N each (27*D*H*W
    for volumes)."""
    n, c, *spatial = shape
    arch, taps = (NET3D["arch"], NET3D["taps"]) if len(spatial) == 3 else (VGG19, TAPS)
    kernel = 3 ** len(spatial)
    flops, k = 0, 0
    for v in arch:
        if k > max(taps):
            break
        if v == "M":
            spatial = [s // 2 for s in spatial]
            k += 1
            continue
        flops += 2 * c * v * kernel * math.prod(spatial) * n
        c = v
        k += 2
    return 3 * flops  # forward on pred, forward on target, the input-gradient backward


class Timer:
    def __init__(self, device):
        self.cuda = device.type == "cuda"

    def time(self, fn):
        if self.cuda:
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end)
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3


def measure(device, shape, expert, compiled, warmup, steps):
    torch.backends.cudnn.benchmark = expert
    volumes = len(shape) == 5
    net = taps_net(shape[1], 3 if volumes else 2).to(device)
    fmt = (torch.channels_last_3d if volumes else torch.channels_last) if expert else torch.contiguous_format
    if expert:
        net = net.to(memory_format=fmt)
    model = torch.compile(net) if compiled else net
    dtype = torch.bfloat16
    autocast = device.type == "cuda" and expert

    def step(pred, target):
        with torch.autocast(device_type=device.type, dtype=dtype, enabled=autocast):
            with torch.no_grad():
                ft = model(target)
            fp = model(pred)
            # l2, mean, every tap weighted 1: a plain sum of per-tap MSEs, as a user writes it.
            loss = ref.perceptual_loss([a.float() for a in fp], [b.float() for b in ft])
        (grad,) = torch.autograd.grad(loss, pred)
        return loss, grad

    def inputs():
        pred = torch.randn(shape, device=device).contiguous(memory_format=fmt).requires_grad_(True)
        target = torch.randn(shape, device=device).contiguous(memory_format=fmt)
        return pred, target

    timer = Timer(device)
    t0 = time.perf_counter()
    first = None
    for i in range(warmup):
        pred, target = inputs()
        ms = timer.time(lambda: step(pred, target))
        if i == 0:
            first = ms
    warm_s = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    times = []
    loss = None
    for _ in range(steps):
        pred, target = inputs()
        out = {}
        times.append(timer.time(lambda: out.update(r=step(pred, target))))
        loss = float(out["r"][0])
        del out, pred, target
    peak = (torch.cuda.max_memory_allocated() - base) if device.type == "cuda" else None
    times.sort()
    return {
        "median_ms": statistics.median(times),
        "p10_ms": times[len(times) // 10],
        "p90_ms": times[(len(times) * 9) // 10],
        "first_step_ms": first,
        "warmup_s": warm_s,
        "peak_bytes": peak,
        "loss": loss,
        "flops": conv_flops(shape),
    }


def matmul_rate(device):
    if device.type != "cuda":
        return None
    n = 8192
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(10):
        a @ b
    timer = Timer(device)
    times = sorted(timer.time(lambda: [a @ b for _ in range(10)]) / 10 for _ in range(10))
    return {"n": n, "median_ms": statistics.median(times), "tflops": 2 * n**3 / (statistics.median(times) * 1e-3) / 1e12}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", default="gpu")
    ap.add_argument("--grid", required=True)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--out", required=True)
    ap.add_argument("--compile-budget", type=float, default=150)
    ap.add_argument("--grid3d", default="", help="volumes NxCxDxHxW,...")
    ap.add_argument("--arch3d", help="the 3-D arch: conv widths and M, comma-separated")
    ap.add_argument("--layers3d", help="the 3-D taps, comma-separated")
    ap.add_argument("--warmup3d", type=int, default=3)
    ap.add_argument("--steps3d", type=int, default=10)
    args = ap.parse_args()
    grid3d = [[int(d) for d in s.split("x")] for s in args.grid3d.split(",") if s]
    if grid3d:
        if not args.arch3d or not args.layers3d:
            ap.error("--grid3d needs --arch3d and --layers3d (the package's 3-D network)")
        arch = ["M" if v == "M" else int(v) for v in args.arch3d.split(",")]
        opts = ref.resolve_options({"inChannels": 1, "arch": arch, "layers": args.layers3d.split(",")})
        NET3D.update(arch=arch, layers=opts["layers"], taps=opts["tapModules"])
    device = torch.device("cuda:0" if args.mode == "gpu" else "cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # PyTorch's defaults
        torch.backends.cudnn.allow_tf32 = True
    grid = [[int(d) for d in s.split("x")] for s in args.grid.split(",")]
    result = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "bf16_matmul": matmul_rate(device),
        "shapes": {},
        "network3d": {k: NET3D[k] for k in ("arch", "layers")} if grid3d else None,
    }
    result["complete"] = False

    def save():
        # After every row: a run cut short (the caller's timeout) keeps what it measured.
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)

    def release():
        if device.type == "cuda":
            torch.cuda.empty_cache()

    save()
    # Eager first, every row (the volumes too), then torch.compile within its budget: a slow
    # compile cannot cost the eager figures.
    for shape in grid:
        key = "x".join(map(str, shape))
        row = {"typical": measure(device, shape, False, False, args.warmup, args.steps)}
        row["expert_eager"] = measure(device, shape, True, False, args.warmup, args.steps)
        row["expert_compiled"] = {"skipped": "not reached"}
        row["expert"] = {**row["expert_eager"], "which": "eager"}
        result["shapes"][key] = row
        release()
        save()
    for shape in grid3d:
        key = "x".join(map(str, shape))
        row = {
            "typical": measure(device, shape, False, False, args.warmup3d, args.steps3d),
            "expert_eager": measure(device, shape, True, False, args.warmup3d, args.steps3d),
            "expert_compiled": {"skipped": "not tried for volumes: the suite's time budget"},
        }
        row["expert"] = {**row["expert_eager"], "which": "eager"}
        result["shapes"][key] = row
        release()
        save()
    budget_end = time.perf_counter() + args.compile_budget
    can_compile = hasattr(torch, "compile")
    for shape in grid:
        row = result["shapes"]["x".join(map(str, shape))]
        if not can_compile:
            row["expert_compiled"] = {"skipped": "torch.compile is not in this torch"}
        elif time.perf_counter() > budget_end:
            row["expert_compiled"] = {"skipped": f"past the {args.compile_budget:.0f} s compile budget"}
        else:
            try:
                row["expert_compiled"] = measure(device, shape, True, True, args.warmup, args.steps)
            except Exception as e:  # noqa: BLE001 - any failure of torch.compile is recorded, not fatal
                row["expert_compiled"] = {"skipped": f"torch.compile failed: {type(e).__name__}: {e}"[:2000], "trace": traceback.format_exc()[-4000:]}
        best = [r for r in (row["expert_eager"], row["expert_compiled"]) if "median_ms" in r]
        row["expert"] = min(best, key=lambda r: r["median_ms"])
        row["expert"] = {**row["expert"], "which": "compiled" if row["expert"] is row["expert_compiled"] else "eager"}
        release()
        save()
    result["complete"] = True
    save()


if __name__ == "__main__":
    main()
