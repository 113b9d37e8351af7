"""The worker: the grid's target, JPEG frames, live controls, rebuilds and refusals, run in-process
with a real LeNet checkpoint and the real link pipes."""

from __future__ import annotations

import io
import multiprocessing as mp
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from ldam.cli.main import build_parser
from ldam.cli.options import metadata_option
from ldam.metadata import MetadataOverride
from ldam.models.saving import export_checkpoint
from ldam.sampling.images import display_grid
from ldam.sampling.settings import fitted_window
from ldam.web.config import ServeConfig, worker_setup
from ldam.wire.events import Frame, Notice, Ready, Rejected, SetParams, Shake, Stop
from ldam.wire.link import Outbox, WorkerConfig, WorkerEnd
from ldam.wire.params import SamplerParams
from ldam.worker.models import ModelCache
from ldam.worker.process import Worker
from ldam.worker.publisher import encode_jpeg
from tests.support import PAIR, lenet_folder, rgb224_checkpoint


class Harness:
    """A Worker in this process, wired to real pipes; `events()` reads what it sent."""

    def __init__(
        self,
        params: dict[str, Any],
        compare: bool = False,
        checkpoint: Path | None = None,
        metadata: MetadataOverride | None = None,
    ) -> None:
        folder = lenet_folder()
        ctx = mp.get_context("spawn")
        self.command_read, self.command_write = ctx.Pipe(duplex=False)
        self.event_read, event_write = ctx.Pipe(duplex=False)
        config = WorkerConfig(
            checkpoints_dir=str(folder),
            checkpoint=str(checkpoint or folder / PAIR[0]),
            compare=str(folder / PAIR[1]) if compare else None,
            device="cpu",
            params=SamplerParams.model_validate(params).model_dump(),
            version=3,
            metadata=metadata,
        )
        self.end = WorkerEnd(self.command_read, event_write)
        self.worker = Worker(config, self.end)
        self.worker.build(self.worker.params, self.worker.sources)
        self.worker.apply_live()

    def events(self, timeout: float = 5.0) -> list[tuple[Any, ...]]:
        out = []
        while self.event_read.poll(timeout):
            out.append(self.event_read.recv())
            timeout = 0.2
        return out

    def frame(self) -> tuple[dict[str, Any], list[bytes]]:
        self.worker.publish_frame()
        for message in reversed(self.events()):
            if isinstance(message, Frame):
                return message.header, message.images
        raise AssertionError("no frame was sent")

    def set(self, **changes: Any) -> None:
        params = {**self.worker.params.model_dump(), **changes}
        self.worker.handle(SetParams(self.worker.version + 1, params, dict(self.worker.sources)))

    def close(self) -> None:
        self.worker.close()
        self.end.outbox.close()


def decode(jpeg: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(jpeg)))


def test_the_target_is_built_from_the_grids_units_in_grid_order() -> None:
    h = Harness({"layout": "range", "unit": 2, "unit_end": 4, "chains": 6})
    try:
        panel = h.worker.panels[0]
        units, columns = h.worker.params.grid()
        assert panel.target.units_per_chain == units == [2, 3, 4, 2, 3, 4]
        assert columns == panel.columns == 3
        # The sampler's activation term is the target itself: nothing reorders the chains.
        assert panel.sampler.terms[0].activation_fn is panel.target
        assert h.worker.info()["panels"][0]["units"] == [2, 3, 4]
    finally:
        h.close()


def test_encode_jpeg_keeps_size_and_values() -> None:
    grey = torch.full((1, 30, 62), 200, dtype=torch.uint8)
    grey[:, :, :31] = 20
    image = decode(encode_jpeg(grey, 90))
    assert image.shape == (30, 62)
    assert abs(float(image[:, :25].mean()) - 20) < 3 and abs(float(image[:, 37:].mean()) - 200) < 3
    rgb = torch.zeros((3, 8, 8), dtype=torch.uint8)
    rgb[0] = 255
    colour = decode(encode_jpeg(rgb, 90))
    assert colour.shape == (8, 8, 3) and colour[..., 0].min() > 240 and colour[..., 1].max() < 15


