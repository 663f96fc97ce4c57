/* inference: load a deployment directory, run the model N times, compare with the reference.
 *
 *   inference DIR [--runs N]
 *
 * DIR holds deploy.cfg (KEY VALUE lines written by tools/deploy.py), the shared library,
 * input<i>.bin and ref_result_<i>.bin. Prints the mean latency and, per output, the max abs
 * diff, mean abs diff and correct ratio against the reference. Exit status: 0 when every
 * output element equals the reference, 1 when any differs, 2 on a usage or file error.
 * Nothing in DIR is trusted: deploy.cfg is parsed strictly, the library file is checked before
 * dlopen, and every size must equal the one compiled into the library (its identity string).
 */
#define _POSIX_C_SOURCE 200809L
#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <link.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_PORTS 8
#define MAX_PORT_BYTES (1L << 30)
#define MAX_IDENTITY 8192
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
    char prefix[508];            /* run_symbol without "_run": the identity is <prefix>_identity */
    int num_inputs, num_outputs;
    struct port inputs[MAX_PORTS], outputs[MAX_PORTS];
};

static int fail(const char* what, const char* path)
{
    fprintf(stderr, "inference: error: %s%s%s\n", what, path ? ": " : "", path ? path : "");
    return 2;
}

/* A strict positive size: digits only, 1 .. MAX_PORT_BYTES. */
static long parse_size(const char* text)
{
    if (!*text || strspn(text, "0123456789") != strlen(text) || strlen(text) > 10) return -1;
    long v = atol(text);
    return v >= 1 && v <= MAX_PORT_BYTES ? v : -1;
}

