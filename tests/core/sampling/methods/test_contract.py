"""The contract every registered method keeps (``sampling.METHODS``), run over each of them: a batch restores as
its images one by one, the exact-ε oracle recovers the image, a wrong generator count and a wrong x_T are refused
before the network runs, and the callback reports each step once, as many steps as the config's ``nfes``.

The tests are parametrized by ``METHODS`` when this module is collected, so a method added to the registry is under
the contract without a line here (``test_a_fifth_method_is_under_the_contract`` registers one and watches it run).
A method whose defaults take hundreds of steps may list short settings in :data:`QUICK`.
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from diffpir_core.metrics import float_to_uint8, psnr
from diffpir_core.operators import Blur, Inpainting, Operator, SuperResolution, add_noise, box_mask, gaussian_kernel
from diffpir_core.sampling import METHODS, Step, get_method, method_config, restore_with
from diffpir_core.task_kinds import task_kind

QUICK = {"diffpir": {"iter_num": 5}, "dps": {"num_steps": 4}, "ddrm": {"timesteps": 5}, "dpir": {"iter_num": 4}}
"""Short runs for the methods whose defaults take hundreds of network calls (a method not listed runs its defaults)."""

ORACLE = {"diffpir": {"return_mode": "x0_hat"}, "dpir": {"x8": False}}
"""Settings under which an exact-ε network's clean estimate is the result: DiffPIR's default x_t0 sample keeps the
t = 0 noise (a ≈ 46 dB ceiling), DPIR's flips show the oracle images it does not know."""

TASKS = ("sr", "deblur", "inpaint")


def _config(name: str, task: str, noise_sigma: float | list[float], *layers: dict):
    """Method ``name``'s config for ``task``: the kind's preset for it, then ``layers``, with the task's noise."""
    settings = dict(task_kind(task).PRESETS.get(name, {}))
    for layer in layers:
        settings.update(layer.get(name, {}))
    return method_config(name, settings, noise_sigma=noise_sigma)


def _batch_task(task: str, clean: torch.Tensor) -> tuple[Operator, list[Operator]]:
    """An operator for the 2-image batch ``clean`` with per-image data where the kind has it, and each image's own."""
    if task == "sr":
        return SuperResolution(2), [SuperResolution(2)] * 2
    if task == "deblur":
        kernels = torch.stack([gaussian_kernel(7, 1.0), gaussian_kernel(7, 2.0)])
        return Blur(kernels), [Blur(kernels[i]) for i in range(2)]
    masks = torch.stack([box_mask(32, 32, 8, 10, 14, 12), box_mask(32, 32, 2, 16, 10, 12)])[:, None]
    return Inpainting(masks), [Inpainting(masks[i : i + 1]) for i in range(2)]


class PerImage(nn.Module):
    """The network evaluated one image at a time: a batch then changes no network rounding, so what remains of a
    batch-versus-single difference is the sampler's own (a norm, a generator or a data step shared across images)."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet
        self.downsample_factor = getattr(unet, "downsample_factor", None)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.unet(x[i : i + 1], t[i : i + 1]) for i in range(x.shape[0])])


class Counting(nn.Module):
    """Counts the network's calls."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.calls = 0
        self.downsample_factor = getattr(inner, "downsample_factor", None)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.inner(x, t)


class MustNotRun(nn.Module):
    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the network ran although the input was refused")


def _generators(seeds: list[int]) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("name", list(METHODS))
def test_a_batch_restores_as_its_images_one_by_one(name, task, clean32, vector_unet, record_property):
    """Per-image operator data, noise levels and generators: a batch of 2 is its 2 single runs. The network runs per
    image, so only the sampler could couple the images; what may remain is float32 rounding of batched operator
    algebra (measured: bitwise but for DDRM's per-image blur SVD, 2.1e-5 where a 1-ulp change of y moves the result
    3.6e-5). The bound is that measured here: 2× the largest change of the single runs when y moves by one ulp."""
    clean = torch.cat([clean32, clean32.flip(-1)])
    op, single_ops = _batch_task(task, clean)
    sigmas = [0.05, 0.1]
    y = add_noise(op.A(clean), sigmas, seed=[5, 6])
    network = PerImage(vector_unet)
    seeds = [3, 4]

    def singles(measurement: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                restore_with(
                    name,
                    network,
                    single_ops[i],
                    measurement[i : i + 1],
                    _config(name, task, sigmas[i], QUICK),
                    generator=_generators([seeds[i]]),
                )
                for i in range(2)
            ]
        )

    batch = restore_with(name, network, op, y, _config(name, task, sigmas, QUICK), generator=_generators(seeds))
    alone = singles(y)
    one_ulp = max(
        float((singles(torch.nextafter(y, torch.full_like(y, bound))) - alone).abs().max()) for bound in (-1.0, 2.0)
    )
    difference = float((batch - alone).abs().max())
    record_property("batch_minus_singles", difference)
    record_property("one_ulp_response", one_ulp)
    assert batch.shape == alone.shape == clean.shape
    assert difference <= 2 * one_ulp, f"batch - singles {difference:.3e}, one-ulp response {one_ulp:.3e}"


