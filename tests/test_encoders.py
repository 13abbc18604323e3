"""Sequence encoders: configuration, time encoding, code pooling and the visit embedding against
brute-force definitions; causality, padding and permutation invariance, finiteness, gradients,
autocast and a small learning check for every encoder."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from ehrseq.data import SequenceBatch
from ehrseq.errors import ConfigError, ShapeError
from ehrseq.models.encoders import (
    CausalTransformerEncoder,
    EmbeddingConfig,
    EncoderConfig,
    LandmarkEncoder,
    RecurrentEncoder,
    TimeEncoding,
    VisitEmbedding,
    attention_pool_codes,
    build_encoder,
    mean_pool_codes,
    time_features,
)

N_NUMERIC, CARDINALITIES, VOCAB, N_CODES = 3, (4, 6), 30, 5
KINDS = ("gru", "lstm", "transformer", "landmark")
ENCODER_CASES = [(kind, pooling) for kind in KINDS for pooling in ("mean", "attention")]


def make_batch(seed: int, b: int = 4, m: int = 6, dtype: torch.dtype = torch.float32, lengths=None) -> SequenceBatch:
    """Random batch with left-aligned real visits, some empty code bags and missing values.

    Padding is filled with garbage (NaN numerics, out-of-vocabulary indices, infinite times) that
    the encoders must ignore.
    """
    g = torch.Generator().manual_seed(seed)
    if lengths is None:
        lengths = torch.randint(1, m + 1, (b,), generator=g)
    lengths = torch.as_tensor(lengths)
    mask = torch.arange(m)[None, :] < lengths[:, None]
    real = mask[..., None]
    gap = torch.rand(b, m, generator=g, dtype=dtype) * 200
    gap[:, 0] = 0
    time = gap.cumsum(1) - 300 * torch.rand(b, 1, generator=g, dtype=dtype)
    codes = torch.randint(0, VOCAB, (b, m, N_CODES), generator=g)
    codes = torch.where(torch.rand(b, m, 1, generator=g) < 0.25, 0, codes)  # whole bags empty
    categorical = torch.stack([torch.randint(1, c, (b, m), generator=g) for c in CARDINALITIES], dim=-1)
    numeric = torch.randn(b, m, N_NUMERIC, generator=g, dtype=dtype)
    missing = torch.rand(b, m, N_NUMERIC, generator=g) < 0.3
    numeric = torch.where(missing & (torch.rand(b, m, N_NUMERIC, generator=g) < 0.5), math.nan, numeric)
    return SequenceBatch(
        numeric=torch.where(real, numeric, math.nan),
        numeric_missing=missing,
        categorical=torch.where(real, categorical, 10_000),
        codes=torch.where(real, codes, -7),
        time=torch.where(mask, time, math.inf),
        gap=torch.where(mask, gap, math.nan),
        mask=mask,
        patient_index=torch.arange(b),
    )


def make_config(kind: str = "gru", pooling: str = "mean", **changes) -> EncoderConfig:
    base = dict(
        kind=kind, n_numeric=N_NUMERIC, categorical_cardinalities=CARDINALITIES, code_vocab_size=VOCAB,
        d_model=16, n_heads=2, n_layers=2, pooling=pooling, dropout=0.1, time_frequencies=4,
    )
    return EncoderConfig(**{**base, **changes})


_ENCODERS: dict = {}


def encoder(kind: str, pooling: str, dtype: torch.dtype = torch.float32):
    """One eval-mode encoder per case and dtype, built once (hypothesis reuses it across examples)."""
    key = (kind, pooling, dtype)
    if key not in _ENCODERS:
        torch.manual_seed(0)
        _ENCODERS[key] = build_encoder(make_config(kind, pooling)).to(dtype).eval()
    return _ENCODERS[key]


# ================================================================================ configuration
def test_config_round_trips_through_json():
    config = make_config("transformer", "attention", ff_dim=40, learnable_time_frequencies=True)
    text = json.dumps(config.to_dict())
    assert EncoderConfig.from_dict(json.loads(text)) == config
    embedding_config = EmbeddingConfig(n_numeric=2, categorical_cardinalities=[3, 5])
    assert embedding_config.categorical_cardinalities == (3, 5)
    assert EmbeddingConfig.from_dict(json.loads(json.dumps(embedding_config.to_dict()))) == embedding_config


def test_from_dict_refuses_unknown_keys_and_bidirectional():
    with pytest.raises(ConfigError, match="hidden"):
        EncoderConfig.from_dict({"kind": "gru", "hidden": 3})
    with pytest.raises(ConfigError, match="bidirectional.*visits after m"):
        EncoderConfig.from_dict({"kind": "lstm", "bidirectional": True})
    with pytest.raises(ConfigError, match="dict"):
        EncoderConfig.from_dict([("kind", "gru")])


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"d_model": 0}, "d_model"),
        ({"pooling": "max"}, "pooling"),
        ({"dropout": 1.0}, "dropout"),
        ({"categorical_cardinalities": (4, 1)}, r"categorical_cardinalities\[1\]"),
        ({"code_vocab_size": 1}, "code_vocab_size"),
        ({"n_numeric": True}, "n_numeric"),
        ({"kind": "rnn"}, "kind"),
        ({"kind": "transformer", "d_model": 10, "n_heads": 4}, "divisible by n_heads"),
        ({"time_min_period": 10.0, "time_max_period": 5.0}, "time_max_period"),
        ({"time_min_period": math.inf}, "time_min_period"),
        ({"ff_dim": 0}, "ff_dim"),
        ({"n_layers": 0}, "n_layers"),
    ],
)
def test_invalid_config_names_the_field(changes, field):
    with pytest.raises(ConfigError, match=field):
        make_config(**changes)
    with pytest.raises(ConfigError, match=field):
        make_config().replace(**changes)


def test_build_encoder_dispatches_on_kind_and_accepts_dicts():
    expected = {"gru": (RecurrentEncoder, torch.nn.GRU), "lstm": (RecurrentEncoder, torch.nn.LSTM),
                "transformer": (CausalTransformerEncoder, None), "landmark": (LandmarkEncoder, None)}
    for kind, (cls, cell) in expected.items():
        built = build_encoder(make_config(kind, d_model=24).to_dict())
        assert type(built) is cls and built.output_dim == 24
        assert cell is None or isinstance(built.rnn, cell)
        assert built(make_batch(0)).shape == (4, 6, 24)
    with pytest.raises(ConfigError, match="EncoderConfig"):
        build_encoder("gru")
    with pytest.raises(ConfigError, match="kind"):
        RecurrentEncoder(make_config("transformer"))
    with pytest.raises(ConfigError, match="kind"):
        CausalTransformerEncoder(make_config("gru"))


# ================================================================================ time encoding
def test_time_features_match_the_formula():
    x = torch.tensor([-4000.0, -1.5, 0.0, 0.3, 7.0, 365.25, 20000.0], dtype=torch.float64)
    omega = torch.tensor([0.01, 0.5, 6.0], dtype=torch.float64)
    got = time_features(x, omega)
    for i, xi in enumerate(x.tolist()):
        want = [math.copysign(math.log1p(abs(xi)), xi)] + [math.sin(w * xi) for w in omega.tolist()]
        want += [math.cos(w * xi) for w in omega.tolist()]
        assert got[i].tolist() == pytest.approx(want, rel=1e-12, abs=1e-12)


def test_time_encoding_frequencies_are_geometric_between_the_periods():
    encoding = TimeEncoding(5, min_period=2.0, max_period=2000.0)
    periods = 2 * math.pi / encoding.log_frequency.double().exp()
    want = [2000.0 * (2.0 / 2000.0) ** (i / 4) for i in range(5)]
    assert periods.tolist() == pytest.approx(want, rel=1e-6)
    assert encoding.output_dim == 11
    assert list(encoding.parameters()) == [] and "log_frequency" not in encoding.state_dict()
    assert TimeEncoding(1, 1.0, 50.0).log_frequency.exp().item() == pytest.approx(2 * math.pi / 50.0, rel=1e-6)


def test_time_encoding_learnable_frequencies_and_float32_under_low_precision_input():
    encoding = TimeEncoding(3, 1.0, 100.0, learnable=True)
    out = encoding(torch.tensor([1.0, 40.0, -3.0], dtype=torch.bfloat16))
    assert out.dtype == torch.float32
    out.sum().backward()
    assert encoding.log_frequency.grad is not None and torch.all(encoding.log_frequency.grad != 0)


# ================================================================================ code pooling
def _random_bags(seed: int, n: int = 12, k: int = 4, vocab: int = 9):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, vocab, (n, k), generator=g)
    codes[:3] = 0  # empty bags
    codes[3] = torch.tensor([5, 0, 5, 0])  # repeated code, padding in the middle
    table = torch.randn(vocab, 6, generator=g, dtype=torch.float64)
    query = torch.randn(6, generator=g, dtype=torch.float64)
    return codes.reshape(3, n // 3, k), table, query


def test_mean_pooling_matches_a_loop_over_codes():
    codes, table, _ = _random_bags(1)
    got = mean_pool_codes(codes, table)
    assert got.shape == (3, 4, 6)
    for idx in torch.cartesian_prod(torch.arange(3), torch.arange(4)).tolist():
        bag = [c for c in codes[tuple(idx)].tolist() if c != 0]
        want = torch.stack([table[c] for c in bag]).mean(0) if bag else torch.zeros(6, dtype=torch.float64)
        torch.testing.assert_close(got[tuple(idx)], want, rtol=1e-12, atol=1e-12)


def test_attention_pooling_matches_a_loop_over_codes():
    codes, table, query = _random_bags(2)
    got = attention_pool_codes(codes, table, query)
    for idx in torch.cartesian_prod(torch.arange(3), torch.arange(4)).tolist():
        bag = [c for c in codes[tuple(idx)].tolist() if c != 0]
        if not bag:
            want = torch.zeros(6, dtype=torch.float64)
        else:
            scores = [float(table[c] @ query) / math.sqrt(6) for c in bag]
            top = max(scores)
            weights = [math.exp(s - top) for s in scores]
            want = sum(w / sum(weights) * table[c] for w, c in zip(weights, bag))
        torch.testing.assert_close(got[tuple(idx)], want, rtol=1e-12, atol=1e-12)


def test_pooling_gradcheck_including_empty_bags():
    codes, table, query = _random_bags(3)
    table.requires_grad_(True)
    query.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: mean_pool_codes(codes, t), (table,))
    assert torch.autograd.gradcheck(lambda t, q: attention_pool_codes(codes, t, q), (table, query))


def test_pooling_accepts_visits_without_code_columns():
    table, query = torch.randn(5, 3), torch.randn(3)
    codes = torch.zeros(2, 4, 0, dtype=torch.long)
    assert torch.equal(mean_pool_codes(codes, table), torch.zeros(2, 4, 3))
    assert torch.equal(attention_pool_codes(codes, table, query), torch.zeros(2, 4, 3))


# ================================================================================ visit embedding
def _reference_embedding(embedding: VisitEmbedding, batch: SequenceBatch) -> torch.Tensor:
    """The documented formula, visit by visit, from the module's parameters (eval mode, no dropout)."""
    cfg = embedding.config
    d = cfg.d_model
    omega = embedding.time_encoding.log_frequency.exp().tolist()
    offsets = [sum(cfg.categorical_cardinalities[:j]) for j in range(len(cfg.categorical_cardinalities))]
    b_size, m_size = batch.mask.shape
    out = torch.zeros(b_size, m_size, d, dtype=torch.float64)
    for b in range(b_size):
        for m in range(int(batch.mask[b].sum())):
            feats = []
            for x in (float(batch.time[b, m]), float(batch.gap[b, m])):
                feats += [math.copysign(math.log1p(abs(x)), x)]
                feats += [math.sin(w * x) for w in omega] + [math.cos(w * x) for w in omega]
            z = embedding.time.weight @ torch.tensor(feats, dtype=torch.float64) + embedding.time.bias
            values = [0.0 if missing else float(v)
                      for v, missing in zip(batch.numeric[b, m], batch.numeric_missing[b, m])]
            flags = [float(missing) for missing in batch.numeric_missing[b, m]]
            z = z + embedding.numeric.weight @ torch.tensor(values + flags, dtype=torch.float64)
            for j, c in enumerate(batch.categorical[b, m].tolist()):
                z = z + embedding.categorical[offsets[j] + c]
            bag = [c for c in batch.codes[b, m].tolist() if c != 0]
            table = embedding.codes.weight
            if not bag:
                z = z + embedding.no_codes
            elif cfg.pooling == "mean":
                z = z + torch.stack([table[c] for c in bag]).mean(0)
            else:
                scores = torch.stack([table[c] @ embedding.code_query for c in bag]) / math.sqrt(d)
                z = z + (torch.softmax(scores, 0)[:, None] * torch.stack([table[c] for c in bag])).sum(0)
            centred = z - z.mean()
            normed = centred / torch.sqrt((centred**2).mean() + embedding.norm.eps)
            out[b, m] = normed * embedding.norm.weight + embedding.norm.bias
    return out


