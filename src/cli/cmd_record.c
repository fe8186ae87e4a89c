/* cmd_record.c — placeholder until the HDF5 store lands (replaced in this session). */
#include "cli/cli.h"
static int run(nl_ctx *ctx, int argc, char **argv) { (void)ctx; (void)argc; (void)argv; return 2; }
const nl_command nl_cmd_record = {"record", "MODEL DATA.jsonl -o acts.h5", "record FFN activations", run};
