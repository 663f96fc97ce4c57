/*
 * Inference firmware: reads inputs from the serial line, runs the generated model
 * (tvmgen_<model>_run) and answers with the output tensor, the predicted class and the
 * cost of the inference. Same source for RIOT (platform_riot.c) and the bare-metal board
 * layers (board/). Protocol: protocol.h.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "model_binding.h"
#include "platform.h"
#include "protocol.h"

#if MODEL_INPUT_SIZE > 65535 || MODEL_OUTPUT_SIZE > 65535
#error "the protocol's 16-bit length field cannot carry this model's tensors"
#endif

#define NUM_LAYERS_RECORDED ((MODEL_NUM_LAYERS) > 0 ? (MODEL_NUM_LAYERS) : 1)

/* Input tensor; INFER_U8 and text mode store pixels here and quantize in place. */
static uint8_t io_in[MODEL_INPUT_SIZE] __attribute__((aligned(4)));
static int8_t io_out[MODEL_OUTPUT_SIZE] __attribute__((aligned(4)));

static uint32_t layer_ticks[NUM_LAYERS_RECORDED];
static uint32_t layer_calls;

void nnc_layer_hook(int index)
{
    uint32_t now = plat_ticks();
    if (index >= 0 && index < NUM_LAYERS_RECORDED) {
        layer_ticks[index] = now;
    }
    layer_calls++;
}

/* ---- output ------------------------------------------------------------------------ */

static uint8_t tx_buf[64];
static size_t tx_len;
static uint16_t tx_crc;

static uint16_t crc16_update(uint16_t crc, uint8_t byte)
{
    crc ^= (uint16_t)byte << 8;
    for (int i = 0; i < 8; i++) {
        crc = (crc & 0x8000u) ? (uint16_t)((crc << 1) ^ 0x1021u) : (uint16_t)(crc << 1);
    }
    return crc;
}

static void tx_flush(void)
{
    if (tx_len) {
        plat_write(tx_buf, tx_len);
        tx_len = 0;
    }
}

static void tx_raw(uint8_t b)
{
    if (tx_len == sizeof(tx_buf)) {
        tx_flush();
    }
    tx_buf[tx_len++] = b;
}

static void tx_byte(uint8_t b)
{
    tx_crc = crc16_update(tx_crc, b);
    tx_raw(b);
}

static void tx_bytes(const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n--) {
        tx_byte(*b++);
    }
}

static void tx_u16(uint16_t v)
{
    tx_byte((uint8_t)v);
    tx_byte((uint8_t)(v >> 8));
}

static void tx_u32(uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        tx_byte((uint8_t)(v >> (8 * i)));
    }
}

static void tx_f32(float f)
{
    uint32_t v;
    memcpy(&v, &f, sizeof(v));
    tx_u32(v);
}

static void tx_str8(const char *s)
{
    size_t n = strlen(s);
    if (n > 255) {
        n = 255;
    }
    tx_byte((uint8_t)n);
    tx_bytes(s, n);
}

static void tx_begin(uint8_t type, uint16_t len)
{
    tx_raw(NNC_MAGIC0);
    tx_raw(NNC_MAGIC1);
    tx_crc = 0xFFFFu;
    tx_byte(NNC_PROTO_VERSION);
    tx_byte(type);
    tx_u16(len);
}

static void tx_end(void)
{
    uint16_t crc = tx_crc;
    tx_raw((uint8_t)crc);
    tx_raw((uint8_t)(crc >> 8));
    tx_flush();
}

static void text(const char *s)
{
    plat_write(s, strlen(s));
}

static void text_int(int32_t v)
{
    char buf[12];
    int i = sizeof(buf);
    uint32_t u = v < 0 ? 0u - (uint32_t)v : (uint32_t)v;
    do {
        buf[--i] = (char)('0' + u % 10u);
        u /= 10u;
    } while (u);
    if (v < 0) {
        buf[--i] = '-';
    }
    plat_write(buf + i, sizeof(buf) - (size_t)i);
}

static void send_error(uint8_t code, uint8_t req_type, uint16_t detail, const char *msg)
{
    size_t n = strlen(msg);
    tx_begin(NNC_T_ERROR, (uint16_t)(4 + n));
    tx_byte(code);
    tx_byte(req_type);
    tx_u16(detail);
    tx_bytes(msg, n);
    tx_end();
}

/* ---- input ------------------------------------------------------------------------- */