@pytest.mark.parametrize("pooling", ["mean", "attention"])
def test_visit_embedding_matches_the_formula_visit_by_visit(pooling):
    torch.manual_seed(1)
    embedding = VisitEmbedding(make_config(pooling=pooling)).double().eval()
    batch = make_batch(5, b=3, m=5, dtype=torch.float64)
    got = embedding(batch)
    with torch.no_grad():
        want = _reference_embedding(embedding, batch)
    torch.testing.assert_close(got[batch.mask], want[batch.mask], rtol=1e-10, atol=1e-10)
    assert torch.isfinite(got).all()


def test_visit_embedding_with_no_optional_inputs_uses_time_only():
    config = EmbeddingConfig(d_model=8, time_frequencies=0)
    embedding = VisitEmbedding(config).eval()
    batch = make_batch(0).replace(
        numeric=torch.zeros(4, 6, 0), numeric_missing=torch.zeros(4, 6, 0, dtype=torch.bool),
        categorical=torch.zeros(4, 6, 0, dtype=torch.long), codes=torch.zeros(4, 6, 0, dtype=torch.long),
    )
    out = embedding(batch)
    assert out.shape == (4, 6, 8) and torch.isfinite(out).all()
    assert sum(p.numel() for p in embedding.parameters()) == 2 * 8 + 8 + 2 * 8  # time projection (2 → 8, bias) and LayerNorm