def test_frames_carry_header_and_change_with_steps() -> None:
    h = Harness({"layout": "chains", "unit": 3, "chains": 4, "show": "sample"})
    try:
        header, images = h.frame()
        # 4 chains in 2 columns of 28 px with 2 px padding: 2 * 30 + 2 = 62 px square.
        assert header["version"] == 3 and header["seq"] == 1 and header["step"] == 0
        assert header["panels"][0]["target"] == "fc3:3"
        assert (header["panels"][0]["width"], header["panels"][0]["height"]) == (62, 62)
        first = decode(images[0])
        assert first.shape == (62, 62)
        for _ in range(5):
            h.worker.step_all()
        header2, images2 = h.frame()
        assert header2["seq"] == 2 and header2["step"] == 5
        assert np.abs(decode(images2[0]).astype(int) - first.astype(int)).mean() > 1.0
    finally:
        h.close()


def test_view_redraws_the_same_chains_in_input_space() -> None:
    h = Harness({"layout": "chains", "chains": 4, "show": "sample"})
    try:
        sampler = h.worker.panels[0].sampler
        h.worker.step_all()
        header, symmetric = h.frame()
        # auto, the default, keeps LeNet's 1 channel in the paper's view; the panel says so,
        # and the page's toggle reads the same from the info.
        assert (header["view"], header["panels"][0]["view"]) == ("auto", "symmetric")
        assert h.worker.info()["panels"][0]["auto_view"] == "symmetric"
        h.set(view="input")
        assert h.worker.panels[0].sampler is sampler  # no rebuild: the same chains
        header, shown = h.frame()
        assert header["view"] == header["panels"][0]["view"] == "input" and header["step"] == 1
        # LeNet's data is MNIST, normalized with mean 0.1307 and std 0.3081.
        assert h.worker.panels[0].loaded.normalization == ([0.1307], [0.3081])
        expected = display_grid(sampler.x, 2, "input", ([0.1307], [0.3081]))[0].numpy()
        picture = decode(shown[0]).astype(int)
        assert picture.shape == expected.shape == (62, 62)
        assert np.abs(picture - expected).mean() < 3  # JPEG at quality 90: a few levels off
        assert np.abs(decode(symmetric[0]).astype(int) - expected).mean() > 20
    finally:
        h.close()


def test_the_operators_normalization_and_class_names_reach_the_input_view() -> None:
    # ldam serve --mean --std --class-names: parsed once, carried by ServeConfig and the
    # worker's configuration to every model the worker loads, over the file's own metadata.
    names = [f"digit {k}" for k in range(10)]
    checkpoint = str(lenet_folder() / PAIR[0])
    argv = ["serve", checkpoint, "--mean", "0.5", "--std", "0.25", "--class-names", ",".join(names)]
    override = metadata_option(build_parser().parse_args(argv))
    worker_config, _ = worker_setup(ServeConfig(checkpoint=checkpoint, metadata=override))
    assert worker_config.metadata == MetadataOverride((0.5,), (0.25,), tuple(names))
    h = Harness({"layout": "chains", "chains": 4, "show": "sample", "view": "input"},
                metadata=worker_config.metadata)  # fmt: skip
    try:
        h.worker.step_all()
        _, shown = h.frame()
        loaded = h.worker.panels[0].loaded
        assert loaded.normalization == ([0.5], [0.25]) and loaded.class_names == names
        assert h.worker.info()["class_names"] == names
        x = h.worker.panels[0].sampler.x
        expected = display_grid(x, 2, "input", ([0.5], [0.25]))[0].numpy()
        mnist = display_grid(x, 2, "input", ([0.1307], [0.3081]))[0].numpy()
        picture = decode(shown[0]).astype(int)
        assert np.abs(picture - expected).mean() < 3  # JPEG at quality 90: a few levels off
        assert np.abs(picture - mnist).mean() > 20  # not the file's normalization
    finally:
        h.close()


