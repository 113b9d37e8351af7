"""A training run's checkpoint writer for the watch tests, run as its own process:

    python -m tests.checkpoint_writer DIR

It reads one command per line on stdin and answers ``ok`` on stdout when done:

- ``save NAME SEED STEP``: a LeNet initialized with SEED, written by ``ldam.save_checkpoint``
  (atomically) with class names ``zero`` .. ``nine`` and the step;
- ``slow NAME SEED STEP CHUNKS PAUSE``: the same checkpoint written straight to NAME in CHUNKS
  pieces, PAUSE seconds apart (a writer that neither renames nor finishes at once);
- ``broken NAME``: bytes that are no checkpoint;
- ``copy SOURCE NAME``: a copy of the file SOURCE;
- ``quit``.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

import ldam
from ldam.models.lenet import LeNet

CLASS_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def lenet(seed: int) -> LeNet:
    """A LeNet with the weights seed `seed` gives, in training mode (as a training loop has it)."""
    torch.manual_seed(seed)
    return LeNet().train()


def save(folder: Path, name: str, seed: int, step: int) -> Path:
    """`ldam.save_checkpoint` of `lenet(seed)` to folder/name."""
    return ldam.save_checkpoint(
        lenet(seed), torch.zeros(4, 1, 28, 28), folder / name, class_names=CLASS_NAMES, step=step
    )


def main(folder: Path) -> None:
    torch.set_num_threads(1)
    scratch = Path(tempfile.mkdtemp(prefix="ldam-writer-"))
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        command, args = words[0], words[1:]
        if command == "save":
            save(folder, args[0], int(args[1]), int(args[2]))
        elif command == "slow":
            name, seed, step = args[0], int(args[1]), int(args[2])
            chunks, pause = int(args[3]), float(args[4])
            data = save(scratch, name, seed, step).read_bytes()
            size = -(-len(data) // chunks)
            with open(folder / name, "wb") as file:
                for k in range(chunks):
                    file.write(data[k * size : (k + 1) * size])
                    file.flush()
                    if k < chunks - 1:
                        time.sleep(pause)
        elif command == "broken":
            (folder / args[0]).write_bytes(b"not a checkpoint, only a half-written mess\n" * 50)
        elif command == "copy":
            shutil.copyfile(args[0], folder / args[1])
        elif command == "quit":
            break
        print("ok", command, flush=True)
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
