"""The training loop's AdamW: fused where torch has a kernel, and the same maths as torch's reference loop."""

from __future__ import annotations

import torch

from ssl_audio.train.optimizer import make_adamw, place_step_counters


def params_and_grads(seed: int) -> tuple[list[torch.nn.Parameter], list[list[torch.Tensor]]]:
    gen = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(shape, generator=gen)) for shape in ((64, 32), (32,), (7, 3, 5))]
    grads = [[torch.randn(p.shape, generator=gen) for p in params] for _ in range(4)]  # 4 steps
    return params, grads


def test_fused_on_cpu_unless_sharded():
    params, _ = params_and_grads(0)
    assert make_adamw([{"params": params}], 1e-3, (0.9, 0.98), 1e-6, device=torch.device("cpu")).defaults["fused"]
    sharded = make_adamw([{"params": params}], 1e-3, (0.9, 0.98), 1e-6, device=torch.device("cpu"), sharded=True)
    assert not sharded.defaults["fused"]


def test_fused_steps_match_torchs_for_loop_adamw():
    """4 steps with two weight-decay groups against torch.optim.AdamW's single-tensor loop (the oracle)."""
    ours_params, grads = params_and_grads(1)
    ref_params, _ = params_and_grads(1)

    def groups(params: list[torch.nn.Parameter]) -> list[dict]:
        return [{"params": params[:1], "weight_decay": 0.01}, {"params": params[1:], "weight_decay": 0.0}]

    ours = make_adamw(groups(ours_params), 1e-2, (0.9, 0.98), 1e-6, device=torch.device("cpu"))
    ref = torch.optim.AdamW(groups(ref_params), lr=1e-2, betas=(0.9, 0.98), eps=1e-6, foreach=False, fused=False)
    for step_grads in grads:
        for optimizer, params in ((ours, ours_params), (ref, ref_params)):
            for p, g in zip(params, step_grads):
                p.grad = g.clone()
            optimizer.step()
    start, _ = params_and_grads(1)
    for a, b, before in zip(ours_params, ref_params, start):
        assert (a - before).abs().mean() > 1e-3  # the steps moved the parameters (by about lr per step)
        # Same fp32 formula in another order: each step may round a parameter (|p| < 5, ulp <= 4.8e-7) differently
        # by an ulp or two, so 4 steps differ by < 4e-6 at worst (measured: 7.5e-9).
        torch.testing.assert_close(a.detach(), b.detach(), rtol=0, atol=1e-5)
    state, ref_state = ours.state[ours_params[0]], ref.state[ref_params[0]]
    torch.testing.assert_close(state["exp_avg_sq"], ref_state["exp_avg_sq"], rtol=1e-6, atol=0)


def test_not_fused_under_a_loss_scaler():
    """fp16: GradScaler would hand the overflow check to the fused kernel, and accelerate could no longer see a
    skipped update; the unfused optimizer lets it."""
    params, _ = params_and_grads(0)
    scaled = make_adamw([{"params": params}], 1e-3, (0.9, 0.98), 1e-6, device=torch.device("cpu"), loss_scaled=True)
    assert not scaled.defaults["fused"]


def test_an_unfused_checkpoint_resumes_fused_with_its_counters_on_the_parameters_device():
    params, grads = params_and_grads(2)
    unfused = torch.optim.AdamW([{"params": params}], lr=1e-3, foreach=False, fused=False)
    for p, g in zip(params, grads[0]):
        p.grad = g
    unfused.step()
    saved = unfused.state_dict()
    # the same shapes on the meta device stand in for an accelerator's parameters (the host has no GPU here)
    on_device = [torch.nn.Parameter(torch.empty(p.shape, device="meta")) for p in params]
    fused = torch.optim.AdamW([{"params": on_device}], lr=1e-3, fused=None)
    fused.load_state_dict(saved)
    fused.param_groups[0]["fused"] = True  # what apply_optimizer_settings copies in from the fresh groups
    assert fused.state[on_device[0]]["step"].device.type == "cpu"
    place_step_counters(fused)
    for p in on_device:
        step = fused.state[p]["step"]
        assert step.device.type == "meta" and step.dtype == torch.float32