def test_frames_of_a_two_channel_non_square_network(tmp_path: Path) -> None:
    # 2 channels are neither grey nor RGB: each shows as its own grey image, side by side.
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        OrderedDict(conv=torch.nn.Conv2d(2, 4, 3), pool=torch.nn.AdaptiveAvgPool2d(1))
    )
    checkpoint = export_checkpoint(net, tmp_path / "two.pt2", (2, 20, 36))
    h = Harness({"layout": "chains", "chains": 4, "show": "sample"}, checkpoint=checkpoint)
    try:
        h.worker.step_all()
        header, images = h.frame()
        # 2 x 2 cells of (2 * 36 + 1) x 20 px with 2 px padding.
        size = (header["panels"][0]["height"], header["panels"][0]["width"])
        assert size == (2 * 22 + 2, 2 * (2 * 36 + 1 + 2) + 2) == (46, 152)
        picture = decode(images[0]).astype(int)
        expected = display_grid(h.worker.panels[0].sampler.x, 2)[0].numpy()
        assert picture.shape == expected.shape == size
        assert np.abs(picture - expected).mean() < 3
    finally:
        h.close()


def test_live_change_applies_at_next_step_with_new_version() -> None:
    h = Harness({"layout": "chains", "chains": 4})
    try:
        sampler = h.worker.panels[0].sampler
        h.set(temperature=0.5, momentum=0.3, normalize="all")
        assert h.worker.version == 4
        assert h.worker.panels[0].sampler is sampler  # no rebuild for a live setting
        h.worker.step_all()
        assert sampler.config.temperature == 0.5 and sampler.config.momentum == 0.3
        assert sampler.config.normalize == "all"
        header, _ = h.frame()
        assert header["version"] == 4
    finally:
        h.close()


def test_the_prior_rebuilds_its_decay_sweeps_and_changes_live() -> None:
    """The dashboard's prior selector rebuilds the chains; its decay is live (the images stay)
    and a sweep row each: the sampler's filter follows both."""
    h = Harness({"layout": "chains", "chains": 4, "replicas": 0})
    try:
        white = h.worker.panels[0].sampler
        assert white.basis is None
        h.set(prior="spectral", prior_decay=0.5)
        sampler = h.worker.panels[0].sampler
        assert sampler is not white and sampler.basis is not None
        assert sampler.basis.decay == 0.5
        h.worker.step_all()
        before = sampler.x.clone()
        h.set(prior_decay=1.5)
        assert h.worker.panels[0].sampler is sampler  # live: no rebuild
        sampler._apply_pending()
        assert sampler.basis.decay == 1.5
        torch.testing.assert_close(sampler.x, before, atol=1e-5, rtol=0)
        h.set(
            layout="sweep", unit=4, unit_end=5, sweep_param="prior_decay", sweep_values=[0.5, 2.0]
        )
        sampler = h.worker.panels[0].sampler
        assert sampler.config.prior_decay == [0.5, 0.5, 2.0, 2.0]
        assert sampler.basis is not None and sampler.basis.decay == [0.5, 0.5, 2.0, 2.0]
        h.worker.step_all()
        header, images = h.frame()
        assert header["panels"][0]["rows"] == 2
    finally:
        h.close()


def test_range_layout_columns_are_units() -> None:
    h = Harness({"layout": "range", "unit": 0, "unit_end": 2, "chains": 6})
    try:
        panel = h.worker.panels[0]
        assert panel.columns == 3 and panel.sampler.config.chains == 6
        x = torch.randn(6, 1, 28, 28)
        activation = panel.sampler.terms[0].value(x)
        logits = panel.loaded.module(x)
        # Cell r * 3 + c of the grid samples unit c.
        expected = logits[torch.arange(6), torch.tensor([0, 1, 2, 0, 1, 2])]
        torch.testing.assert_close(activation, expected)
    finally:
        h.close()