/* Drop bytes until the line has been quiet for NNC_QUIET_MS; returns how many. */
static uint32_t discard_until_quiet(void)
{
    uint32_t n = 0;
    while (plat_getc(NNC_QUIET_MS) >= 0) {
        n++;
    }
    return n;
}

static int8_t quantize_pixel(uint8_t pixel)
{
    /* ToTensor: pixel / 255 in float32, then real = scale * (q - zero_point). Float only:
     * the F746 FPU is single precision. */
    float x = (float)pixel / 255.0f;
    float q = rintf(x * (1.0f / (float)(MODEL_INPUT_SCALE))) + (float)(MODEL_INPUT_ZERO_POINT);
    if (q < -128.0f) {
        q = -128.0f;
    }
    if (q > 127.0f) {
        q = 127.0f;
    }
    return (int8_t)q;
}

static void quantize_input(void)
{
    for (uint32_t i = 0; i < MODEL_INPUT_SIZE; i++) {
        io_in[i] = (uint8_t)quantize_pixel(io_in[i]);
    }
}

/* ---- inference --------------------------------------------------------------------- */

struct result {
    int32_t status;
    uint32_t cost;
    uint16_t predicted;
};

static struct result infer(void)
{
    struct result r;
    MODEL_INPUTS_T inputs = { .input0 = io_in };
    MODEL_OUTPUTS_T outputs = { .output0 = io_out };

    layer_calls = 0;
    uint32_t t0 = plat_ticks();
    r.status = MODEL_RUN(&inputs, &outputs);
    uint32_t t1 = plat_ticks();
    r.cost = t1 - t0;
    /* per-layer deltas, in place: layer_ticks[i] becomes the cost of layer i */
    if (layer_calls == (uint32_t)(MODEL_NUM_LAYERS)) {
        uint32_t prev = t0;
        for (int i = 0; i < (MODEL_NUM_LAYERS); i++) {
            uint32_t t = layer_ticks[i];
            layer_ticks[i] = t - prev;
            prev = t;
        }
    }
    r.predicted = 0;
    for (uint16_t i = 1; i < MODEL_OUTPUT_SIZE; i++) {
        if (io_out[i] > io_out[r.predicted]) {
            r.predicted = i;
        }
    }
    return r;
}

static uint8_t layers_reported(void)
{
    if (layer_calls != (uint32_t)(MODEL_NUM_LAYERS) || (MODEL_NUM_LAYERS) > 255) {
        return 0;
    }
    return (uint8_t)(MODEL_NUM_LAYERS);
}

static void reply_infer(uint8_t req_type, const struct result *r)
{
    uint8_t nl = layers_reported();
    tx_begin(NNC_T_REPLY | req_type, (uint16_t)(2 + 1 + 1 + 4 + 4 + 4u * nl + 2 + MODEL_OUTPUT_SIZE));
    tx_u16(r->predicted);
    tx_byte(plat_cost_unit());
    tx_byte(nl);
    tx_u32(plat_tick_hz());
    tx_u32(r->cost);
    for (uint8_t i = 0; i < nl; i++) {
        tx_u32(layer_ticks[i]);
    }
    tx_u16(MODEL_OUTPUT_SIZE);
    tx_bytes(io_out, MODEL_OUTPUT_SIZE);
    tx_end();
}

static void reply_info(void)
{
    const char *model = MODEL_NAME;
    const char *board = plat_board_name();
    size_t lm = strlen(model) > 255 ? 255 : strlen(model);
    size_t lb = strlen(board) > 255 ? 255 : strlen(board);
    tx_begin(NNC_T_REPLY | NNC_T_INFO, (uint16_t)(1 + 1 + 4 + 2 + 2 + 2 + 4 + 4 + 4 + 4 + 4 + 4 + 1 + lm + 1 + lb));
    tx_byte(NNC_PROTO_VERSION);
    tx_byte(plat_cost_unit());
    tx_u32(plat_tick_hz());
    tx_u16(MODEL_INPUT_SIZE);
    tx_u16(MODEL_OUTPUT_SIZE);
    tx_u16(MODEL_NUM_LAYERS);
    tx_u32(MODEL_WORKSPACE_SIZE);
    tx_f32(MODEL_INPUT_SCALE);
    tx_u32((uint32_t)(int32_t)(MODEL_INPUT_ZERO_POINT));
    tx_f32(MODEL_OUTPUT_SCALE);
    tx_u32((uint32_t)(int32_t)(MODEL_OUTPUT_ZERO_POINT));
    tx_u32(plat_stack_used());
    tx_str8(model);
    tx_str8(board);
    tx_end();
}