static int is_identifier(const char* s)
{
    if (!*s || (*s >= '0' && *s <= '9')) return 0;
    for (; *s; ++s)
        if (!(*s == '_' || (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9')))
            return 0;
    return 1;
}

static int config_error(const char* path, int line, const char* what, const char* fix)
{
    fprintf(stderr, "inference: error: %s:%d: %s\n  fix: %s\n", path, line, what, fix);
    return 2;
}

/* Port sizes: key input<i>_size / output<i>_size -> index i, or -1. */
static int port_index(const char* key, const char* kind)
{
    size_t n = strlen(kind);
    if (strncmp(key, kind, n) != 0) return -1;
    char* end;
    const char* digits = key + n;
    if (*digits < '0' || *digits > '9') return -1;
    long i = strtol(digits, &end, 10);
    return strcmp(end, "_size") == 0 && i >= 0 && i < MAX_PORTS ? (int)i : -1;
}

static int read_config(const char* dir, struct deployment* d)
{
    char path[4096];
    char* line = NULL;
    size_t capacity = 0;
    ssize_t len;
    snprintf(path, sizeof path, "%s/deploy.cfg", dir);
    FILE* f = fopen(path, "r");
    if (!f)
        return fail("cannot open the deployment's deploy.cfg (write it with tools/deploy.py)", path);
    memset(d, 0, sizeof *d);
    const char* fix = "regenerate the deployment with tools/deploy.py (or ./scons host model=M deploy=DIR)";
    int number = 0, rc = 0;
    while (!rc && (len = getline(&line, &capacity, f)) >= 0) {
        ++number;
        if ((size_t)len != strlen(line) || len > 1000) {
            rc = config_error(path, number, len > 1000 ? "line too long" : "a NUL byte in the line", fix);
            break;
        }
        char* text = line;
        if (number == 1 && strncmp(text, "\xef\xbb\xbf", 3) == 0) text += 3;   /* UTF-8 BOM */
        char key[128], value[512], extra[2];
        int fields = sscanf(text, " %127s %511s %1s", key, value, extra);
        if (fields <= 0 || key[0] == '#') continue;                /* blank line or comment */
        if (fields != 2) {
            rc = config_error(path, number, fields == 1 ? "a key without a value" : "more than one value",
                              "write one KEY VALUE pair per line");
            break;
        }
        int index;
        struct port* port = NULL;
        int* count = NULL;
        if (strcmp(key, "library") == 0) {
            if (d->library[0] || strchr(value, '/') || strcmp(value, "..") == 0 || strcmp(value, ".") == 0)
                rc = config_error(path, number, d->library[0] ? "library given twice"
                                  : "library must be a file name inside the deployment directory", fix);
            else
                snprintf(d->library, sizeof d->library, "%s/%s", dir, value);
        } else if (strcmp(key, "run_symbol") == 0) {
            size_t n = strlen(value);
            if (d->run_symbol[0] || !is_identifier(value) || n < 5 || n >= sizeof d->prefix + 4 ||
                strcmp(value + n - 4, "_run") != 0)
                rc = config_error(path, number, d->run_symbol[0] ? "run_symbol given twice"
                                  : "run_symbol must be a C identifier tvmgen_<name>_run", fix);
            else {
                snprintf(d->run_symbol, sizeof d->run_symbol, "%s", value);
                snprintf(d->prefix, sizeof d->prefix, "%.*s", (int)(n - 4), value);
            }
        } else if ((index = port_index(key, "input")) >= 0) {
            port = &d->inputs[index];
            count = &d->num_inputs;
        } else if ((index = port_index(key, "output")) >= 0) {
            port = &d->outputs[index];
            count = &d->num_outputs;
        } else {
            rc = config_error(path, number, "unknown key (known: library, run_symbol, input<i>_size, "
                              "output<i>_size with i < 8)", fix);
        }
        if (port) {
            long size = parse_size(value);
            if (port->size)
                rc = config_error(path, number, "size given twice", fix);
            else if (size < 0)
                rc = config_error(path, number, "a size must be a whole number of bytes, 1 .. 2^30", fix);
            else {
                port->size = size;
                if (index + 1 > *count) *count = index + 1;
            }
        }
    }
    if (!rc && ferror(f)) rc = fail("cannot read", path);
    free(line);
    fclose(f);
    if (rc) return rc;
    if (!d->library[0] || !d->run_symbol[0] || d->num_inputs == 0 || d->num_outputs == 0)
        return config_error(path, number, "lacks library, run_symbol, input0_size or output0_size", fix);
    for (int i = 0; i < d->num_inputs; ++i)
        if (!d->inputs[i].size) return config_error(path, number, "input sizes are not numbered 0, 1, ...", fix);
    for (int i = 0; i < d->num_outputs; ++i)
        if (!d->outputs[i].size) return config_error(path, number, "output sizes are not numbered 0, 1, ...", fix);
    return 0;
}

/* The library file must be a complete ELF shared object of this machine's word size before
 * dlopen maps it: a truncated file would crash the process (SIGBUS) when a page past its end
 * is touched. */
static int check_library_file(const char* path)
{
    FILE* f = fopen(path, "rb");
    if (!f) return fail("cannot open the library named in deploy.cfg", path);
    ElfW(Ehdr) eh;
    int rc = 0;
    if (fseek(f, 0, SEEK_END) != 0) rc = fail("cannot read the library", path);
    long size = rc ? 0 : ftell(f);
    rewind(f);
    if (!rc && (size < (long)sizeof eh || fread(&eh, sizeof eh, 1, f) != 1 || memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0))
        rc = fail("not a shared library (no ELF header); rebuild the deployment", path);
    else if (!rc && (eh.e_ident[EI_CLASS] != (sizeof(void*) == 8 ? ELFCLASS64 : ELFCLASS32) || eh.e_type != ET_DYN))
        rc = fail("not a shared library for this machine; rebuild the deployment on it", path);
    unsigned long long need = 0;
    if (!rc) {
        unsigned long long ph_end = (unsigned long long)eh.e_phoff + (unsigned long long)eh.e_phnum * eh.e_phentsize;
        unsigned long long sh_end = (unsigned long long)eh.e_shoff + (unsigned long long)eh.e_shnum * eh.e_shentsize;
        need = ph_end > sh_end ? ph_end : sh_end;
        if (ph_end <= (unsigned long long)size && eh.e_phentsize == sizeof(ElfW(Phdr))) {
            for (int i = 0; i < eh.e_phnum; ++i) {
                ElfW(Phdr) ph;
                if (fseek(f, (long)(eh.e_phoff + (unsigned long long)i * eh.e_phentsize), SEEK_SET) != 0 ||
                    fread(&ph, sizeof ph, 1, f) != 1) {
                    need = (unsigned long long)size + 1;
                    break;
                }
                unsigned long long end = (unsigned long long)ph.p_offset + ph.p_filesz;
                if (end > need) need = end;
            }
        }
        if (need > (unsigned long long)size) {
            fprintf(stderr, "inference: error: %s is truncated (%ld bytes, its headers need %llu); "
                    "rebuild the deployment\n", path, size, need);
            rc = 2;
        }
    }
    fclose(f);
    return rc;
}

/* The value of KEY in the library's identity string ("k=v k=v ..."), as a size; -1 if absent. */
static long identity_size(const char* identity, const char* key)
{
    size_t n = strlen(key);
    for (const char* p = identity; *p;) {
        while (*p == ' ') ++p;
        if (strncmp(p, key, n) == 0 && p[n] == '=') {
            char value[16];
            size_t len = strcspn(p + n + 1, " ");
            if (len == 0 || len >= sizeof value) return -1;
            memcpy(value, p + n + 1, len);
            value[len] = 0;
            return parse_size(value);
        }
        p += strcspn(p, " ");
    }
    return -1;
}

/* deploy.cfg must describe the library: the same number of ports and bytes per port as the
 * library's compiled-in identity (tools/nnc/identity.py). Otherwise the C would write past the
 * buffers sized from deploy.cfg, or a comparison would cover the wrong bytes. */
static int check_identity(const struct deployment* d, const char* identity)
{
    char key[32];
    if (strnlen(identity, MAX_IDENTITY) == MAX_IDENTITY || strncmp(identity, "nnc_identity=1 ", 15) != 0)
        return fail("the library's identity string is not one this inference understands; rebuild "
                    "the deployment", d->library);
    long n_in = identity_size(identity, "inputs"), n_out = identity_size(identity, "outputs");
    int bad = n_in != d->num_inputs || n_out != d->num_outputs;
    if (bad)
        fprintf(stderr, "inference: error: the library has %ld input(s) and %ld output(s), deploy.cfg "
                "%d and %d\n", n_in, n_out, d->num_inputs, d->num_outputs);
    for (int i = 0; !bad && i < d->num_inputs + d->num_outputs; ++i) {
        int is_in = i < d->num_inputs, index = is_in ? i : i - d->num_inputs;
        const struct port* port = is_in ? &d->inputs[index] : &d->outputs[index];
        snprintf(key, sizeof key, "%s%d_size", is_in ? "input" : "output", index);
        long lib = identity_size(identity, key);
        if (lib != port->size) {
            fprintf(stderr, "inference: error: deploy.cfg says %s %ld, the library was compiled for %ld\n",
                    key, port->size, lib);
            bad = 1;
        }
    }
    if (bad)
        fprintf(stderr, "  fix: deploy.cfg and %s do not belong together: regenerate the deployment "
                "with tools/deploy.py\n", d->library);
    return bad ? 2 : 0;
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
    if (!buf) {
        fail("out of memory reading", path);
        return NULL;
    }
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
        if (strcmp(argv[i], "--runs") == 0) {
            if (i + 1 == argc) return fail("--runs needs a positive integer", NULL);
            char* end;
            errno = 0;
            runs = strtol(argv[++i], &end, 10);
            if (*end || end == argv[i] || errno || runs < 1) return fail("--runs needs a positive integer", argv[i]);
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("usage: inference DIR [--runs N]\n"
                   "Loads the deployment in DIR (tools/deploy.py), runs the model N times (default 100)\n"
                   "after %d warm-up runs, prints the mean latency and compares every output with\n"
                   "ref_result_<i>.bin. deploy.cfg's sizes must equal the ones compiled into the\n"
                   "library (its identity string); the library file is checked before it is loaded.\n"
                   "Exit 0: bit-exact; 1: outputs differ; 2: usage error or a deployment that is\n"
                   "broken or inconsistent (deploy.cfg, library, input or reference files).\n",
                   WARMUP_RUNS);
            return 0;
        } else if (argv[i][0] == '-') {
            return fail("unknown option (usage: inference DIR [--runs N])", argv[i]);
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
    if (check_library_file(d.library)) return 2;
    void* handle = dlopen(d.library, RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
        fprintf(stderr, "inference: error: cannot load the library: %s\n  fix: rebuild the deployment "
                "with tools/deploy.py\n", dlerror());
        return 2;
    }
    run_fn run = (run_fn)(uintptr_t)dlsym(handle, d.run_symbol);
    if (!run) return fail("the library has no run function (deploy.cfg's run_symbol)", d.run_symbol);
    char identity_symbol[600];
    snprintf(identity_symbol, sizeof identity_symbol, "%s_identity", d.prefix);
    const char* identity = dlsym(handle, identity_symbol);
    if (!identity)
        return fail("the library carries no identity (built by an older nnc, or not this model's); "
                    "rebuild the deployment with tools/deploy.py", identity_symbol);
    if (check_identity(&d, identity)) return 2;

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
        if (!d.outputs[i].data) return fail("out of memory for", name);
        output_ptrs[i] = d.outputs[i].data;
    }

    /* The structs of the generated API are arrays of void* in declaration order. */
    double start = 0;
    for (long i = -WARMUP_RUNS; i < runs; ++i) {
        if (i == 0) start = now_seconds();
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
