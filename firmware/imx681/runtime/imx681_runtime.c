/* imx681_runtime.c: interpreter of the IMX681 memory images. See imx681_runtime.h and
 * tools/nnc/targets/imx681/image.py (the format). Every field is read through rd(), which
 * honours the image's byte order, so one runtime reads little- and big-endian images. */
#include <math.h>
#include <string.h>

#include "imx681_runtime.h"

enum { K_CONV = 1, K_DENSE = 2, K_ADD = 3, K_RELU = 4, K_MAXPOOL = 5, K_AVGPOOL = 6,
       K_RESHAPE = 7, K_CAT = 8 };
enum { RQ_FLOAT = 0, RQ_SHIFT = 1, RQ_QNNPACK_ADD = 2, RQ_TORCH_FLOAT_ADD = 3 };
enum { C_WEIGHT = 1, C_BIAS = 2, C_MULT = 3, C_WZP = 4, C_SCALES = 5 };
enum { F_FRAME_INPUT = 8, F_OUTPUT = 16 };

#define MAX_IDS 16
#define MAX_INTS 48
#define MAX_CONSTS 6

typedef struct {
    uint32_t offset, count;     /* data offset in the image, elements */
    uint8_t dtype, name;
} cblock;

typedef struct {
    uint32_t kind, nin, nout, nints, nconsts;
    uint32_t ids[MAX_IDS];
    int32_t ints[MAX_INTS];
    cblock consts[MAX_CONSTS];
} op_rec;

typedef struct {
    uint8_t* data;
    uint32_t bytes, flags;
    uint32_t n, h, w, c;
} buf_t;

/* ---- reading the image --------------------------------------------------------------------- */
static uint32_t rd(const imx681_rt* rt, uint32_t off, int bytes)
{
    const uint8_t* p = rt->params + off;
    uint32_t v = 0;
    for (int i = 0; i < bytes; ++i) {
        v = (v << 8) | p[rt->big_endian ? i : bytes - 1 - i];
    }
    return v;
}