/* ---- binary frames ----------------------------------------------------------------- */

static void handle_frame(void)
{
    uint8_t hdr[NNC_HEADER_SIZE - 1]; /* after the first magic byte */
    for (unsigned i = 0; i < sizeof(hdr); i++) {
        int c = plat_getc(NNC_FRAME_TIMEOUT_MS);
        if (c < 0) {
            send_error(NNC_E_TIMEOUT, 0, (uint16_t)(i + 1), "timeout: frame header incomplete");
            return;
        }
        hdr[i] = (uint8_t)c;
        if (i == 0 && hdr[0] != NNC_MAGIC1) {
            uint32_t n = 2 + discard_until_quiet();
            send_error(NNC_E_GARBAGE, 0, (uint16_t)(n > 65535 ? 65535 : n),
                       "garbage: bytes discarded (not a frame, not text input)");
            return;
        }
    }
    uint8_t version = hdr[1], type = hdr[2];
    uint16_t len = (uint16_t)(hdr[3] | (hdr[4] << 8));
    uint8_t code = 0;
    const char *msg = "";
    uint32_t expected = 0;

    if (version != NNC_PROTO_VERSION) {
        code = NNC_E_VERSION;
        msg = "unsupported protocol version";
    }
    else if (type == NNC_T_INFER_U8 || type == NNC_T_INFER_I8) {
        expected = MODEL_INPUT_SIZE;
    }
    else if (type == NNC_T_INFO) {
        expected = 0;
    }
    else if (type == NNC_T_EXIT) {
        expected = 1;
    }
    else {
        code = NNC_E_TYPE;
        msg = "unknown request type";
    }
    if (!code && len > MODEL_INPUT_SIZE) {
        code = NNC_E_OVERSIZE;
        msg = "oversize: length exceeds the input buffer";
    }
    else if (!code && len != expected) {
        code = NNC_E_LENGTH;
        msg = "length does not match the request type";
    }
    if (code) {
        discard_until_quiet();
        send_error(code, type, len, msg);
        return;
    }

    uint8_t small[1];
    uint8_t *payload = (type == NNC_T_EXIT) ? small : io_in;
    uint16_t crc = 0xFFFFu;
    for (unsigned i = 0; i < sizeof(hdr) - 1; i++) {
        crc = crc16_update(crc, hdr[1 + i]);
    }
    for (uint32_t i = 0; i < (uint32_t)len + 2u; i++) {
        int c = plat_getc(NNC_FRAME_TIMEOUT_MS);
        if (c < 0) {
            send_error(NNC_E_TIMEOUT, type, (uint16_t)i, "timeout: short frame (payload or checksum missing)");
            return;
        }
        if (i < len) {
            payload[i] = (uint8_t)c;
            crc = crc16_update(crc, (uint8_t)c);
        }
        else if (i == len) {
            crc ^= (uint16_t)c;
        }
        else {
            crc ^= (uint16_t)((uint16_t)c << 8);
        }
    }
    if (crc != 0) {
        send_error(NNC_E_CRC, type, 0, "checksum mismatch");
        return;
    }

    switch (type) {
    case NNC_T_INFO:
        reply_info();
        break;
    case NNC_T_EXIT:
        tx_begin(NNC_T_REPLY | NNC_T_EXIT, 0);
        tx_end();
        plat_exit(small[0]);
        break;
    default: {
        if (type == NNC_T_INFER_U8) {
            quantize_input();
        }
        struct result r = infer();
        if (r.status != 0) {
            send_error(NNC_E_RUN, type, (uint16_t)r.status, "model run() failed");
        }
        else {
            reply_infer(type, &r);
        }
        break;
    }
    }
}

/* ---- text mode --------------------------------------------------------------------- */

static int is_separator(int c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == ',';
}

/* Runs the image of a complete text line and answers with one result line. */
static void infer_text_line(void)
{
    quantize_input();
    struct result r = infer();
    if (r.status != 0) {
        text("error model run() failed: ");
        text_int(r.status);
        text("\r\n");
        return;
    }
    text("result class=");
    text_int(r.predicted);
    text(" cost=");
    text_int((int32_t)r.cost);
    text(plat_cost_unit() == NNC_COST_CYCLES ? " unit=cycles" : " unit=ticks");
    text(" hz=");
    text_int((int32_t)plat_tick_hz());
    text(" output=");
    for (uint32_t i = 0; i < MODEL_OUTPUT_SIZE; i++) {
        if (i) {
            text(",");
        }
        text_int(io_out[i]);
    }
    text("\r\n");
}

