"""Fuzz test of the serial protocol against the emulated firmware (LeNet-5 on QEMU mps2-an500).

A fixed seed generates a few hundred malformed inputs of every kind (bytes that start no frame,
a bad second magic byte, bad version/type, oversize and wrong lengths, truncated headers and
payloads, bad checksums, text lines with too many or too few numbers, bad characters and values
> 255), with a good request (binary int8 and uint8 frames, a text line, INFO) after every
GOOD_EVERY of them. Every malformed input must be answered with exactly the error the protocol
names for it (code and detail, or the text error line); every good request with the right
answer (outputs equal to the host library).
"""
import time

import numpy as np
import pytest

from test_stm32 import arm_tools, emulated, host, lenet_build, sc, text_line, text_reply  # noqa: F401

pytestmark = pytest.mark.firmware   # test tier (pytest.ini)

SEED = 20261129
MALFORMED = 360
GOOD_EVERY = 3
N_IN = 784
E_GARBAGE, E_VERSION, E_TYPE, E_OVERSIZE, E_LENGTH, E_CRC, E_TIMEOUT = 1, 2, 3, 4, 5, 6, 7
NOT_TEXT_START = bytes(b for b in range(256) if not (48 <= b <= 57 or b in b" \t\r\n," or b == 0xA5))
BAD_TEXT_CHARS = bytes(b for b in range(33, 127) if not (48 <= b <= 57 or b == ord(",")))


def header(version, ftype, length):
    return bytes([version, ftype]) + int(length).to_bytes(2, "little")


def framed(body):
    return sc.MAGIC + body + sc.crc16(body).to_bytes(2, "little")


def numbers(rng, n):
    return list(rng.integers(0, 256, n))


def malformed(rng, kind):
    """(bytes to send, expected reply): ("frame", code, detail or None) or ("text", line prefix)."""
    if kind == "garbage":
        junk = bytes([rng.choice(list(NOT_TEXT_START))]) + rng.bytes(int(rng.integers(0, 300)))
        return junk, ("frame", E_GARBAGE, len(junk))
    if kind == "bad_magic":
        second = int(rng.choice([b for b in range(256) if b != 0x5A]))
        data = b"\xa5" + bytes([second]) + rng.bytes(int(rng.integers(0, 100)))
        return data, ("frame", E_GARBAGE, len(data))
    if kind == "bad_version":
        length = int(rng.integers(0, 2000))
        return framed(header(int(rng.choice([0, 2, 9, 255])), sc.T_INFER_I8, length) + rng.bytes(min(length, 900))), \
            ("frame", E_VERSION, length)
    if kind == "bad_type":
        ftype = int(rng.choice([t for t in range(256) if t not in (1, 2, 3, 4)]))
        length = int(rng.integers(0, N_IN + 1))
        return framed(header(1, ftype, length) + rng.bytes(length)), ("frame", E_TYPE, length)
    if kind == "oversize":
        ftype = int(rng.choice([1, 2, 3, 4]))
        length = int(rng.integers(N_IN + 1, 65536))
        return framed(header(1, ftype, length) + rng.bytes(int(rng.integers(0, 1000)))), ("frame", E_OVERSIZE, length)
    if kind == "wrong_length":
        ftype = int(rng.choice([1, 2, 3, 4]))
        right = {1: N_IN, 2: N_IN, 3: 0, 4: 1}[ftype]
        length = int(rng.choice([n for n in rng.integers(0, N_IN + 1, 8) if n != right]))
        return framed(header(1, ftype, length) + rng.bytes(length)), ("frame", E_LENGTH, length)
    if kind == "truncated_header":
        k = int(rng.integers(2, 6))            # magic + 0..3 of the 4 header bytes
        return framed(header(1, sc.T_INFER_I8, N_IN) + bytes(N_IN))[:k], ("frame", E_TIMEOUT, k)
    if kind == "truncated_payload":
        frame = framed(header(1, int(rng.choice([1, 2])), N_IN) + rng.bytes(N_IN))
        k = int(rng.integers(0, N_IN + 2))      # payload and checksum bytes sent
        return frame[:6 + k], ("frame", E_TIMEOUT, k)
    if kind == "bad_checksum":
        frame = bytearray(framed(header(1, int(rng.choice([1, 2])), N_IN) + rng.bytes(N_IN)))
        frame[int(rng.integers(6, len(frame)))] ^= int(rng.integers(1, 256))
        return bytes(frame), ("frame", E_CRC, 0)
    if kind == "text_too_many":
        n = int(rng.integers(N_IN + 1, 2 * N_IN + 2))
        return text_line(numbers(rng, n)), ("text", f"error too many numbers ({n} numbers read")
    if kind == "text_too_few":
        n = int(rng.integers(1, N_IN))
        return text_line(numbers(rng, n)), ("text", f"error too few numbers ({n} numbers read")
    if kind == "text_bad_char":
        n = int(rng.integers(1, N_IN + 10))
        bad = bytes([rng.choice(list(BAD_TEXT_CHARS))])
        return text_line(numbers(rng, n))[:-1] + b" " + bad + b" 1 2 junk\n", \
            ("text", f"error unexpected character ({n} numbers read")
    if kind == "text_big_value":
        n = int(rng.integers(0, N_IN + 10))
        return text_line(numbers(rng, n) + [int(rng.integers(256, 100000))]), \
            ("text", f"error value > 255 ({n} numbers read")
    raise ValueError(kind)


