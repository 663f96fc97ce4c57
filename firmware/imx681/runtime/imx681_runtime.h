/* imx681_runtime.h: executes the IMX681 memory images (OUTPUT_MODE I2C_IMAGES).
 *
 * The images are what is written over I2C (tools/nnc/targets/imx681/image.py documents the
 * layout): the PARAMS image (header, buffer table, operation records with weights) and the
 * STATIC_DATA image (initial state values, constants). This runtime is the sensor-side
 * interpreter of that format, portable C99, no allocation: the caller owns the three regions.
 *
 *   imx681_rt rt;
 *   imx681_rt_init(&rt, params, params_bytes, PARAMS_START,
 *                  static_data, static_bytes, STATIC_DATA_START,
 *                  scratch, scratch_bytes, SCRATCH_RAM_START);
 *   imx681_rt_frame(&rt, inputs, outputs);   // state buffers keep their value in static_data
 *   imx681_rt_reset_state(&rt, static_image, static_bytes);
 *
 * Arithmetic is the compiler's (bit-exact with its numpy reference and torch): qnnpack
 * requantization (float32 multiplier, nearbyintf), qnnpack's integer add, torch's float state
 * add (fmaf: needs a correctly rounded C99 fmaf) and -ffp-contract=off.
 */
#ifndef IMX681_RUNTIME_H_
#define IMX681_RUNTIME_H_

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Return codes */
#define IMX681_OK 0
#define IMX681_ERR_MAGIC (-1)        /* not a parameter image */
#define IMX681_ERR_VERSION (-2)      /* format version not supported */
#define IMX681_ERR_CRC (-3)          /* CRC-32 mismatch: the image is damaged */
#define IMX681_ERR_SIZE (-4)         /* image shorter than its header says */
#define IMX681_ERR_ADDRESS (-5)      /* a buffer lies outside the memory given to the runtime */
#define IMX681_ERR_KIND (-6)         /* an operation kind this runtime does not implement */

typedef struct {
    const uint8_t* params;
    uint32_t params_size, params_start;
    uint8_t* static_data;
    uint32_t static_size, static_start;
    uint8_t* scratch;
    uint32_t scratch_size, scratch_start;
    int big_endian;
    uint32_t n_ops, n_buffers, buffer_table, op_table;
} imx681_rt;

int32_t imx681_rt_init(imx681_rt* rt, const uint8_t* params, uint32_t params_size,
                       uint32_t params_start, uint8_t* static_data, uint32_t static_size,
                       uint32_t static_start, uint8_t* scratch, uint32_t scratch_size,
                       uint32_t scratch_start);

/* Number of frame inputs / model outputs and their sizes in bytes (buffer-table order). */
int32_t imx681_rt_num_inputs(const imx681_rt* rt);
int32_t imx681_rt_num_outputs(const imx681_rt* rt);
int32_t imx681_rt_input_size(const imx681_rt* rt, int32_t index);
int32_t imx681_rt_output_size(const imx681_rt* rt, int32_t index);

/* One frame: copies the inputs into their SCRATCH_RAM buffers, runs every operation, copies the
 * outputs out. Returns IMX681_OK or an error code. */
int32_t imx681_rt_frame(imx681_rt* rt, const int8_t* const* inputs, int8_t* const* outputs);

/* sizeof(imx681_rt), for callers that allocate it without this header (cffi). */
int32_t imx681_rt_struct_size(void);

/* Restores STATIC_DATA from its image (the initial states). */
void imx681_rt_reset_state(imx681_rt* rt, const uint8_t* static_image, uint32_t static_size);

#ifdef __cplusplus
}
#endif

#endif /* IMX681_RUNTIME_H_ */
