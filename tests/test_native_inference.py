"""The native inference path of the recurrent encoder: the visit embedding one step at a time and the GRU step,
against the PyTorch implementations (the embedding's sums and layer norm, ``nn.GRU``), on batches with padding
garbage, missing values, empty code lists and every optional input left out; when the path applies and when not."""

import dataclasses

import pytest
import torch
from native_runs import at_thread_counts
from test_encoders import CARDINALITIES, N_CODES, N_NUMERIC, VOCAB, make_batch

import ehrseq
from ehrseq.errors import ShapeError
from ehrseq.models.distributions import _native
from ehrseq.models.encoders import EncoderConfig, build_encoder
from ehrseq.models.encoders.recurrent import gru_inference, gru_steps

pytestmark = pytest.mark.skipif(not _native.available(), reason=_native.status())

#: (d_model, numeric, categorical, codes): widths that take the 64-, 16- and 1-wide sums, and inputs left out.
EMBEDDING_CASES = [
    (64, True, True, True),
    (72, True, True, True),   # 64 + 8
    (19, True, True, True),   # 16 + 3
    (8, False, True, True),
    (16, True, False, True),
    (32, True, True, False),
    (24, False, False, False),
]


def _encoder(d_model: int, numeric: bool, categorical: bool, codes: bool, **overrides) -> torch.nn.Module:
    torch.manual_seed(d_model)
    config = EncoderConfig(kind="gru", d_model=d_model, n_numeric=N_NUMERIC if numeric else 0,
                           categorical_cardinalities=CARDINALITIES if categorical else (),
                           code_vocab_size=VOCAB if codes else 0, time_unit=7.0, **overrides)
    encoder = build_encoder(config).eval()
    with torch.no_grad():  # a layer norm that is not the identity
        encoder.embedding.norm.weight.uniform_(0.5, 1.5)
        encoder.embedding.norm.bias.uniform_(-0.5, 0.5)
    return encoder


def _inputs_of(batch, numeric: bool, categorical: bool, codes: bool):
    b, m = batch.mask.shape
    return dataclasses.replace(
        batch,
        numeric=batch.numeric if numeric else batch.numeric[..., :0],
        numeric_missing=batch.numeric_missing if numeric else batch.numeric_missing[..., :0],
        categorical=batch.categorical if categorical else batch.categorical[..., :0],
        codes=batch.codes if codes else torch.zeros(b, m, 0, dtype=torch.int64),
    )


def _embedded_steps(embedding, batch):
    sums, embed = embedding.native_steps(batch, check_values=False)
    b, m = batch.mask.shape
    steps = torch.empty(m, b, embedding.output_dim)
    for t in range(m):
        embed(t, steps[t])
    return sums, steps.transpose(0, 1)


