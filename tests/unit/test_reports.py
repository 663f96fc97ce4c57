"""nnc.reports on committed files of a real build: the linker map, `arm-none-eabi-size -A -d`
output, bench.json and size.json of lenet5's firmware for mps2-an500, its generated header, and
two real ld errors (a model too big for the flash, one too big for the RAM of the F746); plus
the regression gate of `scons report` on hand-made reports."""
import json
import os

import pytest

from nnc.reports import bench, diana, fit, header, linker, regression, sizes
from nnc.toolchains import CORTEX_M7_BOARDS, linker_script

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "reports")


def fixture(name: str) -> str:
    with open(os.path.join(HERE, name)) as f:
        return f.read()


def fixture_json(name: str):
    return json.loads(fixture(name))


MPS2 = {"flash": (0, 1024 * 1024), "ram": (0x20000000, 320 * 1024), "stack": 8192}
F746 = {"flash": (0x08000000, 1024 * 1024), "ram": (0x20000000, 320 * 1024), "stack": 8192}


# ---- linker scripts ---------------------------------------------------------------------------

@pytest.mark.parametrize("text,value", [("1024K", 1 << 20), ("0x100", 256), ("2M", 2 << 20), (" 77 ", 77)])
def test_linker_lengths(text, value):
    assert linker.parse_length(text) == value


def test_linker_length_error_names_the_text():
    with pytest.raises(ValueError, match="'12Q'"):
        linker.parse_length("12Q")


@pytest.mark.parametrize("board,memory", [("mps2-an500", MPS2), ("stm32f746g-disco", F746)])
def test_board_memory_from_the_committed_linker_scripts(board, memory):
    got = linker.board_memory(board)
    assert (got["flash"], got["ram"]) == (memory["flash"], memory["ram"])
    assert got["source"] == linker_script(board) and board in CORTEX_M7_BOARDS


def test_memory_block_and_missing_regions(tmp_path):
    text = "MEMORY\n{\n  rom (rx) : ORIGIN = 0x08000000, LENGTH = 1M\n  ram (rwx): ORIGIN = 0x20000000, LENGTH = 0x50000\n}\n"
    assert linker.parse_memory(text) == {"rom": (0x08000000, 1 << 20), "ram": (0x20000000, 0x50000)}
    p = tmp_path / "x.ld"
    p.write_text("MEMORY { CCM (rw) : ORIGIN = 0x10000000, LENGTH = 64K }\n")
    with pytest.raises(ValueError, match="no FLASH and RAM"):
        linker.board_memory("x", str(p))


# ---- size output and linker map ---------------------------------------------------------------

def test_size_output_sections():
    secs = sizes.parse_size_output(fixture("lenet5_mps2-an500.size"))
    assert secs[".isr_vector"] == 192 and secs[".text"] == 6044 and secs[".rodata"] == 64284
    assert secs[".bss"] == 3720 and secs[".stack"] == 8192 and secs[".data"] == 0
    assert "Total" not in secs and sizes.linker_layout(secs) == "bare-metal"


def test_map_places_the_model_sections():
    placed = sizes.parse_map(fixture("lenet5_mps2-an500.map"))
    model = [p for p in placed if p[3].endswith("tvmgen_lenet5.o")]
    # the weights (one const array per layer, names on their own line in the map) and the code
    assert any(p[0] == ".rodata" and p[1].startswith(".rodata.") for p in model)
    assert any(p[0] == ".text" and "tvmgen_lenet5_run" in p[1] for p in model)
    assert all(p[1] != "*fill*" and p[2] >= 0 for p in placed)
    # discarded sections (before "Linker script and memory map") are not placed
    assert not any(p[0] is None for p in placed)


def test_size_report_equals_the_builds_size_json():
    secs = sizes.parse_size_output(fixture("lenet5_mps2-an500.size"))
    rep = sizes.size_report(secs, sizes.parse_map(fixture("lenet5_mps2-an500.map")), "lenet5", "mps2-an500", MPS2)
    assert rep == fixture_json("lenet5_mps2-an500.size.json")
    f, r = rep["flash"], rep["ram"]
    assert f["total"] == 192 + 6044 + 64284 and r["total"] == 3720 + 8192
    # LeNet-5 has 61,470 int8 weights: all in flash, beside the biases and the identity string
    assert 61_470 < f["model_weights"] < f["total"] and f["runtime"] == f["total"] - f["model_weights"] - f["model_code"]
    assert r["model_arena_and_data"] == 2824 == fixture_json("lenet5_mps2-an500.bench.json")["workspace"]
    text = sizes.format_size_report(rep)
    assert "flash    70,520 B of 1,048,576 (6.7%): model weights 63,408" in text


