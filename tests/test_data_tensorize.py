"""Tables -> tensors -> per-visit values, batching, truncation and the length-bucketing loader."""

import numpy as np
import polars as pl
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data.distributed import DistributedSampler

from ehrseq.data import (
    FeaturePipeline,
    LengthBucketSampler,
    SequenceData,
    TimeGrid,
    build_cohort,
    make_loader,
    tensorize,
)
from ehrseq.errors import ConfigError


def _catalogue_example():
    """[catalogue]'s worked example: patient 1 has 3 visits and the event, patient 2 is censored after 2."""
    visits = pl.DataFrame({"patient_id": [1, 1, 1, 2, 2], "time": [0.0, 30.0, 60.0, 0.0, 45.0],
                           "x": [1.0, 2.0, 3.0, 4.0, 5.0]})
    outcomes = pl.DataFrame({"patient_id": [1, 2], "time": [90.0, 100.0], "event": [1, 0]})
    return build_cohort(visits, outcomes)


def test_catalogue_worked_example_patients():
    cohort = _catalogue_example()
    batch = tensorize(cohort, FeaturePipeline().fit(cohort), TimeGrid.manual([30.0, 60.0])).to_padded().validate()
    assert batch.mask.tolist() == [[True, True, True], [True, True, False]]
    assert batch.event.tolist() == [1, 0]
    assert batch.event_visit.tolist() == [2, 1]
    assert batch.remaining[batch.mask].tolist() == [90.0, 60.0, 30.0, 100.0, 55.0]
    assert batch.bin[batch.mask].tolist() == [2, 1, 0, 2, 1]
    assert batch.bin[1, 2].item() == -1 and batch.remaining[1, 2].item() == 1.0 and batch.upper[1, 2].item() == 2.0
    assert batch.time.tolist() == [[0.0, 30.0, 60.0], [0.0, 45.0, 0.0]]
    assert batch.gap.tolist() == [[0.0, 30.0, 30.0], [0.0, 45.0, 0.0]]
    assert batch.weight.tolist() == [1.0, 1.0] and batch.entry is None


def test_values_round_trip_from_table_to_padded_tensors():
    visits = pl.DataFrame({
        "patient_id": ["b", "a", "a", "b", "c"],
        "time": [5.0, 1.0, 3.0, 2.0, 0.0],
        "x": [10.0, None, 30.0, 20.0, 40.0],
        "c": ["u", "v", "u", None, "v"],
        "codes": [["K1"], ["K2", "K1"], None, [], ["K3", "K1", "K2"]],
    })
    outcomes = pl.DataFrame({"patient_id": ["a", "b", "c"], "time": [4.0, 9.0, 1.0], "event": [1, 2, 0],
                             "time_upper": [None, 12.0, None], "entry_time": [0.5, 2.0, 0.0]})
    cohort = build_cohort(visits, outcomes)
    pipe = FeaturePipeline(time_features=False).fit(cohort)
    batch = tensorize(cohort, pipe).to_padded().validate()
    mean, sd = 25.0, float(np.std([10.0, 30.0, 20.0, 40.0]))
    z = lambda v: 0.0 if v is None else (v - mean) / sd  # noqa: E731
    # a: visits 1, 3 (outcome 4); b: 2, 5 (outcome 9); c: 0 (outcome 1)
    assert batch.mask.tolist() == [[True, True], [True, True], [True, False]]
    assert batch.numeric[..., 0][batch.mask].tolist() == pytest.approx([z(None), z(30.0), z(20.0), z(10.0), z(40.0)])
    assert batch.numeric_missing[..., 0][batch.mask].tolist() == [True, False, False, False, False]
    vocab = {level: i + 2 for i, level in enumerate(pipe.levels["c"])}
    assert batch.categorical[..., 0][batch.mask].tolist() == [vocab[v] for v in ["v", "u", None, "u", "v"]]
    code = {c: i + 2 for i, c in enumerate(pipe.code_vocabulary)}
    assert batch.codes.shape[2] == 3
    assert batch.codes[0, 0].tolist() == [code["K2"], code["K1"], 0]
    assert batch.codes[0, 1].tolist() == [0, 0, 0]
    assert batch.codes[1, 1].tolist() == [code["K1"], 0, 0]
    assert batch.codes[2, 0].tolist() == [code["K3"], code["K1"], code["K2"]]
    assert batch.remaining[batch.mask].tolist() == [3.0, 1.0, 7.0, 4.0, 1.0]
    assert batch.upper[batch.mask].tolist() == [float("inf")] * 2 + [10.0, 7.0] + [float("inf")]
    assert batch.event.tolist() == [1, 2, 0] and batch.event_visit.tolist() == [1, 1, 0]
    assert batch.entry.tolist() == [-0.5, 0.0, 0.0]
    assert cohort.patient_ids[batch.patient_index.numpy()].to_list() == ["a", "b", "c"]