def test_sweep_sets_one_value_per_row() -> None:
    h = Harness(
        {
            "layout": "sweep",
            "unit": 4,
            "unit_end": 6,
            "sweep_param": "temperature",
            "sweep_values": [0.0, 0.25],
            "replicas": 0,  # T 0 has no replica exchange
        }
    )
    try:
        h.worker.step_all()
        sampler = h.worker.panels[0].sampler
        assert sampler.config.temperature == [0.0, 0.0, 0.0, 0.25, 0.25, 0.25]
        header, images = h.frame()
        assert header["panels"][0]["rows"] == 2 and header["panels"][0]["columns"] == 3
        assert decode(images[0]).shape == (2 * 30 + 2, 3 * 30 + 2)
    finally:
        h.close()


def test_shake_raises_temperature_then_restores() -> None:
    # Driven through the real loop: the command arrives on the pipe, `run` applies it, and
    # `run` itself restores the temperature once the shake is over.
    h = Harness({"layout": "chains", "chains": 2, "temperature": 0.02})
    loop = threading.Thread(target=h.worker.run, daemon=True)
    loop.start()
    try:

        def temperature_becomes(value: float) -> bool:
            deadline = time.monotonic() + 10.0
            while time.monotonic() < deadline:
                if h.worker.panels[0].sampler.config.temperature == pytest.approx(value):
                    return True
                time.sleep(0.01)
            return False

        h.command_write.send(Shake(10.0, 0.5))
        assert temperature_becomes(0.2)
        assert temperature_becomes(0.02)
        assert h.worker.step > 0
    finally:
        h.command_write.send(Stop())
        loop.join(5.0)
        assert not loop.is_alive()
        h.close()


def test_bad_changes_are_refused_and_the_chains_go_on() -> None:
    # The compare view: the windows of both panels share one memory budget.
    h = Harness({"layout": "chains", "chains": 4}, compare=True)
    try:
        panel = h.worker.panels[0]
        h.events()
        h.set(layer="nope")
        h.set(unit=10)
        h.set(window=1000, chains=256)
        rejected = [m for m in h.events() if isinstance(m, Rejected)]
        assert [r.field for r in rejected] == ["layer", "unit", "window"]
        assert rejected[0].message == "The model has no layer named 'nope'."
        assert rejected[1].message == "Layer 'fc3' has 10 units; unit must be below 10."
        assert rejected[2].message == (
            "A window of 1000 samples for 512 chains of shape (1, 28, 28) needs 1531 MiB, more "
            "than the 1024 MiB limit; use a smaller window or fewer chains."
        )
        assert rejected[0].params is not None and rejected[0].params["layer"] == "fc3"
        assert h.worker.panels[0] is panel and h.worker.version == 3
        h.worker.step_all()
    finally:
        h.close()


FITTED = (
    "The averaging window is 89 steps instead of 200, the most that fits the 1024 MiB budget "
    "for 20 chains of shape (3, 224, 224); fewer chains allow a longer one."
)


def test_fitted_window_is_the_most_that_fits() -> None:
    # 20 chains x 3 x 224 x 224 float32 = 12,042,240 bytes a step; 2**30 of them hold 89.16.
    assert fitted_window(20, (3, 224, 224)) == (89, FITTED)
    assert fitted_window(16, (1, 28, 28)) == (200, None)
    assert fitted_window(10, (3, 224, 224))[0] == 178
    # Not even one step fits: 1, which check_window_memory then refuses.
    assert fitted_window(1, (3, 20000, 20000))[0] == 1