RIOT_MAP = """Linker script and memory map

.text           0x08000000     0x2000
 .text.tvmgen_m_run
                0x08000100      0x120 /b/nnc_model/tvmgen_m.o
 .rodata.tvmgen_m_w0
                0x08000220      0x400 /b/nnc_model/tvmgen_m.o
 .text.main     0x08000620       0x40 /b/app/main.o
.relocate       0x20000000       0x10
 .data.x        0x20000000       0x10 /b/nnc_model/tvmgen_m.o
.bss            0x20000010      0x800
 .bss.arena     0x20000010      0x800 /b/nnc_model/libnnc_model.a(tvmgen_m.o)
"""


def test_riot_layout_counts_rodata_in_text_as_weights():
    secs = {".text": 0x2000, ".relocate": 0x10, ".bss": 0x800, ".stack": 512}
    rep = sizes.size_report(secs, sizes.parse_map(RIOT_MAP), "m", "stm32f746g-disco", F746)
    assert rep["flash"]["total"] == 0x2000 + 0x10 and rep["ram"]["total"] == 512 + 0x10 + 0x800
    assert rep["flash"]["model_weights"] == 0x400 and rep["flash"]["model_code"] == 0x120
    assert rep["ram"]["model_arena_and_data"] == 0x810


def test_object_breakdown():
    objs = {"o/tvmgen_m.o": {".rodata.w": 100, ".text.f": 20, ".bss.arena": 30, ".comment": 5},
            "o/main.o": {".text.main": 7, ".data.x": 3, ".rodata.s": 2}}
    assert sizes.object_breakdown(objs, "m") == {"model_weights": 100, "model_code": 20, "model_arena": 30,
                                                 "runtime_flash": 9, "runtime_ram": 3}


# ---- fit check ----------------------------------------------------------------------------------

def test_flash_overflow_from_a_real_ld_error():
    regions = fit.link_overflow(fixture("flash_overflow_stm32f746g-disco.ld.txt"), F746)
    assert regions == {"FLASH": {"needed": (1 << 20) + 251_464, "available": 1 << 20, "origin": 0x08000000,
                                 "overflow": 251_464}}
    b = {"model_weights": 1_300_000, "model_code": 10, "model_arena": 0, "runtime_flash": 5, "runtime_ram": 0}
    msg = fit.fit_error(regions, "stm32f746g-disco", "STM32F746NG", "big", b, "build/fw.elf")
    assert msg.startswith("error: model 'big' does not fit the stm32f746g-disco (STM32F746NG)")
    assert "FLASH: 1,300,040 bytes needed, 1,048,576 available (flash at 0x08000000), 251,464 bytes too many" in msg
    assert "model weights 1,300,000 B" in msg and "what to do" in msg and msg.endswith("build/fw.elf removed")
    record = fit.fit_record("stm32f746g-disco", "big", regions)
    assert not record["fits"] and fit.describe_no_fit(record) == "does not fit: needs 1,300,040 B flash of 1,048,576"


def test_ram_overflow_and_an_unknown_region():
    regions = fit.link_overflow(fixture("ram_overflow_stm32f746g-disco.ld.txt")
                                + "ld: region `bkup_ram' overflowed by 12 bytes\n", F746)
    assert regions["RAM"]["needed"] == 320 * 1024 + 80_512 and regions["bkup_ram"]["needed"] is None
    text = fit.describe_no_fit(fit.fit_record("b", "m", regions))
    assert text == "does not fit: needs 408,192 B RAM of 327,680, bkup_ram overflowed by 12 B"
    assert fit.link_overflow("undefined reference to `foo'", F746) == {}


# ---- generated header -------------------------------------------------------------------------------

def test_header_input_shape_and_the_inputs_sent(tmp_path):
    assert header.input_shape(fixture("tvmgen_lenet5.h")) == (1, 1, 28, 28)
    path = os.path.join(HERE, "tvmgen_lenet5.h")
    assert header.samples_args(path) == ["--dataset", "digits"]
    assert header.samples_args(path, 50) == ["--dataset", "digits", "--random", "50", "--count", "50"]
    other = tmp_path / "tvmgen_x.h"
    other.write_text("#define TVMGEN_X_INPUT0_SHAPE {1, 3, 32, 32}\n")
    assert header.samples_args(str(other)) == ["--random", "10"]
    assert header.samples_args(str(tmp_path / "missing.h"), 5) == ["--random", "5", "--count", "5"]
    assert header.is_digit_image((1, 28, 28, 1)) and not header.is_digit_image((1, 10))


# ---- bench texts ----------------------------------------------------------------------------------

