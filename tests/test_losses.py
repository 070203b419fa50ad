import math

import pytest
import torch

from raykd.student.losses import (
    LOSSES,
    adam_loss,
    in_batch_info_nce,
    info_nce,
    kl_loss,
    margin_mse_loss,
    ranknet_loss,
)


def t64(rows):
    return torch.tensor(rows, dtype=torch.float64)


def log_softmax_row(xs):
    top = max(xs)
    lse = top + math.log(sum(math.exp(x - top) for x in xs))
    return [x - lse for x in xs]


# --- values by hand --------------------------------------------------------------------------


def test_info_nce_by_hand():
    scores = t64([[2.0, 1.0, 0.0], [0.0, 1.0, 3.0]])
    expect = -(log_softmax_row([2, 1, 0])[0] + log_softmax_row([0, 1, 3])[0]) / 2
    assert info_nce(scores).item() == pytest.approx(expect)
    expect_t = -(log_softmax_row([4, 2, 0])[0] + log_softmax_row([0, 2, 6])[0]) / 2
    assert info_nce(scores, temperature=0.5).item() == pytest.approx(expect_t)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    expect_m = -(log_softmax_row([2, 1])[0] + log_softmax_row([0, 1, 3])[0]) / 2
    assert info_nce(scores, mask=mask).item() == pytest.approx(expect_m)
    with pytest.raises(ValueError, match="column 0"):
        info_nce(scores, mask=~mask)


def test_in_batch_info_nce_by_hand():
    q = t64([[1.0, 0.0], [0.0, 1.0]])
    p = t64([[2.0, 0.0], [1.0, 1.0]])
    c = t64([[[0.0, 3.0]], [[1.0, 0.0]]])  # [B=2, n=1, d=2]
    # Columns: p0, p1, c00, c10. Row 0: q0.[2,0]=2, q0.[1,1]=1, q0.[0,3]=0, q0.[1,0]=1.
    # Row 1: q1 -> 0, 1, 3, 0; target column 1.
    expect = -(log_softmax_row([2, 1, 0, 1])[0] + log_softmax_row([0, 1, 3, 0])[1]) / 2
    assert in_batch_info_nce(q, p, c).item() == pytest.approx(expect)
    expect_p = -(log_softmax_row([2, 1])[0] + log_softmax_row([0, 1])[1]) / 2
    assert in_batch_info_nce(q, p).item() == pytest.approx(expect_p)
    c_mask = torch.tensor([[False], [True]])
    expect_m = -(log_softmax_row([2, 1, 1])[0] + log_softmax_row([0, 1, 0])[1]) / 2
    assert in_batch_info_nce(q, p, c, c_mask=c_mask).item() == pytest.approx(expect_m)


def kl_by_hand(t_row, s_row):
    lp, lq = log_softmax_row(t_row), log_softmax_row(s_row)
    return sum(math.exp(a) * (a - b) for a, b in zip(lp, lq, strict=True))


def test_kl_by_hand():
    teacher = t64([[3.0, 1.0, 0.0], [0.0, 0.0, 2.0]])
    student = t64([[1.0, 1.0, 1.0], [2.0, 0.0, 1.0]])
    expect = (kl_by_hand([3, 1, 0], [1, 1, 1]) + kl_by_hand([0, 0, 2], [2, 0, 1])) / 2
    assert kl_loss(student, teacher).item() == pytest.approx(expect)
    got = kl_loss(student, teacher, teacher_temperature=2.0, student_temperature=0.5)
    expect_t = (kl_by_hand([1.5, 0.5, 0], [2, 2, 2]) + kl_by_hand([0, 0, 1], [4, 0, 2])) / 2
    assert got.item() == pytest.approx(expect_t)
    assert kl_loss(teacher, teacher).item() == pytest.approx(0.0, abs=1e-12)


