"""Parsers that are plain functions: the IMX681 configuration, the generated header (hostlib),
and the serial protocol's frames and replies (tools/serial_client.py, no hardware)."""
import os
import re
import struct

import numpy as np
import pytest

from nnc.builder import graph_input, make_graph, relu, soma_dense
from nnc.compiler import compile_graph
from nnc.targets.cpu import CpuTarget
from nnc.targets.imx681 import ConfigError, parse_config, resolve_path

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from nnc.cli import serial_client as sc

VALID = """\
# a comment line
MODEL              stateful   # trailing comment
OUTPUT_DIRECTORY   out/pkg
OUTPUT_MODE        I2C_IMAGES
PARAMS_START       0x1000
PARAMS_SIZE        4096
STATIC_DATA_START  0x2000
STATIC_DATA_SIZE   256
SCRATCH_RAM_START  0x3000
SCRATCH_RAM_SIZE   0x800
"""


def write(tmp_path, text, name="a.cfg", encoding="utf-8"):
    p = tmp_path / name
    p.write_text(text, encoding=encoding)
    return str(p)


def test_config_values_defaults_and_paths(tmp_path):
    cfg = parse_config(write(tmp_path, VALID))
    assert cfg["MODEL"] == "stateful" and cfg["PARAMS_START"] == 0x1000 and cfg["SCRATCH_RAM_SIZE"] == 2048
    assert cfg["MEMORY_ORDER"] == "LITTLE_ENDIAN" and not cfg.big_endian
    assert cfg["MODEL_STATE_AUTO_DETECT"] is True and cfg["PROCESSOR_CLOCK_MHZ"] == 100.0
    assert cfg.network_name == "stateful" and cfg.lines["MODEL"] == 2
    assert resolve_path(cfg, "OUTPUT_DIRECTORY") == str(tmp_path / "out" / "pkg")
    over = parse_config(write(tmp_path, VALID), {"MEMORY_ORDER": "BIG_ENDIAN", "OUTPUT_DIRECTORY": "x"})
    assert over.big_endian and over.where("MEMORY_ORDER") == "--set MEMORY_ORDER (command line)"
    assert resolve_path(over, "OUTPUT_DIRECTORY") == os.path.join(os.getcwd(), "x")


def test_config_with_byte_order_mark(tmp_path):
    assert parse_config(write(tmp_path, "\ufeff" + VALID))["MODEL"] == "stateful"


@pytest.mark.parametrize("edit,needle,line", [
    (lambda t: t + "COLOUR red\n", "unknown key 'COLOUR' on line 11", 11),
    (lambda t: t + "MODEL other\n", "MODEL is given twice (lines 2 and 11)", 11),
    (lambda t: t + "NETWORK_NAME\n", "NETWORK_NAME on line 11 has no value", 11),
    (lambda t: t.replace("4096", "-4096"), "is not a non-negative integer", 6),
    (lambda t: t.replace("4096", "12k"), "is not an integer", 6),
    (lambda t: t.replace("0x800", "0x100000000"), "32-bit value", 10),
    (lambda t: t + "PROCESSOR_CLOCK_MHZ nan\n", "positive number", 11),
    (lambda t: t + "MODEL_STATE_AUTO_DETECT maybe\n", "ON or OFF", 11),
    (lambda t: t.replace("I2C_IMAGES", "JPEG"), "one of C_SOURCES, I2C_IMAGES", 4),
    (lambda t: t + "NETWORK_NAME 9lives\n", "C identifier", 11),
    (lambda t: t.replace("stateful   #", "two words #"), "a single word", 2),
])
def test_config_errors_name_file_and_line(tmp_path, edit, needle, line):
    path = write(tmp_path, edit(VALID))
    with pytest.raises(ConfigError, match=re.escape(needle)) as e:
        parse_config(path)
    assert e.value.where == f"{path}:{line}"


def test_config_missing_keys_overlap_and_half_state_pair(tmp_path):
    with pytest.raises(ConfigError, match="missing required keys: OUTPUT_MODE, PARAMS_SIZE"):
        parse_config(write(tmp_path, VALID.replace("OUTPUT_MODE", "#").replace("PARAMS_SIZE", "#")))
    with pytest.raises(ConfigError, match="PARAMS .* and STATIC_DATA .* overlap"):
        parse_config(write(tmp_path, VALID.replace("0x2000", "0x1800")))
    with pytest.raises(ConfigError, match="32-bit address space"):
        parse_config(write(tmp_path, VALID.replace("0x3000", "0xFFFFFF00")))
    with pytest.raises(ConfigError, match="MODEL_STATE_READ_BUFFER_ID is set but MODEL_STATE_WRITE"):
        parse_config(write(tmp_path, VALID + "MODEL_STATE_READ_BUFFER_ID 3\n"))
    with pytest.raises(ConfigError, match="does not exist"):
        parse_config(str(tmp_path / "nope.cfg"))
    with pytest.raises(ConfigError, match="cannot read"):
        parse_config(write(tmp_path, VALID, encoding="utf-16"))
    with pytest.raises(ConfigError, match="unknown key 'NOPE' in --set"):
        parse_config(write(tmp_path, VALID), {"NOPE": "1"})


