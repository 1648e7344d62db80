import pytest
import torch
from diffusers import DDIMScheduler

from hypersd.core.segments import sample_grid_pair, sample_t_end, segment_boundary, segment_edges
from hypersd.core.solver import training_grid
from hypersd.models.tiny_sd import build_noise_scheduler


@pytest.mark.parametrize("k", [1, 2, 3, 4, 8])
def test_edges_are_the_trailing_ddim_timesteps(k):
    ddim = DDIMScheduler.from_config(build_noise_scheduler().config, timestep_spacing="trailing")
    ddim.set_timesteps(k)
    assert segment_edges(k).tolist() == [-1] + sorted(ddim.timesteps.tolist())[:-1]


def test_four_segments():
    assert segment_edges(4).tolist() == [-1, 249, 499, 749]


@pytest.mark.parametrize("k", [1, 2, 4, 8])
@pytest.mark.parametrize("skip", [20, 25])
def test_boundary_for_every_grid_point(k, skip):
    grid = training_grid(1000, skip)
    t_n, t_prev = grid[1:], grid[:-1]
    t_b = segment_boundary(t_n, t_prev, k)
    edges = segment_edges(k).tolist()
    for tn, tp, tb in zip(t_n.tolist(), t_prev.tolist(), t_b.tolist()):
        lower = max(e for e in edges if e < tn)  # half-open (lower, upper]
        assert tb == min(lower, tp), (tn, tp, tb)
        assert tb <= tp < tn
        upper = min([e for e in edges if e >= tn] + [999])
        assert lower < tn <= upper


def test_points_exactly_on_an_edge_belong_to_the_segment_below():
    t_n = torch.tensor([874, 749, 249, 999])
    t_prev = t_n - 25
    assert segment_boundary(t_n, t_prev, 8).tolist() == [749, 624, 124, 874]
    assert segment_boundary(t_n, t_prev, 4).tolist() == [749, 499, -1, 749]
    # one step above an edge: the teacher step lands on it, a boundary step
    assert segment_boundary(torch.tensor([899]), torch.tensor([874]), 8).tolist() == [874]


def test_a_step_crossing_an_edge_is_a_boundary_step():
    # skip 20: 139 -> 119 crosses the edge 124 of k = 8
    assert segment_boundary(torch.tensor([139]), torch.tensor([119]), 8).tolist() == [119]


def test_one_segment_reaches_the_clean_image():
    grid = training_grid(1000, 20)
    assert set(segment_boundary(grid[1:], grid[:-1], 1).tolist()) == {-1}


def test_t_end_uniform_covers_the_closed_interval_and_edge_mode_is_t_b():
    gen = torch.Generator().manual_seed(0)
    t_b, t_prev = torch.full((20000,), 749), torch.full((20000,), 759)
    t_end = sample_t_end(t_b, t_prev, "uniform", gen)
    assert t_end.min() == 749 and t_end.max() == 759
    counts = torch.bincount(t_end - 749).float()
    assert len(counts) == 11 and (counts / counts.mean() - 1).abs().max() < 0.1
    assert torch.equal(sample_t_end(t_b, t_prev, "edge"), t_b)
    assert torch.equal(sample_t_end(t_prev, t_prev, "uniform", gen), t_prev)
    with pytest.raises(ValueError, match="t_end mode"):
        sample_t_end(t_b, t_prev, "random")


def test_grid_pairs_never_start_at_the_bottom():
    grid = training_grid(1000, 20)
    t_n, t_prev = sample_grid_pair(grid, 5000, torch.Generator().manual_seed(0))
    assert t_n.min() == 39 and t_n.max() == 999 and torch.equal(t_n - t_prev, torch.full_like(t_n, 20))