def test_single_patient_items_batches_and_to_padded_agree():
    cohort = _catalogue_example()
    data = tensorize(cohort, FeaturePipeline().fit(cohort))
    whole = data.to_padded()
    second = data[1].validate()
    assert second.mask.shape == (1, 2)
    assert torch.equal(second.numeric[0], whole.numeric[1, :2])
    reordered = data.batch([1, 0])
    assert torch.equal(reordered.numeric[1], whole.numeric[0]) and reordered.patient_index.tolist() == [1, 0]
    assert torch.equal(reordered.numeric[0, :2], whole.numeric[1, :2])


def test_truncation_to_the_most_recent_visits_when_batching():
    cohort = _catalogue_example()
    data = tensorize(cohort, FeaturePipeline().fit(cohort), max_visits=2)
    batch = data.to_padded().validate()
    assert batch.time.tolist() == [[30.0, 60.0], [0.0, 45.0]]
    assert batch.gap.tolist() == [[30.0, 30.0], [0.0, 45.0]]
    assert batch.event_visit.tolist() == [1, 1] and data.lengths.tolist() == [2, 2]
    assert data.batch([0], max_visits=1).time.tolist() == [[60.0]]
    with pytest.raises(ConfigError, match="max_visits"):
        tensorize(cohort, FeaturePipeline().fit(cohort), max_visits=0)


def test_unlabelled_and_multi_event_cohorts():
    visits = pl.DataFrame({"patient_id": [1, 1, 2], "time": [0.0, 3.0, 1.0], "x": [1.0, 2.0, 3.0]})
    unlabelled = build_cohort(visits)
    batch = tensorize(unlabelled, FeaturePipeline().fit(unlabelled)).to_padded().validate()
    assert not batch.has_targets and batch.remaining is None and batch.mask.sum().item() == 3
    outcomes = pl.DataFrame({"patient_id": [1, 2], "time": [10.0, 10.0], "event": [0, 1]})
    multi = pl.DataFrame({"patient_id": [1, 2], "event_name": ["mi", "dm"], "time": [5.0, 8.0], "event": [1, 0]})
    cohort = build_cohort(visits, outcomes, multi_outcomes=multi)
    batch = tensorize(cohort, FeaturePipeline().fit(cohort)).to_padded().validate()
    assert batch.event_times.tolist() == [[0.0, 5.0], [7.0, 0.0]]
    assert batch.event_flags.tolist() == [[False, True], [False, False]]
    assert batch.event_at_risk.tolist() == [[False, True], [True, False]]


# ---------------------------------------------------------------------------------------------- loader
def _loader_data(n_patients: int = 60, seed: int = 0) -> SequenceData:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 12, size=n_patients)
    pid = np.repeat(np.arange(n_patients), lengths)
    time = np.concatenate([np.arange(n, dtype=float) for n in lengths])
    visits = pl.DataFrame({"patient_id": pid, "time": time, "x": rng.normal(size=len(pid))})
    outcomes = pl.DataFrame({"patient_id": np.arange(n_patients), "time": lengths + 1.0,
                             "event": rng.integers(0, 2, size=n_patients)})
    cohort = build_cohort(visits, outcomes)
    return tensorize(cohort, FeaturePipeline().fit(cohort))


def _epoch(loader) -> list[list[int]]:
    return [batch.patient_index.tolist() for batch in loader]


def test_loader_visits_every_patient_once_per_epoch_and_is_seeded():
    data = _loader_data()
    loader = make_loader(data, batch_size=8, shuffle=True, seed=1)
    first, second = _epoch(loader), _epoch(loader)
    for epoch in (first, second):
        flat = [i for b in epoch for i in b]
        assert sorted(flat) == list(range(len(data)))
    assert first != second  # a new order each epoch
    again = make_loader(data, batch_size=8, shuffle=True, seed=1)
    assert _epoch(again) == first
    again.batch_sampler.set_epoch(1)
    assert _epoch(again) == second
    assert len(loader) == 8 and len(make_loader(data, 8, drop_last=True)) == 7
    assert sum(len(b) for b in _epoch(make_loader(data, 8, shuffle=True, drop_last=True))) == 56


def test_bucketing_reduces_padding_and_batches_validate():
    data = _loader_data(n_patients=400)

    def padded_slots(loader):
        return sum(b.mask.numel() for b in loader)

    bucketed = make_loader(data, 16, shuffle=True, seed=0)
    plain = make_loader(data, 16, shuffle=True, seed=0, bucket_by_length=False)
    assert padded_slots(bucketed) < padded_slots(plain)
    for batch in bucketed:
        batch.validate()
        assert batch.mask.sum(1).tolist() == data.lengths[batch.patient_index].tolist()
        assert batch.mask.shape[1] == int(batch.lengths.max())
    ordered = [len_ for b in make_loader(data, 16) for len_ in b.lengths.tolist()]
    assert ordered == sorted(ordered)


