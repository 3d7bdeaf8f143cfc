"""The CRF decoder's tensor Viterbi gives exactly pytorch-crf's paths, and exports to ONNX."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchcrf import CRF

from nlpfw_plugins.crf import CrfConfig, CrfDecoder, log_likelihood, viterbi


def random_case(generator: torch.Generator, num_tags: int, dtype: torch.dtype, ties: bool = False):
    """A CRF with random parameters, emissions [batch, chars, tags] and a left-aligned mask whose
    rows have different lengths (the longest as long as the batch). With `ties`, every value
    is a small integer, so equal path scores are common."""
    batch = int(torch.randint(1, 17, (1,), generator=generator))
    chars = int(torch.randint(1, 61, (1,), generator=generator))
    crf = CRF(num_tags, batch_first=True).to(dtype)
    draw = (lambda *shape: torch.randint(-2, 3, shape, generator=generator).to(dtype)) if ties else (
        lambda *shape: torch.randn(*shape, generator=generator, dtype=dtype)
    )
    with torch.no_grad():
        for param in (crf.start_transitions, crf.end_transitions, crf.transitions):
            param.copy_(draw(*param.shape))
    emissions = draw(batch, chars, num_tags)
    lengths = torch.randint(1, chars + 1, (batch,), generator=generator)
    lengths[int(torch.randint(0, batch, (1,), generator=generator))] = chars
    mask = torch.arange(chars) < lengths.unsqueeze(1)
    return crf, emissions, mask


def assert_same_paths(crf: CRF, emissions: torch.Tensor, mask: torch.Tensor) -> None:
    expected = crf.decode(emissions, mask)
    with torch.no_grad():
        tags = viterbi(crf, emissions, mask)
    assert tags.dtype == torch.long and tags.shape == mask.shape
    for row, path in enumerate(expected):
        assert tags[row, : len(path)].tolist() == path
        assert not tags[row, len(path) :].any()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("num_tags", [1, 2, 3, 7, 41])
def test_viterbi_gives_pytorch_crfs_paths(num_tags, dtype):
    generator = torch.Generator().manual_seed(num_tags)
    for _ in range(40):
        assert_same_paths(*random_case(generator, num_tags, dtype))


@pytest.mark.parametrize("num_tags", [2, 5, 41])
def test_viterbi_breaks_ties_as_pytorch_crf_does(num_tags):
    generator = torch.Generator().manual_seed(100 + num_tags)
    for _ in range(40):
        assert_same_paths(*random_case(generator, num_tags, torch.float32, ties=True))


def test_edge_shapes():
    crf = CRF(5, batch_first=True)
    for batch, chars in [(1, 1), (4, 1), (1, 60), (64, 50)]:
        emissions = torch.randn(batch, chars, 5)
        assert_same_paths(crf, emissions, torch.ones(batch, chars, dtype=torch.bool))
    emissions = torch.randn(3, 9, 5)
    mask = torch.tensor([[1] * 9, [1] + [0] * 8, [1] * 4 + [0] * 5], dtype=torch.bool)
    assert_same_paths(crf, emissions, mask)


def test_decoder_decodes_in_fp32_under_autocast_on_the_input_device():
    decoder = CrfDecoder(CrfConfig(dropout=0.0), 8, [f"t{i}" for i in range(41)]).eval()
    hidden = torch.randn(6, 20, 8)
    mask = torch.arange(20) < torch.tensor([20, 1, 5, 19, 20, 7]).unsqueeze(1)
    with torch.no_grad():
        plain = decoder.decode(hidden, mask)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = decoder.decode(hidden.bfloat16(), mask)
        emissions = decoder.emissions(hidden)
    assert plain.dtype == torch.long and plain.device == hidden.device
    expected = decoder.crf.decode(emissions, mask)
    assert [plain[i, : len(p)].tolist() for i, p in enumerate(expected)] == expected
    assert mixed.shape == plain.shape and mixed.dtype == torch.long
    assert not (mixed * ~mask).any()


class _Viterbi(torch.nn.Module):
    def __init__(self, num_tags: int):
        super().__init__()
        self.crf = CRF(num_tags, batch_first=True)

    def forward(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return viterbi(self.crf, emissions, mask)


def test_viterbi_exports_to_onnx_with_a_dynamic_length(tmp_path):
    pytest.importorskip("onnxscript")
    onnxruntime = pytest.importorskip("onnxruntime")
    module = _Viterbi(41).eval().requires_grad_(False)
    batch, chars = torch.export.Dim("batch"), torch.export.Dim("chars")
    program = torch.onnx.export(
        module,
        (torch.randn(2, 6, 41), torch.ones(2, 6, dtype=torch.bool)),
        input_names=["emissions", "mask"],
        output_names=["tags"],
        dynamic_shapes={"emissions": {0: batch, 1: chars}, "mask": {0: batch, 1: chars}},
        dynamo=True,
        verbose=False,
    )
    program.save(str(tmp_path / "viterbi.onnx"), external_data=False)
    session = onnxruntime.InferenceSession(str(tmp_path / "viterbi.onnx"), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(7)
    for batch_size, length in [(1, 1), (3, 1), (1, 2), (5, 17), (16, 60)]:
        emissions = torch.randn(batch_size, length, 41, generator=generator)
        lengths = torch.randint(1, length + 1, (batch_size,), generator=generator)
        lengths[0] = length
        mask = torch.arange(length) < lengths.unsqueeze(1)
        (tags,) = session.run(None, {"emissions": emissions.numpy(), "mask": mask.numpy()})
        with torch.no_grad():
            np.testing.assert_array_equal(tags, module(emissions, mask).numpy())


@pytest.mark.parametrize("num_tags", [1, 2, 7, 21, 41])
def test_log_likelihood_equals_pytorch_crfs_with_its_gradients(num_tags):
    generator = torch.Generator().manual_seed(num_tags)
    for _ in range(5):
        crf, emissions, mask = random_case(generator, num_tags, torch.float32)
        with torch.no_grad():  # the spread a trained CRF can reach, and more
            crf.transitions.mul_(8)
        emissions.requires_grad_(True)
        tags = torch.randint(0, num_tags, mask.shape, generator=generator)
        expected = crf(emissions, tags, mask=mask, reduction="none")
        ours = log_likelihood(crf, emissions, tags, mask)
        torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-4)
        params = [emissions, crf.transitions, crf.start_transitions, crf.end_transitions]
        for a, b in zip(torch.autograd.grad(expected.mean(), params), torch.autograd.grad(ours.mean(), params)):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=5e-5)  # pytorch-crf sums in float32


def test_log_likelihood_survives_scores_hundreds_apart():
    crf = CRF(5, batch_first=True)
    with torch.no_grad():
        crf.transitions.copy_(torch.tensor([[0.0, -300, -300, -300, -300]] * 5))
    emissions = torch.randn(3, 30, 5) * 50
    tags = torch.zeros(3, 30, dtype=torch.long)
    mask = torch.ones(3, 30, dtype=torch.bool)
    ours = log_likelihood(crf, emissions, tags, mask)
    assert torch.isfinite(ours).all()
    torch.testing.assert_close(ours, crf(emissions, tags, mask=mask, reduction="none"), rtol=1e-5, atol=1e-3)