def test_float64_embedding_accepts_a_float32_batch():
    embedding = VisitEmbedding(make_config()).double()
    assert embedding(make_batch(0)).dtype == torch.float64


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda b: b.replace(numeric=b.numeric[..., :2]), "numeric"),
        (lambda b: b.replace(numeric_missing=b.numeric_missing.long()), "numeric_missing"),
        (lambda b: b.replace(categorical=b.categorical[..., :1]), "categorical"),
        (lambda b: b.replace(codes=b.codes.int()), "codes"),
        (lambda b: b.replace(time=b.time[:, :3]), "time"),
        (lambda b: b.replace(mask=b.mask.long()), "mask"),
    ],
)
def test_shape_and_dtype_mismatches_name_the_field(change, message):
    embedding = VisitEmbedding(make_config())
    with pytest.raises(ShapeError, match=message):
        embedding(change(make_batch(0)))


def _set_at(tensor, index, value):
    tensor = tensor.clone()
    tensor[index] = value
    return tensor


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda b: b.replace(codes=_set_at(b.codes, (0, 0, 0), VOCAB)), "codes must lie"),
        (lambda b: b.replace(codes=_set_at(b.codes, (0, 0, 0), -1)), "codes must lie"),
        (lambda b: b.replace(categorical=_set_at(b.categorical, (0, 0, 0), 4)), "categorical indices"),
        (lambda b: b.replace(numeric=_set_at(b.numeric, (0, 0), math.nan),
                             numeric_missing=_set_at(b.numeric_missing, (0, 0), False)), "numeric values"),
        (lambda b: b.replace(gap=_set_at(b.gap, (0, 0), math.inf)), "time and gap"),
        (lambda b: b.replace(mask=_set_at(b.mask, (0, 0), False)), "left-aligned"),
    ],
)
def test_value_checks_reject_bad_real_visits_unless_disabled(change, message):
    embedding = VisitEmbedding(make_config())
    bad = change(make_batch(0, lengths=[6, 3, 2, 1]))
    with pytest.raises(ShapeError, match=message):
        embedding(bad)
    embedding.check_inputs = False
    if message not in ("codes must lie", "categorical indices"):  # indices would crash inside torch
        embedding(bad)


