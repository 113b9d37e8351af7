"""Where an atlas's batches run: in this process (`local`) or on Ray actors (`ray`).

Both hand each finished batch to `on_done` in the driver, which writes the files and the
manifest; a batch is the unit of work and of retry. On Ray, each worker is a long-lived actor
that loads the model once; a batch whose actor dies is queued again and the actor replaced, so
every batch is written once, whoever finished it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from ldam.atlas.manifest import AtlasError
from ldam.atlas.plan import Job
from ldam.atlas.render import Rendered, Renderer
from ldam.errors import first_line

OnDone = Callable[[list[Rendered]], None]

# How often a dead actor is replaced before the run gives up (a worker that dies on every
# batch, such as one out of memory, should not loop forever).
MAX_REPLACEMENTS = 20


def run_local(job: Job, renderer: Renderer, batches: list[list[int]], on_done: OnDone) -> None:
    """Render `batches` one after another in this process."""
    for batch in batches:
        on_done(renderer.render(batch))


class _ActorRenderer:
    """A Ray actor: one model, loaded from the checkpoint bytes the driver shipped."""

    def __init__(self, job: Job, checkpoint: bytes, suffix: str) -> None:
        folder = tempfile.mkdtemp(prefix="ldam-atlas-")
        path = Path(folder) / f"checkpoint{suffix}"
        path.write_bytes(checkpoint)
        self.renderer = Renderer(replace(job, checkpoint=str(path)))

    def render(self, units: list[int]) -> list[Rendered]:
        return self.renderer.render(units)


def _import_ray() -> Any:
    """`ray`, imported with token authentication on (it reads the setting at import)."""
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    try:
        import ray
    except ImportError:
        raise AtlasError(
            "--executor ray needs Ray: install ldam[ray] (pip install 'ldam[ray]')."
        ) from None
    return ray


def ray_init(address: str | None, workers: int, threads: int) -> Any:
    """Connect to the cluster at `address` (or start a local one sized to this machine) and
    return the `ray` module. Token authentication (on by default for clusters started with
    `ray start`) is switched on before Ray is imported, so the token in ~/.ray/auth_token is
    used without the user knowing about it."""
    ray = _import_ray()
    if ray.is_initialized():
        return ray
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    try:
        if address:
            ray.init(address=address, **options)
        else:
            ray.init(num_cpus=max(os.cpu_count() or 1, workers * threads), **options)
    except Exception as error:
        where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
        raise AtlasError(f"Could not connect to {where} ({first_line(error)}).") from None
    return ray


def run_ray(
    job: Job,
    batches: list[list[int]],
    on_done: OnDone,
    address: str | None,
    workers: int,
    gpus_per_worker: float,
) -> int:
    """Render `batches` on `workers` Ray actors; returns how many actors were replaced
    after dying. A cluster this call started is shut down at the end."""
    ray = _import_ray()
    started_here = not ray.is_initialized()
    ray = ray_init(address, workers, job.settings.threads)
    try:
        return _dispatch(ray, job, batches, on_done, workers, gpus_per_worker)
    finally:
        if started_here:
            ray.shutdown()


def _dispatch(
    ray: Any,
    job: Job,
    batches: list[list[int]],
    on_done: OnDone,
    workers: int,
    gpus_per_worker: float,
) -> int:
    from ray.exceptions import RayActorError

    remote = ray.remote(num_cpus=job.settings.threads, num_gpus=gpus_per_worker, max_restarts=0)(
        _ActorRenderer
    )
    if gpus_per_worker > 0:
        job = replace(job, device="cuda")
    blob = ray.put(Path(job.checkpoint).read_bytes())
    suffix = Path(job.checkpoint).suffix
    actors = [remote.remote(job, blob, suffix) for _ in range(max(1, workers))]
    queue = list(batches)
    running: dict[Any, tuple[Any, list[int]]] = {}
    idle = list(actors)
    replaced = 0
    while queue or running:
        while queue and idle:
            actor = idle.pop()
            batch = queue.pop(0)
            running[actor.render.remote(batch)] = (actor, batch)
        ready, _ = ray.wait(list(running), num_returns=1)
        ref = ready[0]
        actor, batch = running.pop(ref)
        try:
            result = ray.get(ref)
        except RayActorError:
            # The actor died (killed, out of memory, its node lost): its batch goes back to
            # the front of the queue and a new actor takes its place.
            replaced += 1
            if replaced > MAX_REPLACEMENTS:
                raise AtlasError(
                    f"Ray workers died {replaced} times; the atlas stops with what is finished "
                    "(run again with --resume)."
                ) from None
            queue.insert(0, batch)
            actors.append(remote.remote(job, blob, suffix))
            idle.append(actors[-1])
            continue
        on_done(result)
        idle.append(actor)
    for actor in actors:
        ray.kill(actor)
    return replaced