def test_a_224_model_gets_a_fitted_window_and_a_chosen_one_is_refused() -> None:
    # The dashboard's defaults (20 chains, window 200) on a 3x224x224 network need 2297 MiB.
    # Without replicas: their memory shortens the fitted window further (`replica_bytes`).
    h = Harness({"replicas": 0}, checkpoint=rgb224_checkpoint())
    try:
        sampler = h.worker.panels[0].sampler
        # window=None (auto, the default) is fitted; the parameters keep "auto".
        assert h.worker.params.window is None and sampler.config.window == 89
        notices = [m for m in h.events() if isinstance(m, Notice)]
        assert [(n.field, n.message) for n in notices] == [("window", FITTED)]
        assert h.worker.info()["window_note"] == FITTED and h.worker.info()["window"] == 89
        header, images = h.frame()
        # fc:0-9, one column per unit, 2 rows of 224 px RGB with 2 px padding.
        assert decode(images[0]).shape == (2 * 226 + 2, 10 * 226 + 2, 3)
        # A live change leaves the fitted window as it is.
        h.set(temperature=0.02)
        h.worker.step_all()  # live settings apply at the next step
        assert h.worker.panels[0].sampler is sampler and sampler.config.temperature == 0.02
        assert sampler.config.window == 89
        # A user who picks exactly 200 gets 200, or here a refusal: a choice is never fitted.
        h.set(window=200)
        rejected = [m for m in h.events() if isinstance(m, Rejected)]
        assert [r.message for r in rejected] == [
            "A window of 200 samples for 20 chains of shape (3, 224, 224) needs 2297 MiB, more "
            "than the 1024 MiB limit; use a smaller window or fewer chains."
        ]
        # A window the user asks for is refused when it does not fit, kept when it does.
        h.set(window=300)
        h.set(window=40)
        events = [m for m in h.events() if isinstance(m, (Ready, Rejected))]
        assert isinstance(events[0], Rejected) and events[0].field == "window"
        assert events[0].message == (
            "A window of 300 samples for 20 chains of shape (3, 224, 224) needs 3445 MiB, more "
            "than the 1024 MiB limit; use a smaller window or fewer chains."
        )
        assert isinstance(events[1], Ready) and events[1].params["window"] == 40
        assert events[1].info["window_note"] is None and events[1].info["window"] == 40
        h.worker.step_all()
        assert sampler.config.window == 40 and h.worker.panels[0].sampler is sampler
        # Chosen, it is no longer fitted: more chains that it does not fit are refused.
        h.set(layout="chains", chains=256)
        rejected = [m for m in h.events() if isinstance(m, Rejected)]
        assert [r.message for r in rejected] == [
            "A window of 40 samples for 256 chains of shape (3, 224, 224) needs 5880 MiB, more "
            "than the 1024 MiB limit; use a smaller window or fewer chains."
        ]
        assert h.worker.panels[0].sampler is sampler
        # Back to auto: fitted again, and told.
        h.set(window=None)
        events = [m for m in h.events() if isinstance(m, (Ready, Notice))]
        assert [type(m) for m in events] == [Notice, Ready]
        assert events[1].params["window"] is None and events[1].info["window"] == 89
        h.worker.step_all()
        assert sampler.config.window == 89
    finally:
        h.close()


def test_compare_view_has_two_panels_with_the_same_seed() -> None:
    h = Harness({"layout": "chains", "chains": 2, "seed": 11}, compare=True)
    try:
        a, b = (p.sampler for p in h.worker.panels)
        torch.testing.assert_close(a.x, b.x)  # same seed, same start
        h.worker.step_all()
        header, images = h.frame()
        assert [p["label"] for p in header["panels"]] == list(PAIR)
        assert len(images) == 2
        # Different weights pull the chains apart after one step.
        assert not torch.equal(a.x, b.x)
    finally:
        h.close()


def test_outbox_keeps_only_the_newest_frame() -> None:
    read, write = mp.get_context("spawn").Pipe(duplex=False)
    outbox = Outbox(write)
    # Hold the lock so the sender thread cannot take anything while we queue.
    with outbox._lock:
        for i in range(5):
            outbox.put_frame(("frame", i))
        outbox.put_event(("ready", 1))
        outbox.put_metrics(("metrics", 1))
        outbox.put_metrics(("metrics", 2))
    got = [read.recv() for _ in range(3)]
    assert got == [("ready", 1), ("metrics", 2), ("frame", 4)]
    assert outbox.frames_dropped == 4
    outbox.close()


