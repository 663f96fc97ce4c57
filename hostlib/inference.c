/* inference: load a deployment directory, run the model N times, compare with the reference.
 *
 *   inference DIR [--runs N]
 *
 * DIR holds deploy.cfg (KEY VALUE lines written by tools/deploy.py), the shared library,
 * input<i>.bin and ref_result_<i>.bin. Prints the mean latency and, per output, the max abs
 * diff, mean abs diff and correct ratio against the reference. Exit status: 0 when every
 * output element equals the reference, 1 when any differs, 2 on a usage or file error.
 */
#define _POSIX_C_SOURCE 200809L
#include <dlfcn.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_PORTS 8
#define WARMUP_RUNS 10

typedef int32_t (*run_fn)(void* inputs, void* outputs);

struct port {
    long size;
    int8_t* data;
    int8_t* reference;
};

struct deployment {
    char library[4096];
    char run_symbol[512];
    int num_inputs, num_outputs;
    struct port inputs[MAX_PORTS], outputs[MAX_PORTS];
};

static int fail(const char* what, const char* path)
{
    fprintf(stderr, "inference: error: %s%s%s\n", what, path ? ": " : "", path ? path : "");
    return 2;
}

/* deploy.cfg names what to load and call: a typo or a hostile file must not make this program
 * open a library outside DIR or call another function (dlsym would find libc's system()). */
static int is_plain_file_name(const char* s)
{
    return s[0] && s[0] != '.' && !strchr(s, '/');
}

