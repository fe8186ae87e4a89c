/* common.h — status codes, the context object, assertions and the dimension glossary.
 *
 * Rules: library code returns nl_status and writes a one-line message into the
 * context (nl_ctx_errorf); it never exits. Only src/cli/ turns statuses into exit codes.
 * Messages are lower-case, say what failed first and quote the subject:
 *   cannot read 'model.safetensors': header length 9e18 exceeds file size
 *
 * Dimension glossary used in every shape comment of the project:
 *   T  tokens in the current forward batch      P  positions in the KV cache
 *   L  layers                                   D  d_model (residual width)
 *   F  d_ff (FFN neurons per layer)             V  vocabulary size
 *   H  query heads    Hk  key/value heads       Dh head dimension
 *   N  tokens in a dataset                      Dc documents in a dataset
 */
#ifndef NEURONLAB_COMMON_H
#define NEURONLAB_COMMON_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#define NL_VERSION "0.1.0"

typedef enum {
    NL_OK = 0,
    NL_EIO,          /* cannot open, read, write or map a file */
    NL_EFORMAT,      /* a file's content is malformed or contradicts itself */
    NL_EINVAL,       /* an argument or option is out of range */
    NL_ENOMEM,       /* allocation failed */
    NL_EUNSUPPORTED, /* well-formed but not supported (architecture, dtype …) */
    NL_EINTR,        /* interrupted by the user (SIGINT); outputs are left valid */
} nl_status;

/* Caller-owned context: carries the last error message and run-wide settings.
 * Initialise with nl_ctx_init; nothing inside needs releasing. */
typedef struct nl_ctx {
    char msg[1024];    /* last error message, "" when none */
    int n_threads;     /* OpenMP worker threads of the library's loops; 0 = all cores.
                        * Set by the caller (the CLI's --threads); applied by nl_ctx_apply_threads,
                        * which every analysis run and the CLI's forward-pass setup call. */
    int progress;      /* 1 = progress on stderr (progress.h: a bar on a TTY, else periodic lines); 0 = quiet */
} nl_ctx;

void nl_ctx_init(nl_ctx *ctx);
/* Applies ctx->n_threads to OpenMP (omp_set_num_threads) when it is > 0; 0 leaves the
 * current setting (all cores unless OMP_NUM_THREADS says otherwise). The one place the
 * library honours n_threads. */
void nl_ctx_apply_threads(const nl_ctx *ctx);

/* Formats a message into ctx->msg and returns st (so `return nl_errorf(...)` works). */
nl_status nl_errorf(nl_ctx *ctx, nl_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

const char *nl_status_name(nl_status st);

/* Appends v to the NUL-terminated buf (n bytes) as a JSON string literal (quotes, escapes);
 * truncates rather than overflow. For the params JSON of the results database. */
void nl_json_cat(char *buf, size_t n, const char *v);

/* v as a JSON number in the shortest of %.15g, %.16g, %.17g that strtod reads back to exactly
 * v (0.1 → "0.1", not "0.10000000000000001"; 1e300 → "1e+300"; -0 → "-0"), or "null" when v
 * is not finite (JSON has no NaN/Infinity). Writes into buf (NL_JSON_NUM_SIZE bytes) and
 * returns it. NL_JSON_NUM(v) uses a temporary buffer that lives to the end of the enclosing
 * full expression's block, for use as a printf argument: printf("%s", NL_JSON_NUM(x)). */
#define NL_JSON_NUM_SIZE 32
char *nl_json_num(char *buf, double v);
#define NL_JSON_NUM(v) nl_json_num((char[NL_JSON_NUM_SIZE]){0}, (v))

/* Set by the CLI's SIGINT handler; long loops poll it and stop cleanly with NL_EINTR. */
extern volatile sig_atomic_t nl_interrupted;

/* Programmer bugs only (never bad input): abort with file and line. */
#define NL_ASSERT(c)                                                              \
    do {                                                                          \
        if (!(c)) nl_assert_fail(#c, __FILE__, __LINE__);                         \
    } while (0)
void nl_assert_fail(const char *cond, const char *file, int line) __attribute__((noreturn));

/* malloc that returns NULL on n == 0 too; callers check. */
void *nl_malloc(size_t n);
void *nl_calloc(size_t n, size_t size);

/* Wall-clock seconds (monotonic). */
double nl_now(void);

/* Float bounds that make comparisons of a float r with a real x exact:
 * r < x ⇔ r < nl_float_ceil(x);  r > x ⇔ r > nl_float_floor(x). */
float nl_float_ceil(double x);
float nl_float_floor(double x);

/* Half-precision conversions (IEEE binary16 and bfloat16), round to nearest even. */
float nl_f16_to_f32(uint16_t h);
uint16_t nl_f32_to_f16(float f);
float nl_bf16_to_f32(uint16_t h);
uint16_t nl_f32_to_bf16(float f);

#endif
