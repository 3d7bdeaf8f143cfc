"""`crf.v1`: a linear classifier and a linear-chain CRF (pytorch-crf) over the encoder.

The CRF runs in float32 even under mixed precision: its forward algorithm sums many
log-probabilities and loses too much in half precision.

Decoding is a batched tensor Viterbi over pytorch-crf's learned parameters: it gives exactly
the paths `torchcrf.CRF.decode` gives, stays on the model's device, and exports to ONNX with
a dynamic sequence length (its two loops over time become `Scan` ops when exporting).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from pydantic import Field
from torch import nn
from torchcrf import CRF

from nlpfw.hookspecs import hookimpl
from nlpfw.interfaces import Decoder, DecoderConfig

Step = Callable[[torch.Tensor, tuple[torch.Tensor, ...]], tuple[torch.Tensor, torch.Tensor]]


CONSTRAINED = Field(
    default=False,
    description="decode only valid tag sequences (BIO: no I-X at the start, after O, or after B-Y/I-Y; "
    "BIOES: also E-X only after B-X/I-X, and no entity left open at the end)",
)


class CrfConfig(DecoderConfig):
    constrained: bool = CONSTRAINED


class TagConstraints(nn.Module):
    """Which tag sequences decoding may produce, read from the tag names (BIOES when any tag is
    `E-X` or `S-X`, else BIO; see `tag_constraints`): `start[j]` says whether tag j may open a
    text, `transitions[i, j]` whether tag j may follow tag i, `end[j]` whether tag j may close a
    text. `start` and `transitions` are saved with the model (as they always were); `end` is
    rebuilt from the tag names (every BIO tag may end a text)."""

    def __init__(self, labels: Sequence[str]):
        super().__init__()
        start, transitions, end = tag_constraints(labels)
        self.register_buffer("start", start)
        self.register_buffer("transitions", transitions)
        self.register_buffer("end", end, persistent=False)

    def mask_scores(
        self, start: torch.Tensor, transitions: torch.Tensor, end: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The start, transition and end scores with the forbidden moves at -inf."""
        return (
            start.masked_fill(~self.start, -math.inf),
            transitions.masked_fill(~self.transitions, -math.inf),
            end.masked_fill(~self.end, -math.inf),
        )


BioConstraints = TagConstraints  # its name before BIOES