KINDS = ["garbage", "bad_magic", "bad_version", "bad_type", "oversize", "wrong_length", "truncated_header",
         "truncated_payload", "bad_checksum", "text_too_many", "text_too_few", "text_bad_char",
         "text_big_value"]


def good_request(fw, host, rng, i):
    """A good request of the i-th kind; its answer must be right."""
    kind = i % 4
    if kind == 3:
        info = sc.parse_info(fw.request(sc.T_INFO))
        assert info["model"] == "lenet5" and info["input_size"] == N_IN
        return
    if kind == 0:
        t = rng.integers(-128, 128, N_IN, dtype=np.int8)
        got = fw.infer_i8(t)["output"]
    else:
        px = rng.integers(0, 256, N_IN, dtype=np.uint8)
        got = (fw.infer_u8(px) if kind == 1 else fw.infer_text(px))["output"]
        t = sc.pixels_to_tensor(px, fw.info())
    expected = host.run(t.reshape(host.inputs[0].shape))[0].ravel()
    assert np.array_equal(got, expected), f"good request {i} (kind {kind}) answered wrongly"


def test_fuzz_serial_protocol(lenet_build, host):
    rng = np.random.default_rng(SEED)
    kinds = [KINDS[i % len(KINDS)] for i in range(MALFORMED)]
    rng.shuffle(kinds)
    seen = {k: 0 for k in KINDS}
    good = 0
    with emulated(lenet_build["elf"], timeout=30) as fw:
        fw.info()
        for i, kind in enumerate(kinds):
            data, expected = malformed(rng, kind)
            fw.send_raw(data)
            where = f"input {i} ({kind}, {len(data)} bytes: {data[:24].hex(' ')}...)"
            if expected[0] == "text":
                line = text_reply(fw)
                assert line.startswith(expected[1]), f"{where}: got {line[:120]!r}"
            else:
                ftype, payload = fw.read_frame(10)
                assert ftype == sc.T_ERROR, f"{where}: reply type {ftype:#x}, an error expected"
                e = sc.parse_error(payload)
                assert e.code == expected[1], f"{where}: error {e.code} ({e.message}), {expected[1]} expected"
                if expected[2] is not None:
                    assert e.detail == expected[2], f"{where}: detail {e.detail}, {expected[2]} expected"
                assert e.message
            seen[kind] += 1
            if (i + 1) % GOOD_EVERY == 0:
                good_request(fw, host, rng, good)
                good += 1
    assert all(seen.values()) and sum(seen.values()) == MALFORMED
    print(f"{MALFORMED} malformed inputs ({', '.join(f'{k} {n}' for k, n in seen.items())}) each answered "
          f"with its error; {good} good requests answered correctly")


# -- the shape of the traffic: pauses inside a frame, several requests in one write, floods ----------
PAUSE_MAX = 0.15         # s between the pieces of a split frame: under NNC_FRAME_TIMEOUT_MS (0.3 s)
SHAPES = ["split_with_pauses", "pipelined", "flood", "nul_and_line_ends", "text_zero_padded",
          "text_overlong_number"]
ROUNDS = 36


def error_reply(fw, timeout):
    ftype, payload = fw.read_frame(timeout)
    assert ftype == sc.T_ERROR, f"reply type {ftype:#x}, an error expected"
    return sc.parse_error(payload)


def _expected(host, t):
    return host.run(t.reshape(host.inputs[0].shape))[0].ravel()


