/*
 * Serial protocol of the inference firmware (version 1).
 *
 * Every binary frame, in both directions:
 *
 *   offset 0   0xA5 0x5A      magic
 *          2   version        NNC_PROTO_VERSION
 *          3   type           request type, or reply type
 *          4   length         payload length, uint16 little endian
 *          6   payload        `length` bytes
 *     6+len    crc16          CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) over
 *                             version, type, length and payload; little endian
 *
 * Requests: INFER_U8 (pixels 0..255, the firmware scales them to 0..1 and quantizes with
 * the model's input scale/zero point), INFER_I8 (an already quantized int8 input tensor),
 * INFO, EXIT (emulator: leave QEMU with the given code; board: reset).
 * Replies carry the request type | 0x80, or NNC_T_ERROR.
 *
 * Text mode for a person at a terminal: one line per image, INPUT0_SIZE whitespace or comma
 * separated numbers 0..255 (pixels) ended by a newline (CR or LF; or NNC_TEXT_TIMEOUT_MS of
 * silence); the firmware answers one line
 *   "result class=C cost=N unit=cycles|ticks hz=H output=o0,o1,..."
 * or "error WHAT (N numbers read; ...)" for a line with too many or too few numbers, a value
 * > 255 or another character (the rest of such a line, up to its newline or NNC_QUIET_MS of
 * silence, is dropped). Nothing of a line carries over to the next line or frame; the first
 * byte of a binary frame inside a line ends the line with an error, and the frame is served.
 *
 * Errors: a frame with a bad header (version, type, length too big or wrong for the type)
 * or bytes that start no frame: the firmware discards input until the line has been
 * quiet for NNC_QUIET_MS, then sends one ERROR frame. A frame that stops early is
 * answered with ERROR/TIMEOUT after NNC_FRAME_TIMEOUT_MS of silence. A bad checksum is
 * answered at once. The firmware then serves the next frame normally.
 * Keep tools/serial_client.py in step with this file.
 */
#ifndef NNC_PROTOCOL_H
#define NNC_PROTOCOL_H

#define NNC_MAGIC0 0xA5u
#define NNC_MAGIC1 0x5Au
#define NNC_PROTO_VERSION 1u
#define NNC_HEADER_SIZE 6u

/* request types */
#define NNC_T_INFER_U8 0x01u
#define NNC_T_INFER_I8 0x02u
#define NNC_T_INFO 0x03u
#define NNC_T_EXIT 0x04u
/* reply types */
#define NNC_T_REPLY 0x80u /* | request type */
#define NNC_T_ERROR 0xFFu

/* error codes (first payload byte of an ERROR frame) */
#define NNC_E_GARBAGE 1u     /* bytes that start neither a frame nor text input */
#define NNC_E_VERSION 2u     /* unsupported protocol version */
#define NNC_E_TYPE 3u        /* unknown request type */
#define NNC_E_OVERSIZE 4u    /* length larger than the firmware's buffer */
#define NNC_E_LENGTH 5u      /* length wrong for the request type */
#define NNC_E_CRC 6u         /* checksum mismatch */
#define NNC_E_TIMEOUT 7u     /* frame stopped early (short frame) */
#define NNC_E_RUN 8u         /* the model's run() returned non-zero */
#define NNC_E_TEXT 9u        /* text mode: bad character, value > 255, or too few numbers */

/* cost units */
#define NNC_COST_CYCLES 1u   /* CPU cycles (DWT CYCCNT) */
#define NNC_COST_TICKS 2u    /* ticks of a reference timer at `hz` (QEMU: see serial_client) */

#define NNC_FRAME_TIMEOUT_MS 300u
#define NNC_QUIET_MS 100u
#define NNC_TEXT_TIMEOUT_MS 3000u

#endif