def test_a_code_free_embedding_requires_code_free_batches():
    embedding = VisitEmbedding(make_config(code_vocab_size=0))
    batch = make_batch(0)
    with pytest.raises(ShapeError, match="code_vocab_size = 0"):
        embedding(batch)
    assert torch.isfinite(embedding(batch.replace(codes=torch.zeros_like(batch.codes)))).all()


# ================================================================================ causality
def _perturb_after(batch: SequenceBatch, b: int, m: int, kind: str, seed: int) -> SequenceBatch:
    """Change (or delete) the visits of patient b after visit m; everything else is left as is."""
    g = torch.Generator().manual_seed(seed)
    after = torch.zeros_like(batch.mask)
    after[b, m + 1:] = True
    after3 = after[..., None]
    if kind == "delete":
        return batch.replace(mask=batch.mask & ~after)
    if kind == "times":
        noise = torch.rand(batch.time.shape, generator=g, dtype=batch.time.dtype) * 1e4 - 5e3
        return batch.replace(time=torch.where(after, noise, batch.time),
                             gap=torch.where(after, noise.abs(), batch.gap))
    other = make_batch(seed + 1, *batch.mask.shape, dtype=batch.numeric.dtype, lengths=batch.lengths)
    return batch.replace(
        numeric=torch.where(after3, torch.randn(batch.numeric.shape, generator=g, dtype=batch.numeric.dtype) * 100,
                            batch.numeric),
        numeric_missing=torch.where(after3, ~batch.numeric_missing, batch.numeric_missing),
        categorical=torch.where(after3, other.categorical, batch.categorical),
        codes=torch.where(after3, other.codes, batch.codes),
    )


