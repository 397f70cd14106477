"""Noise Flow for any camera: the per-effect table and the zero-shot table on the darktable camera zoo.

Runs :func:`visionflows.experiments.any_camera.effects_experiment` (five zoo cameras of five makers and formats,
ISO 800 and 3200, one simulated data set per sensor-physics effect) and
:func:`~visionflows.experiments.any_camera.zero_shot_experiment` (held out: 8 Fujifilm cameras; 8 small-sensor
cameras) and :func:`~visionflows.experiments.any_camera.adaptation_experiment` (a new camera from k = 1, 4, 16
images or dark + flat frames; the released Noise Flow gains a sixth camera), prints markdown tables and writes
``results/any_camera.json``. Every flow trains for ``--seconds`` of
wall clock on one thread (2-core machines: run nothing else at the same time).

usage: python benchmarks/bench_any_camera.py [--what effects,zero-shot,adapt] [--seconds 60] [--profiles PATH]
       [--figure docs/images/adaptation_nll_vs_k.png]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from _common import RESULTS, machine  # noqa: E402
from visionflows.cameras.darktable import load_darktable_profiles  # noqa: E402
from visionflows.cameras.physics import EFFECTS, physics_from_names  # noqa: E402
from visionflows.experiments.any_camera import (  # noqa: E402
    adaptation_experiment,
    effects_experiment,
    holdout_cameras,
    plot_adaptation,
    zero_shot_experiment,
)
from visionflows.io import atomic_write_text  # noqa: E402

EFFECT_CAMERAS = ("Canon EOS 5D Mark III", "Nikon D850", "Fujifilm X-T2", "Olympus E-M1", "Sony DSC-RX100M3")
EFFECT_ISOS = (800, 3200)
ZERO_SHOT_ISOS = (800, 3200)
ADAPT_CAMERA, ADAPT_ISO = "Sony ILCE-7M3", 3200
OFFICIAL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "anchors",
                        "noiseflow_official")


def _table(models: dict, floor: float | None = None) -> str:
    rows = [f"| {name} | {m['nll']:.4f} | {m['kl']:.4f} |" for name, m in models.items()]
    if floor is not None:
        rows.append(f"| simulator's own density (floor) | {floor:.4f} | — |")
    return "\n".join(["| model | NLL (nats/dim) | KL |", "|---|---|---|", *rows])


def _spread(names: list[str], k: int) -> list[str]:
    if len(names) <= k:
        return names
    step = len(names) / k
    return [names[int(i * step)] for i in range(k)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--what", default="effects,zero-shot,adapt")
    ap.add_argument("--official", default=OFFICIAL, help="the official checkpoint folder (adaptation)")
    ap.add_argument("--figure", default=None, help="PNG of NLL vs k (adaptation)")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--profiles", default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(RESULTS / "any_camera.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    zoo = load_darktable_profiles(args.profiles)
    what = {w.strip() for w in args.what.split(",")}
    result: dict = {"machine": machine(), "profiles": str(zoo.path), "cameras": len(zoo),
                    "profiles_count": zoo.n_profiles, "seconds_per_flow": args.seconds}
    t0 = time.perf_counter()
    if "effects" in what:
        pairs = [(c, i) for c in EFFECT_CAMERAS for i in EFFECT_ISOS]
        effects = {**EFFECTS, "all": physics_from_names("all")}
        rows = effects_experiment(zoo, pairs, effects, seconds=args.seconds, seed=args.seed)
        result["effects"] = {"cameras": EFFECT_CAMERAS, "isos": EFFECT_ISOS, "rows": rows}
        for r in rows:
            print(f"\n### {r['effect']} ({r['physics']})\n\n{_table(r['models'], r['floor'])}", flush=True)
    if "zero-shot" in what:
        result["zero_shot"] = []
        for by, value in (("maker", "fujifilm"), ("format", "small")):
            held, rest = holdout_cameras(zoo, by, value)
            held = _spread([n for n in held if all(i in zoo.camera(n).isos for i in ZERO_SHOT_ISOS)], 8)
            res = zero_shot_experiment(zoo, held, rest, physics_from_names("all"), isos=ZERO_SHOT_ISOS,
                                       n_train=64, n_test=32, seconds=args.seconds, seed=args.seed)
            res.update({"by": by, "value": value})
            result["zero_shot"].append(res)
            print(f"\n### zero-shot, held out {by} = {value}: {', '.join(held)}\n\n{_table(res['models'])}",
                  flush=True)
    if "adapt" in what:
        from visionflows.noise.official import load_official

        official = load_official(args.official).eval()
        rest = [c.name for c in zoo if c.name != ADAPT_CAMERA]
        res = adaptation_experiment(zoo, ADAPT_CAMERA, ADAPT_ISO, rest, physics_from_names("all"), official,
                                    seconds=args.seconds, seed=args.seed)
        result["adaptation"] = res
        print(f"\n### adaptation to {ADAPT_CAMERA} at ISO {ADAPT_ISO} (held-out NLL, nats/dim)\n")
        names = list(res["after"][str(res["ks"][0])])
        print("| model | " + " | ".join(f"k = {k}" for k in res["ks"]) + " |")
        print("|---|" + "---|" * len(res["ks"]))
        for name in names:
            print(f"| {name} | " + " | ".join(f"{res['after'][str(k)][name]:.4f}" for k in res["ks"]) + " |")
        for name, v in {**res["before"], **res["reference"]}.items():
            print(f"| {name} (no adaptation) | {v:.4f} |" + " |" * (len(res["ks"]) - 1))
        if args.figure:
            plot_adaptation(res, args.figure)
    result["wall_seconds"] = time.perf_counter() - t0
    atomic_write_text(args.out, json.dumps(result, indent=1, default=str))
    print(f"\nwrote {args.out} ({result['wall_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