@pytest.mark.parametrize(("d_model", "numeric", "categorical", "codes"), EMBEDDING_CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_the_native_embedding_steps_give_the_sums_and_embeddings_of_the_pytorch_path(seed, d_model, numeric,
                                                                                    categorical, codes):
    embedding = _encoder(d_model, numeric, categorical, codes).embedding
    batch = _inputs_of(make_batch(seed, b=9, m=7), numeric, categorical, codes)
    with torch.inference_mode():
        expected_sums, expected = embedding.sums(batch), embedding(batch)
        for sums, embedded in at_thread_counts(lambda: _embedded_steps(embedding, batch)):
            # every position, padding included: padded visits get the PyTorch path's values too
            torch.testing.assert_close(sums, expected_sums, rtol=0, atol=2e-5)
            torch.testing.assert_close(embedded, expected, rtol=0, atol=2e-5)


def test_a_visit_without_codes_gets_the_no_codes_vector_and_a_visit_with_codes_their_mean():
    embedding = _encoder(16, False, False, True).embedding
    batch = _inputs_of(make_batch(3, b=2, m=2, lengths=[2, 2]), False, False, True)
    codes = torch.zeros(2, 2, N_CODES, dtype=torch.int64)
    codes[0, 1, :3] = torch.tensor([4, 9, 4])  # a repeated code counts twice in the mean, as in mean_pool_codes
    batch = dataclasses.replace(batch, codes=codes)
    with torch.inference_mode():
        sums, _ = _embedded_steps(embedding, batch)
        plain = embedding.sums(dataclasses.replace(batch, codes=torch.zeros(2, 2, 0, dtype=torch.int64)))
    table = embedding.codes.weight
    no_codes = embedding.no_codes
    torch.testing.assert_close(sums[0, 0], plain[0, 0], rtol=0, atol=1e-5)  # no codes in either
    torch.testing.assert_close(sums[0, 1] - plain[0, 1], (2 * table[4] + table[9]) / 3 - no_codes, rtol=0, atol=1e-5)


def test_a_batch_that_lists_no_code_gives_every_visit_the_no_codes_vector():
    embedding = _encoder(16, True, False, True).embedding
    batch = _inputs_of(make_batch(5), True, False, False)  # a model with codes, a batch of visits without any
    assert batch.codes.shape[-1] == 0
    with torch.inference_mode():
        sums, embedded = _embedded_steps(embedding, batch)
        torch.testing.assert_close(sums, embedding.sums(batch), rtol=0, atol=2e-5)
        torch.testing.assert_close(embedded, embedding(batch), rtol=0, atol=2e-5)


@pytest.mark.parametrize("field", ["categorical", "codes"])
@pytest.mark.parametrize("bad", [-3, 10_000])
def test_an_index_outside_its_vocabulary_is_refused_not_read(field, bad):
    embedding = _encoder(16, True, True, True).embedding
    embedding.check_inputs = False  # as for torch.compile: the values are not checked before the kernel
    batch = make_batch(2, lengths=[6, 6, 6, 6])
    value = getattr(batch, field).clone()
    value[1, 2, 0] = bad
    with torch.inference_mode(), pytest.raises(ShapeError, match="outside its vocabulary"):
        _embedded_steps(embedding, dataclasses.replace(batch, **{field: value}))


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("bias", [True, False])
def test_gru_steps_give_the_states_of_nn_gru_natively_and_without(layers, bias):
    torch.manual_seed(layers)
    rnn = torch.nn.GRU(6, 5, num_layers=layers, bias=bias, batch_first=True, dropout=0.3 if layers > 1 else 0.0).eval()
    visits = torch.randn(7, 9, 6) * 3
    with torch.no_grad():
        expected, _ = rnn(visits)
        natively = at_thread_counts(lambda: gru_inference(rnn, visits))
        with _native.disabled():
            without = gru_inference(rnn, visits)
    for got in (*natively, without):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_gru_steps_read_each_step_input_once_in_order():
    rnn = torch.nn.GRU(3, 4).eval()
    inputs, asked = torch.randn(5, 2, 3), []

    def step_input(t: int) -> torch.Tensor:
        asked.append(t)
        return inputs[t]

    with torch.no_grad():
        states = gru_steps(rnn, step_input, 2, 5)
        torch.testing.assert_close(states, rnn(inputs)[0], rtol=0, atol=1e-6)
    assert asked == [0, 1, 2, 3, 4]


def test_the_recurrent_encoder_takes_the_native_path_only_where_it_applies():
    encoder = _encoder(16, True, True, True)
    batch = make_batch(0)
    with torch.inference_mode():
        sums, states = encoder.encode(batch)
        assert encoder.embedding.native_steps(batch) is not None
        with _native.disabled():
            assert encoder.embedding.native_steps(batch) is None
            torch_sums, torch_states = encoder.encode(batch)
    torch.testing.assert_close(sums, torch_sums, rtol=0, atol=2e-5)
    real = batch.mask
    torch.testing.assert_close(states[real], torch_states[real], rtol=0, atol=2e-5)
    assert encoder.embedding.native_steps(batch) is None  # gradients enabled
    with torch.inference_mode():
        assert encoder.train().embedding.native_steps(batch) is None
        encoder.eval()
        assert encoder.double().embedding.native_steps(make_batch(0, dtype=torch.float64)) is None
        attention = _encoder(16, True, True, True, pooling="attention")
        assert attention.embedding.native_steps(batch) is None
        with attention.embedding.replaced(torch.zeros(4, 6, 16)):
            assert encoder.float().embedding.native_steps(batch) is not None
            assert attention.embedding.native_steps(batch) is None


def test_a_batch_that_falls_back_to_the_pytorch_path_is_checked_once(monkeypatch):
    from ehrseq.models.encoders.embedding import VisitEmbedding

    checks = []
    original = VisitEmbedding.check_batch
    monkeypatch.setattr(VisitEmbedding, "check_batch", lambda self, *a, **k: checks.append(1) or original(self, *a, **k))
    encoder = _encoder(16, True, True, True)
    with torch.inference_mode():
        encoder.encode(make_batch(0))
        assert len(checks) == 1  # natively
        with _native.disabled():
            encoder.encode(make_batch(0))
        encoder.double().encode(make_batch(0, dtype=torch.float64))
    assert len(checks) == 3


def test_predictions_are_those_of_the_pytorch_path(tmp_path):
    sim = ehrseq.datasets.simulate(60, seed=4)
    model = ehrseq.DynamicSurvival(encoder="gru", d_model=16, epochs=2, n_models=2, progress=False, device="cpu")
    model.fit(sim.visits, sim.outcomes, validation=None)
    horizons = [100.0, 400.0]
    natively = model.predict_risk(sim.visits, horizons, at="all")
    with _native.disabled():
        without = model.predict_risk(sim.visits, horizons, at="all")
    assert natively.select("patient_id", "visit_time", "horizon").equals(
        without.select("patient_id", "visit_time", "horizon"))
    assert (natively["risk"] - without["risk"]).abs().max() < 1e-6


def test_a_kernels_status_raises_its_own_error_or_one_naming_the_kernel():
    errors = {-3: (ShapeError, "an index outside its table"), -4: (MemoryError, "no working memory")}
    for success in (0, -1):  # −1: a thread did not start and its rows ran on the calling thread
        _native._raise_for_status("ehrseq_kernel", success, errors)
    with pytest.raises(ShapeError, match="an index outside its table"):
        _native._raise_for_status("ehrseq_kernel", -3, errors)
    with pytest.raises(MemoryError, match="no working memory"):
        _native._raise_for_status("ehrseq_kernel", -4, errors)
    with pytest.raises(RuntimeError, match=r"native kernel ehrseq_kernel failed \(status -2\)"):
        _native._raise_for_status("ehrseq_kernel", -2, errors)
    with pytest.raises(RuntimeError, match=r"ehrseq_kernel failed \(status -3\)"):
        _native._raise_for_status("ehrseq_kernel", -3)