def lenet5_record(**change):
    rec = {"board": "mps2-an500", "model": "lenet5", "fit": {"fits": True, "regions": {}},
           "meta": {"macs": 416_520, "kernels": "m7", "layers": [{"name": "conv1", "kind": "conv2d", "macs": 117_600}]},
           "bench": fixture_json("lenet5_mps2-an500.bench.json"), "size": fixture_json("lenet5_mps2-an500.size.json")}
    rec.update(change)
    return rec


def test_format_bench_of_the_fixture():
    rec = lenet5_record()
    text = bench.format_bench(rec["bench"], rec["size"], bench.layer_names(rec["meta"]))
    assert "instructions per inference: 803,118 (min 803,118, max 803,118), 6.83 per MAC (117,600 MACs)" in text
    assert "stack used 220 B, so RAM in use 3,940 B" in text and "microTVM" in text
    assert "conv1                   conv2d" in text and "layer 1" in text


def test_summary_lists_a_model_that_does_not_fit():
    big = {"board": "mps2-an500", "model": "resnet50", "meta": {"macs": 9}, "fit": fit.fit_record(
        "mps2-an500", "resnet50", fit.link_overflow(fixture("flash_overflow_stm32f746g-disco.ld.txt"), MPS2))}
    text = bench.format_summary([lenet5_record(), big])
    lines = text.splitlines()
    assert lines[0].startswith("Bench summary: 2 zoo models") and "kernels=?/m7" in lines[1]
    row = next(l for l in lines if l.startswith("| lenet5"))
    assert "803,118" in row and "1.93" in row and "2,824" in row and "70,520" in row and "3,940" in row
    assert any(l.startswith("| resnet50") and "does not fit: needs 1,300,040 B flash" in l for l in lines)
    widths = {len(l) for l in lines if l.startswith("|")}
    assert len(widths) == 1, "table columns are padded to one width"


def test_mlperf_rows_only_for_mlperf_models():
    assert bench.format_mlperf([lenet5_record()]) == []
    rec = lenet5_record(model="mlperf_autoencoder")
    rows = bench.format_mlperf([rec])
    assert "| mlperf_autoencoder | 803,118 | 2.3 | 496,800 | 1.62 | 397,440 |" in rows[-1]


# ---- report and regression gate ---------------------------------------------------------------------

def lenet5_report(**figures):
    entry = regression.firmware_entry(lenet5_record(), "m7", "ab" * 32)
    entry.update(figures)
    host = regression.host_entry("lenet5", "c", "cd" * 32, {"mismatches": 0, "elements": 10_000})
    return regression.make_report([entry, host])


def test_report_entries():
    rep = lenet5_report()
    e = rep["entries"]["lenet5@mps2-an500"]
    assert (e["instructions"], e["flash"], e["ram"], e["arena"], e["stack"]) == (803_118, 70_520, 11_912, 2824, 220)
    assert rep["entries"]["lenet5@host"]["mismatches"] == 0
    assert json.loads(regression.dumps(rep)) == rep and regression.dumps(rep) == regression.dumps(lenet5_report())
    md = regression.to_markdown(rep)
    assert "| lenet5 | mps2-an500 | m7      |      803,118 |" in md and "0 of 10,000" in md


def test_no_fit_entry():
    big = {"board": "mps2-an500", "model": "big", "meta": {},
           "fit": fit.fit_record("mps2-an500", "big", {"FLASH": {"needed": 2_000_000, "available": 1}})}
    e = regression.firmware_entry(big, "m7", None)
    assert e == {"model": "big", "board": "mps2-an500", "kernels": "m7", "c_sha256": None, "fits": False,
                 "needs": {"FLASH": 2_000_000}}
    assert "does not fit: needs FLASH 2,000,000 B" in regression.to_markdown(regression.make_report([e]))


def test_gate_passes_on_the_same_or_a_better_report():
    base = lenet5_report()
    assert regression.compare(base, lenet5_report()) == []
    rows = regression.compare(base, lenet5_report(instructions=700_000, flash=70_000))
    assert [r["verdict"] for r in rows] == ["ok", "ok"] and not regression.failed(rows)
    text = regression.format_changes(rows)
    assert "-103,118 (-12.84%)" in text and text.endswith("gate: pass")


@pytest.mark.parametrize("figures,failing", [
    ({"instructions": 811_150}, ["instructions"]),                 # +1.0001 %
    ({"flash": 70_521}, ["flash"]),                                # one byte
    ({"ram": 11_913, "arena": 2_900, "stack": 221}, ["ram", "arena", "stack"]),
    ({"instructions": 811_149, "flash": 70_520}, []),              # +0.99999 %: within 1 %
])
def test_a_worse_report_fails_the_gate(figures, failing):
    rows = regression.compare(lenet5_report(), lenet5_report(**figures))
    assert [r["figure"] for r in rows if r["verdict"] == "FAIL"] == failing
    assert regression.failed(rows) == bool(failing)
    if failing:
        assert "gate: FAIL" in regression.format_changes(rows, baseline_name="baselines/zoo.json")


