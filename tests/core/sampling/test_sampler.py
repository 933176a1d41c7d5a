"""DiffPIR behaviour beyond the reference vectors: seeds, options and bad input (batching, the oracle, generator
counts and x_T shapes of every method: methods/test_contract.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from diffpir_core.metrics import float_to_uint8, psnr
from diffpir_core.operators import Inpainting
from diffpir_core.sampling import DiffPIRConfig, diffpir_sample, visited_timesteps
from diffpir_core.sampling.common import NoiseSource


def test_fixed_seed_reproduces_bitwise_and_other_seed_differs(ref_cases, oracle_for):
    case = ref_cases.case("deblur_gaussian")
    op, y, model = ref_cases.operator(case), ref_cases.measurement(case), oracle_for(case)
    config = ref_cases.config(case, stochastic=True)

    def run(seed):
        return diffpir_sample(model, op, y, config, generator=torch.Generator().manual_seed(seed))

    first = run(0)
    assert torch.equal(first, run(0))
    assert float((first - run(1)).abs().max()) > 1e-2


def test_global_rng_when_no_generator(ref_cases, oracle_for):
    case = ref_cases.case("inpaint_box")
    op, y, model = ref_cases.operator(case), ref_cases.measurement(case), oracle_for(case)
    config = ref_cases.config(case, stochastic=True)
    torch.manual_seed(3)
    first = diffpir_sample(model, op, y, config)
    torch.manual_seed(3)
    assert torch.equal(first, diffpir_sample(model, op, y, config))
    assert torch.equal(first, diffpir_sample(model, op, y, config, generator=torch.Generator().manual_seed(3)))


def test_vectorised_noise_option_is_seeded_and_differs(ref_cases, oracle_for):
    case = ref_cases.case("inpaint_box")
    op, y, model = ref_cases.operator(case), ref_cases.measurement(case), oracle_for(case)
    config = ref_cases.config(case, stochastic=True)
    fast = config.model_copy(update={"reference_noise": False})
    out = diffpir_sample(model, op, y, fast, x_T=case["x_T"], generator=[torch.Generator().manual_seed(0)])
    again = diffpir_sample(model, op, y, fast, x_T=case["x_T"], generator=[torch.Generator().manual_seed(0)])
    reference = diffpir_sample(model, op, y, config, x_T=case["x_T"], generator=[torch.Generator().manual_seed(0)])
    assert torch.equal(out, again)
    assert float((out - reference).abs().max()) > 1e-3
    assert psnr(float_to_uint8(out)[0], case["gt_uint8"].numpy()) > 40.0


def test_callback_sees_every_visited_step(ref_cases, oracle_for):
    case = ref_cases.case("sr_x4_bicubic")
    config = ref_cases.config(case)
    seen = []
    out = diffpir_sample(
        oracle_for(case),
        ref_cases.operator(case),
        ref_cases.measurement(case),
        config,
        generator=ref_cases.x_T_generator("sr_x4_bicubic"),
        callback=lambda step: seen.append((step.i, step.t, step.x)),
    )
    assert [(i, t) for i, t, _ in seen] == list(enumerate(visited_timesteps(config.iter_num)))
    assert torch.equal(out, seen[-1][2] / 2 + 0.5)


def test_return_x0_hat_removes_the_residual_noise(ref_cases, oracle_for):
    """The reference returns the t = 0 sample (PSNR ceiling ≈ 45.8 dB); x0_hat is the clean estimate."""
    case = ref_cases.case("inpaint_random")
    args = (oracle_for(case), ref_cases.operator(case), ref_cases.measurement(case))
    gen = ref_cases.x_T_generator
    config = ref_cases.config(case)
    sample = diffpir_sample(*args, config, generator=gen("inpaint_random"))
    clean = diffpir_sample(*args, config.model_copy(update={"return_mode": "x0_hat"}), generator=gen("inpaint_random"))
    gt = case["gt_uint8"].numpy()
    assert psnr(float_to_uint8(sample)[0], gt) == pytest.approx(45.84, abs=0.1)
    assert psnr(float_to_uint8(clean)[0], gt) > 55.0


def test_float64_data_step_option(ref_cases, oracle_for):
    case = ref_cases.case("deblur_motion")
    args = (oracle_for(case), ref_cases.operator(case), ref_cases.measurement(case))
    config = ref_cases.config(case).model_copy(update={"data_step_dtype": "float64"})
    out = diffpir_sample(*args, config, x_T=case["x_T"])
    assert out.dtype == torch.float32
    difference = float((out - case["out_x0_oracle_zeta0"]).abs().max())
    assert 0.0 < difference <= 2e-4  # measured 6.7e-5: more accurate, hence not bitwise


def test_inner_repeats_and_eta_options(ref_cases, oracle_for):
    case = ref_cases.case("inpaint_box")
    calls = []

    class Counting(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x, t):
            calls.append(int(t[0]))
            return self.inner(x, t)

    model = Counting(oracle_for(case)).eval()
    op, y = ref_cases.operator(case), ref_cases.measurement(case)
    config = ref_cases.config(case).model_copy(update={"iter_num_U": 2, "eta": 0.5})
    out = diffpir_sample(model, op, y, config, generator=[torch.Generator().manual_seed(0)])
    steps = visited_timesteps(config.iter_num)
    assert calls == [t for t in steps[:-1] for _ in range(2)] + [0]
    assert psnr(float_to_uint8(out)[0], case["gt_uint8"].numpy()) > 40.0


def test_bad_input_is_refused(ref_cases, oracle_for, tiny_unet):
    case = ref_cases.case("inpaint_box")
    op, y, model = ref_cases.operator(case), ref_cases.measurement(case), oracle_for(case)
    config = ref_cases.config(case)
    with pytest.raises(ValueError, match=r"\(B, 3, h, w\)"):
        diffpir_sample(model, op, y[:, :1], config)
    with pytest.raises(ValueError, match="y.float\\(\\) / 255"):
        diffpir_sample(model, op, (y * 255).to(torch.uint8), config)
    with pytest.raises(ValueError, match="NaN"):
        diffpir_sample(model, op, y * float("nan"), config)
    with pytest.raises(ValueError, match="one per image"):
        diffpir_sample(model, op, y, config.model_copy(update={"noise_sigma": [0.0, 0.0]}))
    with pytest.raises(ValueError, match="mask is"):
        diffpir_sample(model, Inpainting(torch.ones(32, 32)), y, config)
    tiny_unet.train()
    try:
        with pytest.raises(ValueError, match="model.eval\\(\\)"):
            diffpir_sample(tiny_unet, op, y, config)
    finally:
        tiny_unet.eval()


def test_image_size_the_unet_cannot_take(tiny_unet):
    """The tiny UNet halves the image 3 times: 60×64 must be refused with a pad/crop hint."""
    y = torch.rand(1, 3, 60, 64)
    with pytest.raises(ValueError, match=r"multiples of 8 .*pad the measurement by 4 rows and 0 columns.*56×64"):
        diffpir_sample(tiny_unet, Inpainting(torch.ones(60, 64)), y, DiffPIRConfig(iter_num=2))


def test_t_start_builds_x_T_lower_and_skips_earlier_steps(ref_cases, oracle_for):
    """t_start = 114 (the reference's nominal 2·50/255 level): x_T at 114, first network call at 57."""
    case = ref_cases.case("deblur_gaussian")
    config = ref_cases.config(case).model_copy(update={"t_start": 114})
    seen = []
    out = diffpir_sample(
        oracle_for(case),
        ref_cases.operator(case),
        ref_cases.measurement(case),
        config,
        generator=[torch.Generator().manual_seed(0)],
        callback=lambda step: seen.append(step.t),
    )
    assert seen == [57, 0]
    assert psnr(float_to_uint8(out)[0], case["gt_uint8"].numpy()) > 30.0


@pytest.mark.parametrize("shape", [(1, 3, 64, 64), (2, 3, 40, 24)])
def test_reference_order_noise_is_the_scalar_samplers_bit_for_bit(shape):
    """The vectorised reference-order draw equals PyTorch's scalar sampler on a channels-last tensor (what the
    reference draws), and ``skip`` leaves the generator where that draw would, over many draws and seeds."""
    b, c, h, w = shape
    for seed in range(20):
        scalar_gen, ours_gen = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        ours = NoiseSource(ours_gen, b, torch.device("cpu"), reference_order=True)
        for skip in (False, True, False):
            scalar = torch.empty((b, h, w, c)).permute(0, 3, 1, 2).normal_(generator=scalar_gen)
            if skip:
                ours.skip(torch.Size(shape))
            else:
                assert torch.equal(ours.draw(torch.Size(shape)), scalar)
        assert torch.equal(torch.rand(4, generator=ours_gen), torch.rand(4, generator=scalar_gen))


def test_reference_order_noise_of_a_batch_is_each_images_own_draw():
    """One generator per image, drawn for the whole batch at once (one transform): the same values as each image
    drawn alone, so results stay independent of the batch they ran in."""
    shape = torch.Size((5, 3, 24, 40))
    batch = NoiseSource(
        [torch.Generator().manual_seed(seed) for seed in range(5)], 5, torch.device("cpu"), reference_order=True
    )
    alone = [
        NoiseSource(torch.Generator().manual_seed(seed), 1, torch.device("cpu"), reference_order=True)
        for seed in range(5)
    ]
    for _ in range(3):
        assert torch.equal(
            batch.draw(shape), torch.cat([source.draw(torch.Size((1, *shape[1:]))) for source in alone])
        )