def tag_constraints(labels: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(start [tags], transitions [tags, tags], end [tags]) masks of the allowed moves.

    BIO (IOB2): `I-X` only after `B-X` or `I-X`, never first. BIOES (IOBES), when any tag is
    `E-X` or `S-X`: an entity is `S-X` or `B-X I-X* E-X`, so after `B-X`/`I-X` only `I-X` or
    `E-X` may come, `I-X`/`E-X` come only after `B-X`/`I-X`, a text neither opens with `I-`/`E-`
    nor closes with `B-`/`I-`. A label that is not a tag of the scheme is an error naming it."""
    bioes = any(label[:2] in ("E-", "S-") for label in labels)
    scheme, allowed = ("BIOES", "BIES") if bioes else ("BIO", "BI")
    kinds = []
    for label in labels:
        prefix, _, kind = label.partition("-")
        if label != "O" and (prefix not in allowed or not kind):
            tags = "O, B-X, I-X, E-X or S-X" if bioes else "O, B-X or I-X"
            raise ValueError(f"decoder.constrained: tag {label!r} is not a {scheme} tag ({tags})")
        kinds.append((prefix, kind))
    n = len(labels)
    inside = ("B", "I")  # an entity is open after these
    start = torch.tensor([prefix not in ("I", "E") for prefix, _ in kinds])
    end = torch.tensor([not bioes or prefix not in inside for prefix, _ in kinds])
    transitions = torch.ones(n, n, dtype=torch.bool)
    for i, (before, kind_before) in enumerate(kinds):
        for j, (after, kind_after) in enumerate(kinds):
            continues = after in ("I", "E") and before in inside and kind_after == kind_before
            if after in ("I", "E"):
                transitions[i, j] = continues
            elif bioes and before in inside:
                transitions[i, j] = False  # an open BIOES entity must be continued or closed
    return start, transitions, end


def bio_constraints(labels: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(start, transitions) masks of the allowed BIO moves (`tag_constraints` of a BIO tag set);
    a label that is not `O`, `B-X` or `I-X` is an error naming it."""
    for label in labels:
        prefix, _, kind = label.partition("-")
        if label != "O" and (prefix not in ("B", "I") or not kind):
            raise ValueError(f"decoder.constrained: tag {label!r} is not a BIO tag (O, B-X or I-X)")
    start, transitions, _ = tag_constraints(labels)
    return start, transitions


class CrfDecoder(Decoder):
    """Tag decoder: learns from the task's `tags` target; built with the tag names, from which
    `constrained = true` reads the BIO or BIOES constraints."""

    config_model = CrfConfig
    config: CrfConfig
    targets = ("tags",)
    output_name = "tags"

    def __init__(self, config: CrfConfig, input_dim: int, labels: Sequence[str], target: str = "tags"):
        super().__init__(config, input_dim, labels, target)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(input_dim, self.num_labels)
        self.crf = CRF(self.num_labels, batch_first=True)
        self.constraints = TagConstraints(self.labels) if config.constrained else None

    def emissions(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(hidden)).float()

    def loss(self, hidden: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        emissions = self.emissions(hidden)
        with torch.autocast(device_type=emissions.device.type, enabled=False):
            return -log_likelihood(self.crf, emissions, tags, mask.bool()).mean()

    def decode(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        emissions = self.emissions(hidden)
        with torch.autocast(device_type=emissions.device.type, enabled=False):
            return viterbi(self.crf, emissions, mask.bool(), self.constraints)

    def marginals(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The probability of each tag at each character given the whole text, [batch, chars,
        tags] (forward-backward over the CRF; rows sum to 1 inside `mask`, 0 outside). With
        `constrained`, over the allowed paths only, the distribution `decode` maximises."""
        emissions = self.emissions(hidden)
        with torch.autocast(device_type=emissions.device.type, enabled=False):
            start, transitions, end = self.crf.start_transitions, self.crf.transitions, self.crf.end_transitions
            if self.constraints is not None:
                start, transitions, end = self.constraints.mask_scores(start, transitions, end)
            return tag_marginals(start, transitions, end, emissions, mask.bool())

    def confidence(self, hidden: torch.Tensor, mask: torch.Tensor, tags: torch.Tensor) -> torch.Tensor:
        """The probability of each tag `decode` chose (`tags` [batch, chars]) by `marginals`:
        [batch, chars], 0 outside `mask` (for `nlpfw predict --rank uncertainty`)."""
        return self.marginals(hidden, mask).gather(2, tags.long().unsqueeze(2)).squeeze(2)


def tag_marginals(
    start: torch.Tensor, transitions: torch.Tensor, end: torch.Tensor, emissions: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Per-character tag marginals [batch, chars, tags] of a linear-chain CRF with start [tags],
    transition [tags, tags] and end [tags] scores (forbidden moves may be -inf), by the scaled
    forward-backward algorithm in float64 (`_forward_pass`, `_backward_pass`, which the training
    loss's gradient runs too). `mask` is left-aligned and every row starts on; positions outside
    it are 0."""
    with torch.no_grad():
        phi, m, alphas, sums, ends, _ = _forward_pass(emissions, mask, start, transitions, end)
        betas = _backward_pass(phi, m, sums, ends, mask)
        return (alphas * betas * mask.T.unsqueeze(2)).transpose(0, 1).to(emissions.dtype)


def log_likelihood(crf: CRF, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Log-likelihood [batch] of `tags` given `emissions` [batch, chars, tags] under `crf`, as
    `crf(emissions, tags, mask, reduction="none")` computes it (equal to float tolerance), with
    no host-device sync (pytorch-crf checks the mask on the host every call). `mask` is
    left-aligned and every row starts on.

    The gold path's score is gathered at once instead of a step at a time; the log-partition
    comes from `_LogPartition`, whose gradient is computed by hand."""
    start, transitions, end = crf.start_transitions, crf.transitions, crf.end_transitions
    on = mask.to(emissions.dtype)
    gold_emissions = emissions.gather(2, tags.unsqueeze(2)).squeeze(2)  # [batch, chars]
    gold_transitions = transitions[tags[:, :-1], tags[:, 1:]]  # [batch, chars - 1]
    last = tags.gather(1, (mask.sum(dim=1) - 1).unsqueeze(1)).squeeze(1)
    gold = start[tags[:, 0]] + gold_emissions[:, 0] + end[last]
    gold = gold + ((gold_transitions + gold_emissions[:, 1:]) * on[:, 1:]).sum(dim=1)
    return gold - _LogPartition.apply(emissions, mask, start, transitions, end).to(gold.dtype)


class _LogPartition(torch.autograd.Function):
    """log Z [batch] of a linear-chain CRF, by the scaled forward algorithm in float64, and its
    gradient (the tag and tag-pair marginals) by the scaled backward algorithm, computed by
    hand: a step of either loop is one [batch, tags] x [tags, tags] product and three cheap
    operations, where autograd through the forward loop recorded and replayed about twenty.

    Scaling (as for HMMs): every score is exponentiated after subtracting its maximum
    (`exp(transitions - max)`, `exp(emissions_t - max_t)`, ...), and each step's forward vector
    is divided by its sum c_t, whose logs add up to log Z; the backward vectors are divided by
    the same c_t, so that forward x backward is the tag marginal as it is. Nothing underflows
    in float64 for scores up to hundreds apart. A row's vectors stop changing after its end."""

    @staticmethod
    def forward(ctx, emissions, mask, start, transitions, end):  # type: ignore[override]
        phi, m, alphas, sums, ends, log_z = _forward_pass(emissions, mask, start, transitions, end)
        ctx.save_for_backward(phi, m, alphas, sums, ends, mask)
        ctx.dtypes = (emissions.dtype, start.dtype, transitions.dtype, end.dtype)
        return log_z

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        phi, m, alphas, sums, ends, mask = ctx.saved_tensors
        on = mask.T.unsqueeze(2)
        chars = phi.shape[0]
        betas = _backward_pass(phi, m, sums, ends, mask)
        g = grad.double().view(1, -1, 1)
        marginals = alphas * betas * on * g  # [chars, batch, tags]
        # tag pairs (t - 1, t) for t >= 1 inside the row: m * sum over t and batch of
        # alpha_{t-1} (x) (phi_t * beta_t / c_t)
        inbound = (phi[1:] * betas[1:] / sums[1:chars]) * on[1:] * g
        pairs = m * (alphas[:-1].reshape(-1, m.shape[0]).T @ inbound.reshape(-1, m.shape[0]))
        last = alphas[-1] * ends / sums[chars] * g.view(-1, 1)
        emission_type, start_type, transition_type, end_type = ctx.dtypes
        return (
            marginals.transpose(0, 1).to(emission_type), None, marginals[0].sum(dim=0).to(start_type),
            pairs.to(transition_type), last.sum(dim=0).to(end_type),
        )  # fmt: skip


def _forward_pass(
    emissions: torch.Tensor, mask: torch.Tensor, start: torch.Tensor, transitions: torch.Tensor, end: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """The scaled forward algorithm (`_LogPartition`): (phi, the emissions' exp less each step's
    maximum, [chars, batch, tags]; m, exp(transitions - max); the scaled forward vectors
    [chars, batch, tags]; the step sums c [chars + 1, batch, 1], the end transition last;
    exp(end - max); log Z [batch])."""
    scores = emissions.detach().double().transpose(0, 1)  # [chars, batch, tags], time first
    tops = scores.amax(dim=2, keepdim=True)
    phi = (scores - tops).exp()
    shift = transitions.detach().double().max()
    m = (transitions.detach().double() - shift).exp()
    start64, end64 = start.detach().double(), end.detach().double()
    on = mask.T.unsqueeze(2)  # [chars, batch, 1]
    chars = scores.shape[0]
    alphas = torch.empty_like(scores)
    sums = torch.ones(chars + 1, scores.shape[1], 1, dtype=scores.dtype, device=scores.device)
    alpha = (start64 - start64.max()).exp() * phi[0]
    sums[0] = alpha.sum(dim=1, keepdim=True)
    alpha = alphas[0] = alpha / sums[0]
    for t in range(1, chars):
        step = (alpha @ m) * phi[t]
        total = step.sum(dim=1, keepdim=True)
        alpha = alphas[t] = torch.where(on[t], step / total, alpha)
        sums[t] = torch.where(on[t], total, sums[t])
    ends = (end64 - end64.max()).exp()
    sums[chars] = (alpha * ends).sum(dim=1, keepdim=True)  # the end transition, as a last step
    # the shifts taken out, added back: start's and end's maxima once, the transitions'
    # once for each of a row's length - 1 steps, the emissions' once for each character
    # inside the row (a padding step's sum is 1: its log adds nothing)
    log_z = (
        sums.log().sum(dim=0).squeeze(1) + (tops.squeeze(2) * mask.T).sum(dim=0)
        + shift * (mask.sum(dim=1) - 1) + start64.max() + end64.max()
    )  # fmt: skip
    return phi, m, alphas, sums, ends, log_z


def _backward_pass(
    phi: torch.Tensor, m: torch.Tensor, sums: torch.Tensor, ends: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """The scaled backward vectors [chars, batch, tags] for `_forward_pass`'s, divided by the
    same step sums, so that forward x backward is each tag's marginal as it is."""
    on = mask.T.unsqueeze(2)
    chars = phi.shape[0]
    betas = torch.empty_like(phi)
    beta = betas[chars - 1] = (ends / sums[chars]).expand_as(phi[0])
    for t in range(chars - 2, -1, -1):
        step = ((phi[t + 1] * beta) @ m.T) / sums[t + 1]
        beta = betas[t] = torch.where(on[t + 1], step, beta)
    return betas

def viterbi(
    crf: CRF, emissions: torch.Tensor, mask: torch.Tensor, constraints: TagConstraints | None = None
) -> torch.Tensor:
    """Best tag ids [batch, chars] (0 outside `mask`) of `emissions` [batch, chars, tags] under
    `crf`'s parameters; `mask` [batch, chars] is left-aligned and every row starts on. With
    `constraints`, the best path among the allowed ones."""
    start, transitions, end = crf.start_transitions, crf.transitions, crf.end_transitions
    if constraints is not None:
        start, transitions, end = constraints.mask_scores(start, transitions, end)
    return best_paths(start, transitions, end, emissions, mask)


def best_paths(
    start: torch.Tensor, transitions: torch.Tensor, end: torch.Tensor, emissions: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Viterbi over start [tags], transition [tags, tags] and end [tags] scores.

    Scores are computed by pytorch-crf's own operations in its order, so paths and ties come out
    identical. Both loops take all `chars` steps, never none (ONNX Runtime's `Scan` rejects an
    empty sequence): the forward loop's first step is masked off, as padding is."""
    emissions, mask = emissions.transpose(0, 1), mask.T  # time first, as pytorch-crf works
    steps = torch.arange(mask.shape[0], device=mask.device)
    on = mask & (steps > 0).unsqueeze(1)

    def forward(score: torch.Tensor, xs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        emission, on = xs  # [batch, tags], [batch]
        next_score, indices = (score.unsqueeze(2) + transitions + emission.unsqueeze(1)).max(dim=1)
        return torch.where(on.unsqueeze(1), next_score, score), indices

    # history[t]: for each tag at t, the best tag at t - 1 (history[0] is unused)
    score, history = _scan(forward, start + emissions[0], (emissions, on))
    best_last = (score + end).max(dim=1).indices  # [batch]
    # at and after its last position a row's path starts again from its best last tag
    after_end = (steps.unsqueeze(1) > mask.sum(dim=0) - 1).unsqueeze(2)  # [chars, batch, 1]
    history = torch.where(after_end, best_last.unsqueeze(1), history)

    def back(tag: torch.Tensor, xs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        (indices,) = xs  # the tag at t is `tag`; the best tag at t - 1 is read from history[t]
        return indices.gather(1, tag.unsqueeze(1)).squeeze(1), tag.clone()

    _, path = _scan(back, best_last.clone(), (history,), reverse=True)
    return path.T * mask.T


def _scan(
    step: Step, init: torch.Tensor, xs: tuple[torch.Tensor, ...], reverse: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """`step(carry, x) -> (carry, out)` over dim 0 of `xs`: the last carry and the outs, stacked.

    When exporting it is `torch.scan`, an ONNX `Scan` over the dynamic length; otherwise a Python
    loop (in eager mode `torch.scan` compiles its step on every new shape)."""
    if torch.compiler.is_exporting():
        from torch._higher_order_ops.scan import scan

        return scan(step, init, xs, reverse=reverse)
    carry, outs = init, []
    steps = list(zip(*(x.unbind(0) for x in xs)))
    for x in reversed(steps) if reverse else steps:
        carry, out = step(carry, x)
        outs.append(out)
    if reverse:
        outs.reverse()
    return carry, torch.stack(outs)


@hookimpl
def register_decoders(register):
    register("crf.v1", CrfDecoder)
