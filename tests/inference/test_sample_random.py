"""SampleRandom draws on its device from seeded generators; on the CPU its draws are torch.Generator()'s."""

import pytest
import torch

from ardrag.inference.sampler import SampleRandom


def test_cpu_draws_are_the_plain_generators_bit_for_bit():
    rng = SampleRandom([3, 11], "cpu")
    plain = [torch.Generator().manual_seed(s) for s in (3, 11)]
    for _ in range(2):
        got = rng.randn(2, 5)
        assert got.device.type == "cpu"
        assert got.equal(torch.stack([torch.randn((2, 5), generator=g) for g in plain]))
    skipped = rng.randn(4, rows=[False, True])
    assert skipped[0].count_nonzero() == 0 and skipped[1].equal(torch.randn((4,), generator=plain[1]))
    both = rng.randn(3)
    assert both[0].equal(torch.randn((3,), generator=plain[0]))  # row 0's stream did not move
    assert both[1].equal(torch.randn((3,), generator=plain[1]))
    assert rng.uniform().equal(torch.cat([torch.rand(1, generator=g, dtype=torch.float64) for g in plain]))
    assert rng.choice(7) == [int(torch.randint(7, (1,), generator=g)) for g in plain]


def test_states_round_trip():
    rng = SampleRandom([5], "cpu")
    state = rng.get_state()
    a = rng.randn(6)
    rng.set_state(state)
    assert rng.randn(6).equal(a)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_draws_stay_on_the_device_and_repeat_for_a_seed():
    a, b = SampleRandom([1, 2], "cuda"), SampleRandom([1, 2], "cuda")
    assert all(g.device.type == "cuda" for g in a.generators)
    x = a.randn(4, 8)
    assert x.device.type == "cuda" and x.equal(b.randn(4, 8))
    assert a.uniform().device.type == "cuda"