def traffic_shape(fw, host, rng, kind, lossless=True):
    """Sends one kind of odd but possible traffic and checks the firmware's answers. lossless=False:
    a flood may lose bytes on the way (RIOT native's stdin drops what overflows its 4096-byte
    buffer), so its error counts at most the bytes sent."""
    if kind == "split_with_pauses":      # a good frame in 2..12 pieces, paused: answered as one
        t = rng.integers(-128, 128, N_IN, dtype=np.int8)
        frame = sc.make_frame(sc.T_INFER_I8, t.tobytes())
        cuts = sorted(int(c) for c in rng.choice(np.arange(1, len(frame)), int(rng.integers(1, 12)), replace=False))
        for a, b in zip([0] + cuts, cuts + [len(frame)]):
            fw.send_raw(frame[a:b])
            time.sleep(float(rng.uniform(0, PAUSE_MAX)))
        assert np.array_equal(sc.parse_infer(fw.expect_reply(sc.T_INFER_I8))["output"], _expected(host, t))
    elif kind == "pipelined":            # requests back to back in one write (< 4096 bytes): all answered in order
        tensors = [rng.integers(-128, 128, N_IN, dtype=np.int8) for _ in range(int(rng.integers(1, 4)))]
        n_info = int(rng.integers(1, 5))
        fw.send_raw(b"".join([sc.make_frame(sc.T_INFO)] * n_info +
                             [sc.make_frame(sc.T_INFER_I8, t.tobytes()) for t in tensors]))
        for _ in range(n_info):
            assert sc.parse_info(fw.expect_reply(sc.T_INFO))["model"] == "lenet5"
        for t in tensors:
            assert np.array_equal(sc.parse_infer(fw.expect_reply(sc.T_INFER_I8))["output"], _expected(host, t))
    elif kind == "flood":                # bytes that start no frame, without a pause: one error for all
        junk = bytes([rng.choice(list(NOT_TEXT_START))]) + rng.bytes(int(rng.integers(2000, 20000)))
        fw.send_raw(junk)
        e = error_reply(fw, 20)
        assert e.code == E_GARBAGE and (e.detail == len(junk) or not lossless and 0 < e.detail < len(junk)), \
            (e.code, e.detail, len(junk))
    elif kind == "nul_and_line_ends":    # empty lines are skipped; NUL bytes are garbage
        n = int(rng.integers(1, 200))
        fw.send_raw(b"\r\n" * int(rng.integers(0, 300)) + bytes(n))
        e = error_reply(fw, 10)
        assert (e.code, e.detail) == (E_GARBAGE, n)
    elif kind == "text_zero_padded":     # numbers with leading zeros are still 0..255
        px = rng.integers(0, 256, N_IN, dtype=np.uint8)
        fw.send_raw(" ".join(f"{int(v):04d}" for v in px).encode() + b"\n")
        got = sc.parse_text_result(text_reply(fw))["output"]
        assert np.array_equal(got, _expected(host, sc.pixels_to_tensor(px, fw.info())))
    elif kind == "text_overlong_number":  # a number of 4..60 digits (leading digit not 0): value > 255
        n = int(rng.integers(0, N_IN))
        digits = str(int(rng.integers(1, 10))) + "".join(str(d) for d in rng.integers(0, 10, int(rng.integers(3, 60))))
        fw.send_raw((" ".join(str(int(v)) for v in rng.integers(0, 256, n)) + f" {digits} 5 6\n").encode())
        assert text_reply(fw).startswith(f"error value > 255 ({n} numbers read")
    else:
        raise ValueError(kind)


def run_traffic_shapes(fw, host, rounds=ROUNDS, lossless=True):
    rng = np.random.default_rng(SEED + 1)
    kinds = [SHAPES[i % len(SHAPES)] for i in range(rounds)]
    rng.shuffle(kinds)
    fw.info()
    for i, kind in enumerate(kinds):
        try:
            traffic_shape(fw, host, rng, kind, lossless)
            good_request(fw, host, rng, i)
        except (AssertionError, sc.DeviceError) as e:
            raise AssertionError(f"round {i} ({kind}): {e}") from None


def test_fuzz_traffic_shapes(lenet_build, host):
    """Seeded: frames split across writes with pauses, several requests in one write, floods of
    garbage, NUL bytes among empty lines, zero-padded and overlong text numbers; every answer
    right, and a good request after each."""
    with emulated(lenet_build["elf"], timeout=30) as fw:
        run_traffic_shapes(fw, host)


if __name__ == "__main__":
    pytest.main([__file__, "-q", "-s"])