def test_thresholds_allow_growth():
    worse = lenet5_report(instructions=820_000, flash=70_600)
    assert regression.failed(regression.compare(lenet5_report(), worse))
    rows = regression.compare(lenet5_report(), worse, {"instructions": 2.5, "flash": 80})
    assert not regression.failed(rows) and len(rows) == 2


def test_mismatches_no_fit_new_entries_and_changed_c():
    base, cur = lenet5_report(), lenet5_report()
    cur["entries"]["lenet5@host"].update(mismatches=3, c_sha256="ef" * 32)
    cur["entries"]["x@host"] = regression.host_entry("x", "c", None, None)
    cur["entries"]["lenet5@mps2-an500"] = {"model": "lenet5", "board": "mps2-an500", "fits": False,
                                           "needs": {"FLASH": 2_000_000}}
    rows = {(r["entry"], r["figure"]): r["verdict"] for r in regression.compare(base, cur)}
    assert rows == {("lenet5@host", "mismatches"): "FAIL", ("lenet5@host", "generated C"): "note",
                    ("lenet5@mps2-an500", "fits"): "FAIL", ("x@host", "-"): "note"}
    # entries of the baseline that this report did not measure are not compared
    del cur["entries"]["lenet5@mps2-an500"]
    assert ("lenet5@mps2-an500", "fits") not in {(r["entry"], r["figure"]) for r in regression.compare(base, cur)}


@pytest.mark.parametrize("content,needle", [
    (None, "no such file"),
    ("{ not json", "is not JSON: "),
    ('{"format": "other", "entries": {}}', "is not an nnc report"),
    ('{"format": "nnc-report/1", "entries": {"a@b": {"flash": "big"}}}', "entry 'a@b' has a figure"),
])
def test_bad_baseline_files(tmp_path, content, needle):
    path = tmp_path / "base.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(regression.ReportError, match=needle) as e:
        regression.load_report(str(path))
    assert e.value.where == f"baseline={path}" and e.value.fix


def test_the_committed_baseline_covers_lenet5():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(HERE))))
    base = regression.load_report(os.path.join(root, "baselines", "zoo.json"))
    e = base["entries"]["lenet5@mps2-an500"]
    assert e["fits"] and e["instructions"] > 0 and e["flash"] > 61_470 and e["c_sha256"]
    assert base["entries"]["lenet5@host"]["mismatches"] == 0


# ---- DIANA console ----------------------------------------------------------------------------------

DIANA_CONSOLE = """\
layer  where        instructions       cycles
RISC-V instructions: 1200 in CPU fallback layers, 40 in word reversals, 900 in the accelerator model
@result {"model": "dense_relu", "samples": 8, "mismatches": 0, "hal_error": 0, "layers": [\
{"name": "fc1", "where": "accelerator", "instructions": 900, "cycles": 250, "est_cycles": 240}, \
{"name": "rev", "where": "layout", "instructions": 40, "cycles": 0, "est_cycles": 0}, \
{"name": "fc2", "where": "cpu", "instructions": 1200, "cycles": 0, "est_cycles": 0}]}
dense_relu: 8 samples, 0 mismatching bytes, HAL status 0: PASS
"""


def test_diana_results_and_summary():
    results = diana.parse_results(DIANA_CONSOLE)
    assert [r["model"] for r in results] == ["dense_relu"] and len(results[0]["layers"]) == 3
    table = diana.summary_table(results, {"dense_relu": {"macs": 5000, "accelerator_mac_share": 0.75}})
    header, row = table.splitlines()
    assert header.split()[:3] == ["graph", "MACs", "on"]
    assert row.split() == ["dense_relu", "5000", "75.0%", "1200", "40", "900", "250", "2.5", "0", "/", "8", "samples"]
    assert diana.summary_table(results, {}).splitlines()[1].split()[1:3] == ["?", "?"]


def test_recorded_test_results(tmp_path):
    assert regression.recorded_result(str(tmp_path), "firmware", "lenet5") is None
    regression.record_test_result(str(tmp_path), "firmware", "lenet5", 1000, 10_000, 2)
    rec = regression.recorded_result(str(tmp_path), "firmware", "lenet5")
    assert rec == {"model": "lenet5", "inputs": 1000, "elements": 10_000, "mismatches": 2}
    entry = regression.firmware_entry(lenet5_record(), "m7", None, rec)
    assert (entry["mismatches"], entry["compared_elements"]) == (2, 10_000)
    rows = regression.compare(lenet5_report(), regression.make_report([entry]))
    assert [(r["figure"], r["verdict"]) for r in rows] == [("mismatches", "FAIL")]
