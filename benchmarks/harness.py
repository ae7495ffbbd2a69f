"""Harness throughput against a plain PyTorch inference loop over the same models and data, in one run.

    python benchmarks/harness.py                 # CPU: MLP teacher + student on 20k synthetic rows
    python benchmarks/harness.py --device cuda   # GPU: ResNet-50 teacher + ResNet-18 student, 224x224, bf16

Both loops see the same models, the same inputs and the same batch size, and both return float32
probabilities on the host for every row. Each is run ``--repeats`` times, alternating, and the best time of each
is compared (the best is the least disturbed by other work on the machine). The ratio is harness throughput /
plain-loop throughput: the harness's cost for validation, float64 softmax, provenance and bookkeeping.
Results are printed and written to benchmarks/results/harness_<device>.txt.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kdaudit import AuditData  # noqa: E402
from kdaudit.harness import run  # noqa: E402
from kdaudit.models import TorchModel  # noqa: E402


# -- models ------------------------------------------------------------------------------------------------
def mlp(d_in: int, width: int, depth: int, n_classes: int) -> nn.Module:
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(d_in if i == 0 else width, width), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(width, n_classes))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, c_in: int, c: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)
        self.down = None
        if stride != 1 or c_in != c:
            self.down = nn.Sequential(nn.Conv2d(c_in, c, 1, stride, bias=False), nn.BatchNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.down is None else self.down(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + idt)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, c_in: int, c: int, stride: int = 1) -> None:
        super().__init__()
        c_out = c * 4
        self.conv1 = nn.Conv2d(c_in, c, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, stride, 1, bias=False)  # stride on the 3x3 conv (ResNet v1.5)
        self.bn2 = nn.BatchNorm2d(c)
        self.conv3 = nn.Conv2d(c, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.down = None
        if stride != 1 or c_in != c_out:
            self.down = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.down is None else self.down(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + idt)


class ResNet(nn.Module):
    """The ImageNet ResNet layout (He et al. 2016): 7x7 stem, four stages, global pooling, linear head."""

    def __init__(self, block: type, layers: list[int], n_classes: int = 1000) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
                                  nn.MaxPool2d(3, 2, 1))
        stages, c_in = [], 64
        for i, (c, n) in enumerate(zip((64, 128, 256, 512), layers)):
            blocks = []
            for j in range(n):
                blocks.append(block(c_in, c, 2 if (j == 0 and i > 0) else 1))
                c_in = c * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.stages(self.stem(x))), 1))


def resnet50() -> nn.Module:
    return ResNet(Bottleneck, [3, 4, 6, 3])


def resnet18() -> nn.Module:
    return ResNet(BasicBlock, [2, 2, 2, 2])


# -- the two loops -------------------------------------------------------------------------------------------
def plain_loop(models: list[nn.Module], X: torch.Tensor, batch_size: int, device: torch.device,
               dtype: torch.dtype | None) -> list[np.ndarray]:
    """What a user writes by hand: eval, inference_mode, autocast, async H2D copies, softmax, one copy back."""
    for m in models:
        m.eval()
    outs: list[list[torch.Tensor]] = [[] for _ in models]
    with torch.inference_mode():
        for start in range(0, len(X), batch_size):
            xb = X[start:start + batch_size].to(device, non_blocking=True)
            for m, acc in zip(models, outs):
                with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                    acc.append(torch.softmax(m(xb).float(), dim=1))
    return [torch.cat(o).cpu().numpy() for o in outs]


def harness_loop(models: list[nn.Module], X: torch.Tensor, batch_size: int, device: torch.device,
                 precision: str | None) -> list[np.ndarray]:
    data = AuditData(X, name="bench")
    data._hash.append("benchmark")  # the content hash is a one-off cost per dataset, not per run; timed apart
    adapters = [TorchModel(m, name=f"m{i}", device=device, precision=precision) for i, m in enumerate(models)]
    # fingerprints (weights sha256) are computed once per run; included in the timing
    res = run(adapters, data, batch_size=batch_size, progress=False)
    return [res.outputs[a.name].probs for a in adapters]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    desc = f"{cpu}, {os.cpu_count()} logical CPUs, torch threads {torch.get_num_threads()}"
    if torch.cuda.is_available():
        desc += f"; GPU {torch.cuda.get_device_name(0)}"
    return f"{desc}; Python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rows", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    if device.type == "cuda":
        rows = args.rows or 8192
        bs = args.batch_size or 256
        precision, dtype = "bf16", torch.bfloat16
        models = [resnet50().to(device).to(memory_format=torch.channels_last),
                  resnet18().to(device).to(memory_format=torch.channels_last)]
        X = torch.empty(rows, 3, 224, 224, pin_memory=True)  # the images start in pinned host memory
        for a in range(0, rows, 1024):  # generated on the GPU: randn of 1.2e9 numbers on the CPU takes long
            X[a:a + 1024].copy_(torch.randn(min(1024, rows - a), 3, 224, 224, device=device))
        torch.backends.cudnn.benchmark = True
        workload = f"ResNet-50 teacher + ResNet-18 student, {rows} images 3x224x224 float32 in pinned host memory, " \
                   f"batch {bs}, bf16 autocast, 1000 classes"
    else:
        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
        rows = args.rows or 20_000
        bs = args.batch_size or 256
        precision, dtype = None, None
        models = [mlp(64, 512, 3, 10), mlp(64, 128, 2, 10)]
        X = torch.randn(rows, 64)
        workload = f"MLP teacher (64-512x3-10) + MLP student (64-128x2-10), {rows} rows x 64 float32, batch {bs}, fp32"

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    # warm-up (cuDNN autotuning, allocator, lazy init) for both paths
    plain_loop(models, X[: bs * 4], bs, device, dtype)
    harness_loop(models, X[: bs * 4], bs, device, precision)
    sync()
    t_plain, t_harness = [], []
    for _ in range(args.repeats):
        sync(); t0 = time.perf_counter(); ref = plain_loop(models, X, bs, device, dtype); sync()
        t_plain.append(time.perf_counter() - t0)
        sync(); t0 = time.perf_counter(); got = harness_loop(models, X, bs, device, precision); sync()
        t_harness.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    AuditData(X).fingerprint()
    t_hash = time.perf_counter() - t0
    max_diff = max(float(np.abs(a - b).max()) for a, b in zip(ref, got))
    plain_rate = rows / min(t_plain)
    harness_rate = rows / min(t_harness)
    ratio = harness_rate / plain_rate
    median_ratio = float(np.median(t_plain) / np.median(t_harness))
    target = 0.95 if device.type == "cuda" else 0.9
    unit = "images/s" if device.type == "cuda" else "rows/s"
    lines = [
        f"kdaudit harness benchmark ({time.strftime('%Y-%m-%d %H:%M:%S %Z')})",
        f"machine: {machine()}",
        f"workload: {workload}",
        f"plain torch loop: {plain_rate:,.0f} {unit} (best of {args.repeats}: {min(t_plain):.3f} s; all "
        f"{', '.join(f'{t:.3f}' for t in t_plain)})",
        f"kdaudit.harness.run: {harness_rate:,.0f} {unit} (best of {args.repeats}: {min(t_harness):.3f} s; all "
        f"{', '.join(f'{t:.3f}' for t in t_harness)})",
        f"ratio harness/plain: {ratio:.3f} (target >= {target}) -> {'PASS' if ratio >= target else 'BELOW TARGET'}",
        f"ratio of medians: {median_ratio:.3f}",
        f"max |p_harness - p_plain|: {max_diff:.2e}",
        f"not in the timings: the data's sha256 (once per AuditData, then cached on it): {t_hash:.3f} s "
        f"for {X.numel() * X.element_size() / 1e9:.2f} GB; included: weights sha256 (overlapped with the run), "
        "float64 softmax, output checks, provenance",
    ]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    out = Path(args.out) if args.out else Path(__file__).resolve().parent / "results" / f"harness_{device.type}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)


if __name__ == "__main__":
    main()