causality_cases = st.tuples(
    st.integers(0, 10_000), st.integers(1, 4), st.integers(2, 7),
    st.sampled_from(["values", "times", "delete"]), st.integers(0, 10**6),
)


@pytest.mark.parametrize("kind, pooling", ENCODER_CASES)
@settings(max_examples=25, deadline=None)
@given(case=causality_cases)
def test_outputs_up_to_m_never_depend_on_later_visits_float64(kind, pooling, case):
    seed, b_size, m_size, perturbation, choice = case
    batch = make_batch(seed, b_size, m_size, dtype=torch.float64)
    lengths = batch.lengths.tolist()
    b = choice % b_size
    m = (choice // b_size) % lengths[b]
    model = encoder(kind, pooling, torch.float64)
    before = model(batch)
    after = model(_perturb_after(batch, b, m, perturbation, seed))
    torch.testing.assert_close(after[b, : m + 1], before[b, : m + 1], rtol=0, atol=1e-6)
    others = batch.mask.clone()
    others[b] = False
    torch.testing.assert_close(after[others], before[others], rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind, pooling", ENCODER_CASES)
def test_outputs_up_to_m_never_depend_on_later_visits_float32(kind, pooling):
    model = encoder(kind, pooling)
    batch = make_batch(3, b=3, m=7, lengths=[7, 5, 2])
    before = model(batch)
    for m in range(6):
        for perturbation in ("values", "times", "delete"):
            after = model(_perturb_after(batch, 0, m, perturbation, seed=m))
            torch.testing.assert_close(after[0, : m + 1], before[0, : m + 1], rtol=0, atol=1e-5)
            changed = (after[0, m + 1:] - before[0, m + 1:]).abs().max() if perturbation != "delete" else None
            assert changed is None or changed > 1e-3  # later visits do react: the test can fail


# ================================================================================ padding and batch
@pytest.mark.parametrize("kind, pooling", ENCODER_CASES)
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), b_size=st.integers(1, 4), m_size=st.integers(1, 6),
       extra_visits=st.integers(1, 4), extra_patients=st.integers(1, 3))