def test_config_that_is_a_device_a_fifo_or_huge_is_refused(tmp_path):
    """--config naming /dev/zero (through a symlink) was a MemoryError, a FIFO blocked for ever."""
    (tmp_path / "zero.cfg").symlink_to("/dev/zero")
    os.mkfifo(tmp_path / "fifo.cfg")
    for name in ("zero.cfg", "fifo.cfg"):
        with pytest.raises(ConfigError, match="is not a regular file"):
            parse_config(str(tmp_path / name))
    big = write(tmp_path, VALID + "# padding\n" * 200_000)
    with pytest.raises(ConfigError, match="longer than 1,048,576 characters"):
        parse_config(big)


def test_shipped_configurations_parse():
    folder = os.path.join(ROOT, "firmware", "imx681", "configs")
    names = sorted(n for n in os.listdir(folder) if n.endswith(".cfg"))
    assert names
    for name in names:
        assert parse_config(os.path.join(folder, name))["MODEL"]


def test_generated_header_parses(tmp_path):
    """hostlib.parse_header reads back what the AOT emitter declares (no compiler involved)."""
    import hostlib
    x = graph_input("x", (1, 2, 3, 3))
    y = relu(soma_dense(x, "fc", np.ones((4, 18), np.int8), shift_bits=2), "r")
    compiled = compile_graph(make_graph("tiny_net", y), CpuTarget(kernels="c"))
    header, _ = compiled.write(str(tmp_path))
    info = hostlib.parse_header(header)
    assert info["prefix"] == "tvmgen_tiny_net"
    assert [(p.name, p.shape, p.scale, p.zero_point) for p in info["inputs"]] == [("input0", (1, 2, 3, 3), 1.0, 0)]
    assert [(p.name, p.shape, p.size) for p in info["outputs"]] == [("output0", (1, 4), 4)]
    assert info["workspace"] == compiled.plan.arena_size
    bogus = tmp_path / "bogus.h"
    bogus.write_text("int main(void);\n")
    with pytest.raises(hostlib.HostLibError, match="no tvmgen_<name>_run"):
        hostlib.parse_header(str(bogus))


def test_crc16_is_ccitt_false():
    assert sc.crc16(b"123456789") == 0x29B1          # the catalogued check value
    assert sc.crc16(b"") == 0xFFFF


def test_frame_layout():
    f = sc.make_frame(sc.T_INFO, b"\x01\x02")
    assert f[:2] == b"\xa5\x5a" and f[2] == sc.VERSION and f[3] == sc.T_INFO
    assert struct.unpack("<H", f[4:6])[0] == 2 and f[6:8] == b"\x01\x02"
    assert struct.unpack("<H", f[8:])[0] == sc.crc16(f[2:8])


def test_info_and_inference_replies_round_trip():
    info = struct.pack("<BBIHHHIfifiI", 1, sc.COST_TICKS, 25_000_000, 784, 10, 5, 2824, 0.5, -3, 0.25, 7, 220)
    info += bytes([6]) + b"lenet5" + bytes([10]) + b"mps2-an500"
    got = sc.parse_info(info)
    assert (got["input_size"], got["output_size"], got["workspace"], got["stack_used"]) == (784, 10, 2824, 220)
    assert (got["input_scale"], got["input_zero_point"], got["model"], got["board"]) == (0.5, -3, "lenet5", "mps2-an500")
    out = np.array([-128, 0, 127], np.int8)
    reply = struct.pack("<HBBII", 2, sc.COST_CYCLES, 2, 216_000_000, 4321) + struct.pack("<2I", 11, 22)
    reply += struct.pack("<H", 3) + out.tobytes()
    r = sc.parse_infer(reply)
    assert r["class"] == 2 and r["layers"] == [11, 22] and r["cost"] == 4321 and r["output"].tolist() == [-128, 0, 127]
    with pytest.raises(sc.ProtocolError, match="truncated"):
        sc.parse_infer(reply[:-1])
    err = sc.parse_error(struct.pack("<BBH", 6, 2, 9) + b"crc")
    assert (err.code, err.detail) == (6, 9) and "bad checksum" in str(err)
    assert "malformed" in str(sc.parse_error(b"\x01"))


def test_text_reply_and_cost_units():
    r = sc.parse_text_result("RESULT class=7 cost=812336 unit=ticks hz=25000000 output=-128,5,127")
    assert r["class"] == 7 and r["cost_unit"] == sc.COST_TICKS and r["output"].tolist() == [-128, 5, 127]
    assert sc.instructions(ticks=25, hz=25_000_000, icount_shift=7) == round(1000 / 128)
    assert sc.describe_cost({"cost_unit": sc.COST_CYCLES, "cost": 216_000, "hz": 216_000_000}, None) \
        == "216,000 cycles (1.000 ms at 216 MHz)"
    assert sc.describe_cost({"cost_unit": sc.COST_TICKS, "cost": 330, "hz": 1_000_000}, None) \
        == "330 us (timer ticks at 1 MHz)"
