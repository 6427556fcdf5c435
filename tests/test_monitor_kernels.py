"""The monitor's P-length machinery: the fused exact kernel, the index-hash count-sketch, and
the checkpointed state — each against references written out here (numpy, plain Python
integers), never against the code under test.
"""

import io
import math

import numpy as np
import pytest
import torch

from edgesweep.spectral import CountSketch, MonitorConfig, SpectralMonitor
from edgesweep.spectral import kernels
from edgesweep.spectral.monitor import monitor_state_bytes
from edgesweep.workloads.training import _cpu_copy

M64 = (1 << 64) - 1
PHI = 0x9E3779B97F4A7C15


def ref_mix64(z):
    z ^= z >> 30
    z = (z * 0xBF58476D1CE4E5B9) & M64
    z ^= z >> 27
    z = (z * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def ref_bucket_sign(i, seed, d):
    """The map as the sketch module's docstring defines it, in Python integers."""
    key = ref_mix64((seed + PHI) & M64)
    h = ref_mix64((i * PHI + key) & M64)
    return ((h >> 32) * d) >> 32, (-1 if h & 1 else 1)


def ref_matrix(p, d, seed):
    s = np.zeros((d, p))
    for i in range(p):
        b, sign = ref_bucket_sign(i, seed, d)
        s[b, i] = sign
    return s


@pytest.fixture(params=["numba", "torch"])
def backend(request, monkeypatch):
    if request.param == "numba":
        pytest.importorskip("numba")
    monkeypatch.setenv(kernels.BACKEND_ENV, request.param)
    return request.param


def stream(p, n, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(3, p, generator=g, dtype=torch.float64)
    theta = torch.randn(p, generator=g, dtype=torch.float64)
    out = [theta.to(dtype)]
    for _ in range(n):
        theta = theta + torch.tensor([3.0, 1.5, 0.7], dtype=torch.float64) * torch.randn(3, generator=g,
                                                                                           dtype=torch.float64) @ basis
        theta = theta + 0.3 * torch.randn(p, generator=g, dtype=torch.float64)
        out.append(theta.to(dtype))
    return out


# ----------------------------------------------------------------------------- the sketch map
@pytest.mark.parametrize("seed", [0, 7, 2**40 + 3])
def test_hash_matches_the_documented_map_including_indices_beyond_int32(seed):
    """Bucket and sign of coordinates 0..499 and of indices past 2³¹ and 2³² (a P = 10⁹+
    monitor's coordinates need 64-bit indices; there is no int32 bucket array any more)."""
    d = 37
    idx = list(range(500)) + [2**31 - 1, 2**31, 2**32 + 5, 3 * 10**9, 2**62 + 11]
    want = [ref_bucket_sign(i, seed, d) for i in idx]
    sk = CountSketch(2**62 + 12, d, seed=seed)
    b, s = sk.buckets_and_signs(torch.tensor(idx))
    assert list(zip(b.tolist(), s.tolist())) == want
    if kernels.numba_kernels() is not None:
        nk = kernels.numba_kernels()
        for start in (0, 2**31 - 1, 3 * 10**9):
            nb, ns = nk.hash_indices(start, start + 3, np.uint64(sk.key), d)
            assert list(zip(nb.tolist(), ns.tolist())) == [ref_bucket_sign(i, seed, d)
                                                           for i in range(start, start + 3)]


def test_buckets_are_close_to_uniform_and_signs_balanced():
    d, n = 50, 200000
    b, s = CountSketch(n, d, seed=3).buckets_and_signs(torch.arange(n))
    counts = torch.bincount(b, minlength=d).double()
    chi2 = float(((counts - n / d) ** 2 / (n / d)).sum())
    assert chi2 < d + 6 * math.sqrt(2 * d)  # χ²(d−1): mean 49, sd ≈ 10
    assert abs(float(s.double().mean())) < 5 / math.sqrt(n)


def test_sketch_holds_no_per_coordinate_array():
    """A 3·10⁹-coordinate sketch is created instantly and holds no tensor or array at all:
    memory is O(1) in P (this also retires the int32-vs-int64 bucket-array question)."""
    sk = CountSketch(3 * 10**9, 100, seed=1)
    assert not [k for k, v in vars(sk).items() if isinstance(v, (torch.Tensor, np.ndarray))]
    fp = sk.fingerprint()  # O(1) too: a handful of probe coordinates, up to index P − 1
    b, s = ref_bucket_sign(3 * 10**9 - 1, 1, 100)
    assert fp["n_params"] == 3 * 10**9 and fp["probe"][-1] == (b + 1) * s


def test_count_sketch_equals_the_explicit_matrix(backend):
    p, d, seed = 3000, 17, 11
    s = ref_matrix(p, d, seed)
    x = torch.randn(p, dtype=torch.float64)
    sk = CountSketch(p, d, seed=seed)
    assert np.allclose(sk.project(x).numpy(), s @ x.numpy(), rtol=1e-12, atol=1e-12)
    x32 = x.float()
    views = [x32[:5], x32[5:1234], x32[1234:1234], x32[1234:]]  # offsets, an empty part
    got = sk.sketch(views).numpy()
    assert got.dtype == np.float64
    assert np.allclose(got, s @ x32.double().numpy(), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="coordinates"):
        sk.project(x[:-1])


def test_sketched_squared_norm_is_unbiased_with_the_stated_spread():
    """E‖Sx‖² = ‖x‖² and sd(‖Sx‖²)/‖x‖² ≤ √(2/d) (count-sketch variance (2/d)(‖x‖⁴ − ‖x‖₄⁴)),
    over 400 seeds: what update_norm means in sketched mode."""
    p, d, n = 5000, 50, 400
    x = torch.randn(p, dtype=torch.float64)
    ratios = np.array([float(CountSketch(p, d, seed=k).project(x).square().sum() / x.square().sum())
                       for k in range(n)])
    bound = math.sqrt(2 / d)
    assert abs(ratios.mean() - 1) < 4 * bound / math.sqrt(n)  # unbiased (4 standard errors)
    assert 0.7 * bound < ratios.std() < 1.2 * bound


# ----------------------------------------------------------------------------- the fused kernel
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_kernel_against_numpy(dtype):
    """ring[slot] = view − prev bit-for-bit (IEEE subtraction in the snapshot dtype), θ_prev
    overwritten, and the dot products equal float64 numpy products of the stored rows."""
    nk = pytest.importorskip("edgesweep.spectral._numba_kernels")
    rng = np.random.default_rng(0)
    p, rows, slot, off, n = 100003, 6, 2, 777, 60001
    ring = rng.standard_normal((rows, p)).astype(dtype)
    prev = rng.standard_normal(p).astype(dtype)
    view = (prev[off:off + n] + 1e-3 * rng.standard_normal(n)).astype(dtype)
    ring0, prev0 = ring.copy(), prev.copy()
    dots = nk.exact_update(view, prev, ring, slot, off, 4096, 64)
    delta = view - prev0[off:off + n]
    assert np.array_equal(ring[slot, off:off + n], delta)
    assert np.array_equal(prev[off:off + n], view)
    untouched = np.ones(p, bool)
    untouched[off:off + n] = False
    assert np.array_equal(prev[untouched], prev0[untouched])
    assert np.array_equal(np.delete(ring, slot, 0), np.delete(ring0, slot, 0))
    ref = ring[:, off:off + n].astype(np.float64) @ delta.astype(np.float64)
    assert np.allclose(dots, ref, rtol=1e-11, atol=1e-11 * np.abs(ref).max())
    bad = view.copy()
    bad[123] = np.nan
    assert np.isnan(nk.exact_update(bad, prev, ring, slot, off, 4096, 64)).all()  # NaN propagates


def test_kernel_results_do_not_depend_on_the_thread_count():
    nk = pytest.importorskip("edgesweep.spectral._numba_kernels")
    import numba

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs 2 CPUs")
    rng = np.random.default_rng(1)
    p = 300007
    ring = rng.standard_normal((5, p)).astype(np.float32)
    prev = rng.standard_normal(p).astype(np.float32)
    view = rng.standard_normal(p).astype(np.float32)
    out = []
    for threads in (1, 2):
        with kernels.threads(threads) as got:
            assert got == threads
            r, q = ring.copy(), prev.copy()
            out.append((nk.exact_update(view, q, r, 1, 0, 4096, 64),
                        nk.sketch_accumulate(view, 0, np.uint64(5), 64, 64)))
    assert np.array_equal(out[0][0], out[1][0]) and np.array_equal(out[0][1], out[1][1])


@pytest.mark.parametrize("sketch_dim", [None, 16])
def test_monitor_leaves_torchs_thread_count_alone(monkeypatch, sketch_dim):
    """numba's OpenMP layer shares libgomp with torch and resets its thread count on launch;
    a 1-thread trial must stay at 1 thread (and use 1 numba thread) after observing."""
    pytest.importorskip("numba")
    monkeypatch.setenv(kernels.BACKEND_ENV, "numba")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        mon = SpectralMonitor(MonitorConfig(window=3, params="all", sketch_dim=sketch_dim))
        for i, s in enumerate(stream(5000, 4)):
            mon.observe(s, step=i)
            assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_numba_and_torch_paths_store_identical_rows(monkeypatch):
    pytest.importorskip("numba")
    snaps = stream(20000, 8)
    mons = {}
    for backend in ("numba", "torch"):
        monkeypatch.setenv(kernels.BACKEND_ENV, backend)
        mon = SpectralMonitor(MonitorConfig(window=4, params="all"))
        rows = [mon.observe(s, step=i) for i, s in enumerate(snaps)]
        mons[backend] = (mon, rows)
    (a, ra), (b, rb) = mons["numba"], mons["torch"]
    assert torch.equal(a.ring, b.ring) and torch.equal(a.prev, b.prev)
    assert np.allclose(a.gram, b.gram, rtol=1e-12, atol=0)
    for x, y in zip(ra[2:], rb[2:]):
        assert np.allclose(x["sigma"], y["sigma"], rtol=1e-10)


def test_kernels_compile_once_per_process(monkeypatch):
    """Many snapshots, of a module with parameters of several sizes and of a flat tensor:
    one float32 specialisation of the fused kernel, never one per snapshot or per size."""
    nk = pytest.importorskip("edgesweep.spectral._numba_kernels")
    monkeypatch.setenv(kernels.BACKEND_ENV, "numba")
    model = torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.Linear(5, 3))
    mon = SpectralMonitor(MonitorConfig(window=3, params="all"))
    flat = SpectralMonitor(MonitorConfig(window=3, params="all"))
    for i in range(6):
        with torch.no_grad():
            for q in model.parameters():
                q.add_(0.1 * torch.randn_like(q))
        mon.observe(model, step=i)
        flat.observe(torch.randn(1000 + 0 * i), step=i)
    f32 = [sig for sig in nk.exact_update.signatures if str(sig[0].dtype) == "float32"]
    assert len(f32) == 1, nk.exact_update.signatures
    assert kernels.warm_up(torch.float32) == 0.0  # already warm: no second compile or load


# ----------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("sketch_dim", [None, 32])
def test_state_is_returned_not_copied_and_round_trips_bit_for_bit(sketch_dim):
    """state_dict() hands out the monitor's own tensors (the caller copies, as the training
    loop's _cpu_copy does — once); the copy is independent of the live monitor, and a restore
    from it continues bit-for-bit."""
    p = 4000
    snaps = stream(p, 10)
    cfg = MonitorConfig(window=3, params="all", sketch_dim=sketch_dim, sketch_seed=2)
    mon = SpectralMonitor(cfg)
    for i, s in enumerate(snaps[:6]):
        mon.observe(s, step=i)
    state = mon.state_dict()
    assert state["ring"] is mon.ring
    assert state["prev"] is mon.prev and state["prev_sketch"] is mon.prev_sketch
    saved = _cpu_copy(state)
    frozen = {k: v.clone() for k, v in saved.items() if isinstance(v, torch.Tensor)}
    later = [mon.observe(s, step=6 + i) for i, s in enumerate(snaps[6:])]
    for k, v in frozen.items():
        assert torch.equal(saved[k], v), k  # the live monitor moved on; the checkpoint did not
    buf = io.BytesIO()
    torch.save(saved, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    resumed = SpectralMonitor(cfg)
    resumed.load_state_dict(loaded)
    for k in ("ring", "prev", "prev_sketch"):
        a, b = resumed.state_dict()[k], frozen.get(k)
        assert (a is None and b is None) or torch.equal(a, b), k
    again = [resumed.observe(s, step=6 + i) for i, s in enumerate(snaps[6:])]
    strip = lambda r: {k: v for k, v in r.items() if k != "gram_ms"}  # noqa: E731
    assert [strip(r) for r in again] == [strip(r) for r in later]
    resumed.observe(snaps[0], step=99)  # the restored monitor owns its tensors:
    assert torch.equal(loaded["ring"], frozen["ring"])  # the dict it was given is untouched


@pytest.mark.parametrize("sketch_dim", [None, 64])
def test_saved_state_is_one_ring_plus_one_previous_snapshot(sketch_dim):
    p, w = 200000, 4
    cfg = MonitorConfig(window=w, params="all", sketch_dim=sketch_dim)
    mon = SpectralMonitor(cfg)
    for i, s in enumerate(stream(p, 6)):
        mon.observe(s, step=i)
    buf = io.BytesIO()
    torch.save(_cpu_copy(mon.state_dict()), buf)
    expected = ((w + 1) * p + p) * 4 if sketch_dim is None else ((w + 1) + 1) * sketch_dim * 8
    assert monitor_state_bytes(p, cfg) == expected
    assert expected <= buf.tell() <= expected + 16384  # + pickle framing and the small arrays
    if sketch_dim is not None:
        assert buf.tell() < 20000  # O(W·d): no θ_prev, no bucket map (P = 2·10⁵ here)


def test_sketch_state_carries_its_map_and_a_restore_checks_it():
    p = 3000
    cfg = MonitorConfig(window=3, params="all", sketch_dim=32, sketch_seed=5)
    mon = SpectralMonitor(cfg)
    for i, s in enumerate(stream(p, 5)):
        mon.observe(s, step=i)
    state = _cpu_copy(mon.state_dict())
    fp = state["sketch"]
    assert {k: fp[k] for k in ("n_params", "dim", "seed")} == {"n_params": p, "dim": 32, "seed": 5}
    assert isinstance(fp["hash"], str) and fp["hash"]
    probe_b, probe_s = ref_bucket_sign(0, 5, 32)
    assert fp["probe"][0] == (probe_b + 1) * probe_s  # the probe is this map's, by the reference
    SpectralMonitor(cfg).load_state_dict(state)  # the same map restores
    tampered = [{**fp, "hash": "other-hash-v0"}, {**fp, "probe": [0] * len(fp["probe"])},
                {**fp, "n_params": p + 1}, None]
    for bad_fp in tampered:
        bad = dict(state, sketch=bad_fp)
        with pytest.raises(ValueError, match="count-sketch map"):
            SpectralMonitor(cfg).load_state_dict(bad)
    old_format = {k: v for k, v in state.items() if k != "sketch"}  # states from before the map
    with pytest.raises(ValueError, match="count-sketch map"):
        SpectralMonitor(cfg).load_state_dict(old_format)


def test_backend_choice_and_the_fallback_without_numba(monkeypatch):
    small, large = [torch.zeros(1000)], [torch.zeros(kernels.NUMBA_MIN_PARAMS)]
    cpu = torch.device("cpu")
    monkeypatch.setenv(kernels.BACKEND_ENV, "auto")
    assert kernels.backend_for(cpu, small) == "torch"  # below the size where numba pays off
    assert kernels.backend_for(cpu, [torch.zeros(8, dtype=torch.bfloat16)] * 2) == "torch"
    if kernels.numba_kernels() is not None:
        assert kernels.backend_for(cpu, large) == "numba"
    monkeypatch.setattr(kernels, "_nk", False)  # as if numba could not be imported
    assert kernels.backend_for(cpu, large) == "torch"
    mon = SpectralMonitor(MonitorConfig(window=3, params="all", sketch_dim=8))
    for i, s in enumerate(stream(3000, 4)):
        row = mon.observe(s, step=i)
    assert row["window"] == 3
    monkeypatch.setenv(kernels.BACKEND_ENV, "numba")
    with pytest.raises(RuntimeError, match="numba"):
        kernels.backend_for(cpu, small)
    monkeypatch.setenv(kernels.BACKEND_ENV, "gpu-please")
    with pytest.raises(ValueError, match="auto|numba|torch"):
        kernels.backend_for(cpu, small)