def test_padding_and_other_patients_do_not_change_outputs(kind, pooling, seed, b_size, m_size, extra_visits,
                                                           extra_patients):
    model = encoder(kind, pooling)
    batch = make_batch(seed, b_size, m_size)
    base = model(batch)
    bigger = make_batch(seed + 1, b_size + extra_patients, m_size + extra_visits)
    lengths = torch.cat([batch.lengths, bigger.lengths[b_size:]])
    mask = torch.arange(m_size + extra_visits)[None, :] < lengths[:, None]
    merged = {}
    for name in ("numeric", "numeric_missing", "categorical", "codes", "time", "gap"):
        value = getattr(bigger, name).clone()
        value[:b_size, :m_size] = getattr(batch, name)
        merged[name] = value
    grown = model(bigger.replace(mask=mask, **merged))
    torch.testing.assert_close(grown[:b_size, :m_size][batch.mask], base[batch.mask], rtol=0, atol=1e-5)
    perm = torch.randperm(b_size, generator=torch.Generator().manual_seed(seed))
    permuted = batch.replace(**{name: getattr(batch, name)[perm] for name in batch.tensors()})
    torch.testing.assert_close(model(permuted)[permuted.mask], base[perm][permuted.mask], rtol=0, atol=1e-5)


# ================================================================================ finiteness and gradients
@pytest.mark.parametrize("kind, pooling", ENCODER_CASES)
def test_empty_bags_and_all_missing_visits_give_finite_outputs_and_gradients(kind, pooling):
    torch.manual_seed(0)
    model = build_encoder(make_config(kind, pooling))
    batch = make_batch(0)
    batch = batch.replace(
        codes=torch.zeros_like(batch.codes),
        numeric_missing=torch.ones_like(batch.numeric_missing),
        numeric=torch.full_like(batch.numeric, math.nan),
    )
    out = model(batch)
    assert torch.isfinite(out).all()
    out[batch.mask].pow(2).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert model.embedding.no_codes.grad.abs().sum() > 0


@pytest.mark.parametrize("kind, pooling", ENCODER_CASES)
def test_gradients_reach_every_parameter(kind, pooling):
    torch.manual_seed(0)
    model = build_encoder(make_config(kind, pooling, learnable_time_frequencies=True))
    batch = make_batch(1, b=5, m=6)
    model(batch)[batch.mask].sin().sum().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("kind, pooling", ENCODER_CASES)
def test_eval_mode_is_deterministic_and_training_mode_uses_dropout(kind, pooling):
    torch.manual_seed(0)
    model = build_encoder(make_config(kind, pooling, dropout=0.3))
    batch = make_batch(2)
    model.eval()
    assert torch.equal(model(batch), model(batch))
    with torch.no_grad():
        assert torch.equal(model(batch), model(batch))
    model.train()
    assert not torch.equal(model(batch)[batch.mask], model(batch)[batch.mask])