static int is_model_run_symbol(const char* s)
{
    size_t n = strlen(s);
    if (n <= strlen("tvmgen__run") || strncmp(s, "tvmgen_", 7) != 0 || strcmp(s + n - 4, "_run") != 0)
        return 0;
    for (const char* c = s; *c; c++)
        if (!(*c == '_' || (*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z')))
            return 0;
    return 1;
}

/* A tensor size: a positive decimal number of bytes, at most 1 GiB; else -1. */
static long parse_size(const char* s)
{
    char* end;
    errno = 0;
    long v = strtol(s, &end, 10);
    return (errno || *end || end == s || v <= 0 || v > (1L << 30)) ? -1 : v;
}

static int bad_value(const char* path, const char* key, const char* value, const char* want)
{
    fprintf(stderr, "inference: error: %s: %s %s: %s (rewrite it with tools/deploy.py)\n", path, key,
            value, want);
    return 2;
}

static int read_config(const char* dir, struct deployment* d)
{
    char path[4096], key[64], value[256];
    snprintf(path, sizeof path, "%s/deploy.cfg", dir);
    FILE* f = fopen(path, "r");
    if (!f)
        return fail("cannot open the deployment's deploy.cfg (write it with tools/deploy.py)", path);
    memset(d, 0, sizeof *d);
    while (fscanf(f, "%63s %255s", key, value) == 2) {
        int index, bad = 0;
        if (strcmp(key, "library") == 0) {
            if (!is_plain_file_name(value))
                bad = bad_value(path, key, value, "must be a file name inside the deployment directory");
            snprintf(d->library, sizeof d->library, "%s/%s", dir, value);
        } else if (strcmp(key, "run_symbol") == 0) {
            if (!is_model_run_symbol(value))
                bad = bad_value(path, key, value, "must be a model's run function, tvmgen_<name>_run");
            snprintf(d->run_symbol, sizeof d->run_symbol, "%s", value);
        } else if (sscanf(key, "input%d_size", &index) == 1 && index >= 0 && index < MAX_PORTS) {
            if ((d->inputs[index].size = parse_size(value)) < 0)
                bad = bad_value(path, key, value, "must be a number of bytes from 1 to 2^30");
            if (index + 1 > d->num_inputs) d->num_inputs = index + 1;
        } else if (sscanf(key, "output%d_size", &index) == 1 && index >= 0 && index < MAX_PORTS) {
            if ((d->outputs[index].size = parse_size(value)) < 0)
                bad = bad_value(path, key, value, "must be a number of bytes from 1 to 2^30");
            if (index + 1 > d->num_outputs) d->num_outputs = index + 1;
        }
        if (bad) {
            fclose(f);
            return bad;
        }
    }
    fclose(f);
    if (!d->library[0] || !d->run_symbol[0] || d->num_inputs == 0 || d->num_outputs == 0)
        return fail("deploy.cfg lacks library, run_symbol, input0_size or output0_size", path);
    return 0;
}

static int8_t* read_exact(const char* dir, const char* name, long size)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE* f = fopen(path, "rb");
    if (!f) {
        fail("cannot open", path);
        return NULL;
    }
    int8_t* buf = malloc((size_t)size);
    long got = buf ? (long)fread(buf, 1, (size_t)size, f) : 0;
    int extra = fgetc(f) != EOF;
    fclose(f);
    if (got != size || extra) {
        fprintf(stderr, "inference: error: %s holds %s%ld bytes, the model expects %ld\n", path,
                extra ? "more than " : "", got, size);
        free(buf);
        return NULL;
    }
    return buf;
}

static double now_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int main(int argc, char** argv)
{
    const char* dir = NULL;
    long runs = 100;
    for (int i = 1; i < argc; ++i) {
        if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc) {
            char* end;
            runs = strtol(argv[++i], &end, 10);
            if (*end || runs < 1) return fail("--runs needs a positive integer", argv[i]);
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("usage: inference DIR [--runs N]\n"
                   "Loads the deployment in DIR (tools/deploy.py), runs the model N times (default 100)\n"
                   "after %d warm-up runs, prints the mean latency and compares every output with\n"
                   "ref_result_<i>.bin. Exit 0: bit-exact; 1: outputs differ; 2: usage or file error.\n",
                   WARMUP_RUNS);
            return 0;
        } else if (!dir) {
            dir = argv[i];
        } else {
            return fail("unexpected argument (usage: inference DIR [--runs N])", argv[i]);
        }
    }
    if (!dir) return fail("no deployment directory given (usage: inference DIR [--runs N])", NULL);
    if (strlen(dir) > 3000) return fail("deployment path too long", NULL);

    struct deployment d;
    if (read_config(dir, &d)) return 2;
    void* handle = dlopen(d.library, RTLD_NOW | RTLD_LOCAL);
    if (!handle) return fail(dlerror(), NULL);
    run_fn run = (run_fn)(uintptr_t)dlsym(handle, d.run_symbol);
    if (!run) return fail("the library has no run function", d.run_symbol);

    void* input_ptrs[MAX_PORTS];
    void* output_ptrs[MAX_PORTS];
    char name[64];
    for (int i = 0; i < d.num_inputs; ++i) {
        snprintf(name, sizeof name, "input%d.bin", i);
        if (!(d.inputs[i].data = read_exact(dir, name, d.inputs[i].size))) return 2;
        input_ptrs[i] = d.inputs[i].data;
    }
    for (int i = 0; i < d.num_outputs; ++i) {
        snprintf(name, sizeof name, "ref_result_%d.bin", i);
        if (!(d.outputs[i].reference = read_exact(dir, name, d.outputs[i].size))) return 2;
        d.outputs[i].data = calloc((size_t)d.outputs[i].size, 1);
        output_ptrs[i] = d.outputs[i].data;
    }

    /* The structs of the generated API are arrays of void* in declaration order. */
    for (int i = 0; i < WARMUP_RUNS; ++i) run(input_ptrs, output_ptrs);
    double start = now_seconds();
    for (long i = 0; i < runs; ++i) {
        int32_t rc = run(input_ptrs, output_ptrs);
        if (rc != 0) {
            fprintf(stderr, "inference: error: %s returned %d\n", d.run_symbol, rc);
            return 2;
        }
    }
    double mean_ms = (now_seconds() - start) * 1e3 / (double)runs;
    printf("runs: %ld (after %d warm-up runs)\nmean latency: %.4f ms\n", runs, WARMUP_RUNS, mean_ms);

    int all_equal = 1;
    for (int o = 0; o < d.num_outputs; ++o) {
        long equal = 0, max_diff = 0;
        double sum_diff = 0;
        for (long i = 0; i < d.outputs[o].size; ++i) {
            long diff = labs((long)d.outputs[o].data[i] - (long)d.outputs[o].reference[i]);
            equal += diff == 0;
            max_diff = diff > max_diff ? diff : max_diff;
            sum_diff += (double)diff;
        }
        printf("output%d: max abs diff %ld, mean abs diff %.6f, correct ratio %.6f (%ld/%ld)\n", o,
               max_diff, sum_diff / (double)d.outputs[o].size,
               (double)equal / (double)d.outputs[o].size, equal, d.outputs[o].size);
        all_equal &= equal == d.outputs[o].size;
    }
    printf("result: %s\n", all_equal ? "bit-exact" : "MISMATCH");
    return all_equal ? 0 : 1;
}