def test_kl_mask_equals_dropping_the_padded_columns():
    teacher = t64([[3.0, 1.0, 99.0], [0.0, 0.0, 2.0]])
    student = t64([[1.0, 2.0, -99.0], [2.0, 0.0, 1.0]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    expect = (kl_by_hand([3, 1], [1, 2]) + kl_by_hand([0, 0, 2], [2, 0, 1])) / 2
    student.requires_grad_(True)
    loss = kl_loss(student, teacher, mask=mask)
    assert loss.item() == pytest.approx(expect)
    loss.backward()
    assert torch.isfinite(student.grad).all() and student.grad[0, 2] == 0
    with pytest.raises(ValueError, match="at least one valid"):
        kl_loss(student, teacher, mask=torch.zeros(2, 3, dtype=torch.bool))


def test_kl_wide_ranges_in_half_precision_stay_finite():
    # Teacher logits 60 apart: softmax in fp16 underflows to exact zeros, log of those is -inf.
    teacher = torch.tensor([[30.0, -30.0, 0.0]], dtype=torch.float16)
    student = torch.tensor([[0.0, 1.0, 2.0]], dtype=torch.float16)
    loss = kl_loss(student, teacher)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert loss.item() == pytest.approx(kl_by_hand([30, -30, 0], [0, 1, 2]), rel=1e-4)


def test_margin_mse_by_hand():
    student = t64([[3.0, 1.0, 2.0], [0.0, 1.0, -1.0]])
    teacher = t64([[5.0, 1.0, 4.0], [2.0, 2.0, 0.0]])
    # Student margins (2, 1), (-1, 1); teacher margins (4, 1), (0, 2).
    errors = [(2 - 4) ** 2, (1 - 1) ** 2, (-1 - 0) ** 2, (1 - 2) ** 2]
    assert margin_mse_loss(student, teacher).item() == pytest.approx(sum(errors) / 4)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    assert margin_mse_loss(student, teacher, mask=mask).item() == pytest.approx(6 / 3)


def test_ranknet_by_hand():
    student = t64([[1.0, 0.0, 2.0]])
    teacher = t64([[3.0, 2.0, 2.0]])
    # Teacher orders (0>1), (0>2); 1 vs 2 is a tie and skipped.
    pairs = [1.0 - 0.0, 1.0 - 2.0]
    expect = sum(math.log1p(math.exp(-d)) for d in pairs) / 2
    assert ranknet_loss(student, teacher).item() == pytest.approx(expect)
    mask = torch.tensor([[True, True, False]])
    assert ranknet_loss(student, teacher, mask=mask).item() == pytest.approx(
        math.log1p(math.exp(-1))
    )
    with pytest.raises(ValueError, match="orders no pair"):
        ranknet_loss(student, torch.zeros_like(teacher))


# --- gradients -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradcheck_distillation_losses(name):
    gen = torch.Generator().manual_seed(0)
    student = torch.randn(3, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    teacher = torch.randn(3, 5, dtype=torch.float64, generator=gen)
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[1, 3:] = False
    assert torch.autograd.gradcheck(lambda s: LOSSES[name](s, teacher, mask=mask), (student,))


def test_gradcheck_info_nce():
    gen = torch.Generator().manual_seed(1)
    scores = torch.randn(3, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    mask = torch.tensor([[True] * 4, [True, True, False, False], [True] * 4])
    assert torch.autograd.gradcheck(lambda s: info_nce(s, temperature=0.7, mask=mask), (scores,))


def test_gradcheck_in_batch_info_nce():
    gen = torch.Generator().manual_seed(2)
    q, p = (torch.randn(3, 4, dtype=torch.float64, generator=gen, requires_grad=True) for _ in "qp")
    c = torch.randn(3, 2, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    c_mask = torch.tensor([[True, False], [True, True], [False, False]])
    assert torch.autograd.gradcheck(
        lambda a, b, d: in_batch_info_nce(a, b, d, temperature=0.5, c_mask=c_mask), (q, p, c)
    )


def test_gradcheck_adam_loss():
    gen = torch.Generator().manual_seed(3)
    student = torch.randn(4, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    teacher = torch.randn(4, 5, dtype=torch.float64, generator=gen)
    keep = torch.tensor([True, False, True, True])
    assert torch.autograd.gradcheck(
        lambda s: adam_loss(s, teacher, keep, lambda_sup=0.3).loss, (student,)
    )


# --- ADAM ------------------------------------------------------------------------------------


def test_adam_loss_sup_on_pos_and_originals_kd_on_the_dark_set_without_the_positive():
    """ADAM §3.3 Eq. 9 and §4.3: L_sup over the positive + the m original negatives of every
    row; L_kd over P~ = originals + reinforced + masked (no positive) of the kept rows."""
    student = t64([[2.0, 1.0, 0.0, 1.5], [0.0, 1.0, 3.0, 0.5], [1.0, 1.0, 1.0, 1.0]])
    teacher = t64([[4.0, 0.0, 1.0, 3.0], [1.0, 2.0, 0.0, 0.0], [3.0, 0.0, 0.0, 2.0]])
    # Columns: pos, neg, rein, mask; L_sup over pos + neg only.
    sup_mask = torch.tensor([[True, True, False, False]] * 3)
    keep = torch.tensor([True, False, True])
    out = adam_loss(student, teacher, keep, lambda_sup=0.5, sup_mask=sup_mask)
    sup = -sum(log_softmax_row(r[:2])[0] for r in student.tolist()) / 3
    kd = (
        kl_by_hand(teacher[0, 1:].tolist(), student[0, 1:].tolist())
        + kl_by_hand(teacher[2, 1:].tolist(), student[2, 1:].tolist())
    ) / 2
    assert (out.kept, out.batch) == (2, 3)
    assert out.sup.item() == pytest.approx(sup)
    assert out.kd.item() == pytest.approx(kd)
    assert out.loss.item() == pytest.approx(0.5 * sup + kd)
    # The positive's scores do not reach L_kd.
    moved = student.clone()
    moved[:, 0] += 5.0
    assert adam_loss(moved, teacher, keep).kd.item() == pytest.approx(kd)
    # A global denominator (here 4 kept rows over 2 workers -> 2 per worker) divides the sum.
    assert adam_loss(student, teacher, keep, kd_denominator=4.0).kd.item() == pytest.approx(kd / 2)
    # A part of the global batch with no kept row contributes 0 (with a gradient graph).
    none = adam_loss(student.requires_grad_(), teacher, torch.zeros(3, dtype=torch.bool))
    assert none.kd.item() == 0.0 and none.kd.requires_grad
    with pytest.raises(ValueError, match="keep has 2 entries for a batch of 3"):
        adam_loss(student, teacher, keep[:2])
