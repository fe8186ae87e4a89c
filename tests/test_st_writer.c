/* test_st_writer.c — safetensors files written by st_writer read back through the validating
 * reader (safetensors.h): names, shapes, dtypes, values (f32 exact, bf16/f16 rounded), metadata,
 * atomic replacement. */
#include <glob.h>
#include <fcntl.h>
#include <jansson.h>
#include <unistd.h>

#include "neuronlab/safetensors.h"
#include "neuronlab/st_writer.h"
#include "testutil.h"

Test(st_writer, round_trip) {
    char dir[] = "/tmp/nl_st_writer.XXXXXX";
    cr_assert(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/m.safetensors", dir);
    float a[6] = {1, -2, 3.5f, 1e-3f, 65504, -0.1f}, b[3] = {0.1f, 0.2f, 0.3f};
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    for (int round = 0; round < 2; round++) { /* the second write replaces the first */
        nl_st_writer *w;
        cr_assert_eq(nl_st_writer_create(&ctx, &w), NL_OK);
        cr_assert_eq(nl_st_writer_meta(&ctx, w, "step", round ? "2" : "1"), NL_OK);
        cr_assert_eq(nl_st_writer_add(&ctx, w, "a.weight", NL_DT_F32, 2, (int64_t[]){2, 3}, a), NL_OK);
        cr_assert_eq(nl_st_writer_add(&ctx, w, "b16", NL_DT_BF16, 1, (int64_t[]){3}, b), NL_OK);
        cr_assert_eq(nl_st_writer_add(&ctx, w, "h16", NL_DT_F16, 2, (int64_t[]){3, 2}, a), NL_OK);
        cr_assert_eq(nl_st_writer_add(&ctx, w, "a.weight", NL_DT_F32, 1, (int64_t[]){1}, a), NL_EINVAL);
        cr_assert_eq(nl_st_writer_write(&ctx, w, path), NL_OK, "%s", ctx.msg);
        nl_st_writer_destroy(w);
    }
    char pat[320];
    snprintf(pat, sizeof pat, "%s.tmp*", path);
    glob_t g;
    cr_assert_eq(glob(pat, 0, NULL, &g), GLOB_NOMATCH, "the temporary file is left behind");
    size_t n;
    unsigned char *buf = nl_read_all(path, &n);
    cr_assert(buf);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | buf[i];
    cr_assert_eq((8 + hl) % 8, 0, "data section not 8-aligned");
    json_t *h = json_loadb((const char *)buf + 8, hl, 0, NULL);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(h, "__metadata__"), "step")), "2");
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(h, "__metadata__"), "format")), "pt");
    json_decref(h);
    nl_safetensors *st;
    cr_assert_eq(nl_safetensors_open(&ctx, path, buf, n, &st), NL_OK, "%s", ctx.msg);
    cr_assert_eq(nl_safetensors_count(st), 3);
    nl_tensor t;
    cr_assert_eq(nl_safetensors_get(&ctx, st, "a.weight", &t), NL_OK);
    cr_assert(t.dtype == NL_DT_F32 && t.ndim == 2 && t.shape[0] == 2 && t.shape[1] == 3);
    cr_assert_eq(memcmp(t.data, a, sizeof a), 0);
    cr_assert_eq(nl_safetensors_get(&ctx, st, "b16", &t), NL_OK);
    cr_assert(t.dtype == NL_DT_BF16 && t.ndim == 1 && t.shape[0] == 3);
    for (int i = 0; i < 3; i++) {
        uint16_t u;
        memcpy(&u, (const char *)t.data + 2 * i, 2);
        cr_assert_float_eq(nl_bf16_to_f32(u), b[i], 1e-3);
    }
    cr_assert_eq(nl_safetensors_get(&ctx, st, "h16", &t), NL_OK);
    for (int i = 0; i < 6; i++) {
        uint16_t u;
        memcpy(&u, (const char *)t.data + 2 * i, 2);
        cr_assert_float_eq(nl_f16_to_f32(u), a[i], fabsf(a[i]) * 1e-3f);
    }
    nl_safetensors_close(st);
    free(buf);
    nl_st_writer *w;
    cr_assert_eq(nl_st_writer_create(&ctx, &w), NL_OK);
    cr_assert_eq(nl_st_writer_write(&ctx, w, "/nonexistent/dir/m.safetensors"), NL_EIO);
    /* the message names the file asked for (the atomic writer's temporary is an implementation detail) */
    cr_assert(strstr(ctx.msg, "cannot write '/nonexistent/dir/m.safetensors'"), "%s", ctx.msg);
    nl_st_writer_destroy(w);
    unlink(path);
    rmdir(dir);
}