@pytest.mark.parametrize("kind, pooling", ENCODER_CASES)
def test_runs_under_bfloat16_autocast(kind, pooling):
    torch.manual_seed(0)
    model = build_encoder(make_config(kind, pooling))
    batch = make_batch(4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(batch)
        loss = out[batch.mask].float().pow(2).mean()
    loss.backward()
    assert out.shape == (4, 6, 16) and torch.isfinite(out).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# ================================================================================ learning
@pytest.mark.parametrize("kind, pooling", [("gru", "attention"), ("lstm", "mean"), ("transformer", "attention")])
def test_learns_a_label_that_depends_on_earlier_visits(kind, pooling):
    """y_m = 1 if code 2 was recorded at some visit before m (not at m itself).

    From the current visit alone the best achievable loss is about 0.5 (only the visit time says
    how many earlier visits there were); fitting well below it needs the history.
    """
    b, m, k = 64, 8, 3
    g = torch.Generator().manual_seed(1)
    codes = torch.randint(3, 20, (b, m, k), generator=g)
    flagged = torch.rand(b, m, generator=g) < 0.15
    codes[..., 0] = torch.where(flagged, 2, codes[..., 0])
    labels = ((flagged.long().cumsum(1) - flagged.long()) > 0).float()
    gap = torch.rand(b, m, generator=g) * 60 + 1
    gap[:, 0] = 0
    batch = SequenceBatch(
        numeric=torch.randn(b, m, 2, generator=g), numeric_missing=torch.zeros(b, m, 2, dtype=torch.bool),
        categorical=torch.zeros(b, m, 0, dtype=torch.long), codes=codes, time=gap.cumsum(1), gap=gap,
        mask=torch.ones(b, m, dtype=torch.bool), patient_index=torch.arange(b),
    )
    torch.manual_seed(0)
    model = build_encoder(EncoderConfig(kind=kind, n_numeric=2, code_vocab_size=20, d_model=32, pooling=pooling,
                                        dropout=0.0, n_layers=1 if kind != "transformer" else 2))
    head = torch.nn.Linear(model.output_dim, 1)
    optimizer = torch.optim.Adam([*model.parameters(), *head.parameters()], lr=1e-2)
    losses = []
    for _ in range(100):
        optimizer.zero_grad()
        loss = F.binary_cross_entropy_with_logits(head(model(batch)).squeeze(-1), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] > 0.6 and losses[-1] < 0.1


# ---------------------------------------------------------------------------------------------- GRU inference
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gru_inference_gives_the_states_of_nn_gru(layers, dtype):
    from ehrseq.models.encoders.recurrent import gru_inference

    torch.manual_seed(layers)
    rnn = torch.nn.GRU(6, 6, num_layers=layers, batch_first=True, dropout=0.3 if layers > 1 else 0.0).to(dtype).eval()
    visits = torch.randn(5, 9, 6, dtype=dtype) * 3
    with torch.no_grad():
        expected, _ = rnn(visits)
        got = gru_inference(rnn, visits)
    assert got.shape == expected.shape and got.dtype == dtype
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6 if dtype == torch.float32 else 1e-12)


def test_the_recurrent_encoder_takes_the_inference_path_only_without_gradients(monkeypatch):
    import ehrseq.models.encoders.recurrent as recurrent

    encoder = build_encoder(EncoderConfig(kind="gru", d_model=8, n_layers=2)).eval()
    visits, mask = torch.randn(3, 4, 8), torch.ones(3, 4, dtype=torch.bool)
    calls = []
    monkeypatch.setattr(recurrent, "gru_inference", lambda rnn, x: calls.append(x) or rnn(x)[0])
    trained = encoder.contextualize(visits, mask)
    assert not calls and trained.requires_grad
    with torch.inference_mode():
        encoder.contextualize(visits, mask)
    assert len(calls) == 1
