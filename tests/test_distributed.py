"""torch.distributed: the gathered CLIP / SigLIP losses and their gradients on
2 CPU processes (gloo, loopback) equal the single-process computation on the
concatenated batch, and a 2-rank ContrastiveAligner.fit equals a 1-process fit.

Every worker checks its own numbers against the single-process reference it
computes itself (same seed, same data); a failed assertion in a worker makes
``torch.multiprocessing.spawn`` raise here.
"""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD = 2


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _heads(seed: int):
    g = torch.Generator().manual_seed(seed)
    ha = torch.nn.Linear(5, 4).double()
    hb = torch.nn.Linear(3, 4).double()
    with torch.no_grad():
        for p in list(ha.parameters()) + list(hb.parameters()):
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    return ha, hb


def _loss_and_grads(which: str, xa: torch.Tensor, xb: torch.Tensor, distributed):
    """Loss, grads w.r.t. the inputs, the head params and the temperature."""
    from align.train.losses import clip_loss, siglip_loss

    ha, hb = _heads(0)
    xa = xa.clone().requires_grad_(True)
    xb = xb.clone().requires_grad_(True)
    log_s = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(-3.0, dtype=torch.float64, requires_grad=True)
    a, b = ha(xa), hb(xb)
    if which == "clip":
        loss = clip_loss(a, b, log_s.exp(), distributed=distributed)
    else:
        loss = siglip_loss(a, b, log_s.exp(), bias, distributed=distributed)
    loss.backward()
    params = list(ha.parameters()) + list(hb.parameters()) + [log_s, bias]
    pgrads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    return loss.detach(), xa.grad, xb.grad, pgrads


def _worker(rank: int, port: int, tmpdir: str) -> None:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        for sizes in ((4, 4), (2, 5)):  # equal and unequal shards
            _check_losses(rank, sizes)
        _check_fit(tmpdir)
    finally:
        dist.destroy_process_group()


def _check_losses(rank: int, sizes) -> None:
    """Loss value, input gradients and summed parameter gradients vs one process."""
    from align.train.losses import gather_with_grad

    n = sum(sizes)
    g = torch.Generator().manual_seed(1)
    XA = torch.randn(n, 5, generator=g, dtype=torch.float64)
    XB = torch.randn(n, 3, generator=g, dtype=torch.float64)
    lo = sum(sizes[:rank])
    hi = lo + sizes[rank]

    # gather_with_grad: every rank sees the concatenation, in rank order
    got = gather_with_grad(XA[lo:hi])
    torch.testing.assert_close(got, XA)

    for which in ("clip", "siglip"):
        ref_loss, ref_ga, ref_gb, ref_p = _loss_and_grads(which, XA, XB, distributed=False)
        loss, ga, gb, pg = _loss_and_grads(which, XA[lo:hi], XB[lo:hi], distributed=None)
        # the value every rank sees is the global loss
        torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=1e-12)
        # the gradient w.r.t. this rank's rows is exact
        torch.testing.assert_close(ga, ref_ga[lo:hi], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(gb, ref_gb[lo:hi], rtol=1e-10, atol=1e-12)
        # parameter gradients summed over ranks are exact
        for p, r in zip(pg, ref_p):
            dist.all_reduce(p)
            torch.testing.assert_close(p, r, rtol=1e-10, atol=1e-12)


def _check_fit(tmpdir: str) -> None:
    """A 2-rank fit (each rank takes its half of every global batch) equals
    the single-process fit on the same data."""
    import align.train.contrastive as C
    from align.train import ContrastiveAligner

    rng = np.random.default_rng(0)
    Z = rng.normal(size=(96, 4))
    X = (Z @ rng.normal(size=(4, 9))).astype(np.float32)
    Y = (Z @ rng.normal(size=(4, 7))).astype(np.float32)
    kw = dict(dim=6, epochs=2, batch_size=24, lr=1e-2, hidden=8, progress=False)
    for loss in ("clip", "siglip"):
        ckpt = os.path.join(tmpdir, loss)
        multi = ContrastiveAligner(loss=loss, head="mlp", checkpoint_dir=ckpt, **kw).fit(X, Y)
        dist.barrier()
        assert os.path.isfile(os.path.join(ckpt, "LATEST"))  # rank 0 wrote, everyone sees it
        # the same loop without the process group, on one process
        real = C.distributed_active
        C.distributed_active = lambda distributed=None: False
        try:
            single = ContrastiveAligner(loss=loss, head="mlp", **kw).fit(X, Y)
        finally:
            C.distributed_active = real
        np.testing.assert_allclose(multi.transform_a(X), single.transform_a(X), atol=2e-5)
        np.testing.assert_allclose(
            [h["loss"] for h in multi.history_], [h["loss"] for h in single.history_], rtol=1e-5
        )


@pytest.mark.slow
def test_two_process_gloo_matches_single_process(tmp_path):
    if not dist.is_available():
        pytest.skip("torch.distributed is not available in this torch build")
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
