/* fuzz_results.c — libFuzzer harness: the input is a results database (SQLite file);
 * nl_results_open opens it read-only and the reader the analyses use on it loads ability
 * top sets (nl_ability_sets_load: latest run, run 1 and 2, the stored and a re-chosen top
 * fraction). Seeds: fuzz/corpus/results/ (fuzz/make-corpus.sh). See fuzz/README.md. */
#include "analyses/ability.h"
#include "fuzz_util.h"
#include "neuronlab/results.h"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
    nl_ctx ctx;
    fuzz_ctx(&ctx);
    const char *p = fuzz_write("r.db", d, n);
    unlink(fuzz_path("r.db-journal"));
    unlink(fuzz_path("r.db-wal"));
    nl_results *db = NULL;
    if (nl_results_open(&ctx, p, 1, &db) != NL_OK) return 0;
    static const struct { int64_t run; double top; } q[] = {{0, 0}, {1, 0}, {2, 0}, {0, 0.5}, {1, 0.01}};
    for (size_t i = 0; i < sizeof q / sizeof q[0]; i++) {
        nl_ability_sets s;
        memset(&s, 0, sizeof s);
        if (nl_ability_sets_load(&ctx, db, q[i].run, q[i].top, &s) == NL_OK) {
            for (int a = 0; a < s.n_abilities; a++)
                (void)nl_ability_sets_find(&s, s.abilities[a]);
            nl_ability_sets_release(&s);
        }
    }
    nl_results_close(db);
    return 0;
}