def test_distributed_style_split_gives_disjoint_ranks():
    data = _loader_data(n_patients=50)
    seen = []
    for rank in range(2):
        sampler = DistributedSampler(data, num_replicas=2, rank=rank, shuffle=True, seed=3, drop_last=True)
        loader = make_loader(data, 4, shuffle=True, sampler=sampler)
        loader.batch_sampler.set_epoch(2)
        seen.append({i for b in loader for i in b.patient_index.tolist()})
    assert not (seen[0] & seen[1]) and len(seen[0] | seen[1]) == 50


def test_worker_processes_produce_the_same_batches():
    data = _loader_data(n_patients=30)
    single = [b.numeric for b in make_loader(data, 7, shuffle=True, seed=5)]
    workers = [b.numeric for b in make_loader(data, 7, shuffle=True, seed=5, num_workers=2)]
    assert len(single) == len(workers) and all(torch.equal(a, b) for a, b in zip(single, workers))


def test_sampler_arguments_are_checked():
    with pytest.raises(ConfigError, match="batch_size"):
        LengthBucketSampler(np.ones(3, dtype=int), 0)


# ---------------------------------------------------------------------------------------------- property
@st.composite
def tables(draw):
    n_patients = draw(st.integers(1, 8))
    rows, outcome_rows = [], []
    for pid in range(n_patients):
        times = sorted(draw(st.sets(st.integers(0, 50), min_size=1, max_size=6)))
        for t in times:
            x = draw(st.one_of(st.none(), st.floats(-100, 100)))
            codes = draw(st.one_of(st.none(), st.lists(st.sampled_from("ABCD"), max_size=3)))
            rows.append((f"p{pid}", float(t), x, codes))
        y = draw(st.integers(min(times), 60)) + draw(st.sampled_from([0.0, 0.5]))
        outcome_rows.append((f"p{pid}", float(y), draw(st.integers(0, 2))))
    order = draw(st.permutations(range(len(rows))))
    visits = pl.DataFrame([rows[i] for i in order], orient="row",
                          schema={"patient_id": pl.String, "time": pl.Float64, "x": pl.Float64,
                                  "codes": pl.List(pl.String)})
    outcomes = pl.DataFrame(outcome_rows, orient="row",
                            schema={"patient_id": pl.String, "time": pl.Float64, "event": pl.Int64})
    return visits, outcomes


@pytest.mark.filterwarnings("ignore::ehrseq.errors.DataWarning")  # random event codes may look like R's coding
@settings(max_examples=40, deadline=None)
@given(tables(), st.integers(1, 5), st.integers(0, 3))
def test_random_tables_tensorize_without_loss(data, batch_size, seed):
    visits, outcomes = data
    cohort = build_cohort(visits, outcomes)
    report = cohort.report
    assert report.balanced
    assert report.visits.n_in == visits.height
    assert report.visits.n_used == cohort.n_visits
    pipe = FeaturePipeline(time_features=False).fit(cohort)
    sequence = tensorize(cohort, pipe)
    outcome_time = dict(zip(outcomes["patient_id"], outcomes["time"]))
    expected = {(r["patient_id"], r["time"]): r for r in visits.iter_rows(named=True)
                if r["time"] < outcome_time[r["patient_id"]]}
    seen = {}
    for batch in make_loader(sequence, batch_size, shuffle=True, seed=seed):
        batch.validate()
        lengths = sequence.lengths[batch.patient_index]
        assert batch.mask.sum(1).tolist() == lengths.tolist()
        assert torch.all(batch.mask[:, :-1] >= batch.mask[:, 1:])  # left-aligned
        assert batch.event_visit.tolist() == (lengths - 1).tolist()
        for b, patient in enumerate(batch.patient_index.tolist()):
            pid = cohort.patient_ids[patient]
            origin = cohort.patients["origin"][patient]
            for m in range(int(lengths[b])):
                key = (pid, float(batch.time[b, m]) + origin)
                assert key in expected and key not in seen
                seen[key] = True
                row = expected[key]
                assert batch.remaining[b, m].item() == pytest.approx(outcome_time[pid] - key[1])
                assert bool(batch.numeric_missing[b, m, 0]) == (row["x"] is None)
                if row["x"] is not None:
                    z = (row["x"] - pipe.means[0]) / pipe.stds[0]
                    assert batch.numeric[b, m, 0].item() == pytest.approx(z, rel=1e-5, abs=1e-5)
                n_codes = len(row["codes"] or [])
                assert int((batch.codes[b, m] != 0).sum()) == n_codes
    assert len(seen) == len(expected) == cohort.n_visits
