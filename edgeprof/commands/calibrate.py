"""`edgeprof calibrate`: measure achievable copy bandwidth and store it for the floor."""

from __future__ import annotations

import argparse
import json

HELP = "measure this device's copy bandwidth (read + write) and store it for --bandwidth calibrated"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", choices=("cuda", "cpu"), help="device to measure (default: the detected one)")
    p.add_argument("--size-mb", type=int, metavar="N",
                   help="buffer size in MiB (default: 1024 on a GPU, max(256, 4 x last-level cache) on the CPU)")
    p.add_argument("--repeats", type=int, metavar="N", help="timed copies; the median is stored (default 20 GPU, 10 CPU)")
    p.add_argument("--no-store", action="store_true", help="measure only; do not write the user cache")
    p.add_argument("--json", action="store_true", help="print the measurement as JSON")


def run(args: argparse.Namespace) -> int:
    from edgeprof.calibrate import calibrate
    from edgeprof.hardware_loader import calibration_path

    result = calibrate(args.device, args.size_mb, args.repeats, store=not args.no_store)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    frac = result.fraction_of_datasheet
    print(f"device    {result.device_name} [{result.spec_key}, {result.device}]")
    print(f"method    {result.method}; buffer {result.size_bytes / 2**20:.0f} MiB, {result.repeats} repeats")
    print(f"bandwidth {result.bytes_per_s / 1e9:,.1f} GB/s median (best {result.best_bytes_per_s / 1e9:,.1f}), "
          "bytes read + written")
    if frac is not None:
        print(f"          {frac:.2f} of the catalog's {result.datasheet_bytes_per_s / 1e9:,.1f} GB/s")
    if not args.no_store:
        print(f"stored in {calibration_path()} under {result.spec_key!r}; use `edgeprof floor --bandwidth calibrated`")
    return 0
