"""The IMX681 configuration file: `KEY VALUE` lines, `#` starts a comment.

    # seed 000's sample: classification with a state, memory images for I2C
    MODEL                 stateful
    OUTPUT_MODE           I2C_IMAGES
    SCRATCH_RAM_START     0x002A0000
    ...

One key per line, the value is the rest of the line (comments stripped). Keys are case-sensitive
and appear at most once. Integers are decimal or 0x-hex; numbers are finite. Relative paths are
relative to the configuration file's folder (given on the command line: to the current
directory). The file is UTF-8, with or without a byte order mark. `parse_config()` reports, with
the file and line: an unknown key (listing the known ones), a key given twice, a missing value, a
bad value; and then every required key that is missing. `KEYS` below is the reference of every key.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field

from ...errors import NncError


class ConfigError(NncError):
    pass


@dataclass(frozen=True)
class Key:
    kind: str                 # "str", "name", "path", "int", "float", "bool", "enum"
    required: bool
    default: object
    help: str
    choices: tuple = ()


REGIONS = ("PARAMS", "STATIC_DATA", "SCRATCH_RAM")
REGION_HELP = {
    "PARAMS": "operation descriptors and parameters (weights, biases, requantization multipliers)",
    "STATIC_DATA": "data that lives across frames: state tensors (kept between frames) and constants",
    "SCRATCH_RAM": "per-frame working memory: the input frame, the outputs, every intermediate tensor",
}

KEYS: dict = {
    "MODEL": Key("str", False, None, "model of the zoo to compile (models/registry.py), e.g. stateful "
                                     "(this or MODEL_FILE is required)"),
    "MODEL_FILE": Key("path", False, None,
                      "your model file instead of a zoo MODEL: a converted PT2E program (.pt2) or a "
                      "factory net.py:build returning (model, example input); stateless models only"),
    "MODEL_CHECKPOINT": Key("path", False, None,
                            "converted int8 checkpoint to load instead of the zoo's own"),
    "NETWORK_NAME": Key("name", False, None,
                        "name of the compiled network: C symbols and file names (default: MODEL)"),
    "OUTPUT_DIRECTORY": Key("path", True, None, "directory the compiler (re)creates with its output"),
    "OUTPUT_MODE": Key("enum", True, None,
                       "C_SOURCES: C files to link into firmware; I2C_IMAGES: binary memory images "
                       "to load over I2C", ("C_SOURCES", "I2C_IMAGES")),
    "MEMORY_ORDER": Key("enum", False, "LITTLE_ENDIAN",
                        "byte order of multi-byte values in the memory images",
                        ("LITTLE_ENDIAN", "BIG_ENDIAN")),
    "MODEL_STATE_AUTO_DETECT": Key("bool", False, True,
                                   "find state tensors (read then overwritten by forward) and keep "
                                   "each in one STATIC_DATA buffer (ON/OFF)"),
    "MODEL_STATE_READ_BUFFER_ID": Key("int", False, None,
                                      "buffer ID (summary.txt) where the state is read"),
    "MODEL_STATE_WRITE_BUFFER_ID": Key("int", False, None,
                                       "buffer ID (summary.txt) where the state is written"),
    "PROCESSOR_CLOCK_MHZ": Key("float", False, 100.0,
                               "clock of the cost model behind `Est. Processing Time`"),
}
for _r in REGIONS:
    KEYS[f"{_r}_START"] = Key("int", True, None, f"first address of {_r}: {REGION_HELP[_r]}")
    KEYS[f"{_r}_SIZE"] = Key("int", True, None, f"bytes of {_r}")

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_INT = re.compile(r"^(0[xX][0-9a-fA-F]+|[0-9]+)$")
_FLOAT = re.compile(r"^([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$")
_TRUE, _FALSE = {"ON", "TRUE", "YES", "1"}, {"OFF", "FALSE", "NO", "0"}


@dataclass
class Config:
    path: str
    values: dict
    lines: dict = field(default_factory=dict)      # key -> line number (0: from the command line)

    def __getitem__(self, key):
        return self.values[key]

    def get(self, key, default=None):
        v = self.values.get(key)
        return default if v is None else v

    def where(self, key) -> str:
        line = self.lines.get(key)
        if line == 0:
            return f"--set {key} (command line)"
        return f"{self.path}:{line}" if line else self.path

    @property
    def network_name(self) -> str:
        if self.values.get("NETWORK_NAME") or self.values.get("MODEL"):
            return self.values.get("NETWORK_NAME") or self.values["MODEL"]
        base = os.path.splitext(os.path.basename(self.values["MODEL_FILE"].split(":")[0]))[0]
        return "".join(c if c.isalnum() else "_" for c in base)

    @property
    def model_label(self) -> str:
        """What the configuration compiles: the zoo MODEL or the MODEL_FILE."""
        return self.values.get("MODEL") or self.values["MODEL_FILE"]

    @property
    def big_endian(self) -> bool:
        return self.values["MEMORY_ORDER"] == "BIG_ENDIAN"


def _known_keys() -> str:
    return ", ".join(KEYS)


def _convert(key: str, text: str, where: str):
    spec = KEYS[key]

    def bad(expected):
        return ConfigError(f"bad value for {key}: {text!r} is not {expected}", where,
                           f"{key}: {spec.help}")

    if spec.kind == "int":
        if not _INT.match(text):
            raise bad("a non-negative integer" if _INT.match(text[1:]) and text[0] == "-" else
                      "an integer (decimal or 0x-hex)")
        value = int(text, 16 if text[:2].lower() == "0x" else 10)
        if value >= 1 << 32:
            raise bad("a 32-bit value (at most 0xFFFFFFFF)")
        return value
    if spec.kind == "float":
        value = float(text) if _FLOAT.match(text) else math.nan
        if not math.isfinite(value) or not value > 0:
            raise bad("a positive number (e.g. 100 or 99.5)")
        return value
    if spec.kind == "bool":
        if text.upper() in _TRUE:
            return True
        if text.upper() in _FALSE:
            return False
        raise bad("ON or OFF")
    if spec.kind == "enum":
        if text not in spec.choices:
            raise bad("one of " + ", ".join(spec.choices))
        return text
    if spec.kind == "name":
        if not _NAME.match(text):
            raise bad("a C identifier (letters, digits, underscores; not starting with a digit)")
        return text
    if any(not c.isprintable() for c in text):
        raise bad("text without control characters")
    if spec.kind == "str" and any(c.isspace() for c in text):
        raise bad("a single word")
    return text


# The shipped configurations are about 2 KB; this bounds what a wrong --config reads.
MAX_CONFIG_CHARS = 1 << 20


def parse_config(path: str, overrides: dict | None = None) -> Config:
    """Parse and check a configuration file. `overrides` {KEY: text} come from the command line."""
    try:
        if os.path.exists(path) and not os.path.isfile(path):   # a FIFO would block, /dev/zero never end
            raise ConfigError(f"configuration file {path} is not a regular file", "--config",
                              "give the path of a KEY VALUE file (see firmware/imx681/configs/)")
        with open(path, encoding="utf-8-sig") as f:   # a byte order mark is not part of a key
            text = f.read(MAX_CONFIG_CHARS + 1)
        if len(text) > MAX_CONFIG_CHARS:
            raise ConfigError(f"configuration file {path} is longer than {MAX_CONFIG_CHARS:,} characters: "
                              "not a configuration", "--config",
                              "give the path of a KEY VALUE file (see firmware/imx681/configs/)")
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist", "--config",
                          "give the path of a KEY VALUE file (see firmware/imx681/configs/)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read configuration file {path}: {e}", "--config") from None
    values, lines = {}, {}
    for number, raw in enumerate(text.split("\n"), start=1):   # lines as editors number them
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split(None, 1)
        key = parts[0]
        where = f"{path}:{number}"
        if key not in KEYS:
            raise ConfigError(f"unknown key {key!r} on line {number}", where,
                              f"known keys: {_known_keys()}")
        if key in values:
            raise ConfigError(f"{key} is given twice (lines {lines[key]} and {number})", where,
                              "keep one of them")
        if len(parts) < 2:
            raise ConfigError(f"{key} on line {number} has no value", where,
                              f"write `{key} VALUE`; {key}: {KEYS[key].help}")
        values[key] = _convert(key, parts[1].strip(), where)
        lines[key] = number
    for key, text_value in (overrides or {}).items():
        if key not in KEYS:
            raise ConfigError(f"unknown key {key!r} in --set", "command line",
                              f"known keys: {_known_keys()}")
        values[key] = _convert(key, text_value, f"--set {key}")
        lines[key] = 0
    missing = [k for k, spec in KEYS.items() if spec.required and k not in values]
    if missing:
        raise ConfigError(f"missing required key{'s' if len(missing) > 1 else ''}: {', '.join(missing)}",
                          path, "; ".join(f"{k}: {KEYS[k].help}" for k in missing))
    for key, spec in KEYS.items():
        values.setdefault(key, spec.default)
    cfg = Config(path, values, lines)
    _check_consistency(cfg)
    return cfg


def _check_consistency(cfg: Config) -> None:
    if bool(cfg.get("MODEL")) == bool(cfg.get("MODEL_FILE")):
        raise ConfigError("exactly one of MODEL and MODEL_FILE is required", cfg.path,
                          "name a zoo model (MODEL stateful) or your model file (MODEL_FILE net.pt2)")
    r, w = "MODEL_STATE_READ_BUFFER_ID", "MODEL_STATE_WRITE_BUFFER_ID"
    if (cfg.values[r] is None) != (cfg.values[w] is None):
        given, other = (r, w) if cfg.values[r] is not None else (w, r)
        raise ConfigError(f"{given} is set but {other} is not", cfg.where(given),
                          "set both (the read and the write buffer of one state, from summary.txt) "
                          "or neither")
    spans = []
    for region in REGIONS:
        start, size = cfg.values[f"{region}_START"], cfg.values[f"{region}_SIZE"]
        if start + size > 1 << 32:
            raise ConfigError(f"{region} ends beyond the 32-bit address space "
                              f"(0x{start:08x} + {size} bytes)", cfg.where(f"{region}_SIZE"))
        spans.append((start, start + size, region))
    spans.sort()
    for (s0, e0, r0), (s1, e1, r1) in zip(spans, spans[1:]):
        if s1 < e0 and e1 > s1 and e0 > s0:
            raise ConfigError(f"memory regions {r0} [0x{s0:08x}, 0x{e0:08x}) and {r1} "
                              f"[0x{s1:08x}, 0x{e1:08x}) overlap", cfg.where(f"{r1}_START"),
                              "give every region its own address range")


def resolve_path(cfg: Config, key: str) -> str:
    """The absolute path of a path-valued key: relative to the configuration file's folder, or
    to the current directory when given on the command line."""
    value = cfg[key]
    if os.path.isabs(value):
        return value
    base = os.getcwd() if cfg.lines.get(key) == 0 else os.path.dirname(os.path.abspath(cfg.path))
    return os.path.normpath(os.path.join(base, value))