def test_fixed_batch_export_other_than_one_builds_and_samples(tmp_path: Path) -> None:
    # An export with a fixed batch of 4: the layer listing and the target must both run in
    # chunks of 4 (a forward with another batch fails for such a program).
    from ldam.models.lenet import LeNet

    torch.manual_seed(0)
    program = torch.export.export(LeNet().eval(), (torch.zeros(4, 1, 28, 28),))
    path = tmp_path / "fixed4.pt2"
    torch.export.save(program, path)
    read, write = mp.get_context("spawn").Pipe(duplex=False)
    end = WorkerEnd(mp.get_context("spawn").Pipe(duplex=False)[0], write)
    config = WorkerConfig(
        checkpoints_dir=str(tmp_path),
        checkpoint=str(path),
        device="cpu",
        params=SamplerParams(layout="range", unit=0, unit_end=2, chains=6).model_dump(),
    )
    worker = Worker(config, end)
    try:
        with pytest.warns(UserWarning, match="fixed batch of 4"):
            params = worker.build(worker.params, worker.sources)
        assert worker.panels[0].loaded.batch_size == 4
        assert params.layer == "fc3"
        layers = {info.name: info.units for info in worker.layers}
        assert layers["fc3"] == 10 and layers["fc1"] == 120
        assert worker.panels[0].target.batch_size == 4
        worker.apply_live()
        worker.step_all()
        assert worker.panels[0].last_activation is not None
        assert worker.panels[0].last_activation.shape == (6,)
    finally:
        worker.close()
        end.outbox.close()
        read.close()


def test_trust_covers_only_the_operators_files(tmp_path: Path) -> None:
    folder = lenet_folder()
    operator = folder / PAIR[0]
    picked = tmp_path / "picked.pt"
    picked.write_bytes(b"x")
    cpu = torch.device("cpu")

    served = ModelCache(cpu, True, (str(operator),))
    assert served.is_trusted(str(operator))
    # Another spelling of the same file is the same file.
    assert served.is_trusted(str(folder / "." / PAIR[0]))
    assert not served.is_trusted(str(picked))
    assert not ModelCache(cpu, False, (str(operator),)).is_trusted(str(operator))

    # Started directly (no server): the config's own files are the operator's.
    read, write = mp.get_context("spawn").Pipe(duplex=False)
    end = WorkerEnd(read, write)
    config = WorkerConfig(
        checkpoints_dir=str(tmp_path), checkpoint=str(picked), device="cpu", trust_checkpoint=True
    )
    try:
        assert Worker(config, end).builder.models.is_trusted(str(picked))
        config.trusted_paths = (str(operator),)
        assert not Worker(config, end).builder.models.is_trusted(str(picked))
    finally:
        end.outbox.close()


def test_each_unit_reports_its_own_scale_and_adapted_step_beside_its_activation() -> None:
    h = Harness({"layout": "range", "unit": 2, "unit_end": 3, "chains": 4, "replicas": 0})
    try:
        sampler = h.worker.panels[0].sampler
        assert h.worker.params.step_size is None and h.worker.params.energy_scale == "unit"
        h.worker.step_all()
        first = h.worker.live_diagnostics()[0]["units"]
        assert [u["adapting"] for u in first] == [True, True]
        for _ in range(sampler.config.adapt_steps):
            h.worker.step_all()
        h.worker.diagnosed_at = None  # compute now, not at most once a second
        units = h.worker.live_diagnostics()[0]["units"]
        assert [u["unit"] for u in units] == [2, 3]
        for entry in units:
            assert entry["scale"] == pytest.approx(sampler.unit_scale[entry["unit"]])
            assert entry["scale"] > 0 and not entry["adapting"] and not entry["dead"]
            assert 1e-6 <= entry["step_size"] <= 100
            # The activation in the network's own units: the mean of the unit's chains.
            last = h.worker.panels[0].last_activation
            mine = [
                i
                for i, u in enumerate(h.worker.panels[0].target.units_per_chain)
                if u == entry["unit"]
            ]
            assert entry["activation"] == pytest.approx(float(last[mine].mean()))
    finally:
        h.close()
