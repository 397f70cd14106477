"""Train a tiny Glow with the shared trainer (used by the resume and torchrun tests).

usage: train_tiny_glow.py RUN_DIR STEPS [--resume] [--sleep S] [--dump FILE] [--checkpoint-every N]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from visionflows.glow import GlowImageTask
from visionflows.training import TrainConfig, train


class SlowTask(GlowImageTask):
    sleep = 0.0

    def loss(self, model, batch):
        if self.sleep:
            time.sleep(self.sleep)
        return super().loss(model, batch)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("steps", type=int)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--sleep", type=float, default=0.0)
    ap.add_argument("--dump")
    ap.add_argument("--checkpoint-every", type=int, default=4)
    args = ap.parse_args()
    torch.set_num_threads(1)
    images = torch.randint(0, 256, (8, 3, 12, 12), generator=torch.Generator().manual_seed(7), dtype=torch.uint8)
    task = SlowTask(images, resolution=8, levels=2, steps=2, width=8, batch_size=4)
    task.sleep = args.sleep
    cfg = TrainConfig(steps=args.steps, lr=1e-3, seed=3, checkpoint_every=args.checkpoint_every, progress=False,
                      tensorboard=False, log_every=1, ema_decay=0.9, warmup_steps=3, device="cpu")
    result = train(task, cfg, args.run_dir, resume=args.resume)
    if args.dump:
        rank = int(os.environ.get("RANK", "0"))
        torch.save({k: v.clone() for k, v in result.model.state_dict().items()}, f"{args.dump}.rank{rank}")


if __name__ == "__main__":
    main()