/* How a text line ended. */
enum line_end { LINE_NEWLINE, LINE_SILENCE, LINE_FRAME };

/* Reads the rest of a bad text line without storing it: up to its newline, NNC_QUIET_MS of
 * silence, or the first byte of a binary frame (which is then served). */
static enum line_end skip_line(void)
{
    for (;;) {
        int c = plat_getc(NNC_QUIET_MS);
        if (c < 0) {
            return LINE_SILENCE;
        }
        if (c == '\n' || c == '\r') {
            return LINE_NEWLINE;
        }
        if (c == (int)NNC_MAGIC0) {
            return LINE_FRAME;
        }
    }
}

static void text_error(const char *what, uint32_t count)
{
    text("error ");
    text(what);
    text(" (");
    text_int((int32_t)count);
    text(" numbers read; send ");
    text_int(MODEL_INPUT_SIZE);
    text(" pixel values 0..255 separated by spaces, one line per image)\r\n");
}

/* One text line is one image: exactly MODEL_INPUT_SIZE numbers, ended by a newline (or
 * NNC_TEXT_TIMEOUT_MS of silence). Too many or too few numbers, a bad character or a value
 * > 255 make the whole line an error; nothing of it carries over to the next line or frame.
 * Returns 1 when the line was ended by the first byte of a binary frame (to be served next).
 * noinline: its locals stay out of main()'s frame, under which every inference runs. */
__attribute__((noinline)) static int handle_text(int first)
{
    uint32_t count = 0;   /* numbers of the line so far, also beyond the input size */
    uint32_t value = (uint32_t)(first - '0');
    int in_number = 1;
    const char *bad = NULL;
    enum line_end end;

    for (;;) {
        int c = plat_getc(NNC_TEXT_TIMEOUT_MS);
        if (c >= '0' && c <= '9') {
            value = in_number ? value * 10u + (uint32_t)(c - '0') : (uint32_t)(c - '0');
            in_number = 1;
            if (value > 255u) {
                bad = "value > 255";
                end = skip_line();
                break;
            }
            continue;
        }
        if (in_number) {
            if (count < MODEL_INPUT_SIZE) {
                io_in[count] = (uint8_t)value;
            }
            count++;
            in_number = 0;
        }
        if (c < 0) {
            end = LINE_SILENCE;
            break;
        }
        if (c == '\n' || c == '\r') {
            end = LINE_NEWLINE;
            break;
        }
        if (c == (int)NNC_MAGIC0) {
            bad = "binary frame inside a text line";
            end = LINE_FRAME;
            break;
        }
        if (!is_separator(c)) {
            bad = "unexpected character";
            end = skip_line();
            break;
        }
    }
    if (!bad && count > MODEL_INPUT_SIZE) {
        bad = "too many numbers";
    }
    else if (!bad && count < MODEL_INPUT_SIZE) {
        bad = end == LINE_SILENCE ? "timeout: input incomplete" : "too few numbers";
    }
    if (bad) {
        text_error(bad, count);
    }
    else {
        infer_text_line();
    }
    return end == LINE_FRAME;
}

/* ---- main loop --------------------------------------------------------------------- */

int main(void)
{
    plat_init();
    text("\r\nnnc firmware ready: model=" MODEL_NAME " board=");
    text(plat_board_name());
    text(" protocol=1 input=");
    text_int(MODEL_INPUT_SIZE);
    text(" (binary frames, or ");
    text_int(MODEL_INPUT_SIZE);
    text(" pixel values 0..255 as text)\r\n");

    for (;;) {
        int c = plat_getc(0);
        if (c >= '0' && c <= '9' && handle_text(c)) {
            c = (int)NNC_MAGIC0;   /* the line ended where a frame starts */
        }
        if (c == (int)NNC_MAGIC0) {
            handle_frame();
        }
        else if (c >= '0' && c <= '9') {
            /* a text line, answered */
        }
        else if (c >= 0 && !is_separator(c)) {
            uint32_t n = 1 + discard_until_quiet();
            send_error(NNC_E_GARBAGE, 0, (uint16_t)(n > 65535 ? 65535 : n),
                       "garbage: bytes discarded (not a frame, not text input)");
        }
    }
    return 0;
}
