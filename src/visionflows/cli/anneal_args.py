"""The annealed-sampling flags of ``wavelet sample`` and ``wavelet superres`` and their check (one error per bad
setting, naming the flag), turned into a :class:`visionflows.wavelet.AnnealConfig`."""

from __future__ import annotations

import argparse

from visionflows.errors import ConfigError
from visionflows.validation import NON_NEGATIVE_INT, OPEN_UNIT, POSITIVE, POSITIVE_INT, number_arg

__all__ = ["add_anneal_args", "anneal_config", "print_anneal_stats"]

_INT1 = number_arg(POSITIVE_INT)
_INT0 = number_arg(NON_NEGATIVE_INT)

_ANNEAL_METHODS = ("hmc", "mala", "nuts", "official")


def add_anneal_args(q: argparse.ArgumentParser) -> None:
    g = q.add_argument_group("annealed sampling (MCMC on p^(1/T^2), level by level; see docs/waveletflow.md)")
    g.add_argument("--anneal", nargs="?", const="hmc", choices=_ANNEAL_METHODS, default=None,
                   help="sample by annealed MCMC: hmc (batched, default), mala, nuts (Pyro) or official (Pyro NUTS "
                        "with the official settings); needs --temperature > 0")
    g.add_argument("--anneal-steps", type=_INT1, default=None, help="MCMC iterations per level (official 40)")
    g.add_argument("--anneal-adapt", type=_INT0, default=None,
                   help="leading iterations that adapt the step size (official 10; < --anneal-steps)")
    g.add_argument("--target-accept", type=number_arg(OPEN_UNIT), default=None, help="acceptance rate aimed at "
                   "(official 0.6)")
    g.add_argument("--step-size", type=number_arg(POSITIVE), default=None, help="initial step size (official 0.01)")
    g.add_argument("--leapfrog-steps", type=_INT1, default=None, help="leapfrog steps per HMC proposal (8)")
    q.add_argument("--no-progress", action="store_true", help="no progress bar")


def anneal_config(args: argparse.Namespace):
    """The :class:`AnnealConfig` the flags ask for (``None`` without ``--anneal``); errors name the flag."""
    from visionflows.wavelet.anneal import AnnealConfig

    tuning = {"num_results": args.anneal_steps, "num_adaptation": args.anneal_adapt,
              "target_accept": args.target_accept, "step_size": args.step_size,
              "leapfrog_steps": args.leapfrog_steps}
    tuning = {k: v for k, v in tuning.items() if v is not None}
    if args.anneal is None:
        if tuning:
            flags = ", ".join("--" + k.replace("_", "-") for k in _TUNING_FLAGS if getattr(args, k) is not None)
            raise ConfigError(f"{flags} tune the annealed sampler, but --anneal is not given.",
                              "add --anneal (hmc, mala, nuts or official), or drop those flags.")
        return None
    if args.temperature <= 0:
        raise ConfigError(f"annealed sampling needs --temperature > 0, got {args.temperature:g} (the target is "
                          "p^(1/T^2)).", "use e.g. --temperature 0.8, or drop --anneal for the T = 0 mode.")
    if "num_results" in tuning and "num_adaptation" not in tuning:
        tuning["num_adaptation"] = min(10, tuning["num_results"] - 1)
    steps = tuning.get("num_results", AnnealConfig.num_results)
    if tuning.get("num_adaptation", 0) >= steps:
        what = f"--anneal-steps {steps}" if "num_results" in tuning else f"the default --anneal-steps {steps}"
        raise ConfigError(f"--anneal-adapt {tuning['num_adaptation']} must be less than {what}: the step-size "
                          "adaptation runs in the first of the MCMC iterations.",
                          f"pass an --anneal-adapt below {steps} (e.g. {min(10, steps - 1)}), or more --anneal-steps "
                          "(official: --anneal-steps 40 --anneal-adapt 10).")
    if args.anneal == "official":
        return AnnealConfig.official(progress=not args.no_progress, **tuning)
    return AnnealConfig(method=args.anneal, progress=not args.no_progress, **tuning)


_TUNING_FLAGS = ("anneal_steps", "anneal_adapt", "target_accept", "step_size", "leapfrog_steps")


def print_anneal_stats(model) -> None:
    if getattr(model, "last_anneal_stats", None) is not None:
        print(model.last_anneal_stats.summary())
