"""The annealed sampler: batched HMC / MALA (ours) against Pyro's NUTS (the official settings), per level.

For each ``--levels`` L of a trained Wavelet Flow (``--run-dir``), the conditioning ``I_{L−1}`` comes from held-out
photos (``--data``, centre squares at the model's resolution, block-averaged), and each sampler draws one annealed
sample per image at ``--temperature`` with the official chain length (40 iterations, the first 10 adapting the
step size, target acceptance 0.6, initial step 0.01):

* ``hmc``: :class:`~visionflows.wavelet.anneal.AnnealConfig` defaults (8 leapfrog steps, ±20 % step jitter), all
  ``--images`` chains batched;
* ``mala``: the same with one leapfrog step;
* ``nuts``: :meth:`AnnealConfig.official` (Pyro NUTS, max tree depth 10), one chain after another, on the first
  ``--nuts-images`` images (it is slow).

Reported per level and sampler: wall seconds per image, gradient evaluations per image, the post-adaptation
acceptance rate, the final step size, and the effective sample size (Pyro's ``effective_sample_size`` over the
chains' 30 post-adaptation states) of the first 8 latent coordinates and of ``|ε|²``, also per second and per
1000 gradients. Writes ``benchmarks/results/anneal.json``.

usage: python benchmarks/bench_anneal.py --run-dir RUN [--data FOLDER] [--levels 4,6] [--images 16]
       [--nuts-images 2] [--temperature 0.97] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from _common import machine, write_result  # noqa: E402
from visionflows.data.images import open_images  # noqa: E402
from visionflows.wavelet.anneal import AnnealConfig, anneal_latent  # noqa: E402
from visionflows.wavelet.level import block_mean, dequantize  # noqa: E402
from visionflows.wavelet.train import assemble  # noqa: E402


def _ess(states: torch.Tensor) -> dict[str, float]:
    """``states`` [chains, samples, D] → ESS (summed over chains) of 8 coordinates and of |ε|²."""
    from pyro.ops.stats import effective_sample_size

    coords = states[..., :8].double()
    norm = states.pow(2).sum(-1, keepdim=True).double()
    e_coords = effective_sample_size(coords, chain_dim=0, sample_dim=1)
    e_norm = effective_sample_size(norm, chain_dim=0, sample_dim=1)
    return {"ess_coords_median": float(e_coords.median()), "ess_coords_min": float(e_coords.min()),
            "ess_norm": float(e_norm[0])}


def run_one(level, cond, temperature: float, cfg: AnnealConfig, seed: int) -> dict:
    shape = level._sample_shape(cond, None)
    states: list[torch.Tensor] = []

    def record(it: int, eps: torch.Tensor) -> None:
        if it >= cfg.num_adaptation:
            states.append(eps.detach().flatten(1).clone())

    _, x, st = anneal_latent(level.latent_map(cond), shape, temperature, cfg, torch.Generator().manual_seed(seed),
                             cond, level=level.level,
                             callback=record)
    chains = torch.stack(states, dim=1)  # [chains, samples, D]
    ess = _ess(chains) if chains.shape[0] >= 2 else {}
    per_image = st.seconds / st.chains
    out = {"method": cfg.method, "chains": st.chains, "dims": st.dims, "seconds_per_image": per_image,
           "grad_evals_per_image": st.grad_evals / (st.chains if cfg.method != "nuts" else 1),
           "grad_evals_per_chain": st.grad_evals, "accept_rate": st.accept_rate, "accepted": st.accepted,
           "step_size": st.step_size, "never_accepted": st.never_accepted, **ess}
    if ess:
        per_chain = {k: v / chains.shape[0] for k, v in ess.items()}
        out["ess_norm_per_s"] = per_chain["ess_norm"] / per_image
        out["ess_coords_per_s"] = per_chain["ess_coords_median"] / per_image
        out["ess_norm_per_1k_grads"] = 1000 * per_chain["ess_norm"] / max(1.0, out["grad_evals_per_chain"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", required=True, help="trained Wavelet Flow (any folder `wavelet eval` accepts)")
    ap.add_argument("--data", default="../shared/data/images/bsd300_test")
    ap.add_argument("--levels", default="4,6")
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--nuts-images", type=int, default=2)
    ap.add_argument("--temperature", type=float, default=0.97)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--methods", default="hmc,mala,nuts")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="anneal")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = assemble(args.run_dir).eval()
    imgs = open_images(args.data, model.resolution, model.channels, "test").eval_images[: args.images]
    x = dequantize(imgs, torch.Generator().manual_seed(1234))
    results = {"machine": machine(), "config": vars(args), "loadavg_start": os.getloadavg()[0], "levels": {}}
    for lv in [int(v) for v in args.levels.split(",")]:
        if not 1 <= lv <= model.n_levels:
            raise SystemExit(f"--levels: {lv} is not a conditional level 1..{model.n_levels}")
        level = model.levels[lv]
        cond = block_mean(x, model.n_levels - lv + 1)
        rows = []
        for method in args.methods.split(","):
            if method == "nuts":
                cfg, c = AnnealConfig.official(progress=False), cond[: args.nuts_images]
            else:
                cfg, c = AnnealConfig(method=method, progress=False), cond
            row = run_one(level, c, args.temperature, cfg, args.seed)
            rows.append(row)
            print(f"level {lv} ({row['dims']} dims) {method:>4}: {row['seconds_per_image']:8.3f} s/image, "
                  f"{row['grad_evals_per_image']:7.0f} grads/image, acceptance {row['accept_rate']:.3f}, step "
                  f"{row['step_size']:.4f}, ESS |ε|² {row.get('ess_norm', float('nan')):.1f} over "
                  f"{row['chains']} chains ({row.get('ess_norm_per_s', float('nan')):.2f}/s per chain)", flush=True)
        results["levels"][str(lv)] = rows
    results["loadavg_end"] = os.getloadavg()[0]
    by = {m: [r for rows in results["levels"].values() for r in rows if r["method"] == m] for m in ("hmc", "nuts")}
    if by["hmc"] and by["nuts"]:
        ratio = [n["seconds_per_image"] / h["seconds_per_image"] for h, n in zip(by["hmc"], by["nuts"])]
        results["nuts_over_hmc_time_per_image"] = ratio
        print("NUTS / HMC time per image:", ", ".join(f"{r:.1f}x" for r in ratio),
              f"(median {statistics.median(ratio):.1f}x)")
    print("wrote", write_result(args.name, results))


if __name__ == "__main__":
    main()