static float rd_f32(const imx681_rt* rt, uint32_t off)
{
    uint32_t u = rd(rt, off, 4);
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static int32_t c_i32(const imx681_rt* rt, const cblock* c, uint32_t i)
{
    return (int32_t)rd(rt, c->offset + 4u * i, 4);
}

static float c_f32(const imx681_rt* rt, const cblock* c, uint32_t i)
{
    return rd_f32(rt, c->offset + 4u * i);
}

static int8_t c_i8(const imx681_rt* rt, const cblock* c, uint32_t i)
{
    return (int8_t)rt->params[c->offset + i];
}

static uint32_t crc32_of(const uint8_t* p, uint32_t n)
{
    uint32_t crc = 0xFFFFFFFFu;
    for (uint32_t i = 0; i < n; ++i) {
        crc ^= p[i];
        for (int k = 0; k < 8; ++k) {
            crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
        }
    }
    return ~crc;
}

static int get_buffer(const imx681_rt* rt, uint32_t id, buf_t* b)
{
    const uint32_t e = rt->buffer_table + 32u * id;
    const uint32_t region = rt->params[e + 2];
    const uint32_t address = rd(rt, e + 4, 4);
    b->flags = rt->params[e + 3];
    b->n = rd(rt, e + 8, 2);
    b->h = rd(rt, e + 10, 2);
    b->w = rd(rt, e + 12, 2);
    b->c = rd(rt, e + 14, 2);
    b->bytes = rd(rt, e + 16, 4);
    uint8_t* base;
    uint32_t start, size;
    if (region == 1) {
        base = rt->static_data; start = rt->static_start; size = rt->static_size;
    } else if (region == 2) {
        base = rt->scratch; start = rt->scratch_start; size = rt->scratch_size;
    } else {
        return IMX681_ERR_ADDRESS;
    }
    if (address < start || address - start > size || b->bytes > size - (address - start)) {
        return IMX681_ERR_ADDRESS;
    }
    b->data = base + (address - start);
    return IMX681_OK;
}

static void get_op(const imx681_rt* rt, uint32_t index, op_rec* op)
{
    uint32_t off = rd(rt, rt->op_table + 4u * index, 4);
    op->kind = rd(rt, off, 2);
    op->nin = rd(rt, off + 4, 2);
    op->nout = rd(rt, off + 6, 2);
    uint32_t nids = op->nin + op->nout;
    for (uint32_t i = 0; i < nids && i < MAX_IDS; ++i) {
        op->ids[i] = rd(rt, off + 8 + 2 * i, 2);
    }
    uint32_t o = off + 8 + (2 * nids + 3) / 4 * 4;
    op->nints = rd(rt, o, 2);
    op->nconsts = rd(rt, o + 2, 2);
    o += 4;
    for (uint32_t i = 0; i < op->nints && i < MAX_INTS; ++i) {
        op->ints[i] = (int32_t)rd(rt, o + 4 * i, 4);
    }
    o += 4 * op->nints;
    for (uint32_t i = 0; i < op->nconsts && i < MAX_CONSTS; ++i) {
        cblock* c = &op->consts[i];
        c->dtype = rt->params[o];
        c->name = rt->params[o + 1];
        c->count = rd(rt, o + 4, 4);
        c->offset = o + 8;
        uint32_t bytes = c->count * (c->dtype == 1 ? 1u : 4u);
        o += 8 + (bytes + 3) / 4 * 4;
    }
}

static const cblock* find_const(const op_rec* op, uint8_t name)
{
    for (uint32_t i = 0; i < op->nconsts; ++i) {
        if (op->consts[i].name == name) return &op->consts[i];
    }
    return 0;
}

/* ---- arithmetic (nnc.arith and nnc.frontend.state) ------------------------------------------ */
static int8_t clamp8(int32_t q, int32_t lo, int32_t hi)
{
    return (int8_t)(q < lo ? lo : (q > hi ? hi : q));
}

static int8_t requant(int32_t rq, int32_t acc, float mult, int32_t zout, int32_t shift,
                      int32_t lo, int32_t hi)
{
    if (rq == RQ_SHIFT) return clamp8(acc >> shift, lo, hi);
    return clamp8((int32_t)nearbyintf((float)acc * mult) + zout, lo, hi);
}

/* ---- operations ---------------------------------------------------------------------------- */
static void op_conv(const imx681_rt* rt, const op_rec* op, const buf_t* in, buf_t* out)
{
    const int32_t* a = op->ints;
    const int32_t rq = a[0], sh = a[1], sw = a[2], ph = a[3], pw = a[4], dh = a[5], dw = a[6];
    const int32_t groups = a[7], kh = a[8], kw = a[9], lo = a[10], hi = a[11], zin = a[12];
    const int32_t zout = a[13], shift = op->nints > 14 ? a[14] : 0;
    const cblock *w = find_const(op, C_WEIGHT), *b = find_const(op, C_BIAS);
    const cblock *m = find_const(op, C_MULT), *wz = find_const(op, C_WZP);
    const int32_t cin = (int32_t)in->c, h = (int32_t)in->h, wd = (int32_t)in->w;
    const int32_t cout = (int32_t)out->c, oh = (int32_t)out->h, ow = (int32_t)out->w;
    const int32_t cin_g = cin / groups, cout_g = cout / groups;
    const int8_t* x = (const int8_t*)in->data;
    int8_t* y = (int8_t*)out->data;
    for (int32_t oc = 0; oc < cout; ++oc) {
        const int32_t g = oc / cout_g;
        const int32_t wzp = wz ? c_i32(rt, wz, (uint32_t)oc) : 0;
        const float mult = m ? c_f32(rt, m, (uint32_t)oc) : 0.0f;
        for (int32_t oy = 0; oy < oh; ++oy) {
            for (int32_t ox = 0; ox < ow; ++ox) {
                int32_t acc = c_i32(rt, b, (uint32_t)oc);
                for (int32_t ic = 0; ic < cin_g; ++ic) {
                    for (int32_t ky = 0; ky < kh; ++ky) {
                        const int32_t iy = oy * sh - ph + ky * dh;
                        if (iy < 0 || iy >= h) continue;
                        for (int32_t kx = 0; kx < kw; ++kx) {
                            const int32_t ix = ox * sw - pw + kx * dw;
                            if (ix < 0 || ix >= wd) continue;
                            const int32_t xv = x[((g * cin_g + ic) * h + iy) * wd + ix] - zin;
                            const int32_t wv = c_i8(rt, w, (uint32_t)(((oc * cin_g + ic) * kh + ky) * kw + kx)) - wzp;
                            acc += xv * wv;
                        }
                    }
                }
                y[(oc * oh + oy) * ow + ox] = requant(rq, acc, mult, zout, shift, lo, hi);
            }
        }
    }
}

static void op_dense(const imx681_rt* rt, const op_rec* op, const buf_t* in, buf_t* out)
{
    const int32_t* a = op->ints;
    const int32_t rq = a[0], lo = a[1], hi = a[2], zin = a[3], zout = a[4];
    const int32_t shift = op->nints > 5 ? a[5] : 0;
    const cblock *w = find_const(op, C_WEIGHT), *b = find_const(op, C_BIAS);
    const cblock *m = find_const(op, C_MULT), *wz = find_const(op, C_WZP);
    const uint32_t k = in->bytes, cout = out->bytes;
    const int8_t* x = (const int8_t*)in->data;
    int8_t* y = (int8_t*)out->data;
    for (uint32_t oc = 0; oc < cout; ++oc) {
        const int32_t wzp = wz ? c_i32(rt, wz, oc) : 0;
        int32_t acc = c_i32(rt, b, oc);
        for (uint32_t i = 0; i < k; ++i) {
            acc += ((int32_t)x[i] - zin) * ((int32_t)c_i8(rt, w, oc * k + i) - wzp);
        }
        y[oc] = requant(rq, acc, m ? c_f32(rt, m, oc) : 0.0f, zout, shift, lo, hi);
    }
}

static void op_add(const imx681_rt* rt, const op_rec* op, const buf_t* in0, const buf_t* in1,
                   buf_t* out)
{
    const int32_t* a = op->ints;
    const int8_t* x0 = (const int8_t*)in0->data;
    const int8_t* x1 = (const int8_t*)in1->data;
    int8_t* y = (int8_t*)out->data;
    const uint32_t n = out->bytes;
    if (a[0] == RQ_QNNPACK_ADD) {
        const int32_t am = a[1], bm = a[2], shift = a[3], az = a[4], bz = a[5], oz = a[6];
        const int64_t mask = ((int64_t)1 << shift) - 1;
        for (uint32_t i = 0; i < n; ++i) {
            const int64_t acc = (int64_t)(int32_t)(am * ((int32_t)x0[i] - az) + bm * ((int32_t)x1[i] - bz));
            const int64_t rem = (acc & mask) - (acc < 0);
            const int64_t q = (acc >> shift) + (rem > (mask >> 1)) + oz;
            y[i] = clamp8((int32_t)q, a[7], a[8]);   /* |q| < 2^18: acc < 2^31, shift >= 13 */
        }
    } else if (a[0] == RQ_TORCH_FLOAT_ADD) {
        const cblock* s = find_const(op, C_SCALES);
        const float sa = c_f32(rt, s, 0), sb = c_f32(rt, s, 1), inv = c_f32(rt, s, 2);
        const int32_t az = a[1], bz = a[2], oz = a[3], off = a[4];
        const float lo = (float)(a[5] + off), hi = (float)(a[6] + off), zt = (float)(oz + off);
        for (uint32_t i = 0; i < n; ++i) {   /* in place on the state is safe: same index */
            const float fa = (float)((int32_t)x0[i] - az) * sa;
            const float fb = (float)((int32_t)x1[i] - bz) * sb;
            float r = fmaf(fa + fb, inv, zt);
            r = r < lo ? lo : (r > hi ? hi : r);
            y[i] = (int8_t)((int32_t)nearbyintf(r) - off);
        }
    } else {
        for (uint32_t i = 0; i < n; ++i) {
            y[i] = clamp8(((int32_t)x0[i] + (int32_t)x1[i]) >> a[1], a[2], a[3]);
        }
    }
}

static void op_pool(const imx681_rt* rt, const op_rec* op, const buf_t* in, buf_t* out, int avg)
{
    const int32_t* a = op->ints;
    const int32_t kh = a[0], kw = a[1], sh = a[2], sw = a[3], ph = a[4], pw = a[5];
    const int32_t dh = avg ? 1 : a[6], dw = avg ? 1 : a[7];
    const int32_t zin = avg ? a[8] : 0, zout = avg ? a[9] : 0;
    const cblock* m = avg ? find_const(op, C_MULT) : 0;
    const int32_t c = (int32_t)in->c, h = (int32_t)in->h, w = (int32_t)in->w;
    const int32_t oh = (int32_t)out->h, ow = (int32_t)out->w;
    const int8_t* x = (const int8_t*)in->data;
    int8_t* y = (int8_t*)out->data;
    for (int32_t ch = 0; ch < c; ++ch) {
        for (int32_t oy = 0; oy < oh; ++oy) {
            for (int32_t ox = 0; ox < ow; ++ox) {
                int32_t best = -128, acc = 0;
                for (int32_t ky = 0; ky < kh; ++ky) {
                    const int32_t iy = oy * sh - ph + ky * dh;
                    if (iy < 0 || iy >= h) continue;
                    for (int32_t kx = 0; kx < kw; ++kx) {
                        const int32_t ix = ox * sw - pw + kx * dw;
                        if (ix < 0 || ix >= w) continue;
                        const int32_t v = x[(ch * h + iy) * w + ix];
                        best = v > best ? v : best;
                        acc += v - zin;
                    }
                }
                y[(ch * oh + oy) * ow + ox] = avg
                    ? requant(RQ_FLOAT, acc, c_f32(rt, m, (uint32_t)(oy * ow + ox)), zout, 0, -128, 127)
                    : (int8_t)best;
            }
        }
    }
}

static int op_cat(const imx681_rt* rt, const op_rec* op, int8_t* y)
{
    const int32_t* a = op->ints;
    const uint32_t n = op->nin;
    const int32_t outer = a[0], out_inner = a[1], zout = a[3 + 2 * n - 1];
    const cblock* s = find_const(op, C_SCALES);
    const float out_scale = c_f32(rt, s, n);
    const float inv = 1.0f / out_scale;
    int32_t offset = 0;
    for (uint32_t i = 0; i < n; ++i) {
        buf_t b;
        int rc = get_buffer(rt, op->ids[i], &b);
        if (rc) return rc;
        const int8_t* x = (const int8_t*)b.data;
        const int32_t inner = a[2 + i], zp = a[2 + n + i];
        const float scale = c_f32(rt, s, i);
        const int same = scale == out_scale && zp == zout;
        for (int32_t o = 0; o < outer; ++o) {
            for (int32_t j = 0; j < inner; ++j) {
                const int8_t v = x[o * inner + j];
                y[o * out_inner + offset + j] = same ? v
                    : clamp8((int32_t)nearbyintf((float)((int32_t)v - zp) * scale * inv) + zout, -128, 127);
            }
        }
        offset += inner;
    }
    return IMX681_OK;
}

/* ---- API ----------------------------------------------------------------------------------- */
int32_t imx681_rt_init(imx681_rt* rt, const uint8_t* params, uint32_t params_size,
                       uint32_t params_start, uint8_t* static_data, uint32_t static_size,
                       uint32_t static_start, uint8_t* scratch, uint32_t scratch_size,
                       uint32_t scratch_start)
{
    memset(rt, 0, sizeof *rt);
    if (params_size < 32 || memcmp(params, "I681", 4) != 0) return IMX681_ERR_MAGIC;
    rt->params = params;
    rt->params_start = params_start;
    rt->static_data = static_data;
    rt->static_size = static_size;
    rt->static_start = static_start;
    rt->scratch = scratch;
    rt->scratch_size = scratch_size;
    rt->scratch_start = scratch_start;
    rt->big_endian = params[6] == 0 && params[7] == 1;
    if (rd(rt, 4, 2) != 1) return IMX681_ERR_VERSION;
    rt->params_size = rd(rt, 8, 4);
    if (rt->params_size > params_size) return IMX681_ERR_SIZE;
    if (rd(rt, 12, 4) != crc32_of(params + 16, rt->params_size - 16)) return IMX681_ERR_CRC;
    rt->n_ops = rd(rt, 16, 2);
    rt->n_buffers = rd(rt, 18, 2);
    rt->buffer_table = rd(rt, 20, 4);
    rt->op_table = rd(rt, 24, 4);
    for (uint32_t i = 0; i < rt->n_buffers; ++i) {
        buf_t b;
        if (get_buffer(rt, i, &b) != IMX681_OK) return IMX681_ERR_ADDRESS;
    }
    for (uint32_t i = 0; i < rt->n_ops; ++i) {
        op_rec op;
        get_op(rt, i, &op);
        if (op.kind < K_CONV || op.kind > K_CAT) return IMX681_ERR_KIND;
    }
    return IMX681_OK;
}

/* index >= 0: 1 and *out when the index-th buffer with `flag` exists, else 0.
 * index < 0: how many buffers have `flag`. Reshape views (flag 4) do not count. */
static int32_t nth_flagged(const imx681_rt* rt, uint32_t flag, int32_t index, buf_t* out)
{
    int32_t seen = 0;
    for (uint32_t i = 0; i < rt->n_buffers; ++i) {
        buf_t b;
        get_buffer(rt, i, &b);
        if ((b.flags & flag) && (b.flags & 4u) == 0) {
            if (seen == index) {
                if (out) *out = b;
                return 1;
            }
            ++seen;
        }
    }
    return index < 0 ? seen : 0;
}

int32_t imx681_rt_num_inputs(const imx681_rt* rt) { return nth_flagged(rt, F_FRAME_INPUT, -1, 0); }
int32_t imx681_rt_num_outputs(const imx681_rt* rt) { return nth_flagged(rt, F_OUTPUT, -1, 0); }

int32_t imx681_rt_input_size(const imx681_rt* rt, int32_t index)
{
    buf_t b;
    return nth_flagged(rt, F_FRAME_INPUT, index, &b) == 1 ? (int32_t)b.bytes : -1;
}

int32_t imx681_rt_output_size(const imx681_rt* rt, int32_t index)
{
    buf_t b;
    return nth_flagged(rt, F_OUTPUT, index, &b) == 1 ? (int32_t)b.bytes : -1;
}

int32_t imx681_rt_frame(imx681_rt* rt, const int8_t* const* inputs, int8_t* const* outputs)
{
    buf_t b;
    for (int32_t i = 0; nth_flagged(rt, F_FRAME_INPUT, i, &b) == 1; ++i) {
        memcpy(b.data, inputs[i], b.bytes);
    }
    for (uint32_t k = 0; k < rt->n_ops; ++k) {
        op_rec op;
        buf_t in0, in1, out;
        get_op(rt, k, &op);
        get_buffer(rt, op.ids[0], &in0);
        get_buffer(rt, op.ids[op.nin], &out);
        switch (op.kind) {
        case K_CONV: op_conv(rt, &op, &in0, &out); break;
        case K_DENSE: op_dense(rt, &op, &in0, &out); break;
        case K_ADD:
            get_buffer(rt, op.ids[1], &in1);
            op_add(rt, &op, &in0, &in1, &out);
            break;
        case K_RELU:
            for (uint32_t i = 0; i < out.bytes; ++i) {
                out.data[i] = (uint8_t)clamp8((int8_t)in0.data[i], op.ints[0], op.ints[1]);
            }
            break;
        case K_MAXPOOL: op_pool(rt, &op, &in0, &out, 0); break;
        case K_AVGPOOL: op_pool(rt, &op, &in0, &out, 1); break;
        case K_RESHAPE:
            if (!op.ints[0]) memmove(out.data, in0.data, out.bytes);
            break;
        case K_CAT: {
            int32_t rc = op_cat(rt, &op, (int8_t*)out.data);
            if (rc) return rc;
            break;
        }
        default: return IMX681_ERR_KIND;
        }
    }
    for (int32_t i = 0; nth_flagged(rt, F_OUTPUT, i, &b) == 1; ++i) {
        memcpy(outputs[i], b.data, b.bytes);
    }
    return IMX681_OK;
}

int32_t imx681_rt_struct_size(void) { return (int32_t)sizeof(imx681_rt); }

void imx681_rt_reset_state(imx681_rt* rt, const uint8_t* static_image, uint32_t static_size)
{
    memcpy(rt->static_data, static_image, static_size < rt->static_size ? static_size : rt->static_size);
}