@pytest.mark.parametrize("sigma", [0.0, 0.05])
@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("name", list(METHODS))
def test_the_exact_oracle_recovers_the_image(name, task, sigma, small_task, oracle_of, clean32):
    """With ε* of the ground truth every clean estimate is the ground truth: the uint8 result is the ground truth's
    (≥ 60 dB; measured identical), at the kind's preset for the method."""
    op, y = small_task(task, sigma)
    config = _config(name, task, sigma, QUICK, ORACLE)
    out = restore_with(name, oracle_of(clean32), op, y, config, generator=_generators([0]))
    assert float(psnr(float_to_uint8(out), float_to_uint8(clean32))[0]) >= 60.0


@pytest.mark.parametrize("name", list(METHODS))
def test_a_wrong_generator_count_is_refused(name, small_task):
    op, y = small_task("deblur", 0.05)
    with pytest.raises(ValueError, match="got 2 generators for a batch of 1 images: pass one per image"):
        restore_with(name, MustNotRun(), op, y, _config(name, "deblur", 0.05, QUICK), generator=_generators([0, 1]))


@pytest.mark.parametrize("name", list(METHODS))
def test_the_callback_reports_each_step_once(name, small_task, vector_unet):
    """One ``Step`` per step, in order, batch-shaped, as many as network calls and as the config's ``nfes`` (what the
    progress meter and the reports count)."""
    op, y = small_task("sr", 0.05)
    y = torch.cat([y, y.flip(-1)])
    config = _config(name, "sr", 0.05, QUICK)
    network = Counting(vector_unet)
    steps: list[Step] = []
    restore_with(name, network, op, y, config, generator=_generators([0, 1]), callback=steps.append)
    assert [step.i for step in steps] == list(range(len(steps)))
    assert len(steps) == network.calls == get_method(name).nfes(config) > 0
    for step in steps:
        assert isinstance(step.t, int) and 0 <= step.t < 1000
        assert step.x.shape == step.x0.shape == step.x0_hat.shape == (2, 3, 32, 32)


@pytest.mark.parametrize("name", list(METHODS))
def test_a_wrong_x_T_is_refused(name, small_task):
    """A method that starts from a given x_T refuses one of another shape; a method without a start state takes
    none."""
    op, y = small_task("sr", 0.0)
    config = _config(name, "sr", 0.0, QUICK)
    sample = get_method(name).sample
    if "x_T" in inspect.signature(sample).parameters:
        with pytest.raises(ValueError, match=r"x_T must have the shape of the restored batch \(1, 3, 32, 32\)"):
            sample(MustNotRun(), op, y, config, x_T=torch.zeros(1, 3, 16, 16))
    else:
        with pytest.raises(TypeError, match="x_T"):
            sample(MustNotRun(), op, y, config, x_T=torch.zeros(1, 3, 32, 32))


@pytest.mark.slow
def test_a_fifth_method_is_under_the_contract(tmp_path):
    """A method registered in ``METHODS`` (here ``one_step``, by a plugin before collection) runs every contract test
    that DiffPIR runs, and passes them."""
    plugin = Path(__file__).with_name("throwaway_method.py")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin.parent), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            __file__,
            "-p",
            plugin.stem,
            "-k",
            "(one_step or diffpir) and not fifth",
            "-v",
            "-p",
            "no:cacheprovider",
            "--basetemp",
            str(tmp_path / "pytest"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).parents[4],
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    passed = {
        line.split("::")[1].split(" ")[0]
        for line in run.stdout.splitlines()
        if line.endswith("PASSED") or " PASSED " in line
    }
    fifth = {test for test in passed if "one_step" in test}
    assert fifth and fifth == {test.replace("diffpir", "one_step") for test in passed if "diffpir" in test}, sorted(
        passed
    )
