"""The IR: tensors, aliasing, MAC counts, validation and C identifiers."""
import numpy as np
import pytest

from nnc.ir import OP_KINDS, Graph, Op, QParams, Tensor, c_identifier


def _t(name, shape):
    return Tensor(name, shape, "int8", QParams.make(0.1, 0))


def test_qparams_scale_is_rounded_to_float32():
    q = QParams.make(0.1, 3)
    assert q.scale == float(np.float32(0.1)) and q.scale != 0.1
    assert q.zero_point == 3 and isinstance(q.zero_point, int)


def test_tensor_sizes_follow_shape_and_dtype():
    assert Tensor("a", (1, 3, 4, 5)).nbytes == 60
    assert Tensor("b", (2, 3), "int32").nbytes == 24
    assert Tensor("scalar", ()).size == 1


def test_storage_follows_alias_chain_and_sums_offsets():
    base = _t("base", (1, 64))
    mid = _t("mid", (1, 32))
    mid.alias_of, mid.alias_offset = base, 16
    leaf = _t("leaf", (1, 8))
    leaf.alias_of, leaf.alias_offset = mid, 8
    assert leaf.storage() is base and mid.storage() is base and base.storage() is base
    assert leaf.storage_offset() == 24 and base.storage_offset() == 0


def test_macs_of_conv_dense_and_others():
    x, y = _t("x", (1, 3, 8, 8)), _t("y", (1, 4, 6, 6))
    conv = Op("conv2d", "c", [x], [y], params={"weight": np.zeros((4, 3, 3, 3), np.int8)})
    assert conv.macs() == 4 * 6 * 6 * 3 * 3 * 3
    f, o = _t("f", (1, 10)), _t("o", (1, 5))
    dense = Op("dense", "d", [f], [o], params={"weight": np.zeros((5, 10), np.int8)})
    assert dense.macs() == 50
    assert Op("relu", "r", [o], [_t("r", (1, 5))]).macs() == 0
    g = Graph("g", [x], [o], [conv, dense])
    assert g.macs() == conv.macs() + 50
    assert g.weight_bytes() == 4 * 3 * 3 * 3 + 50


def test_graph_queries_producer_consumers_tensors():
    x, a, b = _t("x", (1, 4)), _t("a", (1, 4)), _t("b", (1, 4))
    r1 = Op("relu", "r1", [x], [a])
    r2 = Op("relu", "r2", [a], [b])
    g = Graph("g", [x], [b], [r1, r2])
    assert g.producer(a) is r1 and g.producer(x) is None
    assert g.consumers(a) == [r2] and g.consumers(b) == []
    assert [t.name for t in g.tensors()] == ["x", "a", "b"]
    g.validate()


def test_validate_rejects_unknown_kind_use_before_definition_and_missing_output():
    x, a, b = _t("x", (1, 4)), _t("a", (1, 4)), _t("b", (1, 4))
    with pytest.raises(ValueError, match="unknown kind 'frobnicate'"):
        Graph("g", [x], [a], [Op("frobnicate", "f", [x], [a])]).validate()
    with pytest.raises(ValueError, match="op r1: input a is used before it is produced"):
        Graph("g", [x], [b], [Op("relu", "r1", [a], [b]), Op("relu", "r0", [x], [a])]).validate()
    with pytest.raises(ValueError, match="graph output b is never produced"):
        Graph("g", [x], [b], [Op("relu", "r0", [x], [a])]).validate()


def test_every_op_kind_has_a_description():
    assert all(isinstance(v, str) and len(v) > 5 for v in OP_KINDS.values())


@pytest.mark.parametrize("name,ident", [("layer1.0.conv1", "layer1_0_conv1"), ("0conv", "_0conv"),
                                        ("", "_"), ("a-b c", "a_b_c"), ("ok_name", "ok_name")])
def test_c_identifier(name, ident):
    assert c_identifier(name) == ident
