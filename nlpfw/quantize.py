"""int8 ONNX graphs: onnxruntime's dynamic quantization of an exported float graph, checked.

Dynamic quantization stores the weights of the matrix products (the encoder's linear layers
and attention projections) as int8 and quantizes activations on the fly, per batch; the CRF's
small Viterbi stays float. On CPUs with AVX2/AVX-512 VNNI the int8 products are several
times cheaper. Rounding can flip near-tied tags, so before the graph is kept its tags are
compared with the float model's on a check batch, and the file is refused when more than
`max_changed` of the characters got another tag.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from nlpfw import io
from nlpfw.errors import NlpfwError
from nlpfw.interfaces import Example
from nlpfw.model import LoadedModel, infer

# Texts the check batch holds unless the user gives their own: news, addresses, companies,
# products, mixed scripts and digits, and one longer than a small encoder's window.
CHECK_TEXTS = (
    "张三在北京的华为公司工作，他的同事李四来自上海。",
    "2019年5月，张伟在上海浦东新区的华为公司担任高级工程师。",
    "我用iPhone6s 在CSOL里打了1234567890分！",
    "北京市海淀区中关村大街27号的新华书店今天开业。",
    "《三体》的作者刘慈欣获得了雨果奖，中国作家协会发来贺信。",
    "国务院总理李克强在人民大会堂会见了法国总统马克龙。",
    "阿里巴巴集团宣布，马云将于明年卸任董事局主席一职。",
    "英超第12轮，曼联主场2比1战胜切尔西，C罗梅开二度。",
    "据新华社报道，广州市政府决定在天河区新建三所小学。",
    "腾讯游戏《王者荣耀》在2020年的营收超过了100亿元。",
    "浙江大学计算机学院的王教授发表了一篇关于深度学习的论文。",
    "故宫博物院将于下月举办明清书画展，展期三个月。",
    "ＦＵＬＬ宽 ok😀表情 Café\u3000南京市鼓楼区",
    "招商银行深圳分行行长陈东表示，今年的贷款规模将增长两成。",
    "中国证监会主席易会满在陆家嘴论坛上发表演讲。",
    "在《英雄联盟》全球总决赛上，来自韩国的战队夺得了冠军。",
    "这部由张艺谋执导的电影在威尼斯电影节获得金狮奖。",
    "王小明，男，1985年出生于湖南省长沙市，现任职于中国移动通信集团。" * 4,
)


def check_texts(path: Path | None) -> list[str]:
    """The check batch: the non-empty lines of `path`, or `CHECK_TEXTS`."""
    if path is None:
        return list(CHECK_TEXTS)
    if not Path(path).is_file():
        raise NlpfwError(f"--check-input: file not found: {path}")
    texts = [line for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not texts:
        raise NlpfwError(f"--check-input {path}: no texts in it (one text a line)")
    return texts


def tag_changes(loaded: LoadedModel, graph: Path, texts: Sequence[str]) -> tuple[int, int]:
    """(outputs from `graph` that differ from the PyTorch model's, outputs), over `texts`
    encoded and windowed as in prediction: for a tag decoder each character's tag (a character
    in two overlapping windows of a long text counts twice); for a decoder of scores (a
    classifier) each window's best label."""
    from nlpfw.export import OnnxModel

    split = loaded.encode([Example(t) for t in texts])
    expected, _, _ = infer(loaded.model, loaded.task, split, 64, loaded.device)
    got, _, _ = infer(OnnxModel(graph, loaded.model.decoder), loaded.task, split, 64, loaded.device)  # type: ignore[arg-type]
    if expected and expected[0].dtype.kind == "f":  # scores: compare the best label of each window
        return sum(int(a.argmax() != b.argmax()) for a, b in zip(expected, got)), len(expected)
    changed = sum(int(np.count_nonzero(a != b)) for a, b in zip(expected, got))
    return changed, sum(len(a) for a in expected)


def write_int8(float_graph: Path, out: Path, loaded: LoadedModel, texts: Sequence[str], max_changed: float) -> dict:
    """Quantize `float_graph` to `out` (atomically) if its tags differ from the PyTorch model's
    on at most `max_changed` of the check batch's characters; the check's figures."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    def quantize(tmp: Path) -> None:
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # the quantizer warns on root about each tensor it leaves float (the CRF's ints)
        try:
            quantize_dynamic(float_graph, tmp, weight_type=QuantType.QInt8)
        finally:
            root.setLevel(level)
        changed, chars = tag_changes(loaded, tmp, texts)
        check["changed"], check["chars"] = changed, chars
        if changed > max_changed * chars:
            raise NlpfwError(
                f"the int8 graph tags {changed:,} of the check batch's {chars:,} characters ({changed / chars:.2%}) "
                f"differently from the float model, over --max-tag-change {max_changed:.2%}; {out} was not written. "
                "Keep the float32 export, or allow more with --max-tag-change"
            )

    check: dict = {"texts": len(texts), "max_changed": max_changed}
    with torch.no_grad():
        io.atomic_write(Path(out), quantize)
    return check
